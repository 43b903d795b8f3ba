//! Seer's voice: Piper (VITS) voices, run by hand-written burn code.
//!
//! A Piper voice is two files: `NAME.onnx` (the network, exported from
//! PyTorch) and `NAME.onnx.json` (sample rate, phoneme alphabet, defaults).
//! Seer reads the weights out of the `.onnx` with a small protobuf reader
//! ([`onnx`]) and runs its own implementation of the network ([`vits`]), so
//! any Piper voice works unchanged and no onnxruntime is needed.
//! Phonemes come from the `espeak-ng` program ([`phonemize`]), run as a
//! child process so its GPL never reaches Seer's binaries.

pub mod config;
mod cpu;
pub mod onnx;
pub mod phonemize;
pub mod vits;

pub use config::VoiceConfig;
pub use phonemize::Phonemizer;
pub use vits::{Scales, Synthesis, Vits};

use crate::error::{ModelError, Result};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// Longest sentence, in phonemes, given to the network at once. Attention
/// is quadratic in it; a run-on "sentence" beyond this is cut into pieces.
pub const MAX_PHONEMES: usize = 400;

/// Cuts `sentence` into pieces of at most `max` phonemes, after the last
/// word break that fits (mid-word only for a "word" longer than `max`).
fn pieces(sentence: &str, max: usize) -> Vec<String> {
    let chars: Vec<char> = sentence.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    while chars.len() - start > max {
        let window = &chars[start..start + max];
        let cut = window
            .iter()
            .rposition(|&c| c == ' ')
            .map_or(max, |i| i + 1);
        out.push(
            chars[start..start + cut]
                .iter()
                .collect::<String>()
                .trim()
                .to_owned(),
        );
        start += cut;
    }
    out.push(chars[start..].iter().collect::<String>().trim().to_owned());
    out.retain(|p| !p.is_empty());
    out
}

/// A loaded voice: config, phonemizer and network.
#[derive(Debug, Clone)]
pub struct Voice {
    config: VoiceConfig,
    phonemizer: Phonemizer,
    vits: Vits,
    path: PathBuf,
}

/// The `.onnx.json` beside a voice's `.onnx`.
pub fn config_path(onnx: &Path) -> PathBuf {
    let mut p = onnx.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

impl Voice {
    /// Loads `onnx` and the `.onnx.json` beside it (or `config`).
    pub fn load(onnx: &Path, config: Option<&Path>, dev: &Device) -> Result<Self> {
        let json = config.map_or_else(|| config_path(onnx), Path::to_owned);
        let config = VoiceConfig::load(&json)?;
        let file = onnx::OnnxFile::open(onnx)?;
        let vits = Vits::load(&file, dev)?;
        if vits.symbols() < config.num_symbols {
            return Err(ModelError::Metadata {
                path: json,
                key: "num_symbols".into(),
                reason: format!(
                    "{} symbols, but {} has {} phoneme embeddings: the config belongs to another voice",
                    config.num_symbols,
                    onnx.display(),
                    vits.symbols()
                ),
            });
        }
        let phonemizer = Phonemizer::new(&config.espeak_voice);
        Ok(Self {
            config,
            phonemizer,
            vits,
            path: onnx.to_owned(),
        })
    }

    /// Replaces the phonemizer (another `espeak-ng` program).
    pub fn with_phonemizer(mut self, p: Phonemizer) -> Self {
        self.phonemizer = p;
        self
    }

    /// The voice's config.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// The `.onnx` file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Phoneme ids for each sentence of `text`, in Piper's layout; long
    /// sentences are cut into pieces of at most [`MAX_PHONEMES`].
    pub fn ids(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::new();
        for sentence in self.phonemizer.phonemize(text)? {
            for piece in pieces(&sentence, MAX_PHONEMES) {
                let (ids, missing) = self.config.ids(&piece);
                if !missing.is_empty() {
                    tracing::debug!(?missing, "phonemes the voice does not know were dropped");
                }
                out.push(ids);
            }
        }
        Ok(out)
    }

    /// Audio for one id sequence (one sentence).
    pub fn synthesize_ids(&self, ids: &[u32], scales: Scales) -> Result<Synthesis> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.vits.symbols()) {
            return Err(ModelError::InvalidRequest(format!(
                "phoneme id {bad} is beyond the voice's {} symbols",
                self.vits.symbols()
            )));
        }
        if ids.is_empty() {
            return Ok(Synthesis {
                samples: Vec::new(),
                durations: Vec::new(),
            });
        }
        Ok(self.vits.synthesize(ids, scales))
    }

    /// Speaks all of `text` with the voice's default scales, sentence after
    /// sentence, into one buffer (for `seer say --out`).
    pub fn speak(&self, text: &str) -> Result<Vec<f32>> {
        let sentences = self.ids(text)?;
        if sentences.is_empty() {
            return Err(ModelError::InvalidRequest(
                "the text has nothing espeak-ng can pronounce".into(),
            ));
        }
        let mut out = Vec::new();
        for ids in sentences {
            out.extend(self.synthesize_ids(&ids, self.config.scales)?.samples);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::pieces;

    #[test]
    fn long_sentences_are_cut_at_word_breaks() {
        assert_eq!(pieces("ab cd ef", 5), vec!["ab", "cd ef"]);
        assert_eq!(pieces("ab cd ef", 8), vec!["ab cd ef"]);
        assert_eq!(pieces("abcdefgh ij", 4), vec!["abcd", "efgh", "ij"]);
        assert!(pieces("", 4).is_empty());
    }
}
