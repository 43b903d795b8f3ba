//! A Piper voice's `.onnx.json`: sample rate, phoneme alphabet and the
//! default inference knobs. Only the keys synthesis needs are read; unknown
//! keys are Piper's business (training metadata) and are ignored.

use super::vits::Scales;
use crate::error::{ModelError, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Deserialize)]
struct Raw {
    audio: Audio,
    #[serde(default)]
    espeak: Option<Espeak>,
    #[serde(default)]
    inference: Option<Inference>,
    #[serde(default)]
    phoneme_type: Option<String>,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    num_symbols: Option<usize>,
    #[serde(default)]
    num_speakers: Option<usize>,
}

#[derive(Deserialize)]
struct Audio {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct Espeak {
    voice: String,
}

#[derive(Deserialize)]
struct Inference {
    noise_scale: Option<f32>,
    length_scale: Option<f32>,
    noise_w: Option<f32>,
}

/// What synthesis needs from a voice's `.onnx.json`.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    /// Output sample rate in Hz.
    pub sample_rate: u32,
    /// espeak-ng voice that produces this voice's phonemes (`en-us`).
    pub espeak_voice: String,
    /// The voice's own defaults.
    pub scales: Scales,
    /// Phoneme (one code point) → id.
    pub ids: HashMap<char, u32>,
    /// Ids of the begin, end and pad symbols.
    pub bos: u32,
    /// End of utterance.
    pub eos: u32,
    /// Placed after every phoneme.
    pub pad: u32,
    /// Size of the model's symbol table.
    pub num_symbols: usize,
}

impl VoiceConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the JSON text of `path` (named in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let key = |key: &str, reason: String| ModelError::Metadata {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let raw: Raw = serde_json::from_str(text).map_err(|e| ModelError::Metadata {
            path: path.to_owned(),
            key: "(file)".into(),
            reason: format!("not a Piper voice config: {e}"),
        })?;
        if let Some(t) = raw.phoneme_type.as_deref().filter(|t| *t != "espeak") {
            return Err(key(
                "phoneme_type",
                format!("`{t}`: only espeak-phonemised voices are supported"),
            ));
        }
        if let Some(n) = raw.num_speakers.filter(|&n| n > 1) {
            return Err(key(
                "num_speakers",
                format!("{n} speakers: only single-speaker voices are supported"),
            ));
        }
        if !(8000..=192_000).contains(&raw.audio.sample_rate) {
            return Err(key(
                "audio.sample_rate",
                format!("{} Hz is not an audio rate", raw.audio.sample_rate),
            ));
        }
        let mut ids = HashMap::new();
        for (phoneme, v) in &raw.phoneme_id_map {
            let mut chars = phoneme.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return Err(key(
                    "phoneme_id_map",
                    format!("key `{phoneme}` is not one character"),
                ));
            };
            let id = match v.as_slice() {
                [id] => u32::try_from(*id).ok(),
                _ => None,
            }
            .ok_or_else(|| {
                key(
                    "phoneme_id_map",
                    format!("`{phoneme}` maps to {v:?}, expected one id"),
                )
            })?;
            ids.insert(c, id);
        }
        let special = |c: char, name: &str| {
            ids.get(&c)
                .copied()
                .ok_or_else(|| key("phoneme_id_map", format!("no `{c}` ({name}) symbol")))
        };
        let (bos, eos, pad) = (
            special('^', "begin")?,
            special('$', "end")?,
            special('_', "pad")?,
        );
        let max_id = ids.values().copied().max().unwrap_or(0) as usize;
        let num_symbols = raw.num_symbols.unwrap_or(max_id + 1);
        if max_id >= num_symbols {
            return Err(key(
                "num_symbols",
                format!("{num_symbols}, but the map uses id {max_id}"),
            ));
        }
        let inf = raw.inference;
        let pick = |f: fn(&Inference) -> Option<f32>, d: f32| inf.as_ref().and_then(f).unwrap_or(d);
        let scales = Scales {
            noise: pick(|i| i.noise_scale, 0.667),
            length: pick(|i| i.length_scale, 1.0),
            noise_w: pick(|i| i.noise_w, 0.8),
        };
        if !(scales.length > 0.0 && scales.length.is_finite()) {
            return Err(key(
                "inference.length_scale",
                format!("{} must be above 0", scales.length),
            ));
        }
        Ok(Self {
            sample_rate: raw.audio.sample_rate,
            espeak_voice: raw.espeak.map_or_else(|| "en-us".to_owned(), |e| e.voice),
            scales,
            ids,
            bos,
            eos,
            pad,
            num_symbols,
        })
    }

    /// Piper's id layout for one sentence's phonemes: begin, pad, then each
    /// phoneme followed by pad, then end. Phonemes the voice does not know are
    /// dropped (as Piper does) and returned so the caller can log them.
    pub fn ids(&self, phonemes: &str) -> (Vec<u32>, Vec<char>) {
        let mut ids = vec![self.bos, self.pad];
        let mut missing = Vec::new();
        for c in phonemes.chars() {
            match self.ids.get(&c) {
                Some(&id) => ids.extend([id, self.pad]),
                None => missing.push(c),
            }
        }
        ids.push(self.eos);
        (ids, missing)
    }
}
