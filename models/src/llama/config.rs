//! Hyper-parameters of a Llama-family decoder, read from GGUF metadata
//! (`llama.*`, `qwen2.*`) or a Hugging Face `config.json`.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use std::path::Path;

/// How the rotary frequencies are laid out in the checkpoint's q/k weights.
///
/// HF checkpoints and GGUF `qwen2` use the "half split" (NeoX) layout; llama.cpp's
/// converter permutes `llama` q/k rows into interleaved pairs. The loader undoes
/// that permutation so the model code has one RoPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM2, Mistral-style models.
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v biases.
    Qwen2,
}

/// Llama 3's frequency-dependent RoPE scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    /// Overall scaling factor.
    pub factor: f64,
    /// Wavelengths longer than `original_max_position_embeddings / low_freq_factor` are scaled fully.
    pub low_freq_factor: f64,
    /// Wavelengths shorter than `original / high_freq_factor` are not scaled.
    pub high_freq_factor: f64,
    /// The context the model was pre-trained with.
    pub original_max_position_embeddings: f64,
}

/// Everything needed to build a [`super::Llama`].
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Architecture family (decides bias and weight layout).
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Optional Llama-3 scaling (HF config path; GGUF carries `rope_freqs.weight` instead).
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// The context length the model was trained for.
    pub max_position_embeddings: usize,
    /// Output projection shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections have biases (Qwen2).
    pub attention_bias: bool,
}

impl LlamaConfig {
    /// Reads the config from GGUF metadata. `tie_word_embeddings` is decided by
    /// whether `output.weight` exists, as llama.cpp does.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch_name = g.require_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(g.meta_err(
                    "general.architecture",
                    &format!("architecture `{other}` is not a Llama-family model Seer supports (llama, qwen2)"),
                ));
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_key = |k: &str| -> Result<usize> { Ok(g.require_u64(&key(k))? as usize) };
        let hidden_size = usize_key("embedding_length")?;
        let num_heads = usize_key("attention.head_count")?;
        let num_kv_heads = match g.get(&key("attention.head_count_kv")) {
            Some(_) => usize_key("attention.head_count_kv")?,
            None => num_heads,
        };
        let head_dim = match g.get(&key("attention.key_length")) {
            Some(_) => usize_key("attention.key_length")?,
            None => hidden_size / num_heads.max(1),
        };
        let vocab_size = match g.get(&key("vocab_size")) {
            Some(_) => usize_key("vocab_size")?,
            None => g
                .tensor("token_embd.weight")
                .map(|t| t.dims.get(1).copied().unwrap_or(0) as usize)
                .ok_or_else(|| {
                    g.meta_err(&key("vocab_size"), "missing, and no token_embd.weight")
                })?,
        };
        let rope_theta = match g.get(&key("rope.freq_base")) {
            Some(_) => g.require_f64(&key("rope.freq_base"))?,
            None => 10_000.0,
        };
        let cfg = Self {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: usize_key("feed_forward_length")?,
            num_layers: usize_key("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: g.require_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta,
            rope_scaling: None,
            max_position_embeddings: usize_key("context_length")?,
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            attention_bias: arch == Arch::Qwen2,
        };
        cfg.validate()
            .map_err(|reason| g.meta_err(arch_name, &reason))?;
        Ok(cfg)
    }

    /// Reads an HF `config.json` (`LlamaForCausalLM`, `Qwen2ForCausalLM`).
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_owned(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
                path: path.to_owned(),
                key: "(file)".into(),
                reason: format!("not valid JSON: {e}"),
            })?;
        // Vision-language checkpoints (SmolVLM / Idefics3) nest the decoder's
        // config in `text_config`; whether the head is tied is a top-level key.
        if v.get("model_type").and_then(|m| m.as_str()) == Some("idefics3") {
            let mut text = v
                .get("text_config")
                .cloned()
                .ok_or_else(|| ModelError::Metadata {
                    path: path.to_owned(),
                    key: "text_config".into(),
                    reason: "missing (an idefics3 config needs one)".into(),
                })?;
            if let (Some(obj), Some(tie)) =
                (text.as_object_mut(), v.get("tie_word_embeddings").cloned())
            {
                obj.insert("tie_word_embeddings".into(), tie);
            }
            return Self::from_hf_value(&text, path);
        }
        Self::from_hf_value(&v, path)
    }

    /// Reads a decoder config from an already parsed `config.json` object;
    /// `path` only names the file in errors.
    pub fn from_hf_value(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let err = |key: &str, reason: &str| ModelError::Metadata {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let req_u = |k: &str| -> Result<usize> {
            v.get(k)
                .ok_or_else(|| err(k, "missing"))?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| err(k, "expected an unsigned integer"))
        };
        let opt_f = |k: &str, d: f64| -> Result<f64> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(x) => x.as_f64().ok_or_else(|| err(k, "expected a number")),
            }
        };
        let opt_b = |k: &str, d: bool| -> Result<bool> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(d),
                Some(x) => x.as_bool().ok_or_else(|| err(k, "expected true or false")),
            }
        };
        let model_type = v
            .get("model_type")
            .and_then(|m| m.as_str())
            .ok_or_else(|| err("model_type", "missing or not a string"))?;
        let arch = match model_type {
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(err(
                    "model_type",
                    &format!("`{other}` is not supported (llama, qwen2)"),
                ));
            }
        };
        let hidden_size = req_u("hidden_size")?;
        let num_heads = req_u("num_attention_heads")?;
        let num_kv_heads = match v.get("num_key_value_heads") {
            Some(serde_json::Value::Null) | None => num_heads,
            Some(_) => req_u("num_key_value_heads")?,
        };
        let head_dim = match v.get("head_dim") {
            Some(serde_json::Value::Null) | None => hidden_size / num_heads.max(1),
            Some(_) => req_u("head_dim")?,
        };
        // transformers ≥ 5 writes `rope_parameters` (with `rope_theta` inside)
        // instead of `rope_scaling`; published checkpoints use the older layout.
        let rope_params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_scaling = match v
            .get("rope_scaling")
            .filter(|r| !r.is_null())
            .or(rope_params)
        {
            None | Some(serde_json::Value::Null) => None,
            Some(rs) => {
                let ty = rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                match ty {
                    "llama3" => {
                        let f = |k: &str| {
                            rs.get(k).and_then(|x| x.as_f64()).ok_or_else(|| {
                                err(&format!("rope_scaling.{k}"), "missing or not a number")
                            })
                        };
                        Some(Llama3RopeScaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f(
                                "original_max_position_embeddings",
                            )?,
                        })
                    }
                    "default" => None,
                    other => {
                        return Err(err(
                            "rope_scaling.rope_type",
                            &format!("`{other}` is not supported (llama3, default)"),
                        ));
                    }
                }
            }
        };
        let cfg = Self {
            arch,
            vocab_size: req_u("vocab_size")?,
            hidden_size,
            intermediate_size: req_u("intermediate_size")?,
            num_layers: req_u("num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: opt_f("rms_norm_eps", 1e-6)?,
            rope_theta: match rope_params
                .and_then(|p| p.get("rope_theta"))
                .and_then(|t| t.as_f64())
            {
                Some(t) if v.get("rope_theta").is_none() => t,
                _ => opt_f("rope_theta", 10_000.0)?,
            },
            rope_scaling,
            max_position_embeddings: req_u("max_position_embeddings")?,
            tie_word_embeddings: opt_b("tie_word_embeddings", false)?,
            attention_bias: opt_b("attention_bias", arch == Arch::Qwen2)?,
        };
        cfg.validate().map_err(|reason| err("(shape)", &reason))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.num_heads == 0 || self.num_kv_heads == 0 || self.head_dim == 0 {
            return Err("head counts and head size must be positive".into());
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head size {} is odd; RoPE needs pairs",
                self.head_dim
            ));
        }
        if self.hidden_size == 0 || self.vocab_size == 0 || self.num_layers == 0 {
            return Err("width, vocabulary and layer count must be positive".into());
        }
        Ok(())
    }

    /// RoPE inverse frequencies (`head_dim / 2` of them), with Llama-3 scaling
    /// applied when configured.
    pub fn inv_freq(&self) -> Vec<f64> {
        let half = self.head_dim / 2;
        let mut f: Vec<f64> = (0..half)
            .map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / self.head_dim as f64))
            .collect();
        if let Some(s) = self.rope_scaling {
            let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
            for x in &mut f {
                let wavelen = 2.0 * std::f64::consts::PI / *x;
                if wavelen > low_wavelen {
                    *x /= s.factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *x = (1.0 - smooth) * *x / s.factor + smooth * *x;
                }
            }
        }
        f
    }
}
