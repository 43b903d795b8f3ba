//! Voice activity detection: Silero VAD run by whisper.cpp
//! (`whisper-rs`'s `WhisperVadContext`, on whisper.cpp's VAD ggml file).
//!
//! `FullParams::enable_vad` is not used: it does nothing with
//! `WhisperState::full`, and it panics when no VAD model path was set. The
//! VAD context is run here instead, over whatever buffer the caller has.

use crate::error::{ModelError, Result};
use crate::speech::SAMPLE_RATE;
use std::io::Read;
use std::path::{Path, PathBuf};
use whisper_rs::{WhisperVadContext, WhisperVadContextParams, WhisperVadParams};

/// How speech is segmented.
#[derive(Debug, Clone, PartialEq)]
pub struct VadOptions {
    /// Speech probability above which a frame is speech.
    pub threshold: f32,
    /// Shorter bursts are dropped, ms.
    pub min_speech_ms: u32,
    /// Silence shorter than this does not end a segment (hangover), ms.
    pub min_silence_ms: u32,
    /// Padding added on both sides of a segment, ms.
    pub speech_pad_ms: u32,
    /// Longer speech is split, seconds.
    pub max_speech_s: f32,
}

impl Default for VadOptions {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 300,
            speech_pad_ms: 30,
            max_speech_s: 30.0,
        }
    }
}

/// A stretch of speech, ms from the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeechSegment {
    /// Start, ms.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
}

/// A loaded Silero VAD model.
#[derive(Debug)]
pub struct Vad {
    ctx: WhisperVadContext,
    path: PathBuf,
}

impl Vad {
    /// Loads whisper.cpp's Silero VAD file (`ggml-silero-v6.2.0.bin`, or
    /// one converted by `scripts/convert_silero_vad.py`).
    pub fn load(path: &Path) -> Result<Self> {
        check_vad_file(path)?;
        crate::speech::install_log_hooks();
        let p = path.to_str().filter(|p| !p.contains('\0')).ok_or_else(|| {
            ModelError::InvalidRequest(format!(
                "{}: whisper.cpp needs a UTF-8 path",
                path.display()
            ))
        })?;
        let mut params = WhisperVadContextParams::new();
        params.set_n_threads(1);
        params.set_use_gpu(false);
        let ctx = WhisperVadContext::new(p, params).map_err(|e| ModelError::Ggml {
            path: path.to_owned(),
            reason: format!("whisper.cpp could not load the VAD model ({e})"),
        })?;
        Ok(Self {
            ctx,
            path: path.to_owned(),
        })
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Speech segments in 16 kHz mono `samples`.
    pub fn segments(&mut self, samples: &[f32], opts: &VadOptions) -> Result<Vec<SpeechSegment>> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        let mut p = WhisperVadParams::new();
        p.set_threshold(opts.threshold);
        p.set_min_speech_duration(opts.min_speech_ms as i32);
        p.set_min_silence_duration(opts.min_silence_ms as i32);
        p.set_speech_pad(opts.speech_pad_ms as i32);
        p.set_max_speech_duration(opts.max_speech_s);
        let segs = self
            .ctx
            .segments_from_samples(p, samples)
            .map_err(|e| ModelError::Backend(format!("VAD: {e}")))?;
        let total_ms = (samples.len() * 1000 / SAMPLE_RATE) as u64;
        // whisper.cpp reports centiseconds.
        Ok(segs
            .map(|s| SpeechSegment {
                start_ms: ((s.start.max(0.0) * 10.0) as u64).min(total_ms),
                end_ms: ((s.end.max(0.0) * 10.0) as u64).min(total_ms),
            })
            .filter(|s| s.end_ms > s.start_ms)
            .collect())
    }

    /// Speech probability per 512-sample (32 ms) window.
    pub fn probabilities(&mut self, samples: &[f32]) -> Result<Vec<f32>> {
        if samples.is_empty() {
            return Ok(Vec::new());
        }
        self.ctx
            .detect_speech(samples)
            .map_err(|e| ModelError::Backend(format!("VAD: {e}")))?;
        Ok(self.ctx.probabilities().to_vec())
    }
}

/// Checks a VAD file's header and that every tensor's bytes are there, so a
/// damaged file is refused by name instead of loaded as garbage.
fn check_vad_file(path: &Path) -> Result<()> {
    let bad = |reason: String| ModelError::Ggml {
        path: path.to_owned(),
        reason,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| ModelError::Io {
            path: path.to_owned(),
            source,
        })?;
    let mut c = Cursor { b: &bytes, pos: 0 };
    let truncated =
        |c: &Cursor<'_>, what: &str| bad(format!("truncated at byte {} ({what})", c.pos));
    if c.i32() != Some(0x6767_6d6c) {
        return Err(bad("not a whisper.cpp VAD model (bad magic)".into()));
    }
    let kind_len = c.i32().ok_or_else(|| truncated(&c, "the model type"))?;
    let kind = usize::try_from(kind_len)
        .ok()
        .filter(|n| (1..=64).contains(n))
        .and_then(|n| c.take(n))
        .ok_or_else(|| bad(format!("bad model type (length {kind_len})")))?;
    if !kind.starts_with(b"silero") {
        return Err(bad(format!(
            "model type {:?} is not a Silero VAD",
            String::from_utf8_lossy(kind)
        )));
    }
    // version (3), window, context, then the encoder layer count.
    for _ in 0..5 {
        c.i32().ok_or_else(|| truncated(&c, "the header"))?;
    }
    let layers = c.i32().ok_or_else(|| truncated(&c, "the header"))?;
    if !(1..=16).contains(&layers) {
        return Err(bad(format!("{layers} encoder layers")));
    }
    // (in, out, kernel) per layer, LSTM input/hidden, final conv in/out.
    for _ in 0..layers * 3 + 4 {
        c.i32().ok_or_else(|| truncated(&c, "the architecture"))?;
    }
    let mut tensors = 0;
    while c.pos < bytes.len() {
        let here = c.pos;
        let head = (c.i32(), c.i32(), c.i32());
        let (Some(n_dims @ 0..=4), Some(name_len @ 1..=256), Some(ttype @ 0..=1)) = head else {
            return Err(bad(format!(
                "tensor {tensors}: bad header at offset {here}"
            )));
        };
        let mut n = 1usize;
        for _ in 0..n_dims {
            match c.i32() {
                Some(d) if d > 0 => n = n.saturating_mul(d as usize),
                _ => {
                    return Err(bad(format!(
                        "tensor {tensors}: bad dimension at offset {}",
                        c.pos
                    )));
                }
            }
        }
        let size = name_len as usize + n.saturating_mul(if ttype == 1 { 2 } else { 4 });
        if c.take(size).is_none() {
            return Err(bad(format!(
                "truncated: tensor {tensors} needs {size} bytes at offset {}, the file has {}",
                c.pos,
                bytes.len()
            )));
        }
        tensors += 1;
    }
    if tensors == 0 {
        return Err(bad("no tensors".into()));
    }
    Ok(())
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
