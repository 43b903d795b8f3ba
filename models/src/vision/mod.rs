//! Eyes for the language model: SmolVLM (Idefics3) = SigLIP vision tower +
//! pixel-shuffle connector + the crate's one Llama-family decoder.
//!
//! - [`preprocess`] is SmolVLM's image processor (resize, tiles, normalise,
//!   prompt expansion), bit-exact with transformers' PIL path.
//! - [`siglip`] is the vision tower and connector, written once against burn's
//!   run-time device like the decoder, with a fused CPU form in `cpu`
//!   (GEMMs over plain buffers, blockwise attention, f16 weights).
//! - [`Vision`] ties them together: it turns a photo and a rendered prompt
//!   into the decoder's input embeddings, with the image features in place of
//!   the `<image>` tokens.
//!
//! `docs/vision-fixtures.md` is the specification; the parity tests in
//! `models/tests/vision.rs` hold this code to transformers' numbers.

mod config;
mod cpu;
pub mod preprocess;
mod siglip;

pub use config::{VisionConfig, processor_from_hf_dir, processor_from_mmproj};
pub use preprocess::{ProcessorConfig, Tiles};
pub use siglip::VisionTower;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::llama::Llama;
use crate::weights::HfSource;
use burn::prelude::*;
use std::path::Path;

/// The placeholder the chat template writes for an image.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// One photo made ready for the model.
#[derive(Debug, Clone)]
pub struct PreparedImage {
    /// Tile grid (0 × 0 when untiled).
    pub rows: usize,
    /// Tile grid columns.
    pub cols: usize,
    /// Tiles including the global one.
    pub tiles: usize,
    /// `tiles × 3 × size × size`, normalised.
    pub pixels: Vec<f32>,
    /// Time spent resizing and tiling.
    pub prepare_ms: f64,
}

/// A vision tower with its processor settings: everything of a VLM except
/// the decoder.
#[derive(Debug, Clone)]
pub struct Vision {
    tower: VisionTower,
    processor: ProcessorConfig,
    image_token: u32,
}

impl Vision {
    /// Loads the tower from an HF SmolVLM directory (`config.json`,
    /// `model.safetensors`, `preprocessor_config.json`, `processor_config.json`).
    pub fn load_hf(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = VisionConfig::from_hf_json(&config_path)?;
        let processor = processor_from_hf_dir(dir, &config)?;
        let src = HfSource::open(dir)?;
        let tower = VisionTower::load(&src, &config, device)?;
        let text = std::fs::read_to_string(&config_path).map_err(|source| ModelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let image_token = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("image_token_id").and_then(|x| x.as_u64()))
            .ok_or_else(|| ModelError::Metadata {
                path: config_path,
                key: "image_token_id".into(),
                reason: "missing or not an unsigned integer".into(),
            })? as u32;
        Ok(Self {
            tower,
            processor,
            image_token,
        })
    }

    /// Loads the tower from llama.cpp's `mmproj` GGUF; `image_token` is the
    /// decoder vocabulary's `<image>` id.
    pub fn load_mmproj(path: &Path, image_token: u32, device: &Device) -> Result<Self> {
        let g = GgufFile::open(path)?;
        let config = VisionConfig::from_mmproj(&g)?;
        let processor = processor_from_mmproj(&g, &config)?;
        let tower = VisionTower::load(&g, &config, device)?;
        Ok(Self {
            tower,
            processor,
            image_token,
        })
    }

    /// The vision tower.
    pub fn tower(&self) -> &VisionTower {
        &self.tower
    }

    /// The processor settings.
    pub fn processor(&self) -> &ProcessorConfig {
        &self.processor
    }

    /// Turns tiling (a grid of full-resolution tiles plus a global view) on or
    /// off. Off is one tile per photo: 64 image tokens instead of up to 1088,
    /// the sane default on a small board.
    pub fn set_tiling(&mut self, on: bool) {
        self.processor.tiling = on;
    }

    /// The `<image>` token id.
    pub fn image_token(&self) -> u32 {
        self.image_token
    }

    /// Checks that the decoder this tower feeds has the width it projects to.
    pub fn check_decoder(&self, llama: &Llama) -> Result<()> {
        let want = self.tower.config().text_hidden_size;
        let have = llama.config().hidden_size;
        if want != have || self.image_token as usize >= llama.config().vocab_size {
            return Err(ModelError::InvalidRequest(format!(
                "the vision model projects to width {want} (image token {}), but the language model is {have} wide with {} tokens: they are not one model",
                self.image_token,
                llama.config().vocab_size
            )));
        }
        Ok(())
    }

    /// Resizes, tiles and normalises one photo.
    pub fn prepare(&self, image: &image::RgbImage) -> PreparedImage {
        let t0 = std::time::Instant::now();
        let tiles = preprocess::split(image, &self.processor);
        let pixels = preprocess::pixel_values(&tiles, &self.processor);
        PreparedImage {
            rows: tiles.rows,
            cols: tiles.cols,
            tiles: tiles.images.len(),
            pixels,
            prepare_ms: t0.elapsed().as_secs_f64() * 1e3,
        }
    }

    /// Replaces each `<image>` of a rendered prompt with the image's token
    /// layout, in order. The count must match: a question that itself
    /// contains the text `<image>` is refused rather than misread.
    pub fn expand_prompt(&self, text: &str, images: &[&PreparedImage]) -> Result<String> {
        let found = text.matches(IMAGE_PLACEHOLDER).count();
        if found != images.len() {
            return Err(ModelError::InvalidRequest(format!(
                "the prompt has {found} `{IMAGE_PLACEHOLDER}` placeholders for {} images (a question may not contain `{IMAGE_PLACEHOLDER}` itself)",
                images.len()
            )));
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        for img in images {
            let Some(at) = rest.find(IMAGE_PLACEHOLDER) else {
                break;
            };
            out.push_str(&rest[..at]);
            out.push_str(&preprocess::expand_image_prompt(
                img.rows,
                img.cols,
                self.processor.image_seq_len,
            ));
            rest = &rest[at + IMAGE_PLACEHOLDER.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Image features for all `images`, concatenated in order.
    pub fn encode(&self, images: &[&PreparedImage]) -> Result<Tensor<2>> {
        // One photo (every turn today): its pixels as they are, no copy.
        if let [one] = images {
            return self.tower.encode(&one.pixels);
        }
        let pixels: Vec<f32> = images
            .iter()
            .flat_map(|i| i.pixels.iter().copied())
            .collect();
        self.tower.encode(&pixels)
    }

    /// The decoder's input embeddings for `ids`, with the `k`-th `<image>`
    /// position replaced by feature row `k` (transformers' `masked_scatter`).
    pub fn merge(&self, llama: &Llama, ids: &[u32], features: Tensor<2>) -> Result<Tensor<2>> {
        let slots = ids.iter().filter(|&&t| t == self.image_token).count();
        let [rows, _] = features.dims();
        if slots != rows {
            return Err(ModelError::InvalidRequest(format!(
                "{slots} image tokens in the prompt for {rows} image features"
            )));
        }
        let text = llama.embed(ids)?;
        if slots == 0 {
            return Ok(text);
        }
        // Runs of text and image positions, stitched back in order.
        let mut parts = Vec::new();
        let (mut i, mut feat) = (0, 0);
        while i < ids.len() {
            let image = ids[i] == self.image_token;
            let start = i;
            while i < ids.len() && (ids[i] == self.image_token) == image {
                i += 1;
            }
            let len = i - start;
            if image {
                parts.push(features.clone().narrow(0, feat, len));
                feat += len;
            } else {
                parts.push(text.clone().narrow(0, start, len));
            }
        }
        Ok(Tensor::cat(parts, 0))
    }
}
