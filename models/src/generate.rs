//! Streaming, cancellable text generation.
//!
//! [`Engine`] owns a [`Llama`] and its [`TextTokenizer`]. [`Engine::generate`]
//! returns a [`Generation`]: an iterator of text pieces that are always whole
//! UTF-8 (a character split across tokens is held back until complete) and
//! never contain a stop string or the start of one. Prefill happens on the
//! first `next()`, so the caller's thread does the compute; run it on a
//! dedicated thread, never on an async executor. [`Generation::finish`] gives
//! the full text, why it stopped, and [`Timings`].
//!
//! Cancellation: a [`CancelToken`] is checked before every forward pass, so a
//! cancel from another thread stops generation within one token.

use crate::device::{self, BackendKind, OpenedDevice};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::{KvCache, Llama, WeightFormat, load_gguf, load_hf};
use crate::tokenizer::{ChatTemplate, Message, TextTokenizer};
use crate::vision::{PreparedImage, Vision};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Seer's default system prompt. Small models are fragile: with SmolLM2-135M
/// Q4_1 the template's own default prompt and several plain ones ("You are a
/// helpful assistant.") turn "What is the capital of France?" into nonsense,
/// and one wording that works under llama.cpp's numerics fails under exact f32
/// ones. This one answers France/Japan/Italy/spider-legs correctly under both
/// (measured with `scripts/run.sh`, `--weights native|f32`).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Seer, a helpful voice assistant on smart glasses. Answer in one short sentence.";

/// The template used for models without one.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// How the next token is chosen. The default is greedy.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// 0 means greedy (argmax); otherwise logits are divided by this.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Divide positive / multiply negative logits of already-seen tokens (1 = off),
    /// as transformers' `RepetitionPenaltyLogitsProcessor` does.
    pub repetition_penalty: f32,
    /// Seed for the sampler: the same seed and inputs give the same text.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidRequest(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature {} must be a finite number ≥ 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(format!(
                "repetition_penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

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

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
    /// The [`CancelToken`] was triggered.
    Cancelled,
}

/// Where the time went.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Timings {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated (including a final end-of-sequence token).
    pub generated_tokens: usize,
    /// From the start of prefill to the first sampled token.
    pub time_to_first_token_ms: f64,
    /// Prefill wall time.
    pub prefill_ms: f64,
    /// Decode wall time (all tokens after the first).
    pub decode_ms: f64,
    /// Prompt tokens per second.
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

/// Shared flag that stops a generation from another thread.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, untriggered token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the generation to stop; it does before its next token.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether two handles control the same generation.
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Options for [`Engine::load`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Which compute backend.
    pub backend: BackendKind,
    /// Maximum tokens per sequence (prompt + answer).
    pub context_length: usize,
    /// How weights are held; `None` picks per backend: ggml blocks with
    /// llama.cpp's integer kernels on the CPU, f32 on wgpu.
    pub weights: Option<WeightFormat>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            backend: BackendKind::Auto,
            context_length: 2048,
            weights: None,
        }
    }
}

/// A loaded language model ready to answer.
#[derive(Debug)]
pub struct Engine {
    model: Llama,
    /// The vision tower of a vision-language model.
    vision: Option<Vision>,
    tokenizer: TextTokenizer,
    device: OpenedDevice,
    context_length: usize,
    load_time: Duration,
}

impl Engine {
    /// Loads a GGUF model (weights and tokenizer) onto the chosen backend.
    pub fn load(path: &Path, opts: &EngineOptions) -> Result<Self> {
        let t0 = Instant::now();
        let device = device::open(opts.backend)?;
        let gguf = GgufFile::open(path)?;
        let tokenizer = TextTokenizer::from_gguf(&gguf)?;
        let format = opts.weights.unwrap_or(match device.kind {
            BackendKind::Cpu => WeightFormat::Native,
            _ => WeightFormat::F32,
        });
        let model = load_gguf(&gguf, &device.device, format)?;
        let load_time = t0.elapsed();
        tracing::info!(
            model = %path.display(),
            layers = model.config().num_layers,
            width = model.config().hidden_size,
            weights = ?format,
            ms = load_time.as_millis() as u64,
            "language model loaded"
        );
        Ok(Self::from_parts(
            model,
            tokenizer,
            device,
            opts.context_length,
            load_time,
        ))
    }

    /// An engine from an already-built model and tokenizer.
    pub fn from_parts(
        model: Llama,
        tokenizer: TextTokenizer,
        device: OpenedDevice,
        context_length: usize,
        load_time: Duration,
    ) -> Self {
        Self {
            model,
            vision: None,
            tokenizer,
            device,
            context_length,
            load_time,
        }
    }

    /// Loads a vision-language model (SmolVLM) from an HF directory or a GGUF
    /// pair. `tiling` cuts large photos into full-resolution tiles plus a
    /// global view (more detail, up to 17× the image tokens).
    pub fn load_vlm(files: &VlmFiles, opts: &EngineOptions, tiling: bool) -> Result<Self> {
        let t0 = Instant::now();
        let device = device::open(opts.backend)?;
        let (model, tokenizer, mut vision) = match files {
            VlmFiles::HfDir(dir) => {
                let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
                let model = load_hf(dir, &device.device)?;
                let vision = Vision::load_hf(dir, &device.device)?;
                (model, tok, vision)
            }
            VlmFiles::GgufPair { model, mmproj } => {
                let gguf = GgufFile::open(model)?;
                let tok = TextTokenizer::from_gguf(&gguf)?;
                let format = opts.weights.unwrap_or(match device.kind {
                    BackendKind::Cpu => WeightFormat::Native,
                    _ => WeightFormat::F32,
                });
                let llama = load_gguf(&gguf, &device.device, format)?;
                let image_token = tok
                    .token_to_id(crate::vision::IMAGE_PLACEHOLDER)
                    .ok_or_else(|| {
                        ModelError::Tokenizer(format!(
                            "{}: the vocabulary has no `<image>` token; not a vision-language model",
                            model.display()
                        ))
                    })?;
                let vision = Vision::load_mmproj(mmproj, image_token, &device.device)?;
                (llama, tok, vision)
            }
        };
        vision.check_decoder(&model)?;
        vision.set_tiling(tiling);
        let load_time = t0.elapsed();
        tracing::info!(
            model = ?files,
            layers = model.config().num_layers,
            vision_layers = vision.tower().config().num_layers,
            tiling,
            ms = load_time.as_millis() as u64,
            "vision-language model loaded"
        );
        let mut me = Self::from_parts(model, tokenizer, device, opts.context_length, load_time);
        me.vision = Some(vision);
        Ok(me)
    }

    /// Turns tiling on or off for later images (see [`Engine::load_vlm`]).
    pub fn set_tiling(&mut self, on: bool) {
        if let Some(v) = self.vision.as_mut() {
            v.set_tiling(on);
        }
    }

    /// The vision tower, when this is a vision-language model.
    pub fn vision(&self) -> Option<&Vision> {
        self.vision.as_ref()
    }

    /// The context length prompts and answers share.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    fn vision_or_err(&self) -> Result<&Vision> {
        self.vision.as_ref().ok_or_else(|| {
            ModelError::InvalidRequest(
                "this model has no vision tower; it cannot see images".into(),
            )
        })
    }

    /// Resizes, tiles and normalises a photo for [`Engine::image_prompt_ids`]
    /// and [`Engine::encode_image_prompt`].
    pub fn prepare_image(&self, image: &image::RgbImage) -> Result<PreparedImage> {
        Ok(self.vision_or_err()?.prepare(image))
    }

    /// Token ids of a prompt that shows `prepared` with `question` after
    /// `history` (plain text turns), rendered with the model's template and
    /// expanded as SmolVLM's processor does. Cheap (no vision tower), so a
    /// caller can fit history to the context before encoding.
    pub fn image_prompt_ids(
        &self,
        history: &[Message],
        question: &str,
        prepared: &PreparedImage,
    ) -> Result<Vec<u32>> {
        let vision = self.vision_or_err()?;
        let tmpl = self.tokenizer.chat_template().ok_or_else(|| {
            ModelError::Template("the vision-language model ships no chat template".into())
        })?;
        // Earlier turns are text: an `<image>` typed (or generated) in them
        // is not a placeholder.
        let text_turn = |m: &Message| {
            let text = m
                .content
                .replace(crate::vision::IMAGE_PLACEHOLDER, "<image >");
            serde_json::json!({"role": m.role, "content": [{"type": "text", "text": text}]})
        };
        let mut messages: Vec<serde_json::Value> = history.iter().map(text_turn).collect();
        messages.push(serde_json::json!({
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": question}],
        }));
        let rendered = tmpl.render_any(&messages, true)?;
        let expanded = vision.expand_prompt(&rendered, &[prepared])?;
        self.tokenizer.encode(&expanded, false)
    }

    /// Runs the vision tower on `prepared` and merges its features into the
    /// embeddings of `ids` (from [`Engine::image_prompt_ids`]).
    pub fn encode_image_prompt(
        &self,
        ids: Vec<u32>,
        prepared: &PreparedImage,
    ) -> Result<ImagePrompt> {
        let vision = self.vision_or_err()?;
        let t0 = Instant::now();
        let features = vision.encode(&[prepared])?;
        let embeds = vision.merge(&self.model, &ids, features)?;
        // Wait for the device so the time is the encoder's, not prefill's.
        let _ = embeds.clone().narrow(0, 0, 1).into_data();
        Ok(ImagePrompt {
            image_tokens: ids.iter().filter(|&&t| t == vision.image_token()).count(),
            ids,
            embeds,
            tiles: prepared.tiles,
            encode_ms: prepared.prepare_ms + ms(t0.elapsed()),
        })
    }

    /// [`Engine::prepare_image`], [`Engine::image_prompt_ids`] and
    /// [`Engine::encode_image_prompt`] in one call.
    pub fn image_prompt(
        &self,
        history: &[Message],
        question: &str,
        image: &image::RgbImage,
    ) -> Result<ImagePrompt> {
        let prepared = self.prepare_image(image)?;
        let ids = self.image_prompt_ids(history, question, &prepared)?;
        self.encode_image_prompt(ids, &prepared)
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The device the model runs on.
    pub fn device(&self) -> &OpenedDevice {
        &self.device
    }

    /// How long loading took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Tokens for a chat, rendered with the model's own template, or ChatML
    /// when the model ships none (llama.cpp's fallback too).
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let tmpl = self.tokenizer.chat_template().unwrap_or_else(|| {
            let name = |id: Option<u32>| {
                id.and_then(|i| self.tokenizer.id_to_token(i))
                    .unwrap_or_default()
            };
            ChatTemplate::new(
                CHATML,
                name(self.tokenizer.bos()),
                name(self.tokenizer.eos()),
            )
        });
        let text = tmpl.render(messages, true)?;
        self.tokenizer.encode(&text, false)
    }

    /// Starts generating. Nothing runs until the first `next()`.
    pub fn generate(&self, req: Request, cancel: CancelToken) -> Result<Generation<'_>> {
        req.sampling.validate()?;
        if req.prompt.is_empty() {
            return Err(ModelError::InvalidRequest("the prompt is empty".into()));
        }
        let cache = self.model.new_cache(self.context_length);
        if req.prompt.len() >= cache.capacity() {
            return Err(ModelError::InvalidRequest(format!(
                "the prompt has {} tokens; the context holds {}",
                req.prompt.len(),
                cache.capacity()
            )));
        }
        let rng = StdRng::seed_from_u64(req.sampling.seed);
        Ok(Generation {
            engine: self,
            cache,
            rng,
            cancel,
            req,
            tokens: Vec::new(),
            decoder: StreamDecoder::default(),
            text: String::new(),
            emitted: 0,
            stop_reason: None,
            next_input: None,
            timings: Timings::default(),
            started: None,
            first_token_at: None,
        })
    }
}

/// A running generation; iterate it for text pieces.
pub struct Generation<'a> {
    engine: &'a Engine,
    cache: KvCache,
    rng: StdRng,
    cancel: CancelToken,
    req: Request,
    tokens: Vec<u32>,
    decoder: StreamDecoder,
    /// Decoded text so far (may run ahead of what was emitted).
    text: String,
    /// Bytes of `text` already handed out.
    emitted: usize,
    stop_reason: Option<StopReason>,
    next_input: Option<u32>,
    timings: Timings,
    started: Option<Instant>,
    first_token_at: Option<Instant>,
}

impl Generation<'_> {
    /// Runs to the end (if not already) and returns the result.
    pub fn finish(mut self) -> Result<Output> {
        while self.stop_reason.is_none() {
            if let Some(Err(e)) = self.next() {
                return Err(e);
            }
        }
        Ok(Output {
            text: std::mem::take(&mut self.text),
            tokens: std::mem::take(&mut self.tokens),
            stop_reason: self.stop_reason.unwrap_or(StopReason::MaxTokens),
            timings: self.timings.clone(),
        })
    }

    /// Timings so far.
    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    /// Why it stopped, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason
    }

    /// One forward pass and one sampled token.
    fn step(&mut self) -> Result<Option<u32>> {
        if self.cancel.is_cancelled() {
            self.stop_reason = Some(StopReason::Cancelled);
            return Ok(None);
        }
        if self.tokens.len() >= self.req.max_tokens {
            self.stop_reason = Some(StopReason::MaxTokens);
            return Ok(None);
        }
        let model = &self.engine.model;
        let logits = match self.next_input {
            None => {
                let t0 = Instant::now();
                self.started = Some(t0);
                let l = match self.req.embeds.take() {
                    Some(e) => model.forward_embeds(e, &mut self.cache, false)?,
                    None => model.forward(&self.req.prompt, &mut self.cache, false)?,
                };
                self.timings.image_encode_ms = self.req.image_encode_ms;
                let v = logits_vec(l)?;
                self.timings.prompt_tokens = self.req.prompt.len();
                self.timings.prefill_ms = ms(t0.elapsed());
                v
            }
            Some(tok) => {
                if self.cache.len() >= self.cache.capacity() {
                    self.stop_reason = Some(StopReason::ContextFull);
                    return Ok(None);
                }
                logits_vec(model.forward(&[tok], &mut self.cache, false)?)?
            }
        };
        let next = sample(
            logits,
            &self.req.sampling,
            &self.tokens,
            &self.req.prompt,
            &mut self.rng,
        );
        let now = Instant::now();
        if self.first_token_at.is_none() {
            self.first_token_at = Some(now);
            if let Some(s) = self.started {
                self.timings.time_to_first_token_ms = ms(now - s);
            }
        }
        self.tokens.push(next);
        self.next_input = Some(next);
        self.timings.generated_tokens = self.tokens.len();
        if let Some(first) = self.first_token_at {
            self.timings.decode_ms = ms(now - first);
        }
        let t = &mut self.timings;
        t.prefill_tokens_per_s = per_s(t.prompt_tokens, t.prefill_ms);
        t.decode_tokens_per_s = per_s(t.generated_tokens.saturating_sub(1), t.decode_ms);
        Ok(Some(next))
    }

    /// The next piece of text that is safe to show, if any; sets `stop_reason`
    /// when a stop string appears.
    fn take_piece(&mut self) -> Option<String> {
        let mut end = self.text.len();
        if !self.req.stop.is_empty() {
            // A stop string may start up to (longest stop − 1) bytes before
            // what was already emitted.
            let longest = self.req.stop.iter().map(|s| s.len()).max().unwrap_or(0);
            let mut from = self.emitted.saturating_sub(longest);
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            let hit = self
                .req
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
                .min();
            if let Some(at) = hit {
                self.text.truncate(at);
                self.stop_reason = Some(StopReason::StopString);
                end = at;
            } else if self.stop_reason.is_none() {
                // Hold back a suffix that could grow into a stop string.
                let hold = self
                    .req
                    .stop
                    .iter()
                    .map(|s| {
                        (1..s.len())
                            .rev()
                            .find(|&n| s.is_char_boundary(n) && self.text.ends_with(&s[..n]))
                            .unwrap_or(0)
                    })
                    .max()
                    .unwrap_or(0);
                end = self.text.len() - hold;
            }
        }
        if end > self.emitted {
            let piece = self.text[self.emitted..end].to_owned();
            self.emitted = end;
            Some(piece)
        } else {
            None
        }
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.stop_reason.is_some() {
                // Flush anything held back for a stop string that never came.
                return self.take_piece_final();
            }
            let tok = match self.step() {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    self.stop_reason = Some(StopReason::Cancelled);
                    return Some(Err(e));
                }
            };
            if !self.req.ignore_eos && self.engine.tokenizer.is_stop(tok) {
                self.stop_reason = Some(StopReason::Eos);
                continue;
            }
            match self.decoder.push(&self.engine.tokenizer, tok) {
                Ok(delta) => self.text.push_str(&delta),
                Err(e) => {
                    self.stop_reason = Some(StopReason::Cancelled);
                    return Some(Err(e));
                }
            }
            if let Some(p) = self.take_piece() {
                return Some(Ok(p));
            }
        }
    }
}

impl Generation<'_> {
    fn take_piece_final(&mut self) -> Option<Result<String>> {
        if self.stop_reason == Some(StopReason::StopString) || self.emitted >= self.text.len() {
            return None;
        }
        let piece = self.text[self.emitted..].to_owned();
        self.emitted = self.text.len();
        Some(Ok(piece))
    }
}

/// Turns token ids into text incrementally without splitting characters.
///
/// Byte-level tokens can end in the middle of a UTF-8 sequence; decoding such
/// a prefix yields U+FFFD. The decoder re-decodes a short window of recent
/// tokens and only releases text once it no longer ends in U+FFFD, the method
/// text-generation-inference uses.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, tk: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let prefix = tk.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let full = tk.decode(&self.ids[self.prefix_offset..])?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            let delta = full.get(prefix.len()..).unwrap_or_default().to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_s(n: usize, ms: f64) -> f64 {
    if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 }
}

fn logits_vec(l: burn::tensor::Tensor<2>) -> Result<Vec<f32>> {
    let [n, _] = l.dims();
    let last = if n > 1 { l.narrow(0, n - 1, 1) } else { l };
    last.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("reading logits: {e:?}")))
}

/// Chooses the next token from `logits`.
pub(crate) fn sample(
    mut logits: Vec<f32>,
    s: &Sampling,
    generated: &[u32],
    prompt: &[u32],
    rng: &mut StdRng,
) -> u32 {
    if s.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / s.repetition_penalty
                } else {
                    *l * s.repetition_penalty
                };
            }
        }
    }
    if s.temperature == 0.0 {
        return argmax(&logits);
    }
    // Candidates sorted by logit, descending.
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_unstable_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if s.top_k > 0 && s.top_k < idx.len() {
        idx.truncate(s.top_k);
    }
    let max = logits[idx[0] as usize];
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i as usize] - max) / s.temperature) as f64).exp())
        .collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= sum);
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= s.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        idx.truncate(keep);
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
    }
    let r: f64 = rng.random();
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if r < acc {
            return idx[i];
        }
    }
    idx[probs.len() - 1]
}

/// Index of the largest logit (the first one on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
