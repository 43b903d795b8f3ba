//! [`Engine`]: a loaded language model (and, for a vision-language model,
//! its vision tower) with its tokenizer, and [`Generation`], the token loop
//! that runs on the caller's thread.
//!
//! Prefill happens on the first `next()`, so the caller's thread does the
//! compute; run it on a dedicated thread, never on an async executor. A
//! [`CancelToken`] is checked before every forward pass, so a cancel from
//! another thread stops generation within one token. Decoded text goes
//! through [`StreamDecoder`] (whole characters) and [`StopFilter`] (no stop
//! string, nor the start of one) before it is handed out.

use super::request::{ImagePrompt, Output, Request, StopReason, Timings, VlmFiles};
use super::sampling::sample;
use super::stream::{StopFilter, StreamDecoder};
use crate::device::{self, BackendKind, OpenedDevice};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::{KvCache, Llama, WeightFormat, load_gguf, load_hf};
use crate::tokenizer::{ChatTemplate, Message, TextTokenizer};
use crate::vision::{PreparedImage, Vision};
use rand::SeedableRng;
use rand::rngs::StdRng;
use seer_cancel::CancelToken;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The template used for models without one.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Options for [`Engine::load`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Which compute backend.
    pub backend: BackendKind,
    /// Maximum tokens per sequence (prompt + answer).
    pub context_length: usize,
    /// How weights are held; `None` keeps them quantised (ggml blocks with
    /// llama.cpp's integer kernels on the CPU, burn quantised tensors on wgpu).
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
    /// The last text generation's key/value cache and the tokens in it;
    /// `None` while a generation holds it, or when reuse is off.
    reuse: Option<Mutex<Option<Reusable>>>,
}

/// A cache kept between generations: the next prompt that starts with the
/// same tokens (the system prompt, the conversation so far) prefills only
/// what follows them, as llama.cpp's server does with `cache_prompt`.
#[derive(Debug)]
struct Reusable {
    tokens: Vec<u32>,
    cache: KvCache,
}

impl Engine {
    /// Loads a GGUF model (weights and tokenizer) onto the chosen backend.
    pub fn load(path: &Path, opts: &EngineOptions) -> Result<Self> {
        let t0 = Instant::now();
        let device = device::open(opts.backend)?;
        let gguf = GgufFile::open(path)?;
        let tokenizer = TextTokenizer::from_gguf(&gguf)?;
        let format = opts.weights.unwrap_or(WeightFormat::Native);
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
            reuse: Some(Mutex::new(None)),
        }
    }

    /// Turns keeping the key/value cache between generations on (the
    /// default) or off. With it on, a prompt that starts like the previous
    /// one prefills only the new tokens; the answer can differ from a cold
    /// prefill's in the last bits (the reused positions were computed in
    /// another batch). Benchmarks turn it off to time a whole prefill.
    pub fn set_prompt_reuse(&mut self, on: bool) {
        self.reuse = on.then(|| Mutex::new(None));
    }

    /// Prefills `prompt` and keeps its cache for the next generation, so a
    /// first question that starts with it (the system prompt) does not
    /// wait for it. Does nothing when prompt reuse is off.
    pub fn warm_up(&self, prompt: &[u32]) -> Result<()> {
        if self.reuse.is_none() || prompt.is_empty() {
            return Ok(());
        }
        let req = Request::new(prompt.to_vec(), 0);
        let mut g = self.generate(req, CancelToken::new())?;
        g.prefill_only()?;
        Ok(())
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
                let format = opts.weights.unwrap_or(WeightFormat::Native);
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
        let (cache, reused) = self.take_cache(&req);
        let capacity = cache.capacity();
        if req.prompt.len() >= capacity {
            if req.embeds.is_none() {
                // Still good for the next text prompt.
                self.give_back(req.prompt[..reused].to_vec(), cache);
            }
            return Err(ModelError::InvalidRequest(format!(
                "the prompt has {} tokens; the context holds {}",
                req.prompt.len(),
                capacity
            )));
        }
        let rng = StdRng::seed_from_u64(req.sampling.seed);
        let filter = StopFilter::new(&req.stop);
        let keep = req.embeds.is_none();
        Ok(Generation {
            engine: self,
            cache,
            rng,
            cancel,
            req,
            reused,
            failed: false,
            keep,
            tokens: Vec::new(),
            decoder: StreamDecoder::default(),
            filter,
            stop_reason: None,
            next_input: None,
            timings: Timings::default(),
            started: None,
            first_token_at: None,
        })
    }
}

impl Engine {
    /// A cache for `req`: the kept one when the prompt starts with (some
    /// of) its tokens, cut back to what they share, else a new one. At
    /// least the prompt's last token is always run, for its logits.
    fn take_cache(&self, req: &Request) -> (KvCache, usize) {
        let kept = match (&self.reuse, &req.embeds) {
            // Image prompts: the placeholder ids say nothing about the
            // pixels, so their positions are never shared.
            (Some(m), None) => m.lock().unwrap_or_else(|p| p.into_inner()).take(),
            _ => None,
        };
        if let Some(Reusable { tokens, mut cache }) = kept {
            let shared = tokens
                .iter()
                .zip(&req.prompt)
                .take_while(|(a, b)| a == b)
                .count()
                .min(req.prompt.len().saturating_sub(1));
            if shared > 0 {
                cache.truncate(shared);
                return (cache, shared);
            }
            // Nothing shared: the allocation is still good.
            cache.clear();
            return (cache, 0);
        }
        (self.model.new_cache(self.context_length), 0)
    }

    /// Keeps `cache`, which holds `tokens`, for the next generation.
    fn give_back(&self, tokens: Vec<u32>, cache: KvCache) {
        if let Some(m) = &self.reuse {
            *m.lock().unwrap_or_else(|p| p.into_inner()) = Some(Reusable { tokens, cache });
        }
    }
}

/// A running generation; iterate it for text pieces.
pub struct Generation<'a> {
    engine: &'a Engine,
    cache: KvCache,
    rng: StdRng,
    cancel: CancelToken,
    req: Request,
    /// Prompt tokens already in `cache` (see [`Engine::set_prompt_reuse`]).
    reused: usize,
    /// A forward pass failed: the cache is not worth keeping.
    failed: bool,
    /// A text prompt: the cache goes back to the engine when done.
    keep: bool,
    tokens: Vec<u32>,
    decoder: StreamDecoder,
    /// Decoded text so far (may run ahead of what was handed out).
    filter: StopFilter,
    stop_reason: Option<StopReason>,
    next_input: Option<u32>,
    timings: Timings,
    started: Option<Instant>,
    first_token_at: Option<Instant>,
}

impl Drop for Generation<'_> {
    /// Hands the cache back to the engine for the next prompt.
    fn drop(&mut self) {
        if self.failed || !self.keep {
            return;
        }
        let n = self.cache.len();
        let tokens: Vec<u32> = self
            .req
            .prompt
            .iter()
            .chain(&self.tokens)
            .take(n)
            .copied()
            .collect();
        if tokens.len() != n {
            return;
        }
        let cache = std::mem::replace(&mut self.cache, KvCache::empty());
        self.engine.give_back(tokens, cache);
    }
}

impl Generation<'_> {
    /// Runs the prompt and nothing more (see [`Engine::warm_up`]).
    fn prefill_only(&mut self) -> Result<()> {
        if self.next_input.is_some() {
            return Ok(());
        }
        let r = self
            .engine
            .model
            .forward(&self.req.prompt[self.reused..], &mut self.cache, false);
        self.failed = r.is_err();
        r.map(|_| ())
    }

    /// Runs to the end (if not already) and returns the result.
    pub fn finish(mut self) -> Result<Output> {
        while self.stop_reason.is_none() {
            if let Some(Err(e)) = self.next() {
                return Err(e);
            }
        }
        Ok(Output {
            text: std::mem::take(&mut self.filter).into_text(),
            // A copy: `Drop` still needs them to hand the cache back.
            tokens: self.tokens.clone(),
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
                self.failed = true;
                let l = match self.req.embeds.take() {
                    Some(e) => model.forward_embeds(e, &mut self.cache, false)?,
                    None => {
                        model.forward(&self.req.prompt[self.reused..], &mut self.cache, false)?
                    }
                };
                self.timings.image_encode_ms = self.req.image_encode_ms;
                let v = logits_vec(l)?;
                self.failed = false;
                self.timings.prompt_tokens = self.req.prompt.len();
                self.timings.cached_tokens = self.reused;
                self.timings.prefill_ms = ms(t0.elapsed());
                v
            }
            Some(tok) => {
                if self.cache.len() >= self.cache.capacity() {
                    self.stop_reason = Some(StopReason::ContextFull);
                    return Ok(None);
                }
                self.failed = true;
                let v = logits_vec(model.forward(&[tok], &mut self.cache, false)?)?;
                self.failed = false;
                v
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
        t.prefill_tokens_per_s = per_s(t.prompt_tokens - t.cached_tokens, t.prefill_ms);
        t.decode_tokens_per_s = per_s(t.generated_tokens.saturating_sub(1), t.decode_ms);
        Ok(Some(next))
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.stop_reason.is_some() {
                // Flush anything held back for a stop string that never came.
                return self.filter.finish().map(Ok);
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
            let delta = match self.decoder.push(&self.engine.tokenizer, tok) {
                Ok(delta) => delta,
                Err(e) => {
                    self.stop_reason = Some(StopReason::Cancelled);
                    return Some(Err(e));
                }
            };
            let piece = self.filter.push(&delta);
            if self.filter.stopped() {
                self.stop_reason = Some(StopReason::StopString);
            }
            if piece.is_some() {
                return piece.map(Ok);
            }
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
