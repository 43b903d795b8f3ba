//! The socket protocol, version 1: one JSON object per line, every message
//! carries `"v": 1`; requests carry a client-chosen `id` that every event
//! answering them echoes. See `docs/protocol.md`.
//!
//! Both directions are typed: [`Request`] and [`Event`] are `serde` enums
//! tagged by `type`, so the daemon, the `seer` CLI and the tests share one
//! definition of every message. [`parse`] adds the checks serde cannot say
//! well (version, empty ids, exactly one image source) and [`encode`] /
//! [`decode`] add and remove the `v` and `id` every message carries.

use seer_models::generate::{StopReason, Timings};
pub use seer_pipelines::answer::Backend;
pub use seer_pipelines::offload::RemoteHealth;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Protocol version spoken here.
pub const VERSION: u64 = 1;

/// Stable error codes (`error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// Malformed or invalid request.
    BadRequest,
    /// The model could not be loaded.
    ModelMissing,
    /// A device (microphone, camera, GPU) is not available.
    DeviceUnavailable,
    /// Too many turns queued.
    Busy,
    /// Line or payload over the limit.
    TooLarge,
    /// Nothing configured here can serve the request.
    Unsupported,
    /// The peer is not allowed to use this socket.
    PermissionDenied,
    /// A model download failed (HTTP error, network); pulling again resumes.
    DownloadFailed,
    /// Downloaded bytes did not match the published sha256.
    ChecksumMismatch,
    /// Not enough disk space for a download.
    NoSpace,
    /// The offload server failed and `[offload] mode = "only"` allows no
    /// local answer (or it failed after the answer began).
    OffloadFailed,
    /// A bug or unexpected failure.
    Internal,
}

impl Code {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::ModelMissing => "model_missing",
            Code::DeviceUnavailable => "device_unavailable",
            Code::Busy => "busy",
            Code::TooLarge => "too_large",
            Code::Unsupported => "unsupported",
            Code::PermissionDenied => "permission_denied",
            Code::DownloadFailed => "download_failed",
            Code::ChecksumMismatch => "checksum_mismatch",
            Code::NoSpace => "no_space",
            Code::OffloadFailed => "offload_failed",
            Code::Internal => "internal",
        }
    }
}

/// Request types that belong to subsystems not built yet (none today);
/// `describe` lists them so clients can tell "not here" from "unknown".
pub const UNSUPPORTED: &[&str] = &[];

/// Request types served.
pub const SUPPORTED: &[&str] = &[
    "ask",
    "cancel",
    "stop",
    "subscribe",
    "status",
    "describe",
    "models.list",
    "models.pull",
    "listen.start",
    "listen.stop",
    "set",
    "say",
];

/// Broadcast topics a client may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// The assistant's state, and the camera's indicator.
    State,
    /// What the microphone hears (hands-free turns, transcripts).
    Voice,
}

/// Topic names, for `describe`.
pub const SUBSCRIBABLE: &[&str] = &["state", "voice"];

/// A request, as the wire has it (without `v`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum Request {
    /// Ask a question.
    #[serde(rename = "ask")]
    Ask(AskRequest),
    /// Cancel the request with this id (on this connection).
    #[serde(rename = "cancel")]
    Cancel {
        /// The request to cancel.
        id: String,
    },
    /// Cancel every queued and running turn.
    #[serde(rename = "stop")]
    Stop {
        /// Echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Receive broadcast events.
    #[serde(rename = "subscribe")]
    Subscribe {
        /// Echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The topics.
        events: Vec<Topic>,
    },
    /// Current state and queue.
    #[serde(rename = "status")]
    Status {
        /// Echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Version, models, capabilities.
    #[serde(rename = "describe")]
    Describe {
        /// Echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// The catalogue and what is installed.
    #[serde(rename = "models.list")]
    ModelsList {
        /// Echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Download a catalogue model.
    #[serde(rename = "models.pull")]
    ModelsPull {
        /// Echoed by every event of the pull; `cancel` takes it.
        id: String,
        /// The catalogue name.
        name: String,
    },
    /// Push-to-talk pressed: capture from the microphone.
    #[serde(rename = "listen.start")]
    ListenStart {
        /// Echoed by the transcript and the answer that follow.
        id: String,
    },
    /// Push-to-talk released: transcribe and answer.
    #[serde(rename = "listen.stop")]
    ListenStop {
        /// The `listen.start`'s id.
        id: String,
    },
    /// Change a setting (today: the privacy switch).
    #[serde(rename = "set")]
    Set {
        /// Echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Mute (true) or unmute the microphone and camera.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        muted: Option<bool>,
        /// Turn spoken answers on or off (muting does not silence them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        speech: Option<bool>,
    },
    /// Speak `text` aloud.
    #[serde(rename = "say")]
    Say {
        /// Echoed by `speech.start` and `speech.end`; `cancel` takes it.
        id: String,
        /// What to say.
        text: String,
    },
}

/// `ask`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// Client-chosen id, echoed by every event of this turn.
    pub id: String,
    /// The question.
    pub text: String,
    /// Continue this conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Answer length limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Stream `answer.delta` events (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// An image to look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// Also speak the answer aloud (then `speech.end` is the last event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speak: Option<bool>,
}

impl AskRequest {
    /// A plain question with `id`.
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            text: text.into(),
            conversation: None,
            max_tokens: None,
            stream: None,
            image: None,
            speak: None,
        }
    }
}

/// Where an `ask`'s image comes from. On the wire an object with exactly
/// one of `path`, `base64` or `camera: true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ImageFields", into = "ImageFields")]
pub enum ImageRef {
    /// A file the daemon reads.
    Path(PathBuf),
    /// The file's bytes, base64 (standard alphabet, padding optional).
    Base64(String),
    /// The camera's current (sharpest recent) frame.
    Camera,
}

/// [`ImageRef`]'s wire shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    camera: Option<bool>,
}

impl TryFrom<ImageFields> for ImageRef {
    type Error = String;

    fn try_from(f: ImageFields) -> Result<Self, String> {
        match (f.path, f.base64, f.camera) {
            (Some(p), None, None) => Ok(ImageRef::Path(p)),
            (None, Some(b), None) => Ok(ImageRef::Base64(b)),
            (None, None, Some(true)) => Ok(ImageRef::Camera),
            _ => Err("ask.image: give exactly one of `path`, `base64` or `camera: true`".into()),
        }
    }
}

impl From<ImageRef> for ImageFields {
    fn from(i: ImageRef) -> Self {
        match i {
            ImageRef::Path(p) => ImageFields {
                path: Some(p),
                ..Default::default()
            },
            ImageRef::Base64(b) => ImageFields {
                base64: Some(b),
                ..Default::default()
            },
            ImageRef::Camera => ImageFields {
                camera: Some(true),
                ..Default::default()
            },
        }
    }
}

/// What the assistant (or one turn) is doing, as `state {state}` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// Nothing running.
    Idle,
    /// A turn waits behind others (`position` says how many).
    Queued,
    /// Capturing speech.
    Listening,
    /// Turning speech into text.
    Transcribing,
    /// Generating an answer.
    Thinking,
    /// Speaking an answer.
    Speaking,
}

impl From<seer_pipelines::state::State> for Activity {
    fn from(s: seer_pipelines::state::State) -> Self {
        use seer_pipelines::state::State;
        match s {
            State::Idle => Activity::Idle,
            State::Listening => Activity::Listening,
            State::Transcribing => Activity::Transcribing,
            State::Thinking => Activity::Thinking,
            State::Speaking => Activity::Speaking,
        }
    }
}

/// Where a transcript came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscriptSource {
    /// The always-on listener (after the wake phrase, or a follow-up).
    HandsFree,
    /// A push-to-talk capture.
    PushToTalk,
}

/// How long a hands-free utterance took to hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeardTimings {
    /// The utterance's audio, ms.
    pub audio_ms: u64,
    /// Whisper's time, ms.
    pub transcribe_ms: u64,
    /// From the end of speech to the transcript, ms.
    pub end_of_speech_ms: u64,
    /// Whisper ran while the speaker's pause was still being timed (the
    /// hangover), and the pause turned out to be the end.
    #[serde(default)]
    pub early: bool,
}

/// `transcript.final`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// What whisper heard.
    pub text: String,
    /// Where it came from (voice subscribers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<TranscriptSource>,
    /// The question asked (the words after the wake phrase; hands-free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
    /// Whether the wake phrase was said (hands-free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<bool>,
    /// Timings (hands-free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<HeardTimings>,
}

/// The camera as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraStatus {
    /// Capturing now (the privacy indicator).
    pub active: bool,
    /// The configured source, if any.
    pub source: Option<String>,
    /// How long it stays open after a look, seconds.
    pub keep_warm_s: f64,
}

/// The language model as `status` and `describe` name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The file or directory (or the catalogue name until a lazy model is
    /// installed).
    pub path: PathBuf,
    /// `auto`, `cpu` or `wgpu`.
    pub backend: String,
}

/// The vision-language model as `describe` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionInfo {
    /// Its files.
    pub files: String,
    /// Whether photos are tiled.
    pub tiling: bool,
}

/// `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// What the assistant is doing.
    pub state: Activity,
    /// The privacy switch.
    pub muted: bool,
    /// Whether audio flows from the microphone.
    pub microphone: bool,
    /// The camera.
    pub camera: CameraStatus,
    /// Turns waiting or running.
    pub pending: usize,
    /// Whether answers can be spoken now (a voice is loaded and speech is
    /// on).
    pub speech: bool,
    /// The language model.
    pub model: ModelInfo,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The offload server's health (absent: offload is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<RemoteHealth>,
}

/// `describe.capabilities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Typed questions.
    pub text: bool,
    /// Push-to-talk (listening is not off).
    pub voice: bool,
    /// The always-on listener runs.
    pub hands_free: bool,
    /// A vision model is configured.
    pub vision: bool,
    /// A camera is configured.
    pub camera: bool,
    /// `models.list` / `models.pull`.
    pub models: bool,
    /// Spoken answers (`say`, `ask {speak}`): a voice is configured.
    pub speech: bool,
}

/// `describe.models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Models {
    /// The language model.
    pub language: ModelInfo,
    /// The vision-language model (`null` when vision is off).
    pub vision: Option<VisionInfo>,
    /// The voice's `.onnx` (`null` when speech is off).
    pub voice: Option<PathBuf>,
}

/// `describe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Describe {
    /// Seer's version.
    pub version: String,
    /// The protocol version.
    pub protocol: u64,
    /// Request types served.
    pub requests: Vec<String>,
    /// Request types known but not served by this build.
    pub unsupported: Vec<String>,
    /// Topics for `subscribe`.
    pub subscribable: Vec<String>,
    /// What this daemon can do.
    pub capabilities: Capabilities,
    /// Its models.
    pub models: Models,
    /// The offload server (absent: offload is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<RemoteHealth>,
    /// The OpenAI-compatible HTTP API's address (absent: it is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

/// `models.progress`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The model.
    pub name: String,
    /// The file being fetched (`null` for the whole model).
    pub file: Option<String>,
    /// Bytes present.
    pub completed: u64,
    /// Bytes in all, if the server said.
    pub total: Option<u64>,
}

/// `models.pulled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pulled {
    /// The model.
    pub name: String,
    /// Where it is installed.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// It was there already; nothing was fetched.
    pub already_installed: bool,
}

/// An event, as the wire has it (without `v` and `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// The assistant's state (subscribers) or a turn's (queued, thinking,
    /// listening, transcribing).
    #[serde(rename = "state")]
    State {
        /// The state.
        state: Activity,
        /// Turns ahead of a queued one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<usize>,
    },
    /// More answer text.
    #[serde(rename = "answer.delta")]
    AnswerDelta {
        /// The new text.
        text: String,
    },
    /// The answer is complete.
    #[serde(rename = "answer.end")]
    AnswerEnd {
        /// The whole answer.
        text: String,
        /// Why it ended.
        stop_reason: StopReason,
        /// Where the time went.
        timings: Timings,
        /// Which engine answered: `local`, or `remote` (`[offload]`).
        #[serde(default)]
        backend: Backend,
    },
    /// The request was cancelled.
    #[serde(rename = "cancelled")]
    Cancelled {},
    /// The request failed.
    #[serde(rename = "error")]
    Error {
        /// Stable code.
        code: Code,
        /// What was wrong.
        message: String,
    },
    /// `stop` was done.
    #[serde(rename = "stopped")]
    Stopped {},
    /// `subscribe` took effect.
    #[serde(rename = "subscribed")]
    Subscribed {
        /// The topics.
        events: Vec<Topic>,
    },
    /// `set` took effect.
    #[serde(rename = "set")]
    Set {
        /// The privacy switch now.
        muted: bool,
        /// Whether answers are spoken now.
        speech: bool,
    },
    /// Audio of the request began to play.
    #[serde(rename = "speech.start")]
    SpeechStart {
        /// The voice's sample rate, Hz.
        sample_rate: u32,
    },
    /// The request's speech is over; for a spoken request this is the
    /// last event.
    #[serde(rename = "speech.end")]
    SpeechEnd {
        /// `done`, `cancelled` or `error`.
        reason: String,
        /// What failed (`reason: error`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Seconds of audio played.
        audio_s: f64,
    },
    /// `status`.
    #[serde(rename = "status")]
    Status(Status),
    /// `describe`.
    #[serde(rename = "describe")]
    Describe(Describe),
    /// `models.list`.
    #[serde(rename = "models.list")]
    ModelsList {
        /// One row per model.
        models: Vec<Value>,
        /// The models directory.
        dir: PathBuf,
    },
    /// Download progress.
    #[serde(rename = "models.progress")]
    ModelsProgress(Progress),
    /// A pull finished.
    #[serde(rename = "models.pulled")]
    ModelsPulled(Pulled),
    /// What was heard.
    #[serde(rename = "transcript.final")]
    TranscriptFinal(Transcript),
    /// The microphone's state (voice subscribers).
    #[serde(rename = "microphone")]
    Microphone {
        /// Whether audio flows.
        active: bool,
        /// The device, when it opened.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// Why it stopped, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Whether hands-free listening runs (first event only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hands_free: Option<bool>,
    },
    /// The camera's privacy indicator (state subscribers).
    #[serde(rename = "camera")]
    Camera {
        /// Capturing now.
        active: bool,
        /// A failure while open.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The wake phrase alone was said.
    #[serde(rename = "wake")]
    Wake {
        /// What whisper heard.
        text: String,
    },
    /// A spoken command ("stop").
    #[serde(rename = "voice.command")]
    VoiceCommand {
        /// The command.
        command: String,
        /// What whisper heard.
        text: String,
    },
}

impl Event {
    /// An `error` event.
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Event::Error {
            code,
            message: message.into(),
        }
    }

    /// A `state` event without a position.
    pub fn state(state: impl Into<Activity>) -> Self {
        Event::State {
            state: state.into(),
            position: None,
        }
    }

    /// Whether this event ends the request it answers.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Event::AnswerEnd { .. }
                | Event::Cancelled {}
                | Event::Error { .. }
                | Event::ModelsPulled(_)
        )
    }
}

/// A request that could not be parsed: the code, a message naming the
/// problem, and the id if one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// `bad_request`.
    pub code: Code,
    /// What was wrong.
    pub message: String,
    /// The request id, when the line had a readable one.
    pub id: Option<String>,
}

fn bad(message: impl Into<String>, id: Option<String>) -> ParseError {
    ParseError {
        code: Code::BadRequest,
        message: message.into(),
        id,
    }
}

/// Parses one request line (without its newline).
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        if std::str::from_utf8(line).is_err() {
            bad("the line is not valid UTF-8", None)
        } else {
            bad(format!("invalid JSON: {e}"), None)
        }
    })?;
    let Value::Object(mut obj) = value else {
        return Err(bad("a request must be a JSON object", None));
    };
    let id = obj.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    match obj.remove("v") {
        None => return Err(bad("missing field `v` (protocol version, must be 1)", id)),
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(bad(
                format!("unsupported protocol version {v}; this daemon speaks v1"),
                id,
            ));
        }
    }
    let kind = match obj.get("type") {
        None => return Err(bad("missing field `type`", id)),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(bad(
                format!("field `type` must be a string, not {other}"),
                id,
            ));
        }
    };
    if !SUPPORTED.contains(&kind.as_str()) {
        return Err(bad(
            format!(
                "unknown request type `{kind}` (known: {})",
                SUPPORTED.join(", ")
            ),
            id,
        ));
    }
    let req: Request = serde_json::from_value(Value::Object(obj))
        .map_err(|e| bad(format!("{kind}: {e}"), id.clone()))?;
    check(&req).map_err(|m| bad(m, id))?;
    Ok(req)
}

/// What serde cannot check: empty ids and texts, an empty `set`.
fn check(req: &Request) -> Result<(), String> {
    match req {
        Request::Ask(a) if a.text.trim().is_empty() => Err("ask: `text` is empty".into()),
        Request::Ask(a) if a.id.is_empty() => Err("ask: `id` is empty".into()),
        Request::ListenStart { id } if id.is_empty() => Err("listen.start: `id` is empty".into()),
        Request::ListenStop { id } if id.is_empty() => Err("listen.stop: `id` is empty".into()),
        Request::ModelsPull { id, name } if id.is_empty() || name.is_empty() => {
            Err("models.pull: `id` and `name` must not be empty".into())
        }
        Request::Set {
            muted: None,
            speech: None,
            ..
        } => Err("set: nothing to set (settable: `muted`, `speech`)".into()),
        Request::Say { id, .. } if id.is_empty() => Err("say: `id` is empty".into()),
        Request::Say { text, .. } if text.trim().is_empty() => Err("say: `text` is empty".into()),
        _ => Ok(()),
    }
}

/// Adds `v` and `type` (and `id` when given) to a message body.
fn envelope(mut body: Value, id: Option<&str>) -> String {
    if let Value::Object(m) = &mut body {
        m.insert("v".into(), json!(VERSION));
        if let Some(id) = id {
            m.insert("id".into(), json!(id));
        }
    }
    body.to_string()
}

/// The line for `event` answering request `id` (none for broadcasts).
pub fn encode(id: Option<&str>, event: &Event) -> String {
    // Every field is a string, number, bool, list or string-keyed map, so
    // conversion cannot fail; if it ever did, the client still gets a line.
    let body = serde_json::to_value(event).unwrap_or_else(
        |e| json!({"type": "error", "code": "internal", "message": format!("encoding an event: {e}")}),
    );
    envelope(body, id)
}

/// The line for `request` (clients).
pub fn encode_request(request: &Request) -> String {
    let body = serde_json::to_value(request).unwrap_or_else(|_| json!({}));
    envelope(body, None)
}

/// An event line as a client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The request it answers (none for broadcasts).
    pub id: Option<String>,
    /// The event.
    pub event: Event,
}

/// Reads an event line (clients). Unknown fields are ignored, so a newer
/// daemon's additions do not break an older client.
pub fn decode(line: &str) -> Result<Received, serde_json::Error> {
    let mut v: Value = serde_json::from_str(line)?;
    let id = match &mut v {
        Value::Object(m) => {
            m.remove("v");
            m.remove("id").and_then(|i| i.as_str().map(str::to_owned))
        }
        _ => None,
    };
    Ok(Received {
        id,
        event: serde_json::from_value(v)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> ParseError {
        parse(line.as_bytes()).expect_err(line)
    }

    #[test]
    fn parses_requests() {
        let r = parse(br#"{"v":1,"type":"ask","id":"a","text":"hi","max_tokens":5}"#).expect("ask");
        assert!(matches!(r, Request::Ask(a) if a.text == "hi" && a.max_tokens == Some(5)));
        assert_eq!(
            parse(br#"{"v":1,"type":"cancel","id":"a"}"#).expect("cancel"),
            Request::Cancel { id: "a".into() }
        );
        assert_eq!(
            parse(br#"{"v":1,"type":"set","id":"m","muted":true}"#).expect("set"),
            Request::Set {
                id: Some("m".into()),
                muted: Some(true),
                speech: None,
            }
        );
        assert_eq!(
            err(r#"{"v":1,"type":"set","id":"m"}"#).code,
            Code::BadRequest
        );
        assert_eq!(
            err(r#"{"v":1,"type":"set","id":"m","volume":3}"#).code,
            Code::BadRequest
        );
        assert_eq!(
            parse(br#"{"v":1,"type":"models.pull","id":"m","name":"x"}"#).expect("pull"),
            Request::ModelsPull {
                id: "m".into(),
                name: "x".into()
            }
        );
        assert!(
            err(r#"{"v":1,"type":"models.pull","id":"m"}"#)
                .message
                .contains("name")
        );
        assert_eq!(
            parse(br#"{"v":1,"type":"subscribe","events":["state","voice"]}"#).expect("sub"),
            Request::Subscribe {
                id: None,
                events: vec![Topic::State, Topic::Voice]
            }
        );
        assert!(
            err(r#"{"v":1,"type":"subscribe","events":["tv"]}"#)
                .message
                .contains("tv")
        );
    }

    #[test]
    fn images_are_one_of_three() {
        let r = parse(br#"{"v":1,"type":"ask","id":"a","text":"hi","image":{"camera":true}}"#);
        assert!(matches!(r, Ok(Request::Ask(a)) if a.image == Some(ImageRef::Camera)));
        for bad in [
            r#"{"camera":false}"#,
            r#"{}"#,
            r#"{"path":"/a","base64":"AA"}"#,
        ] {
            let line = format!(r#"{{"v":1,"type":"ask","id":"a","text":"hi","image":{bad}}}"#);
            let e = err(&line);
            assert!(e.message.contains("exactly one"), "{bad}: {e:?}");
            assert_eq!(e.id.as_deref(), Some("a"));
        }
    }

    #[test]
    fn names_the_problem() {
        assert!(err("{").message.contains("invalid JSON"));
        assert!(err("[1]").message.contains("object"));
        assert!(err(r#"{"type":"ask"}"#).message.contains("`v`"));
        assert!(err(r#"{"v":2,"type":"ask"}"#).message.contains("version"));
        assert!(
            err(r#"{"v":1,"type":"fly","id":"x"}"#)
                .message
                .contains("unknown request type `fly`")
        );
        let e = err(r#"{"v":1,"type":"ask","id":"x"}"#);
        assert!(
            e.message.contains("missing field `text`") && e.id.as_deref() == Some("x"),
            "{e:?}"
        );
        assert!(
            err(r#"{"v":1,"type":"ask","id":"x","text":5}"#)
                .message
                .contains("invalid type")
        );
        assert!(
            err(r#"{"v":1,"type":"ask","id":"x","text":"  "}"#)
                .message
                .contains("empty")
        );
        assert!(
            err(r#"{"v":1,"type":"ask","id":"x","text":"a","colour":1}"#)
                .message
                .contains("colour")
        );
        assert!(
            err(r#"{"v":1,"type":"status","id":"x","colour":1}"#)
                .message
                .contains("colour")
        );
        assert!(
            parse(&[0xff, 0xfe])
                .expect_err("utf8")
                .message
                .contains("UTF-8")
        );
    }

    #[test]
    fn requests_and_events_round_trip() {
        let mut a = AskRequest::new("q1", "What is this?");
        a.image = Some(ImageRef::Path("/tmp/p.jpg".into()));
        let req = Request::Ask(a);
        let line = encode_request(&req);
        assert_eq!(
            serde_json::from_str::<Value>(&line).expect("json"),
            json!({"v":1,"type":"ask","id":"q1","text":"What is this?","image":{"path":"/tmp/p.jpg"}})
        );
        assert_eq!(parse(line.as_bytes()).expect("parses"), req);

        let ev = Event::State {
            state: Activity::Queued,
            position: Some(2),
        };
        let line = encode(Some("q1"), &ev);
        assert_eq!(
            serde_json::from_str::<Value>(&line).expect("json"),
            json!({"v":1,"type":"state","id":"q1","state":"queued","position":2})
        );
        let got = decode(&line).expect("decodes");
        assert_eq!(got.id.as_deref(), Some("q1"));
        assert_eq!(got.event, ev);
        let line = encode(None, &Event::Cancelled {});
        assert_eq!(
            serde_json::from_str::<Value>(&line).expect("json"),
            json!({"v":1,"type":"cancelled"})
        );
        let e = decode(r#"{"v":1,"type":"error","code":"too_large","message":"m","extra":1}"#)
            .expect("unknown fields are ignored");
        assert_eq!(e.event, Event::error(Code::TooLarge, "m"));
    }
}
