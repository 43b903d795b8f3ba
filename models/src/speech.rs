//! Speech to text with whisper.cpp (through `whisper-rs`).
//!
//! Two things matter for short voice commands on a small board, and both
//! are defaults here:
//! - `audio_ctx` is sized to the utterance. whisper always encodes a 30 s
//!   window otherwise, which is 5–10× slower for a 2 s question.
//! - One thread. ggml's default thread pool spin-waits, and two threads on
//!   a busy 2-core board were measured 2–15× slower than one.
//!
//! The model file is checked before whisper.cpp sees it: whisper.cpp reads
//! a truncated file without noticing, so a damaged download would otherwise
//! load as garbage rather than fail with a message.

use crate::error::{ModelError, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

/// Sample rate whisper expects.
pub const SAMPLE_RATE: usize = 16_000;

/// Encoder frames per second of audio (1500 for 30 s).
const CTX_PER_SECOND: f64 = 50.0;

/// How a transcription runs.
#[derive(Debug, Clone)]
pub struct TranscribeOptions {
    /// CPU threads (see the module docs before raising it).
    pub threads: usize,
    /// Spoken language (`en`, `de`, …), or `None` to detect it.
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    /// Text that primes the decoder (names, jargon).
    pub initial_prompt: Option<String>,
    /// Size the encoder window to the audio (see the module docs).
    pub fit_audio_ctx: bool,
    /// The smallest fitted window, in encoder frames (50 per second).
    pub min_audio_ctx: usize,
    /// Per-segment timestamps.
    pub timestamps: bool,
    /// Beam width; 1 = greedy. Measured here on spoken questions, a beam
    /// of 5 took about 4× as long and changed no transcript.
    pub beam_size: usize,
    /// Re-decode at higher temperatures when the output looks repetitive
    /// (whisper's fallback). Off for live commands: on a one-word clip
    /// ("Stop.") the fallbacks took 9 s here and produced multilingual
    /// noise, where greedy gives "stop stop stop", which is still "stop".
    pub fallback: bool,
    /// Most tokens decoded; 0 = 16 plus 8 per second of audio (speech is
    /// about 4 tokens a second), which ends repetition loops early.
    pub max_tokens: usize,
}

impl Default for TranscribeOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            language: Some("en".into()),
            translate: false,
            initial_prompt: None,
            fit_audio_ctx: true,
            min_audio_ctx: 128,
            timestamps: false,
            beam_size: 1,
            fallback: true,
            max_tokens: 0,
        }
    }
}

/// One stretch of recognised text.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Start, ms from the start of the audio (0 without timestamps).
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
    /// The text.
    pub text: String,
}

/// A transcription and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// All segments' text, trimmed.
    pub text: String,
    /// The segments.
    pub segments: Vec<Segment>,
    /// Length of the audio, ms.
    pub audio_ms: u64,
    /// Wall time of the transcription, ms.
    pub elapsed_ms: u64,
    /// The encoder window used (1500 = the full 30 s).
    pub audio_ctx: usize,
}

impl Transcript {
    /// Real-time factor: transcription time / audio time.
    pub fn rtf(&self) -> f64 {
        self.elapsed_ms as f64 / self.audio_ms.max(1) as f64
    }
}

/// A loaded whisper.cpp model. Transcriptions through one `Transcriber` are
/// serialised by `&mut self`; each uses a fresh whisper state.
pub struct Transcriber {
    ctx: WhisperContext,
    path: PathBuf,
    multilingual: bool,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("path", &self.path)
            .finish()
    }
}

static LOG_HOOKS: Once = Once::new();

/// Sends whisper.cpp's and ggml's log lines to `tracing` (once per process).
pub(crate) fn install_log_hooks() {
    LOG_HOOKS.call_once(whisper_rs::install_logging_hooks);
}

impl Transcriber {
    /// Loads a whisper.cpp ggml model (`ggml-base.bin` and friends).
    pub fn load(path: &Path) -> Result<Self> {
        let info = check_ggml(path)?;
        // whisper.cpp and ggml log through `tracing` from here on.
        install_log_hooks();
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|e| ModelError::Ggml {
                path: path.to_owned(),
                reason: format!("whisper.cpp could not load it ({e})"),
            })?;
        Ok(Self {
            ctx,
            path: path.to_owned(),
            multilingual: info.n_vocab >= 51865,
        })
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the model knows languages other than English.
    pub fn multilingual(&self) -> bool {
        self.multilingual
    }

    /// Transcribes 16 kHz mono samples in [-1, 1].
    pub fn transcribe(&mut self, samples: &[f32], opts: &TranscribeOptions) -> Result<Transcript> {
        let t0 = Instant::now();
        let audio_ms = (samples.len() * 1000 / SAMPLE_RATE) as u64;
        // whisper.cpp refuses less than a second of audio; pad with silence.
        let padded;
        let samples = if samples.len() < SAMPLE_RATE + SAMPLE_RATE / 10 {
            let mut v = samples.to_vec();
            v.resize(SAMPLE_RATE + SAMPLE_RATE / 10, 0.0);
            padded = v;
            &padded[..]
        } else {
            samples
        };
        let audio_ctx = if opts.fit_audio_ctx {
            audio_ctx_for(samples.len())
                .max(opts.min_audio_ctx)
                .min(1500)
        } else {
            1500
        };
        if !self.multilingual
            && let Some(lang) = opts.language.as_deref().filter(|l| *l != "en")
        {
            return Err(ModelError::InvalidRequest(format!(
                "{} is an English-only model; language {lang:?} needs a multilingual one",
                self.path.display()
            )));
        }
        let strategy = if opts.beam_size > 1 {
            SamplingStrategy::BeamSearch {
                beam_size: opts.beam_size as i32,
                patience: -1.0,
            }
        } else {
            SamplingStrategy::Greedy { best_of: 1 }
        };
        let mut params = FullParams::new(strategy);
        params.set_n_threads(opts.threads.max(1) as i32);
        params.set_translate(opts.translate);
        params.set_language(Some(opts.language.as_deref().unwrap_or("auto")));
        params.set_no_timestamps(!opts.timestamps);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_no_context(true);
        if !opts.fallback {
            params.set_temperature_inc(0.0);
        }
        let max_tokens = if opts.max_tokens > 0 {
            opts.max_tokens
        } else {
            16 + (audio_ms as usize * 8).div_ceil(1000)
        };
        params.set_max_tokens(max_tokens.min(i32::MAX as usize) as i32);
        if audio_ctx < 1500 {
            params.set_audio_ctx(audio_ctx as i32);
        }
        if let Some(p) = opts.initial_prompt.as_deref().filter(|p| !p.is_empty()) {
            // whisper-rs panics on an interior NUL: never pass one.
            params.set_initial_prompt(&p.replace('\0', " "));
        }
        let mut state = self
            .ctx
            .create_state()
            .map_err(|e| ModelError::Backend(format!("whisper state: {e}")))?;
        state
            .full(params, samples)
            .map_err(|e| ModelError::Backend(format!("whisper: {e}")))?;
        let mut segments = Vec::new();
        for seg in state.as_iter() {
            let text = seg
                .to_str_lossy()
                .map_err(|e| ModelError::Backend(format!("whisper segment: {e}")))?
                .trim()
                .to_owned();
            if text.is_empty() {
                continue;
            }
            segments.push(Segment {
                start_ms: (seg.start_timestamp().max(0) as u64) * 10,
                end_ms: (seg.end_timestamp().max(0) as u64) * 10,
                text,
            });
        }
        let mut text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(once) = cut_loop(&text) {
            tracing::debug!(heard = %text, kept = once, "whisper repeated itself; kept the first time");
            let once = once.to_owned();
            keep_within(&mut segments, once.len());
            text = once;
        }
        Ok(Transcript {
            text,
            segments,
            audio_ms,
            elapsed_ms: t0.elapsed().as_millis() as u64,
            audio_ctx,
        })
    }
}

/// Whisper's small models sometimes write the utterance two or three times
/// ("Hey Seer, what is the capital of Germany? Hey Seer, what is the capital
/// of Germany? Hey Seer, …"), a decoder loop the temperature fallback is too
/// slow to use on every hands-free question. A question is not said twice
/// in a row, so this returns the phrase once when a transcript starts with
/// one phrase of at least three words said twice and then either only
/// repeats it (the last word possibly cut short) or the phrase is a whole
/// sentence (it ends in `.`, `?`, `!` or `…`: whatever follows a sentence
/// said twice is the loop running off). Words compare without case and
/// punctuation; the smallest such phrase wins. A stutter inside a sentence
/// ("go to the go to the store") is left alone.
pub fn cut_loop(text: &str) -> Option<&str> {
    let words: Vec<(usize, String, bool)> = text
        .split_whitespace()
        .map(|w| {
            let end = w.as_ptr() as usize - text.as_ptr() as usize + w.len();
            let norm: String = w
                .chars()
                .filter(|c| c.is_alphanumeric())
                .flat_map(char::to_lowercase)
                .collect();
            let sentence = w.ends_with(['.', '?', '!', '…']);
            (end, norm, sentence)
        })
        .collect();
    let n = words.len();
    let same = |i: usize, p: usize| words[i].1 == words[i % p].1;
    (3..=n / 2)
        .find(|&p| {
            if !(p..2 * p).all(|i| same(i, p)) {
                return false;
            }
            let only_repeats = (2 * p..n).all(|i| {
                same(i, p) || (i == n - 1 && words[i % p].1.starts_with(words[i].1.as_str()))
            });
            only_repeats || words[p - 1].2
        })
        .map(|p| &text[..words[p - 1].0])
}

/// Drops the segments (and the part of a segment) past byte `len` of their
/// space-joined text.
fn keep_within(segments: &mut Vec<Segment>, len: usize) {
    let mut at = 0;
    segments.retain_mut(|s| {
        if at >= len {
            return false;
        }
        let room = len - at;
        if s.text.len() > room {
            let mut cut = room;
            while !s.text.is_char_boundary(cut) {
                cut -= 1;
            }
            s.text.truncate(cut);
            s.text.truncate(s.text.trim_end().len());
        }
        at += s.text.len() + 1;
        true
    });
}

/// The encoder window for `n` samples: the audio's frames plus a margin,
/// at most 30 s. A window cut exactly at the last word loses it; one only
/// 64 frames (1.3 s) longer than a short question made tiny.en repeat the
/// question ("What is the capital of Germany? What is the capital of
/// Germany?") on most clips of `scripts/bench-wer.sh` when the decoder had
/// a prompt, as the hands-free path gives it. 128 frames ended those loops
/// there (whisper.cpp alone shows the same on the same clip).
pub fn audio_ctx_for(n: usize) -> usize {
    let frames = (n as f64 / SAMPLE_RATE as f64 * CTX_PER_SECOND).ceil() as usize;
    (frames + 128).clamp(128, 1500)
}

/// What [`check_ggml`] read from a whisper.cpp model header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgmlInfo {
    /// Vocabulary size (51864 English-only, 51865+ multilingual).
    pub n_vocab: u32,
    /// Encoder width.
    pub n_audio_state: u32,
    /// Encoder layers.
    pub n_audio_layer: u32,
    /// Tensors in the file.
    pub tensors: usize,
}

/// Walks a whisper.cpp ggml model file (header, mel filters, vocabulary,
/// every tensor header and its data size) without loading it, so truncated
/// or foreign files are refused with a message naming the file and offset.
pub fn check_ggml(path: &Path) -> Result<GgmlInfo> {
    let io = |source| ModelError::Io {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut w = Walk {
        r: std::io::BufReader::new(f),
        pos: 0,
        len,
        path,
    };
    let magic = w.i32("the magic")?;
    if magic != 0x6767_6d6c {
        return Err(w.bad(format!(
            "not a whisper.cpp ggml model (magic {magic:#010x}, expected 0x67676d6c)"
        )));
    }
    let mut h = [0i32; 11];
    for (i, v) in h.iter_mut().enumerate() {
        *v = w.i32(&format!("hyperparameter {i}"))?;
    }
    if h.iter().take(10).any(|&v| v <= 0) {
        return Err(w.bad(format!("implausible hyperparameters {h:?}")));
    }
    let n_mel = w.i32("the mel filter count")?;
    let n_fft = w.i32("the mel filter width")?;
    if !(1..=512).contains(&n_mel) || !(1..=4096).contains(&n_fft) {
        return Err(w.bad(format!("implausible mel filters {n_mel}x{n_fft}")));
    }
    w.skip(n_mel as u64 * n_fft as u64 * 4, "the mel filters")?;
    let n_tokens = w.i32("the vocabulary size")?;
    if !(0..=1_000_000).contains(&n_tokens) {
        return Err(w.bad(format!("implausible vocabulary size {n_tokens}")));
    }
    for t in 0..n_tokens {
        let l = w.i32("a token length")?;
        if !(0..=1024).contains(&l) {
            return Err(w.bad(format!("token {t} has length {l}")));
        }
        w.skip(l as u64, "a token")?;
    }
    let mut tensors = 0;
    while w.pos < w.len {
        let n_dims = w.i32("a tensor header")?;
        let name_len = w.i32("a tensor header")?;
        let ttype = w.i32("a tensor header")?;
        if !(1..=4).contains(&n_dims) || !(1..=256).contains(&name_len) {
            return Err(w.bad(format!(
                "tensor {tensors}: bad header (dims {n_dims}, name length {name_len}) at offset {}",
                w.pos - 12
            )));
        }
        let mut n = 1u64;
        for _ in 0..n_dims {
            let d = w.i32("a tensor dimension")?;
            if d <= 0 {
                return Err(w.bad(format!("tensor {tensors}: dimension {d}")));
            }
            n = n.saturating_mul(d as u64);
        }
        let elem = match ttype {
            0 => 4,
            1 => 2,
            other => {
                return Err(w.bad(format!(
                    "tensor {tensors}: type {other} (quantised whisper models are not supported yet; use f16)"
                )));
            }
        };
        w.skip(name_len as u64, "a tensor name")?;
        w.skip(n.saturating_mul(elem), "tensor data")?;
        tensors += 1;
    }
    if tensors == 0 {
        return Err(w.bad("no tensors".into()));
    }
    Ok(GgmlInfo {
        n_vocab: h[0] as u32,
        n_audio_state: h[2] as u32,
        n_audio_layer: h[4] as u32,
        tensors,
    })
}

/// A bounds-checked walk through a file.
struct Walk<'a> {
    r: std::io::BufReader<std::fs::File>,
    pos: u64,
    len: u64,
    path: &'a Path,
}

impl Walk<'_> {
    fn bad(&self, reason: String) -> ModelError {
        ModelError::Ggml {
            path: self.path.to_owned(),
            reason,
        }
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let mut b = [0u8; 4];
        self.r
            .read_exact(&mut b)
            .map_err(|_| self.bad(format!("truncated at byte {} (reading {what})", self.pos)))?;
        self.pos += 4;
        Ok(i32::from_le_bytes(b))
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<()> {
        // Not `pos + n > len`: a tensor of 2^62 elements makes n near
        // u64::MAX, and the sum wrapped to "fits" (found by libFuzzer).
        if n > self.len.saturating_sub(self.pos) {
            return Err(self.bad(format!(
                "truncated: {what} needs {n} bytes at offset {}, the file has {}",
                self.pos, self.len
            )));
        }
        self.r
            .seek_relative(n as i64)
            .map_err(|source| ModelError::Io {
                path: self.path.to_owned(),
                source,
            })?;
        self.pos += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_utterance_is_kept_once() {
        let q = "Hey Seer, what is the capital of Germany?";
        assert_eq!(cut_loop(&format!("{q} {q}")), Some(q));
        assert_eq!(cut_loop(&format!("{q} {q} Hey Seer, what is")), Some(q));
        assert_eq!(
            cut_loop("what is this what is this? What is this"),
            Some("what is this")
        );
        // Heard in scripts/bench-wer.sh: a word cut short at the end, and a
        // sentence said twice before the loop ran off.
        assert_eq!(
            cut_loop("Remind, me to call, my sister. Remind me to call my sister. Remind me to ca"),
            Some("Remind, me to call, my sister.")
        );
        assert_eq!(
            cut_loop("What time is it? What time is it? WH-T-T-T... what time"),
            Some("What time is it?")
        );
        // Not loops: one sentence; short repeats; a phrase said once more
        // with other words after it; a partial echo.
        assert_eq!(cut_loop(q), None);
        assert_eq!(cut_loop("no no no no"), None);
        assert_eq!(cut_loop("look at this, look at this one"), None);
        assert_eq!(cut_loop("what is the time what is"), None);
        assert_eq!(cut_loop("go to the go to the store"), None);
        assert_eq!(
            cut_loop("What is the capital of Germany... (not the capital) What is"),
            None
        );
        assert_eq!(cut_loop(""), None);
    }

    #[test]
    fn segments_past_the_cut_are_dropped() {
        let seg = |t: &str| Segment {
            start_ms: 0,
            end_ms: 0,
            text: t.to_owned(),
        };
        let mut s = vec![
            seg("What is that?"),
            seg("What is that? What"),
            seg("is that?"),
        ];
        keep_within(&mut s, "What is that?".len());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text, "What is that?");
        let mut s = vec![seg("Hi there, hi there,"), seg("hi there")];
        keep_within(&mut s, "Hi there,".len());
        assert_eq!(
            s.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(),
            ["Hi there,"]
        );
    }
}
