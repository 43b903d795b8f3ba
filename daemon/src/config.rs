//! `seerd`'s configuration, in two layers:
//!
//! - [`Config`]: what the TOML file says, and nothing else. Pure serde:
//!   every key defaulted, unknown keys refused, "not set" is `None` (never
//!   an empty string), and closed sets of values are enums. Parsing it
//!   touches no file but the config itself.
//! - [`Resolved`]: computed once at start-up by [`Config::resolve`] (a
//!   blocking call, made before the async runtime starts): paths after
//!   defaults and environment, the catalogue, model files, the camera
//!   source. Nothing downstream looks anything up again on the executor.

mod network;

pub use network::{HttpResolved, HttpSection, Mode as OffloadModeConfig, OffloadSection, Secret};
use seer_models::device::BackendKind;
use seer_models::generate::VlmFiles;
use seer_store::{Catalog, ModelStore, StoreError};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// An optional key that, when given, is not empty: "not set" is leaving
/// the key out, so an empty string is a mistake worth naming.
fn non_empty<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Err(serde::de::Error::custom(
            "must not be empty (leave the key out for the default)",
        ));
    }
    Ok(Some(T::from(s)))
}

/// The whole configuration. An empty file is a valid configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The language model.
    pub model: ModelConfig,
    /// How answers are made.
    pub assistant: AssistantConfig,
    /// The local socket.
    pub socket: SocketConfig,
    /// Logging.
    pub log: LogConfig,
    /// The D-Bus service.
    pub dbus: DbusConfig,
    /// Listening: microphone and speech recognition.
    pub listen: ListenConfig,
    /// Images and the camera.
    pub vision: VisionConfig,
    /// Spoken answers.
    pub speech: SpeechConfig,
    /// Answering on a bigger machine's OpenAI-compatible server.
    pub offload: OffloadSection,
    /// Seer's own OpenAI-compatible HTTP API.
    pub http: HttpSection,
}

/// The catalogue's default voice (licence checked: see store/catalog.toml).
pub const DEFAULT_VOICE: &str = "piper-en-us-ljspeech-medium";

/// `[speech]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeechConfig {
    /// Whether answers are spoken at all (`set {speech}` changes it while
    /// running). Muting the microphone does not silence speech; this does.
    pub enabled: bool,
    /// The Piper voice: a catalogue name (`seer models list`) or an `.onnx`
    /// file with its `.onnx.json` beside it.
    pub voice: String,
    /// Output device whose name contains this; not set: the default one.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub device: Option<String>,
    /// Speaking rate: 1 is the voice's own, 1.25 a quarter faster (the
    /// voice's `length_scale` is divided by it).
    pub rate: f32,
    /// Loudness, 0-2 (1 = as synthesised).
    pub volume: f32,
    /// Hands-free questions are answered aloud (typed questions and
    /// push-to-talk when their client asks: `ask {speak: true}`).
    pub hands_free: bool,
    /// Start speaking at the first comma of a long first sentence.
    pub early_start: bool,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            voice: DEFAULT_VOICE.into(),
            device: None,
            rate: 1.0,
            volume: 1.0,
            hands_free: true,
            early_start: true,
        }
    }
}

/// `[vision]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VisionConfig {
    /// Whether photos and the camera are answered at all (false: image
    /// questions are `unsupported`, and the camera is never opened).
    pub enabled: bool,
    /// The vision-language model: a catalogue name (`seer models list`), an
    /// HF SmolVLM directory, or a GGUF file (with `mmproj`, or an
    /// `mmproj*.gguf` beside it).
    pub model: String,
    /// llama.cpp's vision projector GGUF, when `model` is a GGUF file.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub mmproj: Option<PathBuf>,
    /// Cut photos into full-resolution tiles plus a global view: more
    /// detail, but up to 17× the image tokens (slow on a small board).
    pub tiling: bool,
    /// Larger images are refused (`too_large`) before they are decoded.
    pub max_pixels: u64,
    /// The camera: `v4l2:` (the first), `v4l2:N` or `/dev/videoN`,
    /// `v4l2:NAME` (part of its name), or an image file or folder played as
    /// a camera. Not set: no camera.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub camera: Option<String>,
    /// Wanted camera resolution; the closest the camera offers is used.
    pub camera_width: u32,
    /// Wanted camera height.
    pub camera_height: u32,
    /// Camera frames per second.
    pub camera_fps: f32,
    /// The camera stays on this long after the last look, seconds.
    pub keep_warm_seconds: f64,
    /// When a spoken question gets the camera's frame: `never`, `always`
    /// (whenever a camera and a vision model are there) or `when-asked`
    /// (the question talks about looking, seeing, reading or "this").
    pub voice_camera: VoiceCamera,
}

/// When spoken questions look through the camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VoiceCamera {
    /// Spoken questions are text only.
    Never,
    /// Only when the question is about what is in view.
    WhenAsked,
    /// Every spoken question.
    Always,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            model: DEFAULT_VISION_MODEL.into(),
            mmproj: None,
            tiling: false,
            max_pixels: seer_platform::frames::DEFAULT_MAX_PIXELS,
            camera: None,
            camera_width: 640,
            camera_height: 480,
            camera_fps: 5.0,
            keep_warm_seconds: 10.0,
            voice_camera: VoiceCamera::WhenAsked,
        }
    }
}

/// The catalogue's vision model for the default (`glasses`) profile.
pub const DEFAULT_VISION_MODEL: &str = "smolvlm-256m-instruct";

impl VisionConfig {
    /// The model's files (`Ok(None)` when vision is off). A catalogue name
    /// that is not installed is an error naming `seer models pull`; a GGUF
    /// without `mmproj` uses the `mmproj*.gguf` installed beside it.
    /// Blocking: it looks in the models directory.
    pub fn files(&self, models: &ModelConfig) -> Result<Option<VlmFiles>, String> {
        if !self.enabled {
            return Ok(None);
        }
        let path = models
            .resolve_model(&self.model)
            .map_err(|e| format!("vision.model = {:?}: {e}", self.model))?;
        if path.is_dir() {
            return Ok(Some(VlmFiles::HfDir(path)));
        }
        let mmproj = match &self.mmproj {
            Some(m) => m.clone(),
            None => mmproj_beside(&path).ok_or_else(|| {
                format!(
                    "vision.model = {:?} is a GGUF file: it also needs vision.mmproj (no mmproj*.gguf beside it)",
                    self.model
                )
            })?,
        };
        Ok(Some(VlmFiles::GgufPair {
            model: path,
            mmproj,
        }))
    }
}

/// The `mmproj*.gguf` in `model`'s directory, as the catalogue installs it.
fn mmproj_beside(model: &Path) -> Option<PathBuf> {
    let dir = model.parent().unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("mmproj") && n.ends_with(".gguf"))
        })
}

/// How the microphone is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenMode {
    /// Always listening for the wake phrase (and push-to-talk).
    Wake,
    /// Only while push-to-talk is held.
    PushToTalk,
    /// Never.
    Off,
}

/// `[listen]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// `wake`, `push-to-talk` or `off`.
    pub mode: ListenMode,
    /// Whisper model: a catalogue name or a ggml file.
    pub model: String,
    /// Silero VAD model: a catalogue name or a file.
    pub vad: String,
    /// Input device whose name contains this; not set: the default one.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub device: Option<String>,
    /// Spoken language (`en`, `de`, …) or `auto`.
    pub language: String,
    /// Whisper threads.
    pub threads: usize,
    /// Longest utterance or push-to-talk capture, seconds.
    pub max_seconds: f64,
    /// What starts a hands-free question ("hey seer, what …").
    pub wake_phrase: String,
    /// After an answer, a question needs no wake phrase for this long, s.
    pub follow_up_seconds: f64,
    /// Whisper's prompt for hands-free speech; not set: one that spells the
    /// wake phrase and the commands.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub prompt: Option<String>,
    /// Speech probability that starts an utterance.
    pub start_threshold: f32,
    /// Probability below which a window counts as silence inside one.
    pub stop_threshold: f32,
    /// Shorter sounds are ignored, ms.
    pub min_speech_ms: u32,
    /// Silence that ends an utterance, ms.
    pub hangover_ms: u32,
    /// Writes every utterance here as WAV (debugging; not set: never).
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub debug_audio_dir: Option<PathBuf>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        let seg = seer_pipelines::listen::segmenter::SegmenterOptions::default();
        Self {
            mode: ListenMode::Wake,
            model: "whisper-tiny.en".into(),
            vad: "silero-vad".into(),
            device: None,
            language: "en".into(),
            threads: 1,
            max_seconds: 30.0,
            wake_phrase: "hey seer".into(),
            follow_up_seconds: 8.0,
            prompt: None,
            start_threshold: seg.start_threshold,
            stop_threshold: seg.stop_threshold,
            min_speech_ms: seg.min_speech_ms,
            hangover_ms: seg.hangover_ms,
            debug_audio_dir: None,
        }
    }
}

/// `[dbus]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbusConfig {
    /// `session`, `system` or `off`.
    pub bus: DbusBus,
    /// When the name `org.seer.Assistant1` is taken: exit (true) or carry on
    /// without D-Bus (false). A missing bus never stops the daemon.
    pub required: bool,
}

impl Default for DbusConfig {
    fn default() -> Self {
        Self {
            bus: DbusBus::Session,
            required: true,
        }
    }
}

/// Which bus `seerd` serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbusBus {
    /// The user's session bus.
    Session,
    /// The system bus.
    System,
    /// No D-Bus.
    Off,
}

/// `[model]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The language model by catalogue name (`seer models list`), found in
    /// the models directory.
    pub name: String,
    /// A GGUF file or model directory to use instead of `name`.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub path: Option<PathBuf>,
    /// Where the model runs.
    pub backend: Backend,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    /// Tokens per sequence (prompt + answer).
    pub context_length: usize,
    /// `start` (load before serving) or `lazy` (on the first question).
    pub load: LoadWhen,
    /// Where models are stored; not set: `$SEER_MODELS_DIR`, else
    /// `$XDG_CACHE_HOME/seer/models` (`~/.cache/seer/models`).
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub models_dir: Option<PathBuf>,
    /// An extra catalogue file; not set: `$SEER_CATALOG`, else
    /// `$XDG_CONFIG_HOME/seer/catalog.toml` if it exists.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub catalog: Option<PathBuf>,
}

/// Where the language and vision models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A real GPU through wgpu if one is present, else the CPU.
    #[default]
    Auto,
    /// burn's CPU backend.
    Cpu,
    /// wgpu (Vulkan/Metal/DX12), including software adapters like lavapipe.
    Wgpu,
}

impl Backend {
    /// The engine's name for it.
    pub fn kind(self) -> BackendKind {
        match self {
            Backend::Auto => BackendKind::Auto,
            Backend::Cpu => BackendKind::Cpu,
            Backend::Wgpu => BackendKind::Wgpu,
        }
    }

    /// The config value (`auto`, `cpu`, `wgpu`).
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
        }
    }
}

/// When the model is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadWhen {
    /// Before the socket opens; a bad model stops start-up.
    Start,
    /// On the first question.
    Lazy,
}

/// The language model the daemon uses when the config names none.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_MODEL.into(),
            path: None,
            backend: Backend::Auto,
            threads: 0,
            context_length: 2048,
            load: LoadWhen::Start,
            models_dir: None,
            catalog: None,
        }
    }
}

impl ModelConfig {
    /// The models directory after defaults and `SEER_MODELS_DIR`.
    pub fn store(&self) -> ModelStore {
        if let Some(dir) = &self.models_dir {
            return ModelStore::new(dir);
        }
        match std::env::var_os("SEER_MODELS_DIR").filter(|d| !d.is_empty()) {
            Some(d) => ModelStore::new(d),
            None => ModelStore::new(ModelStore::default_dir()),
        }
    }

    /// The built-in catalogue plus the configured or user catalogue file.
    pub fn catalog(&self) -> Result<Catalog, StoreError> {
        let extra = if let Some(c) = &self.catalog {
            Some(c.clone())
        } else if let Some(p) = std::env::var_os("SEER_CATALOG").filter(|p| !p.is_empty()) {
            Some(PathBuf::from(p))
        } else {
            Catalog::user_file()
        };
        Catalog::load(extra.as_deref())
    }

    /// A model given as a file (it exists, or contains a `/`) or as a
    /// catalogue name installed in the store (else the error names the
    /// `seer models pull` command).
    pub fn resolve_model(&self, what: &str) -> Result<PathBuf, StoreError> {
        let p = Path::new(what);
        if p.exists() {
            return Ok(p.to_owned());
        }
        if what.contains('/') {
            return Err(StoreError::Invalid(format!("{what} does not exist")));
        }
        self.store().resolve(what)
    }

    /// The file or directory to load: `path` if set, else the installed
    /// model `name`.
    pub fn resolve(&self) -> Result<PathBuf, StoreError> {
        if let Some(p) = &self.path {
            return Ok(p.clone());
        }
        self.store().resolve(&self.name)
    }
}

/// `[assistant]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AssistantConfig {
    /// System prompt for every conversation.
    pub system_prompt: String,
    /// Default answer length limit (tokens).
    pub max_tokens: usize,
    /// Prompt budget for system prompt + history + question (tokens).
    pub history_tokens: usize,
    /// Conversations remembered at once.
    pub max_conversations: usize,
    /// Turns waiting behind the running one before `busy`.
    pub queue: usize,
}

impl Default for AssistantConfig {
    fn default() -> Self {
        Self {
            system_prompt: seer_models::generate::DEFAULT_SYSTEM_PROMPT.into(),
            max_tokens: 256,
            history_tokens: 1024,
            max_conversations: 64,
            queue: 64,
        }
    }
}

/// `[socket]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    /// Socket path; not set: `$XDG_RUNTIME_DIR/seer/seer.sock`, or
    /// `/run/seer/seer.sock` without `XDG_RUNTIME_DIR`.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub path: Option<PathBuf>,
    /// Longest accepted request line in bytes.
    pub max_line_bytes: usize,
    /// Events queued for one client before it is disconnected as too slow.
    pub client_queue: usize,
    /// A group (name or numeric id) whose members may also connect; not
    /// set: only the user running seerd. The socket becomes 0660 and its
    /// directory 0750, both owned by that group.
    #[serde(
        deserialize_with = "non_empty",
        skip_serializing_if = "Option::is_none"
    )]
    pub group: Option<String>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_line_bytes: 16 << 20,
            client_queue: 1024,
            group: None,
        }
    }
}

impl SocketConfig {
    /// The socket path after defaults and `SEER_SOCKET`.
    pub fn resolved_path(&self) -> PathBuf {
        if let Some(p) = std::env::var_os("SEER_SOCKET") {
            return PathBuf::from(p);
        }
        self.path.clone().unwrap_or_else(default_socket_path)
    }
}

/// `$XDG_RUNTIME_DIR/seer/seer.sock`, or `/run/seer/seer.sock`.
pub fn default_socket_path() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("seer/seer.sock"),
        _ => PathBuf::from("/run/seer/seer.sock"),
    }
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter, e.g. `info` or `seer=debug`; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A configuration problem, naming the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// The configured model is missing: a `model.path` that does not exist,
    /// or a `model.name` that is not installed (the message names the
    /// `seer models pull` command).
    #[error("config {path}: {reason}")]
    ModelMissing {
        /// The config file (or "(defaults)").
        path: PathBuf,
        /// What is missing and how to get it.
        reason: String,
    },
}

impl Config {
    /// Where the config is read from: `--config`, else `SEER_CONFIG`, else
    /// `$XDG_CONFIG_HOME/seer/config.toml` (or `~/.config/...`).
    pub fn locate(cli: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = cli {
            return Some(p.to_owned());
        }
        if let Some(p) = std::env::var_os("SEER_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("seer/config.toml"))
    }

    /// Loads `path`. A missing file is the default configuration only when
    /// it was not named explicitly (`explicit` = from `--config`/`SEER_CONFIG`).
    pub fn load(path: Option<&Path>, explicit: bool) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses TOML text (errors name `path`).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })
    }

    /// The checks beyond the types that need no file: ranges, and values
    /// that contradict each other.
    pub fn check(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: shown(path),
            message,
        };
        let l = &self.listen;
        if !(0.0..=1.0).contains(&l.start_threshold) || !(0.0..=1.0).contains(&l.stop_threshold) {
            return Err(invalid(format!(
                "listen.start_threshold ({}) and listen.stop_threshold ({}) must be between 0 and 1",
                l.start_threshold, l.stop_threshold
            )));
        }
        if l.stop_threshold > l.start_threshold {
            return Err(invalid(format!(
                "listen.stop_threshold ({}) must not be above listen.start_threshold ({})",
                l.stop_threshold, l.start_threshold
            )));
        }
        let v = &self.vision;
        if !(v.camera_fps > 0.0 && v.camera_fps <= 120.0) {
            return Err(invalid(format!(
                "vision.camera_fps = {} must be above 0 and at most 120",
                v.camera_fps
            )));
        }
        if !(0.0..=3600.0).contains(&v.keep_warm_seconds) {
            return Err(invalid(format!(
                "vision.keep_warm_seconds = {} must be between 0 and 3600",
                v.keep_warm_seconds
            )));
        }
        if !(l.max_seconds > 0.0 && l.max_seconds <= 600.0) {
            return Err(invalid(format!(
                "listen.max_seconds = {} must be above 0 and at most 600",
                l.max_seconds
            )));
        }
        if !(100..=10_000).contains(&l.hangover_ms) {
            return Err(invalid(format!(
                "listen.hangover_ms = {} must be between 100 and 10000",
                l.hangover_ms
            )));
        }
        let sp = &self.speech;
        if !(sp.rate >= 0.25 && sp.rate <= 4.0) {
            return Err(invalid(format!(
                "speech.rate = {} must be between 0.25 and 4",
                sp.rate
            )));
        }
        if !(0.0..=2.0).contains(&sp.volume) {
            return Err(invalid(format!(
                "speech.volume = {} must be between 0 and 2",
                sp.volume
            )));
        }
        if !(0.0..=3600.0).contains(&l.follow_up_seconds) {
            return Err(invalid(format!(
                "listen.follow_up_seconds = {} must be between 0 and 3600",
                l.follow_up_seconds
            )));
        }
        if l.mode == ListenMode::Wake && !l.wake_phrase.chars().any(char::is_alphanumeric) {
            return Err(invalid(format!(
                "listen.wake_phrase = {:?} has no words (or set listen.mode = \"push-to-talk\")",
                l.wake_phrase
            )));
        }
        Ok(())
    }

    /// Everything start-up needs to know, looked up once (blocking: it
    /// reads the models directory, the catalogue and `/etc/group`). A
    /// model loaded at start must be there; a `model.name` must at least be
    /// in the catalogue; a vision model that is not installed turns vision
    /// off with the reason in [`Resolved::vision_off`].
    pub fn resolve(self, path: Option<&Path>) -> Result<Resolved, ConfigError> {
        self.check(path)?;
        let missing = |reason: String| ConfigError::ModelMissing {
            path: shown(path),
            reason,
        };
        let v = &self.vision;
        // A path that is given must be there; a catalogue name is looked up
        // (not installed: vision is off, with the pull command).
        if v.enabled && v.model.contains('/') {
            let m = Path::new(&v.model);
            if !m.is_file() && !m.join("config.json").is_file() {
                return Err(missing(format!(
                    "vision.model = {:?}: neither a GGUF file nor a model directory with config.json",
                    v.model
                )));
            }
        }
        if let Some(m) = v.mmproj.as_ref().filter(|m| !m.is_file()) {
            return Err(missing(format!("vision.mmproj = {m:?}: no such file")));
        }
        let catalog = self.model.catalog().map_err(|e| missing(e.to_string()))?;
        let store = self.model.store();
        let model = self.language_model(&catalog, &store).map_err(missing)?;
        let (vision, vision_off) = match v.files(&self.model) {
            Ok(f) => (f, None),
            Err(e) => (None, Some(e)),
        };
        let (voice, speech_off) = self.voice(&store).map_err(missing)?;
        let group = match &self.socket.group {
            None => None,
            Some(g) => Some(resolve_group(g).map_err(|message| ConfigError::Invalid {
                path: shown(path),
                message,
            })?),
        };
        let offload = self.offload.resolve(path)?;
        let http = self.http.resolve(path)?;
        let camera = v
            .camera
            .as_deref()
            .and_then(|c| crate::camera::Source::parse(c, v.camera_width, v.camera_height));
        Ok(Resolved {
            socket: self.socket.resolved_path(),
            group,
            catalog,
            store,
            model,
            vision,
            vision_off,
            voice,
            speech_off,
            camera,
            offload,
            http,
            config: self,
        })
    }

    /// The voice's `.onnx`, or why speech is off. A file that is named
    /// must be there (with its `.onnx.json`); a catalogue voice that is
    /// not installed turns speech off with the pull command.
    fn voice(&self, store: &ModelStore) -> Result<(Option<PathBuf>, Option<String>), String> {
        let sp = &self.speech;
        if !sp.enabled {
            return Ok((None, None));
        }
        let as_file = sp.voice.contains('/') || sp.voice.ends_with(".onnx");
        if as_file {
            let onnx = PathBuf::from(&sp.voice);
            let json = seer_models::piper::config_path(&onnx);
            if !onnx.is_file() {
                return Err(format!("speech.voice = {:?}: no such file", sp.voice));
            }
            if !json.is_file() {
                return Err(format!(
                    "speech.voice = {:?}: its config {} is missing (a Piper voice is NAME.onnx + NAME.onnx.json)",
                    sp.voice,
                    json.display()
                ));
            }
            return Ok((Some(onnx), None));
        }
        match store.resolve(&sp.voice) {
            Ok(p) => Ok((Some(p), None)),
            Err(e) => Ok((
                None,
                Some(format!(
                    "speech.voice = {:?} is not installed ({e}); `seer models pull {}` installs it",
                    sp.voice, sp.voice
                )),
            )),
        }
    }

    /// The language model's file, or its catalogue name while a lazy model
    /// is not installed yet.
    fn language_model(&self, catalog: &Catalog, store: &ModelStore) -> Result<PathBuf, String> {
        let m = &self.model;
        if let Some(p) = &m.path {
            if m.load == LoadWhen::Start && !p.exists() {
                return Err(format!("model.path = {p:?} does not exist"));
            }
            return Ok(p.clone());
        }
        let installed = matches!(store.manifest(&m.name), Ok(Some(_)));
        if !installed && catalog.get(&m.name).is_none() {
            return Err(format!(
                "model.name = {:?} is neither installed in {} nor in the catalogue (`seer models list`)",
                m.name,
                store.dir().display()
            ));
        }
        match store.resolve(&m.name) {
            Ok(p) => Ok(p),
            Err(e) if m.load == LoadWhen::Start => Err(format!("model.name = {:?}: {e}", m.name)),
            Err(_) => Ok(PathBuf::from(&m.name)),
        }
    }
}

/// The config file as errors name it.
fn shown(path: Option<&Path>) -> PathBuf {
    path.map(Path::to_owned)
        .unwrap_or_else(|| "(defaults)".into())
}

/// The configuration after defaults, environment and look-ups, computed
/// once at start-up by [`Config::resolve`].
#[derive(Debug)]
pub struct Resolved {
    /// What the file said.
    pub config: Config,
    /// The socket path (`SEER_SOCKET`, `socket.path`, or the default).
    pub socket: PathBuf,
    /// `socket.group` as a gid.
    pub group: Option<u32>,
    /// The built-in catalogue plus the configured one.
    pub catalog: Catalog,
    /// The models directory.
    pub store: ModelStore,
    /// The language model's file (or its name, lazy and not installed yet).
    pub model: PathBuf,
    /// The vision-language model's files; `None`: vision is off.
    pub vision: Option<VlmFiles>,
    /// Why vision is off although it is enabled (not installed, …).
    pub vision_off: Option<String>,
    /// Where camera frames come from; `None`: no camera.
    pub camera: Option<crate::camera::Source>,
    /// The voice's `.onnx`; `None`: speech is off.
    pub voice: Option<PathBuf>,
    /// Why speech is off although it is enabled (voice not installed).
    pub speech_off: Option<String>,
    /// The offload server (`None`: offload is off).
    pub offload: Option<seer_pipelines::offload::OffloadConfig>,
    /// The HTTP API (`None`: off).
    pub http: Option<HttpResolved>,
}

/// Resolves `socket.group` (a name from /etc/group, or a numeric id).
fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups =
        std::fs::read_to_string("/etc/group").map_err(|e| format!("reading /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("socket.group = {group:?}: no such group in /etc/group"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vision_model_is_a_name_or_a_path() {
        use seer_models::generate::VlmFiles;
        let dir = tempfile::tempdir().expect("tempdir");
        let models = ModelConfig {
            models_dir: Some(dir.path().to_owned()),
            ..ModelConfig::default()
        };
        // The default name, not installed: the error says how to get it.
        let err = VisionConfig::default()
            .files(&models)
            .expect_err("not installed");
        assert!(
            err.contains("seer models pull smolvlm-256m-instruct"),
            "{err}"
        );
        // Off.
        let off = VisionConfig {
            enabled: false,
            ..VisionConfig::default()
        };
        assert_eq!(off.files(&models), Ok(None));
        // A GGUF finds the mmproj beside it, as the catalogue installs them.
        let gguf = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/smolvlm-tiny/gguf/model.gguf");
        let v = VisionConfig {
            model: gguf.display().to_string(),
            ..VisionConfig::default()
        };
        match v.files(&models) {
            Ok(Some(VlmFiles::GgufPair { mmproj, .. })) => {
                assert!(mmproj.ends_with("mmproj.gguf"), "{mmproj:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = Config::parse("", Path::new("c.toml")).expect("empty config");
        assert_eq!(c.socket.max_line_bytes, 16 << 20);
        assert_eq!(c.model.load, LoadWhen::Start);
    }

    #[test]
    fn not_set_is_leaving_the_key_out() {
        let c = Config::parse("", Path::new("c.toml")).expect("empty config");
        assert_eq!(c.socket.path, None);
        assert_eq!(c.model.backend, Backend::Auto);
        let e = Config::parse("[socket]\npath = \"\"\n", Path::new("c.toml"))
            .expect_err("empty path")
            .to_string();
        assert!(e.contains("path") && e.contains("leave the key out"), "{e}");
        let e = Config::parse("[model]\nbackend = \"tpu\"\n", Path::new("c.toml"))
            .expect_err("unknown backend")
            .to_string();
        assert!(e.contains("tpu") && e.contains("wgpu"), "{e}");
        // What --print-config writes reads back the same.
        let c = Config::parse("[vision]\ncamera = \"v4l2:\"\n", Path::new("c.toml")).expect("c");
        let text = toml::to_string_pretty(&c).expect("toml");
        let back = Config::parse(&text, Path::new("p.toml")).expect("round trip");
        assert_eq!(back.vision.camera.as_deref(), Some("v4l2:"));
        assert_eq!(back.socket.path, None);
    }

    #[test]
    fn unknown_key_and_wrong_type_are_named() {
        let e = Config::parse("[model]\npaht = \"x\"\n", Path::new("c.toml"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("c.toml") && e.contains("paht"), "{e}");
        let e = Config::parse("[socket]\nmax_line_bytes = \"big\"\n", Path::new("c.toml"))
            .expect_err("wrong type")
            .to_string();
        assert!(e.contains("max_line_bytes"), "{e}");
    }

    #[test]
    fn listen_values_are_checked() {
        let c = Config::parse("[listen]\nmode = \"always\"\n", Path::new("c.toml"))
            .expect_err("bad mode")
            .to_string();
        assert!(c.contains("mode") || c.contains("always"), "{c}");
        let c = Config::parse(
            "[listen]\nstart_threshold = 0.3\nstop_threshold = 0.6\n",
            Path::new("c.toml"),
        )
        .expect("parses");
        let e = c
            .check(Some(Path::new("c.toml")))
            .expect_err("hysteresis")
            .to_string();
        assert!(
            e.contains("listen.stop_threshold") && e.contains("c.toml"),
            "{e}"
        );
        let c =
            Config::parse("[listen]\nwake_phrase = \" ,\"\n", Path::new("c.toml")).expect("parses");
        let e = c.check(None).expect_err("empty phrase").to_string();
        assert!(e.contains("listen.wake_phrase"), "{e}");
        for bad in ["follow_up_seconds = inf", "hangover_ms = 0"] {
            let c =
                Config::parse(&format!("[listen]\n{bad}\n"), Path::new("c.toml")).expect("parses");
            let e = c.check(None).expect_err(bad).to_string();
            assert!(e.contains(bad.split(' ').next().unwrap_or(bad)), "{e}");
        }
        let c = Config::parse("[listen]\nmode = \"push-to-talk\"\n", Path::new("c.toml"))
            .expect("parses");
        assert_eq!(c.listen.mode, ListenMode::PushToTalk);
    }

    #[test]
    fn speech_values_are_checked_and_a_named_voice_file_must_exist() {
        for bad in ["rate = 0.1", "volume = 3.0", "rate = nan"] {
            let c =
                Config::parse(&format!("[speech]\n{bad}\n"), Path::new("c.toml")).expect("parses");
            let e = c.check(None).expect_err(bad).to_string();
            assert!(
                e.contains(&format!("speech.{}", bad.split(' ').next().unwrap_or(bad))),
                "{e}"
            );
        }
        let e = Config::parse("[speech]\nvoices = \"x\"\n", Path::new("c.toml"))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("voices") && e.contains("c.toml"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let onnx = dir.path().join("v.onnx");
        std::fs::write(&onnx, b"x").expect("write");
        let store = ModelStore::new(dir.path().join("models"));
        let mut c = Config::default();
        c.speech.voice = onnx.display().to_string();
        let e = c.voice(&store).expect_err("no json");
        assert!(e.contains("v.onnx.json"), "{e}");
        c.speech.voice = dir.path().join("none.onnx").display().to_string();
        let e = c.voice(&store).expect_err("no file");
        assert!(e.contains("none.onnx") && e.contains("no such file"), "{e}");
        c.speech.voice = DEFAULT_VOICE.into();
        let (voice, off) = c.voice(&store).expect("not installed is not an error");
        assert!(voice.is_none());
        assert!(off.is_some_and(|o| o.contains("seer models pull piper-en-us-ljspeech-medium")));
        c.speech.enabled = false;
        assert_eq!(c.voice(&store).expect("off"), (None, None));
    }
}
