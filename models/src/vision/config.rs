//! Hyper-parameters of the SigLIP vision tower, the Idefics3 connector and
//! SmolVLM's image processor, read from an HF model directory
//! (`config.json`, `preprocessor_config.json`, `processor_config.json`) or from
//! llama.cpp's `mmproj` GGUF (`clip.*` metadata).

use super::preprocess::ProcessorConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use serde_json::Value;
use std::path::Path;

/// Everything needed to build a [`super::VisionTower`].
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// SigLIP width (768 in SmolVLM-256M).
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Side of the square tile the tower sees (512).
    pub image_size: usize,
    /// Side of one patch (16).
    pub patch_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Pixel-shuffle factor of the connector (4: 16 patches become one token).
    pub scale_factor: usize,
    /// The decoder's width, which the connector projects into.
    pub text_hidden_size: usize,
}

impl VisionConfig {
    /// Patches per tile side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Image tokens one tile becomes.
    pub fn tokens_per_tile(&self) -> usize {
        let g = self.grid() / self.scale_factor;
        g * g
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let c = self;
        if [
            c.hidden_size,
            c.intermediate_size,
            c.num_layers,
            c.num_heads,
        ]
        .contains(&0)
            || [
                c.image_size,
                c.patch_size,
                c.scale_factor,
                c.text_hidden_size,
            ]
            .contains(&0)
        {
            return Err("sizes and counts must be positive".into());
        }
        // Bounds far above any SigLIP, so a damaged config is refused
        // instead of sizing allocations.
        let limits = [
            ("hidden_size", c.hidden_size, 16_384),
            ("intermediate_size", c.intermediate_size, 65_536),
            ("num_hidden_layers", c.num_layers, 256),
            ("num_attention_heads", c.num_heads, 256),
            ("image_size", c.image_size, 4_096),
            ("patch_size", c.patch_size, 256),
            ("scale_factor", c.scale_factor, 16),
            ("text hidden_size", c.text_hidden_size, 32_768),
        ];
        for (key, v, max) in limits {
            if v > max {
                return Err(format!(
                    "{key} = {v} is beyond any supported model (at most {max})"
                ));
            }
        }
        if !c.hidden_size.is_multiple_of(c.num_heads) {
            return Err(format!(
                "hidden size {} is not a multiple of {} heads",
                c.hidden_size, c.num_heads
            ));
        }
        if !c.image_size.is_multiple_of(c.patch_size) {
            return Err(format!(
                "image size {} is not a multiple of patch size {}",
                c.image_size, c.patch_size
            ));
        }
        if !c.grid().is_multiple_of(c.scale_factor) {
            return Err(format!(
                "{} patches per side cannot be pixel-shuffled by scale factor {}",
                c.grid(),
                c.scale_factor
            ));
        }
        Ok(())
    }

    /// Reads `vision_config`, `scale_factor` and `text_config.hidden_size` of
    /// an Idefics3 `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let err = |key: &str, reason: &str| ModelError::Metadata {
            path: path.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        match v.get("model_type").and_then(Value::as_str) {
            Some("idefics3") => {}
            Some(other) => {
                return Err(err(
                    "model_type",
                    &format!("`{other}` is not a vision-language model Seer supports (idefics3)"),
                ));
            }
            None => return Err(err("model_type", "missing or not a string")),
        }
        let uint = |obj: &Value, prefix: &str, k: &str| -> Result<usize> {
            let key = format!("{prefix}{k}");
            obj.get(k)
                .ok_or_else(|| err(&key, "missing"))?
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| err(&key, "expected an unsigned integer"))
        };
        let vc = v
            .get("vision_config")
            .filter(|x| x.is_object())
            .ok_or_else(|| err("vision_config", "missing or not an object"))?;
        let tc = v
            .get("text_config")
            .filter(|x| x.is_object())
            .ok_or_else(|| err("text_config", "missing or not an object"))?;
        if let Some(act) = vc.get("hidden_act").and_then(Value::as_str)
            && act != "gelu_pytorch_tanh"
        {
            return Err(err(
                "vision_config.hidden_act",
                &format!("`{act}` is not supported (gelu_pytorch_tanh)"),
            ));
        }
        let cfg = Self {
            hidden_size: uint(vc, "vision_config.", "hidden_size")?,
            intermediate_size: uint(vc, "vision_config.", "intermediate_size")?,
            num_layers: uint(vc, "vision_config.", "num_hidden_layers")?,
            num_heads: uint(vc, "vision_config.", "num_attention_heads")?,
            image_size: uint(vc, "vision_config.", "image_size")?,
            patch_size: uint(vc, "vision_config.", "patch_size")?,
            layer_norm_eps: vc
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            scale_factor: match v.get("scale_factor") {
                None => 2,
                Some(_) => uint(&v, "", "scale_factor")?,
            },
            text_hidden_size: uint(tc, "text_config.", "hidden_size")?,
        };
        cfg.validate().map_err(|r| err("vision_config", &r))?;
        Ok(cfg)
    }

    /// Reads llama.cpp's `mmproj` GGUF metadata (`clip.projector_type` idefics3).
    pub fn from_mmproj(g: &GgufFile) -> Result<Self> {
        let ty = g.require_str("clip.projector_type")?;
        if ty != "idefics3" {
            return Err(g.meta_err(
                "clip.projector_type",
                &format!("`{ty}` is not a projector Seer supports (idefics3)"),
            ));
        }
        let u = |k: &str| -> Result<usize> { Ok(g.require_u64(k)? as usize) };
        let cfg = Self {
            hidden_size: u("clip.vision.embedding_length")?,
            intermediate_size: u("clip.vision.feed_forward_length")?,
            num_layers: u("clip.vision.block_count")?,
            num_heads: u("clip.vision.attention.head_count")?,
            image_size: u("clip.vision.image_size")?,
            patch_size: u("clip.vision.patch_size")?,
            layer_norm_eps: match g.get("clip.vision.attention.layer_norm_epsilon") {
                Some(_) => g.require_f64("clip.vision.attention.layer_norm_epsilon")?,
                None => 1e-6,
            },
            scale_factor: match g.get("clip.vision.projector.scale_factor") {
                Some(_) => u("clip.vision.projector.scale_factor")?,
                None => 2,
            },
            text_hidden_size: u("clip.vision.projection_dim")?,
        };
        cfg.validate()
            .map_err(|r| g.meta_err("clip.vision.*", &r))?;
        Ok(cfg)
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
        path: path.to_owned(),
        key: "(file)".into(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// Reads `preprocessor_config.json` and `processor_config.json` of an HF
/// directory. `image_seq_len` comes from the processor file, as transformers
/// does (it is not recomputed from the model), and is checked against the model.
pub fn processor_from_hf_dir(dir: &Path, vision: &VisionConfig) -> Result<ProcessorConfig> {
    let pre_path = dir.join("preprocessor_config.json");
    let pre = read_json(&pre_path)?;
    let err = |path: &Path, key: &str, reason: String| ModelError::Metadata {
        path: path.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let edge = |key: &str| -> Result<u32> {
        pre.get(key)
            .and_then(|s| s.get("longest_edge"))
            .and_then(Value::as_u64)
            .and_then(|x| u32::try_from(x).ok())
            .filter(|&x| x > 0)
            .ok_or_else(|| {
                err(
                    &pre_path,
                    &format!("{key}.longest_edge"),
                    "missing or not a positive integer".into(),
                )
            })
    };
    let triple = |key: &str| -> Result<[f32; 3]> {
        match pre.get(key).and_then(Value::as_array) {
            None => Ok([0.5; 3]),
            Some(a) if a.len() == 3 && a.iter().all(Value::is_number) => Ok([
                a[0].as_f64().unwrap_or(0.5) as f32,
                a[1].as_f64().unwrap_or(0.5) as f32,
                a[2].as_f64().unwrap_or(0.5) as f32,
            ]),
            Some(_) => Err(err(&pre_path, key, "expected three numbers".into())),
        }
    };
    if let Some(r) = pre.get("resample").and_then(Value::as_u64)
        && r != 1
    {
        return Err(err(
            &pre_path,
            "resample",
            format!("{r} is not supported (1, LANCZOS)"),
        ));
    }
    let proc_path = dir.join("processor_config.json");
    let seq = match std::fs::read_to_string(&proc_path) {
        Ok(_) => read_json(&proc_path)?
            .get("image_seq_len")
            .and_then(Value::as_u64)
            .map(|x| x as usize),
        Err(_) => None,
    }
    .unwrap_or_else(|| vision.tokens_per_tile());
    if seq != vision.tokens_per_tile() {
        return Err(err(
            &proc_path,
            "image_seq_len",
            format!(
                "{seq}, but the vision model makes {} tokens per tile",
                vision.tokens_per_tile()
            ),
        ));
    }
    let cfg = ProcessorConfig {
        longest_edge: edge("size")?,
        tile: edge("max_image_size")?,
        image_seq_len: seq,
        tiling: pre
            .get("do_image_splitting")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        rescale_factor: pre
            .get("rescale_factor")
            .and_then(Value::as_f64)
            .unwrap_or(1.0 / 255.0),
        mean: triple("image_mean")?,
        std: triple("image_std")?,
    };
    check_tile(&cfg, vision, &pre_path)?;
    Ok(cfg)
}

/// The processor settings llama.cpp keeps in the `mmproj` GGUF.
pub fn processor_from_mmproj(g: &GgufFile, vision: &VisionConfig) -> Result<ProcessorConfig> {
    let triple = |key: &str| -> Result<[f32; 3]> {
        match g.get(key).and_then(|v| v.as_array()) {
            None => Ok([0.5; 3]),
            Some(a) if a.len() == 3 => {
                let f = |i: usize| a[i].as_f64().map(|x| x as f32);
                match (f(0), f(1), f(2)) {
                    (Some(x), Some(y), Some(z)) => Ok([x, y, z]),
                    _ => Err(g.meta_err(key, "expected three numbers")),
                }
            }
            Some(_) => Err(g.meta_err(key, "expected three numbers")),
        }
    };
    let tile = vision.image_size as u32;
    let cfg = ProcessorConfig {
        longest_edge: match g.get("clip.vision.preproc_image_size") {
            Some(_) => u32::try_from(g.require_u64("clip.vision.preproc_image_size")?)
                .map_err(|_| g.meta_err("clip.vision.preproc_image_size", "too large"))?,
            None => tile * 4,
        },
        tile,
        image_seq_len: vision.tokens_per_tile(),
        tiling: true,
        rescale_factor: 1.0 / 255.0,
        mean: triple("clip.vision.image_mean")?,
        std: triple("clip.vision.image_std")?,
    };
    check_tile(&cfg, vision, g.path())?;
    Ok(cfg)
}

fn check_tile(cfg: &ProcessorConfig, vision: &VisionConfig, path: &Path) -> Result<()> {
    // At most 8 × 8 tiles plus the global one (SmolVLM: 4 × 4).
    if cfg.tile as usize != vision.image_size
        || cfg.longest_edge < cfg.tile
        || cfg.longest_edge > cfg.tile.saturating_mul(8)
    {
        return Err(ModelError::Metadata {
            path: path.to_owned(),
            key: "max_image_size".into(),
            reason: format!(
                "tile {} and longest edge {} do not fit a vision model of image size {} (the longest edge must be 1 to 8 tiles)",
                cfg.tile, cfg.longest_edge, vision.image_size
            ),
        });
    }
    if cfg.std.contains(&0.0) {
        return Err(ModelError::Metadata {
            path: path.to_owned(),
            key: "image_std".into(),
            reason: "a standard deviation of 0".into(),
        });
    }
    Ok(())
}
