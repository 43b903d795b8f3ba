//! The SigLIP vision transformer and the Idefics3 connector: read it next to
//! transformers' `modeling_idefics3.py` (and `docs/vision-fixtures.md`,
//! sections 5 and 6).
//!
//! Tiles are encoded a few at a time: attention over 1024 patches is a
//! `[heads, 1024, 1024]` matrix per tile, and a 4×4-tiled photo has 17 tiles,
//! so batching them all would need close to a gigabyte on a small board.

use super::config::VisionConfig;
use crate::error::{ModelError, Result};
use crate::weights::{Source, want_tensor};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType};

/// Tiles run through the encoder together.
const TILES_PER_BATCH: usize = 2;

/// One pre-norm encoder layer.
#[derive(Debug, Clone)]
struct Layer {
    ln1: (Tensor<2>, Tensor<2>),
    /// q, k, v stacked `[D, 3D]`, and their biases `[1, 3D]`.
    wqkv: Tensor<2>,
    bqkv: Tensor<2>,
    wo: Tensor<2>,
    bo: Tensor<2>,
    ln2: (Tensor<2>, Tensor<2>),
    fc1: Tensor<2>,
    b1: Tensor<2>,
    fc2: Tensor<2>,
    b2: Tensor<2>,
}

/// SigLIP + pixel-shuffle connector on one device. Weights are `[in, out]`
/// (burn's convention), so a projection is `x·W + b`.
///
/// On a GPU the weight matrices are kept in f16 (what SmolVLM's files hold,
/// so nothing is lost) and widened to f32 where they are used: half the
/// device memory, the same numbers. On the CPU they stay f32, where
/// widening per use would cost time on every tile.
#[derive(Debug, Clone)]
pub struct VisionTower {
    config: VisionConfig,
    device: Device,
    /// The patch convolution as a matrix `[3·P·P, D]` over (c, ky, kx) patches.
    patch_w: Tensor<2>,
    patch_b: Tensor<2>,
    /// `[patches, D]`; a full tile uses position `i` for patch `i`.
    pos: Tensor<2>,
    layers: Vec<Layer>,
    post_ln: (Tensor<2>, Tensor<2>),
    /// `[D·s², text hidden]`, no bias.
    proj: Tensor<2>,
}

impl VisionTower {
    /// Builds the tower from GGUF-named tensors (`v.*`, `mm.model.fc.weight`),
    /// read from an `mmproj` GGUF or mapped from an HF checkpoint.
    pub(crate) fn load(src: &dyn Source, c: &VisionConfig, dev: &Device) -> Result<Self> {
        let want = |name: &str, shape: &[usize]| want_tensor(src, name, shape, "vision model");
        let (d, p, i) = (c.hidden_size, c.patch_size, c.intermediate_size);
        let n = c.grid() * c.grid();
        let row = |v: Vec<f32>| {
            let len = v.len();
            Tensor::<2>::from_data(TensorData::new(v, [1, len]), dev)
        };
        // `[out, in]` rows (PyTorch) → `[in, out]`.
        let dtype = if *dev == Device::flex() {
            DType::F32
        } else {
            DType::F16
        };
        let linear = |w: Vec<f32>, out: usize, inp: usize| {
            Tensor::<2>::from_data(TensorData::new(w, [out, inp]), (dev, dtype)).transpose()
        };
        let norm = |prefix: &str| -> Result<(Tensor<2>, Tensor<2>)> {
            Ok((
                row(want(&format!("{prefix}.weight"), &[d])?),
                row(want(&format!("{prefix}.bias"), &[d])?),
            ))
        };
        let mut layers = Vec::with_capacity(c.num_layers);
        for l in 0..c.num_layers {
            let name = |s: &str| format!("v.blk.{l}.{s}");
            let (mut qkv_w, mut qkv_b) = (Vec::new(), Vec::new());
            for part in ["attn_q", "attn_k", "attn_v"] {
                qkv_w.extend(want(&name(&format!("{part}.weight")), &[d, d])?);
                qkv_b.extend(want(&name(&format!("{part}.bias")), &[d])?);
            }
            layers.push(Layer {
                ln1: norm(&name("ln1"))?,
                wqkv: linear(qkv_w, 3 * d, d),
                bqkv: row(qkv_b),
                wo: linear(want(&name("attn_out.weight"), &[d, d])?, d, d),
                bo: row(want(&name("attn_out.bias"), &[d])?),
                ln2: norm(&name("ln2"))?,
                fc1: linear(want(&name("ffn_up.weight"), &[i, d])?, i, d),
                b1: row(want(&name("ffn_up.bias"), &[i])?),
                fc2: linear(want(&name("ffn_down.weight"), &[d, i])?, d, i),
                b2: row(want(&name("ffn_down.bias"), &[d])?),
            });
            src.release();
        }
        let s2 = c.scale_factor * c.scale_factor;
        Ok(Self {
            config: c.clone(),
            device: dev.clone(),
            patch_w: linear(want("v.patch_embd.weight", &[d, 3, p, p])?, d, 3 * p * p),
            patch_b: row(want("v.patch_embd.bias", &[d])?),
            pos: Tensor::from_data(
                TensorData::new(want("v.position_embd.weight", &[n, d])?, [n, d]),
                dev,
            ),
            layers,
            post_ln: norm("v.post_ln")?,
            proj: linear(
                want("mm.model.fc.weight", &[c.text_hidden_size, d * s2])?,
                c.text_hidden_size,
                d * s2,
            ),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// Image features `[tiles · tokens_per_tile, text hidden]` for `pixels`
    /// (`tiles × 3 × size × size`, normalised, CHW), in tile order.
    pub fn encode(&self, pixels: &[f32]) -> Result<Tensor<2>> {
        let tiles = self.tile_count(pixels)?;
        let mut out = Vec::new();
        for first in (0..tiles).step_by(TILES_PER_BATCH) {
            let count = TILES_PER_BATCH.min(tiles - first);
            let h = self.hidden_states(pixels, first, count);
            out.push(self.connect(h));
        }
        Ok(Tensor::cat(out, 0))
    }

    /// The tower's output (after `post_layernorm`) `[tiles, patches, D]` for
    /// all tiles at once; what the parity tests compare.
    pub fn last_hidden_state(&self, pixels: &[f32]) -> Result<Tensor<3>> {
        let tiles = self.tile_count(pixels)?;
        Ok(self.hidden_states(pixels, 0, tiles))
    }

    /// Pixel shuffle and projection: `[tiles, patches, D]` → `[tiles · G², text hidden]`.
    pub fn connect(&self, h: Tensor<3>) -> Tensor<2> {
        let c = &self.config;
        let [tiles, _, d] = h.dims();
        let (g, s) = (c.grid(), c.scale_factor);
        let gg = g / s;
        // Patch (R·s + i, C·s + j) → token (R, C), channel (i·s + j)·D + e.
        let x = h
            .reshape([tiles, gg, s, gg, s, d])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([tiles * gg * gg, s * s * d]);
        x.matmul(wide(&self.proj))
    }

    fn tile_count(&self, pixels: &[f32]) -> Result<usize> {
        let per = 3 * self.config.image_size * self.config.image_size;
        if pixels.is_empty() || !pixels.len().is_multiple_of(per) {
            return Err(ModelError::InvalidRequest(format!(
                "{} pixel values are not a whole number of {}×{} RGB tiles",
                pixels.len(),
                self.config.image_size,
                self.config.image_size
            )));
        }
        Ok(pixels.len() / per)
    }

    /// Tiles `first..first+count` through embedding, encoder and post-norm.
    fn hidden_states(&self, pixels: &[f32], first: usize, count: usize) -> Tensor<3> {
        let c = &self.config;
        let (d, h) = (c.hidden_size, c.num_heads);
        let hd = d / h;
        let n = c.grid() * c.grid();
        let patches = self.patches(pixels, first, count);
        let mut x = patches.matmul(wide(&self.patch_w)) + self.patch_b.clone();
        x = (x.reshape([count, n, d]) + self.pos.clone().unsqueeze_dim::<3>(0))
            .reshape([count * n, d]);
        let eps = c.layer_norm_eps;
        let scale = (hd as f64).powf(-0.5);
        for l in &self.layers {
            let y = layer_norm(x.clone(), &l.ln1, eps);
            let qkv = y.matmul(wide(&l.wqkv)) + l.bqkv.clone();
            let heads = |i: usize| {
                qkv.clone()
                    .narrow(1, i * d, d)
                    .reshape([count, n, h, hd])
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (heads(0), heads(1), heads(2));
            let att = softmax(q.matmul(k.swap_dims(2, 3)).mul_scalar(scale), 3);
            let o = att.matmul(v).swap_dims(1, 2).reshape([count * n, d]);
            x = x + o.matmul(wide(&l.wo)) + l.bo.clone();
            let y = layer_norm(x.clone(), &l.ln2, eps);
            let y = gelu_tanh(y.matmul(wide(&l.fc1)) + l.b1.clone());
            x = x + y.matmul(wide(&l.fc2)) + l.b2.clone();
        }
        layer_norm(x, &self.post_ln, eps).reshape([count, n, d])
    }

    /// im2col on the host: `[count · patches, 3·P·P]`, patch `py·g + px`,
    /// values in (c, ky, kx) order to match the flattened conv weight.
    fn patches(&self, pixels: &[f32], first: usize, count: usize) -> Tensor<2> {
        let c = &self.config;
        let (m, p, g) = (c.image_size, c.patch_size, c.grid());
        let per = 3 * m * m;
        let k = 3 * p * p;
        let mut out = Vec::with_capacity(count * g * g * k);
        for t in first..first + count {
            let tile = &pixels[t * per..(t + 1) * per];
            for py in 0..g {
                for px in 0..g {
                    for ch in 0..3 {
                        for ky in 0..p {
                            let start = ch * m * m + (py * p + ky) * m + px * p;
                            out.extend_from_slice(&tile[start..start + p]);
                        }
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(out, [count * g * g, k]), &self.device)
    }
}

/// A weight as f32 for a product with f32 activations (f16 on a GPU).
fn wide(w: &Tensor<2>) -> Tensor<2> {
    if w.dtype() == DType::F32 {
        w.clone()
    } else {
        w.clone().cast(FloatDType::F32)
    }
}

/// LayerNorm over the last axis with the biased variance, as `nn.LayerNorm`.
fn layer_norm(x: Tensor<2>, (w, b): &(Tensor<2>, Tensor<2>), eps: f64) -> Tensor<2> {
    let centred = x.clone() - x.mean_dim(1);
    let var = (centred.clone() * centred.clone()).mean_dim(1);
    centred * var.add_scalar(eps).sqrt().recip() * w.clone() + b.clone()
}

/// `gelu_pytorch_tanh`: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
fn gelu_tanh(x: Tensor<2>) -> Tensor<2> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.clone().mul_scalar(0.5) * (inner.tanh().add_scalar(1.0))
}
