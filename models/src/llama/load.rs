//! Building a [`Llama`] from a GGUF file or an HF model directory.
//!
//! Both sources are read through one [`Source`] trait keyed by GGUF tensor
//! names, so the decoder is assembled by one function whatever the file format.
//! Quantised GGUF weights are dequantised to f32 on load (see the crate README
//! for why: burn's own quantised matmul is slower than f32 on the CPU backend).

use super::config::{Arch, LlamaConfig};
use super::model::{Layer, Linear, Llama, VocabMatrix};
use super::qmatmul::QMatrix;
use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile};
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A weight as read from a file: row-major values and shape.
pub(crate) struct Raw {
    pub(crate) data: Vec<f32>,
    pub(crate) shape: Vec<usize>,
}

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Everything dequantised to f32 on the device. Exact transformers
    /// numerics; the choice for wgpu, whose kernels take f32.
    #[default]
    F32,
    /// Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 weights stay in their ggml blocks in host
    /// memory and are multiplied with ggml's integer kernels (llama.cpp's
    /// numerics, a quarter of the memory). CPU backend only; other types are
    /// dequantised to f32.
    Native,
}

/// A store of named weights, keyed by GGUF tensor names.
pub(crate) trait Source {
    fn path(&self) -> &Path;
    fn get(&self, gguf_name: &str) -> Result<Option<Raw>>;
    /// The tensor's ggml blocks, if it is stored in a type [`QMatrix`] can use.
    fn blocks(&self, _gguf_name: &str) -> Option<(GgmlType, &[u8])> {
        None
    }
    /// Whether q/k rows are in llama.cpp's interleaved-pair order.
    fn qk_interleaved(&self, arch: Arch) -> bool;
}

impl Source for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }

    fn get(&self, name: &str) -> Result<Option<Raw>> {
        let Some(info) = self.tensor(name) else {
            return Ok(None);
        };
        let shape = info.shape();
        Ok(Some(Raw {
            data: self.dequantize(name)?,
            shape,
        }))
    }

    fn qk_interleaved(&self, arch: Arch) -> bool {
        arch == Arch::Llama
    }

    fn blocks(&self, name: &str) -> Option<(GgmlType, &[u8])> {
        let info = self.tensor(name)?;
        if !QMatrix::supports(info.ty) || info.dims.len() != 2 {
            return None;
        }
        self.tensor_bytes(name).ok().map(|b| (info.ty, b))
    }
}

/// An HF checkpoint: one `model.safetensors` or shards listed in
/// `model.safetensors.index.json`.
pub(crate) struct HfSource {
    dir: PathBuf,
    /// Where the decoder's parameters live: `model.` for a text model,
    /// `model.text_model.` inside an Idefics3 (SmolVLM) checkpoint.
    text_prefix: &'static str,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// tensor name → index into `files`.
    index: HashMap<String, usize>,
}

impl HfSource {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ModelError::Io { path, source }
        };
        let single = dir.join("model.safetensors");
        let names: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else {
            let idx = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&idx).map_err(io(&idx))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
                    path: idx.clone(),
                    key: "(file)".into(),
                    reason: format!("not valid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Metadata {
                    path: idx.clone(),
                    key: "weight_map".into(),
                    reason: "missing or not an object".into(),
                })?;
            let mut files: Vec<PathBuf> = map
                .values()
                .filter_map(|f| f.as_str().map(|f| dir.join(f)))
                .collect();
            files.sort();
            files.dedup();
            files
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in names {
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            // SAFETY: read-only map of a weights file nobody writes while we run.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io(&path))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Tensor {
                path: path.clone(),
                name: "(header)".into(),
                reason: format!("not a valid safetensors file: {e}"),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, map));
        }
        Ok(Self {
            dir: dir.to_owned(),
            text_prefix: "model.",
            files,
            index,
        })
    }

    /// The same files, with the decoder read from `model.text_model.`.
    pub(crate) fn with_text_prefix(mut self, prefix: &'static str) -> Self {
        self.text_prefix = prefix;
        self
    }
}

/// GGUF tensor name → transformers parameter name; decoder names get
/// `text_prefix` (`model.` or `model.text_model.`).
fn hf_name(gguf: &str, text_prefix: &str) -> Option<String> {
    if let Some(v) = crate::vision::hf_vision_name(gguf) {
        return Some(v);
    }
    let fixed = match gguf {
        "token_embd.weight" => Some("embed_tokens.weight"),
        "output_norm.weight" => Some("norm.weight"),
        "output.weight" => return Some("lm_head.weight".to_owned()),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(format!("{text_prefix}{f}"));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let module = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("{text_prefix}layers.{layer}.{module}.{kind}"))
}

impl Source for HfSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn get(&self, gguf_name: &str) -> Result<Option<Raw>> {
        let Some(name) = hf_name(gguf_name, self.text_prefix) else {
            return Ok(None);
        };
        let Some(&fi) = self.index.get(&name) else {
            return Ok(None);
        };
        let (path, map) = &self.files[fi];
        let terr = |reason: String| ModelError::Tensor {
            path: path.clone(),
            name: name.clone(),
            reason,
        };
        let st = SafeTensors::deserialize(map).map_err(|e| terr(e.to_string()))?;
        let view = st.tensor(&name).map_err(|e| terr(e.to_string()))?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(terr(format!(
                    "dtype {other:?} is not supported (f32, f16, bf16)"
                )));
            }
        };
        Ok(Some(Raw {
            data,
            shape: view.shape().to_vec(),
        }))
    }

    fn qk_interleaved(&self, _arch: Arch) -> bool {
        false
    }
}

/// Tensor `name` from `src` as f32, checked against the `shape` the
/// `what` config ("model", "vision") implies; errors name file and tensor.
pub(crate) fn want_tensor(
    src: &dyn Source,
    name: &str,
    shape: &[usize],
    what: &str,
) -> Result<Vec<f32>> {
    let raw = src.get(name)?.ok_or_else(|| ModelError::Tensor {
        path: src.path().to_owned(),
        name: name.to_owned(),
        reason: format!("missing from the {what} file"),
    })?;
    if raw.shape != shape {
        return Err(ModelError::Tensor {
            path: src.path().to_owned(),
            name: name.to_owned(),
            reason: format!(
                "shape {:?}, expected {:?} from the {what} config",
                raw.shape, shape
            ),
        });
    }
    Ok(raw.data)
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
    if src
        .index
        .contains_key("model.text_model.embed_tokens.weight")
    {
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
    let interleaved = src.qk_interleaved(c.arch);
    let row = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [1, v.len()]), dev);
    // A projection's `[out, in]` rows: kept in ggml blocks when the format
    // asks for it and the type allows, else as floats. `heads` un-permutes
    // llama.cpp's q/k row order (whole rows move, so this works on blocks as
    // on floats).
    let rows = |name: &str, out: usize, inp: usize, heads: Option<usize>| -> Result<Rows> {
        if format == WeightFormat::Native
            && let Some((ty, bytes)) = src.blocks(name)
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
        if let Some(ty) = same_blocks {
            let data = parts
                .into_iter()
                .flat_map(|p| match p {
                    Rows::Blocks(_, d) => d,
                    Rows::F32(_) => Vec::new(),
                })
                .collect();
            return Linear::Quant(Arc::new(QMatrix::new(ty, total, inp, data)));
        }
        let w: Vec<f32> = parts.into_iter().flat_map(|p| p.into_f32()).collect();
        // [out, in] → [in, out] for x·W.
        Linear::Dense(Tensor::from_data(
            TensorData::new(transpose(&w, total, inp), [inp, total]),
            dev,
        ))
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
    }
    let matrix = |name: &str| -> Result<VocabMatrix> {
        Ok(match rows(name, c.vocab_size, hid, None)? {
            Rows::Blocks(ty, data) => {
                VocabMatrix::Quant(Arc::new(QMatrix::new(ty, c.vocab_size, hid, data)))
            }
            Rows::F32(v) => VocabMatrix::Dense(Tensor::<2>::from_data(
                TensorData::new(v, [c.vocab_size, hid]),
                dev,
            )),
        })
    };
    let embed = matrix("token_embd.weight")?;
    let lm_head = if c.tie_word_embeddings {
        embed.clone()
    } else {
        matrix("output.weight")?
    };
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
    Ok(Llama {
        config: c.clone(),
        device: dev.clone(),
        embed,
        layers,
        norm: row(want("output_norm.weight", &[hid])?),
        lm_head,
        inv_freq: inv_freq.iter().map(|&x| x as f32).collect(),
        f16_attention: format == WeightFormat::Native,
    })
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
