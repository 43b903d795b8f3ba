//! Transcribing recorded audio: Silero VAD cuts the speech out, whisper
//! transcribes each stretch with its window fitted to it. This is the path
//! `seer transcribe FILE` takes, and the listen stage will take per
//! utterance.

use seer_models::Result;
use seer_models::speech::{SAMPLE_RATE, TranscribeOptions, Transcriber};
use seer_models::vad::{Vad, VadOptions};

/// One stretch of speech and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Start, ms from the start of the audio.
    pub start_ms: u64,
    /// End, ms.
    pub end_ms: u64,
    /// What was said.
    pub text: String,
    /// Time whisper took, ms.
    pub elapsed_ms: u64,
}

/// Transcribes 16 kHz mono `samples`: each speech segment on its own when a
/// VAD is given (silence is never sent to whisper), else the whole clip in
/// 30 s pieces.
pub fn transcribe_clip(
    samples: &[f32],
    vad: Option<(&mut Vad, &VadOptions)>,
    whisper: &mut Transcriber,
    opts: &TranscribeOptions,
) -> Result<Vec<Utterance>> {
    let ms_to_sample = |ms: u64| ((ms as usize) * SAMPLE_RATE / 1000).min(samples.len());
    let spans: Vec<(u64, u64)> = match vad {
        Some((vad, vopts)) => vad
            .segments(samples, vopts)?
            .into_iter()
            .map(|s| (s.start_ms, s.end_ms))
            .collect(),
        None => {
            let total = (samples.len() * 1000 / SAMPLE_RATE) as u64;
            (0..total.div_ceil(30_000))
                .map(|i| (i * 30_000, ((i + 1) * 30_000).min(total)))
                .collect()
        }
    };
    let mut out = Vec::new();
    for (start_ms, end_ms) in spans {
        let piece = &samples[ms_to_sample(start_ms)..ms_to_sample(end_ms)];
        if piece.is_empty() {
            continue;
        }
        let t = whisper.transcribe(piece, opts)?;
        if t.text.is_empty() {
            continue;
        }
        out.push(Utterance {
            start_ms,
            end_ms,
            text: t.text,
            elapsed_ms: t.elapsed_ms,
        });
    }
    Ok(out)
}
