//! Building a [`Llama`] from a GGUF file or an HF model directory.
//!
//! Both sources are read through one [`Source`] trait keyed by GGUF tensor
//! names (in [`crate::weights`]), so the decoder is assembled by one function
//! whatever the file format.
//! With [`WeightFormat::Native`] quantised (and, on the CPU, f16) GGUF
//! weights stay in their blocks: in host memory for the fused CPU step, as burn quantised tensors on a GPU
//! (`gpu.rs`). With [`WeightFormat::F32`] they are dequantised on load.
//! On a GPU every matrix larger than one device buffer is cut into pieces.

use super::config::{Arch, LlamaConfig};
use super::cpu::{Dims, FusedLayer, FusedModel};
use super::gpu::DeviceQuant;
use super::model::{Layer, Linear, Llama, VocabMatrix};
use super::qmatmul::QMatrix;
use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile};
use crate::weights::{HfSource, Source, want_tensor};
use burn::prelude::*;
use std::path::Path;
use std::sync::Arc;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Everything dequantised to f32 on the device. Exact transformers
    /// numerics: the reference the other paths are tested against.
    #[default]
    F32,
    /// Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights stay quantised, a quarter of the
    /// memory. On the CPU they stay in their ggml blocks and are multiplied
    /// with ggml's integer kernels (llama.cpp's numerics); on a GPU they
    /// become burn quantised tensors with the same values and scales,
    /// multiplied by kernels that dequantise as they read. On the CPU f16
    /// weights stay f16 too (half the memory of f32). Other types, and f16
    /// on a GPU, are dequantised to f32.
    Native,
}

/// Loads a Llama-family model from a GGUF file onto `device`.
pub fn load_gguf(gguf: &GgufFile, device: &Device, format: WeightFormat) -> Result<Llama> {
    let config = LlamaConfig::from_gguf(gguf)?;
    build(&config, gguf, device, format)
}

/// Loads a Llama-family model from an HF directory (`config.json` +
/// `model.safetensors`) onto `device`.
/// A SmolVLM (Idefics3) directory's decoder is read from `model.text_model.`.
pub fn load_hf(dir: &Path, device: &Device) -> Result<Llama> {
    let config = LlamaConfig::from_hf_json(&dir.join("config.json"))?;
    let mut src = HfSource::open(dir)?;
    if src.contains("model.text_model.embed_tokens.weight") {
        src = src.with_text_prefix("model.text_model.");
    }
    build(&config, &src, device, WeightFormat::F32)
}

pub(crate) fn build(
    c: &LlamaConfig,
    src: &dyn Source,
    dev: &Device,
    format: WeightFormat,
) -> Result<Llama> {
    let want = |name: &str, shape: &[usize]| want_tensor(src, name, shape, "model");
    let (hid, hd) = (c.hidden_size, c.head_dim);
    let (qd, kvd) = (c.num_heads * hd, c.num_kv_heads * hd);
    // llama.cpp's converter permutes q/k rows of `llama` models only.
    let interleaved = c.arch == Arch::Llama && src.is_llama_cpp();
    let row = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [1, v.len()]), dev);
    let on_gpu = *dev != Device::flex();
    // Half the adapter's buffer limit per piece: burn's memory pool rounds
    // allocations up, and a piece never needs to be large to be fast.
    let budget = crate::device::max_tensor_bytes(dev).map(|b| (b / 2) as usize);
    // A projection's `[out, in]` rows: kept in ggml blocks when the format
    // asks for it and the type allows, else as floats. `heads` un-permutes
    // llama.cpp's q/k row order (whole rows move, so this works on blocks as
    // on floats).
    let rows = |name: &str, out: usize, inp: usize, heads: Option<usize>| -> Result<Rows> {
        if format == WeightFormat::Native
            && let Some((ty, bytes)) = src.blocks(name)
            && QMatrix::supports(ty)
            // f16 stays f16 on the host (the fused CPU step); a GPU gets
            // floats until it has an f16 kernel of its own.
            && !(on_gpu && ty == GgmlType::F16)
        {
            let (be, bb) = ty.block_layout();
            if inp.is_multiple_of(be) && out * inp / be * bb == bytes.len() {
                let data = match heads {
                    Some(h) if interleaved => unpermute_rows(bytes, h, hd, inp / be * bb),
                    _ => bytes.to_vec(),
                };
                return Ok(Rows::Blocks(ty, data));
            }
        }
        let mut w = want(name, &[out, inp])?;
        if let Some(h) = heads
            && interleaved
        {
            w = unpermute_rows(&w, h, hd, inp);
        }
        Ok(Rows::F32(w))
    };
    // Projections of the same input stacked into one matrix, so a layer runs
    // one matmul for q/k/v and one for gate/up (and quantises its input once).
    let fuse = |parts: Vec<Rows>, inp: usize| -> Linear {
        let total: usize = parts.iter().map(|p| p.len_elems() / inp).sum();
        let same_blocks = match parts.first() {
            Some(Rows::Blocks(ty, _)) => parts
                .iter()
                .all(|p| matches!(p, Rows::Blocks(t, _) if t == ty))
                .then_some(*ty),
            _ => None,
        };
        // Whole-slice copies: a byte-by-byte `flat_map` of the ~100 MB of
        // blocks was half of the model's load time.
        if let Some(ty) = same_blocks {
            let mut blocks = parts.into_iter().filter_map(|p| match p {
                Rows::Blocks(_, d) => Some(d),
                Rows::F32(_) => None,
            });
            let mut data = blocks.next().unwrap_or_default();
            for d in blocks {
                data.extend_from_slice(&d);
            }
            let q = QMatrix::new(ty, total, inp, data);
            return match budget {
                Some(b) if on_gpu && DeviceQuant::supports(ty) => {
                    Linear::Device(Arc::new(DeviceQuant::new(&q, dev, b)))
                }
                _ => Linear::Quant(Arc::new(q)),
            };
        }
        let mut w: Vec<f32> = Vec::with_capacity(total * inp);
        for p in parts {
            w.extend_from_slice(&p.into_f32());
        }
        // [out, in] → [in, out] for x·W, in column pieces that fit a buffer.
        let mut pieces: Vec<Linear> = row_ranges(total, inp * 4, budget)
            .map(|(r0, r1)| {
                Linear::Dense(Tensor::from_data(
                    TensorData::new(
                        transpose(&w[r0 * inp..r1 * inp], r1 - r0, inp),
                        [inp, r1 - r0],
                    ),
                    dev,
                ))
            })
            .collect();
        if pieces.len() == 1 {
            pieces.pop().expect("one piece")
        } else {
            Linear::Pieces(pieces)
        }
    };
    let bias = |name: &str, heads: usize, permute: bool| -> Result<Option<Vec<f32>>> {
        if !c.attention_bias {
            return Ok(None);
        }
        let mut b = want(name, &[heads * hd])?;
        if permute && interleaved {
            b = unpermute_rows(&b, heads, hd, 1);
        }
        Ok(Some(b))
    };

    let mut layers = Vec::with_capacity(c.num_layers);
    let inter = c.intermediate_size;
    for i in 0..c.num_layers {
        let n = |s: &str| format!("blk.{i}.{s}");
        let qkv_bias = match (
            bias(&n("attn_q.bias"), c.num_heads, true)?,
            bias(&n("attn_k.bias"), c.num_kv_heads, true)?,
            bias(&n("attn_v.bias"), c.num_kv_heads, false)?,
        ) {
            (Some(q), Some(k), Some(v)) => Some(row([q, k, v].concat())),
            _ => None,
        };
        layers.push(Layer {
            attn_norm: row(want(&n("attn_norm.weight"), &[hid])?),
            wqkv: fuse(
                vec![
                    rows(&n("attn_q.weight"), qd, hid, Some(c.num_heads))?,
                    rows(&n("attn_k.weight"), kvd, hid, Some(c.num_kv_heads))?,
                    rows(&n("attn_v.weight"), kvd, hid, None)?,
                ],
                hid,
            ),
            bqkv: qkv_bias,
            wo: fuse(vec![rows(&n("attn_output.weight"), hid, qd, None)?], qd),
            ffn_norm: row(want(&n("ffn_norm.weight"), &[hid])?),
            w_gate_up: fuse(
                vec![
                    rows(&n("ffn_gate.weight"), inter, hid, None)?,
                    rows(&n("ffn_up.weight"), inter, hid, None)?,
                ],
                hid,
            ),
            w_down: fuse(vec![rows(&n("ffn_down.weight"), hid, inter, None)?], inter),
        });
        src.release();
    }
    let matrix = |name: &str| -> Result<VocabMatrix> {
        Ok(match rows(name, c.vocab_size, hid, None)? {
            Rows::Blocks(ty, data) => {
                VocabMatrix::Quant(Arc::new(QMatrix::new(ty, c.vocab_size, hid, data)))
            }
            Rows::F32(v) => {
                let ranges: Vec<_> = row_ranges(c.vocab_size, hid * 4, budget).collect();
                let piece = |v: Vec<f32>, rows: usize| {
                    Tensor::<2>::from_data(TensorData::new(v, [rows, hid]), dev)
                };
                VocabMatrix::Dense(if ranges.len() == 1 {
                    vec![piece(v, c.vocab_size)]
                } else {
                    ranges
                        .iter()
                        .map(|&(r0, r1)| piece(v[r0 * hid..r1 * hid].to_vec(), r1 - r0))
                        .collect()
                })
            }
        })
    };
    // On a GPU the lookups stay on the host blocks and the output head is
    // the quantised device copy.
    let head = |m: &VocabMatrix| match (m, budget) {
        (VocabMatrix::Quant(q), Some(b)) if on_gpu && DeviceQuant::supports(q.ty()) => {
            VocabMatrix::Head(Linear::Device(Arc::new(DeviceQuant::new(q, dev, b))))
        }
        _ => m.clone(),
    };
    let embed = matrix("token_embd.weight")?;
    let lm_head = if c.tie_word_embeddings {
        head(&embed)
    } else {
        head(&matrix("output.weight")?)
    };
    src.release();
    let mut inv_freq = c.inv_freq();
    // llama.cpp bakes Llama-3 scaling into per-frequency divisors.
    if let Some(f) = src.get("rope_freqs.weight")? {
        if f.data.len() != inv_freq.len() {
            return Err(ModelError::Tensor {
                path: src.path().to_owned(),
                name: "rope_freqs.weight".into(),
                reason: format!(
                    "{} factors, expected head_dim/2 = {}",
                    f.data.len(),
                    inv_freq.len()
                ),
            });
        }
        for (x, d) in inv_freq.iter_mut().zip(&f.data) {
            *x /= *d as f64;
        }
    }
    let mut llama = Llama {
        config: c.clone(),
        device: dev.clone(),
        embed,
        layers,
        norm: row(want("output_norm.weight", &[hid])?),
        lm_head,
        inv_freq: inv_freq.iter().map(|&x| x as f32).collect(),
        f16_attention: format == WeightFormat::Native,
        fused: None,
    };
    // SEER_FUSED_CPU=0 keeps the burn graph: for comparing the two paths
    // (benchmarks, bug reports), never needed otherwise.
    let fused_off = std::env::var_os("SEER_FUSED_CPU").is_some_and(|v| v == "0");
    if format == WeightFormat::Native && *dev == Device::flex() && !fused_off {
        llama.fused = fused_step(&llama)?.map(Arc::new);
    }
    Ok(llama)
}

/// The fused CPU step over `m`'s weights, when every matrix it multiplies
/// is in ggml blocks (else the burn graph runs everything).
fn fused_step(m: &Llama) -> Result<Option<FusedModel>> {
    let quant = |l: &Linear| match l {
        Linear::Quant(q) => Some(q.clone()),
        _ => None,
    };
    let host = |t: &Tensor<2>| -> Result<Vec<f32>> {
        t.clone()
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| ModelError::Backend(format!("reading a norm weight: {e:?}")))
    };
    let VocabMatrix::Quant(head) = &m.lm_head else {
        return Ok(None);
    };
    let mut layers = Vec::with_capacity(m.layers.len());
    for l in &m.layers {
        let (Some(wqkv), Some(wo), Some(w_gate_up), Some(w_down)) = (
            quant(&l.wqkv),
            quant(&l.wo),
            quant(&l.w_gate_up),
            quant(&l.w_down),
        ) else {
            return Ok(None);
        };
        layers.push(FusedLayer {
            attn_norm: host(&l.attn_norm)?,
            wqkv,
            bqkv: l.bqkv.as_ref().map(host).transpose()?,
            wo,
            ffn_norm: host(&l.ffn_norm)?,
            w_gate_up,
            w_down,
        });
    }
    let c = &m.config;
    let dims = Dims {
        hidden: c.hidden_size,
        heads: c.num_heads,
        kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        inter: c.intermediate_size,
        vocab: c.vocab_size,
        eps: c.rms_norm_eps as f32,
    };
    Ok(Some(FusedModel::new(
        dims,
        layers,
        host(&m.norm)?,
        head.clone(),
        m.inv_freq.clone(),
    )))
}

/// A projection's weights as read from the file, `[out, in]` row-major.
enum Rows {
    /// ggml blocks of one type.
    Blocks(GgmlType, Vec<u8>),
    /// Floats.
    F32(Vec<f32>),
}

impl Rows {
    fn len_elems(&self) -> usize {
        match self {
            Rows::Blocks(ty, d) => d.len() / ty.block_layout().1 * ty.block_layout().0,
            Rows::F32(v) => v.len(),
        }
    }

    fn into_f32(self) -> Vec<f32> {
        match self {
            Rows::F32(v) => v,
            Rows::Blocks(ty, d) => {
                let mut out = vec![0f32; d.len() / ty.block_layout().1 * ty.block_layout().0];
                crate::gguf::dequantize_into(ty, &d, &mut out);
                out
            }
        }
    }
}

/// `rows` split into consecutive ranges of at most `budget` bytes each
/// (`row_bytes` per row); one range when there is no budget.
fn row_ranges(
    rows: usize,
    row_bytes: usize,
    budget: Option<usize>,
) -> impl Iterator<Item = (usize, usize)> {
    let per = budget
        .map_or(rows, |b| (b / row_bytes.max(1)).max(1))
        .max(1);
    (0..rows.div_ceil(per)).map(move |i| (i * per, ((i + 1) * per).min(rows)))
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for (c, &v) in w[r * cols..(r + 1) * cols].iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// Undoes llama.cpp's q/k row permutation: GGUF row `h·hd + 2b + a` holds HF row
/// `h·hd + a·hd/2 + b` (pairs interleaved instead of halves). `cols` is the
/// row length in elements of `T` (floats, or bytes of ggml blocks).
fn unpermute_rows<T: Copy + Default>(w: &[T], heads: usize, hd: usize, cols: usize) -> Vec<T> {
    let half = hd / 2;
    let mut out = vec![T::default(); w.len()];
    for h in 0..heads {
        for b in 0..half {
            for a in 0..2 {
                let src = (h * hd + 2 * b + a) * cols;
                let dst = (h * hd + a * half + b) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}
