//! The SigLIP vision transformer and the Idefics3 connector: read it next to
//! transformers' `modeling_idefics3.py` (and `docs/vision-fixtures.md`,
//! sections 5 and 6).
//!
//! Two implementations of the same arithmetic: burn's graph, on any device
//! (wgpu runs it), and on the CPU the fused form in [`super::cpu`]
//! (`SEER_FUSED_CPU=0` keeps the graph there too, to compare them).
//!
//! Tiles are encoded a few at a time: in the graph, attention over 1024
//! patches is a `[heads, 1024, 1024]` matrix per tile, and a 4×4-tiled photo
//! has 17 tiles, so batching them all would need close to a gigabyte on a
//! small board.

use super::config::VisionConfig;
use super::cpu::{self, Mat};
use crate::error::{ModelError, Result};
use crate::weights::{Source, want_tensor};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::{DType, FloatDType};
use std::sync::Arc;

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

/// One encoder layer's weights as the file has them (f32, `[out, in]`).
struct RawLayer {
    ln1: (Vec<f32>, Vec<f32>),
    /// q, k, v rows stacked `[3D, D]`, and their biases.
    qkv_w: Vec<f32>,
    qkv_b: Vec<f32>,
    wo: Vec<f32>,
    bo: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
    fc1: Vec<f32>,
    b1: Vec<f32>,
    fc2: Vec<f32>,
    b2: Vec<f32>,
}

/// SigLIP + pixel-shuffle connector on one device.
#[derive(Debug, Clone)]
pub struct VisionTower {
    config: VisionConfig,
    device: Device,
    imp: Imp,
}

#[derive(Debug, Clone)]
enum Imp {
    Graph(Arc<Graph>),
    Cpu(Arc<cpu::Tower>),
}

/// The tower as burn tensors. Weights are `[in, out]` (burn's convention),
/// so a projection is `x·W + b`.
///
/// On a GPU the weight matrices are kept in f16 (what SmolVLM's files hold,
/// so nothing is lost) and widened to f32 where they are used: half the
/// device memory, the same numbers.
#[derive(Debug, Clone)]
struct Graph {
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
        let s2 = c.scale_factor * c.scale_factor;
        let norm = |prefix: &str| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((
                want(&format!("{prefix}.weight"), &[d])?,
                want(&format!("{prefix}.bias"), &[d])?,
            ))
        };
        let read_layer = |l: usize| -> Result<RawLayer> {
            let name = |s: &str| format!("v.blk.{l}.{s}");
            let (mut qkv_w, mut qkv_b) = (Vec::new(), Vec::new());
            for part in ["attn_q", "attn_k", "attn_v"] {
                qkv_w.extend(want(&name(&format!("{part}.weight")), &[d, d])?);
                qkv_b.extend(want(&name(&format!("{part}.bias")), &[d])?);
            }
            Ok(RawLayer {
                ln1: norm(&name("ln1"))?,
                qkv_w,
                qkv_b,
                wo: want(&name("attn_out.weight"), &[d, d])?,
                bo: want(&name("attn_out.bias"), &[d])?,
                ln2: norm(&name("ln2"))?,
                fc1: want(&name("ffn_up.weight"), &[i, d])?,
                b1: want(&name("ffn_up.bias"), &[i])?,
                fc2: want(&name("ffn_down.weight"), &[d, i])?,
                b2: want(&name("ffn_down.bias"), &[d])?,
            })
        };
        let patch_w = want("v.patch_embd.weight", &[d, 3, p, p])?;
        let patch_b = want("v.patch_embd.bias", &[d])?;
        let pos = want("v.position_embd.weight", &[n, d])?;
        let fused_off = std::env::var_os("SEER_FUSED_CPU").is_some_and(|v| v == "0");
        let imp = if *dev == Device::flex() && !fused_off {
            // A projection's `[out, in]` rows from one or more stacked
            // tensors: the file's f16 values or ggml blocks as they are,
            // else floats (kept in f16 where that is exact).
            let mat = |names: &[String], part_out: usize, inp: usize| -> Result<Mat> {
                let total = part_out * names.len();
                let mut ty = None;
                let mut data = Vec::new();
                for n in names {
                    match (src.shape(n), src.blocks(n)) {
                        (Some(shape), Some((t, b)))
                            if shape == [part_out, inp] && ty.is_none_or(|ty| ty == t) =>
                        {
                            ty = Some(t);
                            data.extend_from_slice(b);
                        }
                        _ => {
                            ty = None;
                            break;
                        }
                    }
                }
                if let Some(m) = ty.and_then(|t| Mat::from_blocks(t, data, total, inp)) {
                    return Ok(m);
                }
                let mut w = Vec::with_capacity(total * inp);
                for n in names {
                    w.extend(want(n, &[part_out, inp])?);
                }
                Ok(Mat::new(w, total, inp))
            };
            let mut layers = Vec::with_capacity(c.num_layers);
            for l in 0..c.num_layers {
                let name = |s: &str| format!("v.blk.{l}.{s}");
                let parts = ["attn_q", "attn_k", "attn_v"];
                let mut bqkv = Vec::with_capacity(3 * d);
                for part in parts {
                    bqkv.extend(want(&name(&format!("{part}.bias")), &[d])?);
                }
                let qkv = parts.map(|part| name(&format!("{part}.weight")));
                layers.push(cpu::Layer {
                    ln1: norm(&name("ln1"))?,
                    qkv: mat(&qkv, d, d)?,
                    bqkv,
                    wo: mat(&[name("attn_out.weight")], d, d)?,
                    bo: want(&name("attn_out.bias"), &[d])?,
                    ln2: norm(&name("ln2"))?,
                    fc1: mat(&[name("ffn_up.weight")], i, d)?,
                    b1: want(&name("ffn_up.bias"), &[i])?,
                    fc2: mat(&[name("ffn_down.weight")], d, i)?,
                    b2: want(&name("ffn_down.bias"), &[d])?,
                });
                src.release();
            }
            Imp::Cpu(Arc::new(cpu::Tower {
                config: c.clone(),
                patch: Mat::new(patch_w, d, 3 * p * p),
                patch_b,
                pos,
                layers,
                post_ln: norm("v.post_ln")?,
                proj: mat(
                    &["mm.model.fc.weight".to_owned()],
                    c.text_hidden_size,
                    d * s2,
                )?,
            }))
        } else {
            let row = |v: Vec<f32>| {
                let len = v.len();
                Tensor::<2>::from_data(TensorData::new(v, [1, len]), dev)
            };
            let dtype = if *dev == Device::flex() {
                DType::F32
            } else {
                DType::F16
            };
            // `[out, in]` rows (PyTorch) → `[in, out]`.
            let linear = |w: Vec<f32>, out: usize, inp: usize| {
                Tensor::<2>::from_data(TensorData::new(w, [out, inp]), (dev, dtype)).transpose()
            };
            let norm_row = |(w, b): (Vec<f32>, Vec<f32>)| (row(w), row(b));
            let mut layers = Vec::with_capacity(c.num_layers);
            for l in 0..c.num_layers {
                let r = read_layer(l)?;
                layers.push(Layer {
                    ln1: norm_row(r.ln1),
                    wqkv: linear(r.qkv_w, 3 * d, d),
                    bqkv: row(r.qkv_b),
                    wo: linear(r.wo, d, d),
                    bo: row(r.bo),
                    ln2: norm_row(r.ln2),
                    fc1: linear(r.fc1, i, d),
                    b1: row(r.b1),
                    fc2: linear(r.fc2, d, i),
                    b2: row(r.b2),
                });
                src.release();
            }
            Imp::Graph(Arc::new(Graph {
                patch_w: linear(patch_w, d, 3 * p * p),
                patch_b: row(patch_b),
                pos: Tensor::from_data(TensorData::new(pos, [n, d]), dev),
                layers,
                post_ln: norm_row(norm("v.post_ln")?),
                proj: linear(
                    want("mm.model.fc.weight", &[c.text_hidden_size, d * s2])?,
                    c.text_hidden_size,
                    d * s2,
                ),
            }))
        };
        Ok(Self {
            config: c.clone(),
            device: dev.clone(),
            imp,
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
        let batches = (0..tiles).step_by(TILES_PER_BATCH);
        match &self.imp {
            Imp::Graph(g) => {
                let mut out = Vec::new();
                for first in batches {
                    let count = TILES_PER_BATCH.min(tiles - first);
                    let h = g.hidden_states(self, pixels, first, count);
                    out.push(g.connect(&self.config, h));
                }
                Ok(Tensor::cat(out, 0))
            }
            Imp::Cpu(t) => {
                let mut out = Vec::new();
                for first in batches {
                    let count = TILES_PER_BATCH.min(tiles - first);
                    let h = t.hidden_states(&self.patches(pixels, first, count), count);
                    out.extend(t.connect(&h, count));
                }
                let width = self.config.text_hidden_size;
                let rows = out.len() / width;
                Ok(Tensor::from_data(
                    TensorData::new(out, [rows, width]),
                    &self.device,
                ))
            }
        }
    }

    /// The tower's output (after `post_layernorm`) `[tiles, patches, D]` for
    /// all tiles at once; what the parity tests compare.
    pub fn last_hidden_state(&self, pixels: &[f32]) -> Result<Tensor<3>> {
        let tiles = self.tile_count(pixels)?;
        Ok(match &self.imp {
            Imp::Graph(g) => g.hidden_states(self, pixels, 0, tiles),
            Imp::Cpu(t) => {
                let h = t.hidden_states(&self.patches(pixels, 0, tiles), tiles);
                let (n, d) = (
                    h.len() / tiles / self.config.hidden_size,
                    self.config.hidden_size,
                );
                Tensor::from_data(TensorData::new(h, [tiles, n, d]), &self.device)
            }
        })
    }

    /// Pixel shuffle and projection: `[tiles, patches, D]` → `[tiles · G², text hidden]`.
    pub fn connect(&self, h: Tensor<3>) -> Tensor<2> {
        match &self.imp {
            Imp::Graph(g) => g.connect(&self.config, h),
            Imp::Cpu(t) => {
                let [tiles, _, _] = h.dims();
                let h = h
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("converted to f32");
                let out = t.connect(&h, tiles);
                let width = self.config.text_hidden_size;
                let rows = out.len() / width;
                Tensor::from_data(TensorData::new(out, [rows, width]), &self.device)
            }
        }
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

    /// im2col on the host: `[count · patches, 3·P·P]`, patch `py·g + px`,
    /// values in (c, ky, kx) order to match the flattened conv weight.
    fn patches(&self, pixels: &[f32], first: usize, count: usize) -> Vec<f32> {
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
        out
    }
}

impl Graph {
    /// Pixel shuffle and projection, as [`VisionTower::connect`].
    fn connect(&self, c: &VisionConfig, h: Tensor<3>) -> Tensor<2> {
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

    /// Tiles `first..first+count` through embedding, encoder and post-norm.
    fn hidden_states(
        &self,
        tower: &VisionTower,
        pixels: &[f32],
        first: usize,
        count: usize,
    ) -> Tensor<3> {
        let c = &tower.config;
        let (d, h) = (c.hidden_size, c.num_heads);
        let hd = d / h;
        let n = c.grid() * c.grid();
        let k = 3 * c.patch_size * c.patch_size;
        let patches = Tensor::<2>::from_data(
            TensorData::new(tower.patches(pixels, first, count), [count * n, k]),
            &tower.device,
        );
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
