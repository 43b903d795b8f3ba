//! The plain data of a generation: what to generate ([`Request`], with an
//! [`ImagePrompt`] for a photo), where a vision-language model's files are
//! ([`VlmFiles`]), and how it went ([`Output`], [`StopReason`], [`Timings`]).

use super::sampling::Sampling;

/// Seer's default system prompt. Small models are fragile: with SmolLM2-135M
/// Q4_1 the template's own default prompt and several plain ones ("You are a
/// helpful assistant.") turn "What is the capital of France?" into nonsense,
/// and one wording that works under llama.cpp's numerics fails under exact f32
/// ones. This one answers France/Japan/Italy/spider-legs correctly under both
/// (measured with `scripts/run.sh`, `--weights native|f32`).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Seer, a helpful voice assistant on smart glasses. Answer in one short sentence.";

/// What to generate.
#[derive(Debug, Clone)]
pub struct Request {
    /// The prompt, already tokenized (see [`Engine::chat_prompt`]).
    pub prompt: Vec<u32>,
    /// Stop after this many generated tokens.
    pub max_tokens: usize,
    /// Stop when the text contains any of these (the stop string is not returned).
    pub stop: Vec<String>,
    /// Token selection.
    pub sampling: Sampling,
    /// Keep generating past end-of-sequence tokens (benchmarks only).
    pub ignore_eos: bool,
    /// The prompt's input embeddings `[prompt, hidden]` when they are not
    /// just the token embeddings (image features merged in); see
    /// [`Engine::image_prompt`].
    pub embeds: Option<burn::tensor::Tensor<2>>,
    /// Time already spent encoding the prompt's images, reported in
    /// [`Timings::image_encode_ms`].
    pub image_encode_ms: f64,
}

impl Request {
    /// A greedy request for `max_tokens` tokens.
    pub fn new(prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt,
            max_tokens,
            stop: Vec::new(),
            sampling: Sampling::default(),
            ignore_eos: false,
            embeds: None,
            image_encode_ms: 0.0,
        }
    }

    /// A greedy request that answers an [`ImagePrompt`].
    pub fn with_image(prompt: ImagePrompt, max_tokens: usize) -> Self {
        let mut r = Self::new(prompt.ids, max_tokens);
        r.embeds = Some(prompt.embeds);
        r.image_encode_ms = prompt.encode_ms;
        r
    }
}

/// A prompt with an image in it, ready for [`Request::with_image`].
#[derive(Debug, Clone)]
pub struct ImagePrompt {
    /// Token ids, `<image>` placeholders expanded.
    pub ids: Vec<u32>,
    /// Their input embeddings with the image features merged in.
    pub embeds: burn::tensor::Tensor<2>,
    /// Tiles the image was cut into (1 when untiled).
    pub tiles: usize,
    /// Image tokens in `ids`.
    pub image_tokens: usize,
    /// Preprocessing and vision-tower time.
    pub encode_ms: f64,
}

/// Where a vision-language model's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlmFiles {
    /// An HF SmolVLM directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`, processor configs), as published on the Hub.
    HfDir(std::path::PathBuf),
    /// llama.cpp's pair: the decoder GGUF and the `mmproj` GGUF.
    GgufPair {
        /// The language model.
        model: std::path::PathBuf,
        /// The vision tower and projector.
        mmproj: std::path::PathBuf,
    },
}

/// The paths a user configured, as `describe` and logs name them.
impl std::fmt::Display for VlmFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HfDir(dir) => write!(f, "{}", dir.display()),
            Self::GgufPair { model, mmproj } => {
                write!(f, "{} + {}", model.display(), mmproj.display())
            }
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-sequence / end-of-turn token.
    Eos,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The [`CancelToken`](seer_cancel::CancelToken) was triggered.
    Cancelled,
}

/// Where the time went.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of those, how many were already in the engine's key/value cache from
    /// the previous turn (a shared system prompt and history), so prefill
    /// ran only the rest.
    #[serde(default)]
    pub cached_tokens: usize,
    /// Tokens generated (including a final end-of-sequence token).
    pub generated_tokens: usize,
    /// From the start of prefill to the first sampled token.
    pub time_to_first_token_ms: f64,
    /// Prefill wall time.
    pub prefill_ms: f64,
    /// Decode wall time (all tokens after the first).
    pub decode_ms: f64,
    /// Prompt tokens prefilled (not cached) per second.
    pub prefill_tokens_per_s: f64,
    /// Resizing, tiling and the vision tower, before prefill (0 without an image).
    pub image_encode_ms: f64,
    /// Generated tokens per second after the first.
    pub decode_tokens_per_s: f64,
}

/// The result of a finished generation.
#[derive(Debug, Clone)]
pub struct Output {
    /// All text generated (stop string excluded).
    pub text: String,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Timings.
    pub timings: Timings,
}
