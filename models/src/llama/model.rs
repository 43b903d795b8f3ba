//! The Llama-family decoder: read it next to transformers' `modeling_llama.py`.
//!
//! Shapes: batch size is always 1, so activations are `[seq, hidden]` and
//! attention works on `[heads, seq, head_dim]`. Linear weights are stored
//! `[in, out]` (burn's convention) so a projection is `x.matmul(w)`.

use super::config::LlamaConfig;
use super::cpu::{FusedCache, FusedModel};
use super::gpu::DeviceQuant;
use super::qmatmul::QMatrix;
use crate::error::{ModelError, Result};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::{silu, softmax};
use std::sync::Arc;

/// A projection weight, in whichever form is fastest on its device.
// A handful per layer: boxing the tensor would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Linear {
    /// `[in, out]` f32 on the device: `x·W`.
    Dense(Tensor<2>),
    /// ggml blocks in host memory, `[out, in]` (CPU backend).
    Quant(Arc<QMatrix>),
    /// ggml blocks as burn quantised tensors on a GPU, `[out, in]`.
    Device(Arc<DeviceQuant>),
    /// Output features cut into pieces that each fit one device buffer;
    /// the results are joined in order.
    Pieces(Vec<Linear>),
}

impl Linear {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Linear::Dense(w) => x.matmul(w.clone()),
            Linear::Quant(q) => {
                let dev = x.device();
                let [n, _] = x.dims();
                let v = x
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("activations are f32");
                Tensor::from_data(TensorData::new(q.matmul(&v, n), [n, q.rows()]), &dev)
            }
            Linear::Device(q) => q.forward(x),
            Linear::Pieces(parts) => {
                Tensor::cat(parts.iter().map(|p| p.forward(x.clone())).collect(), 1)
            }
        }
    }
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Tensor<2>,
    /// q, k and v projections stacked: `[hidden] → [q | k | v]`.
    pub(crate) wqkv: Linear,
    /// Their biases, stacked the same way (Qwen2).
    pub(crate) bqkv: Option<Tensor<2>>,
    pub(crate) wo: Linear,
    pub(crate) ffn_norm: Tensor<2>,
    /// Gate and up projections stacked: `[hidden] → [gate | up]`.
    pub(crate) w_gate_up: Linear,
    pub(crate) w_down: Linear,
}

/// A loaded Llama-family model on one device.
///
/// Built by [`super::load_gguf`] or [`super::load_hf`]; run with [`Llama::forward`]
/// and a [`KvCache`] from [`Llama::new_cache`].
#[derive(Debug, Clone)]
pub struct Llama {
    pub(crate) config: LlamaConfig,
    pub(crate) device: Device,
    pub(crate) embed: VocabMatrix,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor<2>,
    /// The output projection (a clone of `embed` when tied).
    pub(crate) lm_head: VocabMatrix,
    /// RoPE inverse frequencies (`head_dim / 2`).
    pub(crate) inv_freq: Vec<f32>,
    /// Round attention operands through f16 as llama.cpp's default f16 KV
    /// cache does (set with the ggml-compatible weight format).
    pub(crate) f16_attention: bool,
    /// The fused CPU step over the same weights, when every matrix is in
    /// ggml blocks on the CPU (see `cpu.rs`); `None` runs the burn graph.
    pub(crate) fused: Option<Arc<FusedModel>>,
}

/// A `[vocab, hidden]` matrix: the token embedding, and the output projection
/// (the same one when tied). Kept `[vocab, hidden]` in both roles so a dense
/// head computes `W·xᵀ` without transposing a large matrix and a tied head
/// shares the embedding's memory.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum VocabMatrix {
    /// f32 on the device, as row pieces that each fit one device buffer
    /// (one piece unless the matrix is larger than the adapter allows).
    Dense(Vec<Tensor<2>>),
    /// ggml blocks in host memory; embedding rows are dequantised on lookup.
    /// On a GPU this is the embedding's form too, as in llama.cpp: a lookup
    /// reads a few rows, not worth a copy of the table in device memory.
    Quant(Arc<QMatrix>),
    /// An output projection only (no lookups): the quantised GPU head.
    Head(Linear),
}

/// Per-layer key/value history for one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    kind: CacheKind,
    len: usize,
    capacity: usize,
}

/// Which step a cache belongs to.
#[derive(Debug, Clone)]
enum CacheKind {
    /// The burn graph's: per layer, key and value buffers `[kv_heads,
    /// room, head_dim]` written in place; the room doubles when full (up to
    /// the capacity), so a token never copies the whole history.
    Graph(Vec<Option<(Tensor<3>, Tensor<3>)>>),
    /// The fused CPU step's: preallocated f16, written in place.
    Fused(FusedCache),
}

impl KvCache {
    /// A cache with room for nothing (a placeholder for one moved out).
    pub(crate) fn empty() -> Self {
        Self {
            kind: CacheKind::Graph(Vec::new()),
            len: 0,
            capacity: 0,
        }
    }

    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been run yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most tokens this cache accepts (the configured context length).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keeps the first `n` positions and forgets the rest, so a new
    /// sequence that shares them continues from there (prompt reuse).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        if n == 0 {
            return self.clear();
        }
        // Both caches are written in place at `len`: positions past `n` are
        // overwritten before they are read again.
        self.len = n;
    }

    /// Forget everything (start a new sequence). The buffers are kept for it.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Llama {
    /// The configuration this model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache for up to `context` tokens (clamped to the model's
    /// trained context). Runs the fused CPU step when the model has one.
    pub fn new_cache(&self, context: usize) -> KvCache {
        let capacity = context.min(self.config.max_position_embeddings).max(1);
        let kind = match &self.fused {
            Some(f) => CacheKind::Fused(f.new_cache(capacity)),
            None => CacheKind::Graph(vec![None; self.config.num_layers]),
        };
        KvCache {
            kind,
            len: 0,
            capacity,
        }
    }

    /// A cache that always runs the burn graph, even where the fused CPU
    /// step exists: the reference the fused step is tested against.
    pub fn new_reference_cache(&self, context: usize) -> KvCache {
        KvCache {
            kind: CacheKind::Graph(vec![None; self.config.num_layers]),
            len: 0,
            capacity: context.min(self.config.max_position_embeddings).max(1),
        }
    }

    /// Whether [`Llama::new_cache`] runs the fused CPU step.
    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Runs `tokens` after what is already in `cache` and returns logits
    /// `[n, vocab]`: for every new position when `all_logits`, else only the last.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor<2>> {
        let x = self.embed(tokens)?;
        self.forward_embeds(x, cache, all_logits)
    }

    /// The input embeddings `[n, hidden]` of `tokens`: what [`Llama::forward`]
    /// runs. Vision-language models overwrite the image positions of this
    /// before calling [`Llama::forward_embeds`].
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor<2>> {
        let seq = tokens.len();
        if seq == 0 {
            return Err(ModelError::InvalidRequest("no tokens to run".into()));
        }
        let vocab = self.config.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let dev = &self.device;
        let ids = |v: Vec<i32>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), dev)
        };
        Ok(match &self.embed {
            VocabMatrix::Dense(pieces) if pieces.len() == 1 => pieces[0]
                .clone()
                .select(0, ids(tokens.iter().map(|&t| t as i32).collect())),
            VocabMatrix::Dense(pieces) => {
                // Rows from each piece in one select, then one more select
                // puts them back in token order.
                let per = pieces[0].dims()[0];
                let (mut parts, mut order) = (Vec::new(), Vec::with_capacity(seq));
                for (p, piece) in pieces.iter().enumerate() {
                    let (at, local): (Vec<usize>, Vec<i32>) = tokens
                        .iter()
                        .enumerate()
                        .filter(|&(_, &t)| t as usize / per == p)
                        .map(|(i, &t)| (i, (t as usize - p * per) as i32))
                        .unzip();
                    if !at.is_empty() {
                        order.extend(at);
                        parts.push(piece.clone().select(0, ids(local)));
                    }
                }
                let mut back = vec![0i32; seq];
                for (k, &i) in order.iter().enumerate() {
                    back[i] = k as i32;
                }
                Tensor::cat(parts, 0).select(0, ids(back))
            }
            VocabMatrix::Quant(q) => {
                let rows = q.dequantize_rows(tokens);
                Tensor::from_data(TensorData::new(rows, [seq, self.config.hidden_size]), dev)
            }
            VocabMatrix::Head(_) => {
                return Err(ModelError::Backend(
                    "internal: the embedding was built as an output head only".into(),
                ));
            }
        })
    }

    /// Runs input embeddings `[n, hidden]` after what is already in `cache`;
    /// logits as [`Llama::forward`].
    pub fn forward_embeds(
        &self,
        x: Tensor<2>,
        cache: &mut KvCache,
        all_logits: bool,
    ) -> Result<Tensor<2>> {
        let [seq, width] = x.dims();
        if seq == 0 {
            return Err(ModelError::InvalidRequest("no tokens to run".into()));
        }
        if width != self.config.hidden_size {
            return Err(ModelError::InvalidRequest(format!(
                "input embeddings are {width} wide; the model is {}",
                self.config.hidden_size
            )));
        }
        let start = cache.len;
        if start + seq > cache.capacity {
            return Err(ModelError::InvalidRequest(format!(
                "{} tokens exceed the context length of {} tokens",
                start + seq,
                cache.capacity
            )));
        }
        let dev = &self.device;
        let layers = match &mut cache.kind {
            CacheKind::Graph(layers) => layers,
            CacheKind::Fused(fc) => {
                let fused = self.fused.as_ref().ok_or_else(|| {
                    ModelError::InvalidRequest("a fused cache needs the fused CPU step".into())
                })?;
                let v = x
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| ModelError::Backend(format!("reading embeddings: {e:?}")))?;
                let logits = fused.forward(v, seq, start, fc, all_logits);
                cache.len += seq;
                let m = if all_logits { seq } else { 1 };
                let vocab = self.config.vocab_size;
                return Ok(Tensor::from_data(TensorData::new(logits, [m, vocab]), dev));
            }
        };
        let mut x = x;

        let (cos, sin) = self.rope_tables(start, seq);
        let mask = (seq > 1).then(|| causal_mask(start, seq, dev));

        let at = Positions {
            start,
            capacity: cache.capacity,
            mask,
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(x.clone(), &layer.attn_norm, self.config.rms_norm_eps);
            let a = self.attention(layer, h, &cos, &sin, &at, &mut layers[i]);
            x = x + a;
            let h = rms_norm(x.clone(), &layer.ffn_norm, self.config.rms_norm_eps);
            let inter = self.config.intermediate_size;
            let gu = layer.w_gate_up.forward(h);
            let gate = silu(gu.clone().narrow(1, 0, inter));
            let up = gu.narrow(1, inter, inter);
            x = x + layer.w_down.forward(gate * up);
        }
        cache.len += seq;

        if !all_logits && seq > 1 {
            x = x.narrow(0, seq - 1, 1);
        }
        let x = rms_norm(x, &self.norm, self.config.rms_norm_eps);
        Ok(match &self.lm_head {
            // [vocab, hidden] · [hidden, n] → [vocab, n] → [n, vocab]
            VocabMatrix::Dense(pieces) => {
                let xt = x.transpose();
                let mut outs: Vec<Tensor<2>> = pieces
                    .iter()
                    .map(|w| w.clone().matmul(xt.clone()).transpose())
                    .collect();
                if outs.len() == 1 {
                    outs.pop().expect("one piece")
                } else {
                    Tensor::cat(outs, 1)
                }
            }
            VocabMatrix::Quant(q) => Linear::Quant(q.clone()).forward(x),
            VocabMatrix::Head(l) => l.forward(x),
        })
    }

    /// cos/sin tables `[seq, head_dim]` for absolute positions `start..start+seq`,
    /// in the HF "rotate half" layout (frequencies repeated twice).
    fn rope_tables(&self, start: usize, seq: usize) -> (Tensor<3>, Tensor<3>) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        let mut cos = Vec::with_capacity(seq * hd);
        let mut sin = Vec::with_capacity(seq * hd);
        for p in start..start + seq {
            // f32 product, as transformers computes it, before cos/sin.
            let angles: Vec<f32> = self.inv_freq[..half]
                .iter()
                .map(|&f| p as f32 * f)
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let dev = &self.device;
        let cos = Tensor::<2>::from_data(TensorData::new(cos, [seq, hd]), dev).unsqueeze_dim(0);
        let sin = Tensor::<2>::from_data(TensorData::new(sin, [seq, hd]), dev).unsqueeze_dim(0);
        (cos, sin)
    }

    fn round_f16(&self, t: Tensor<3>) -> Tensor<3> {
        if self.f16_attention {
            t.cast(FloatDType::F16).cast(FloatDType::F32)
        } else {
            t
        }
    }

    fn attention(
        &self,
        l: &Layer,
        x: Tensor<2>,
        cos: &Tensor<3>,
        sin: &Tensor<3>,
        at: &Positions,
        cache: &mut Option<(Tensor<3>, Tensor<3>)>,
    ) -> Tensor<2> {
        let c = &self.config;
        let seq = x.dims()[0];
        let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let mut qkv = l.wqkv.forward(x);
        if let Some(b) = &l.bqkv {
            qkv = qkv + b.clone();
        }
        let (qd, kvd) = (h * hd, kvh * hd);
        let split = |start: usize, width: usize, heads: usize| {
            qkv.clone()
                .narrow(1, start, width)
                .reshape([seq, heads, hd])
                .swap_dims(0, 1)
        };
        let r16 = |t: Tensor<3>| self.round_f16(t);
        let q = r16(rope(split(0, qd, h), cos, sin));
        let k = r16(rope(split(qd, kvd, kvh), cos, sin));
        let v = r16(split(qd + kvd, kvd, kvh));

        let (start, total) = (at.start, at.start + seq);
        let (kb, vb) = match cache.take() {
            Some(kv) if kv.0.dims()[1] >= total => kv,
            old => {
                let room = old.as_ref().map_or(0, |(k, _)| k.dims()[1]);
                let size = (room * 2).max(64).min(at.capacity).max(total);
                let grow = |old: Option<Tensor<3>>| {
                    let fresh = Tensor::<3>::zeros([kvh, size, hd], &self.device);
                    match old {
                        Some(o) if start > 0 => {
                            fresh.slice_assign([0..kvh, 0..start, 0..hd], o.narrow(1, 0, start))
                        }
                        _ => fresh,
                    }
                };
                let (ok, ov) = old.unzip();
                (grow(ok), grow(ov))
            }
        };
        let kb = kb.slice_assign([0..kvh, start..total, 0..hd], k);
        let vb = vb.slice_assign([0..kvh, start..total, 0..hd], v);
        *cache = Some((kb.clone(), vb.clone()));
        let (k, v) = (kb.narrow(1, 0, total), vb.narrow(1, 0, total));

        // Grouped-query attention without repeating K/V: query heads
        // g·rep..(g+1)·rep share key/value head g, so they are stacked as
        // one `[rep·seq]` block of rows against that head.
        let rep = h / kvh;
        let q = q.reshape([kvh, rep * seq, hd]);
        let scale = (hd as f64).powf(-0.5);
        let mut scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(scale);
        if let Some(m) = at.mask.clone() {
            scores = (scores.reshape([kvh, rep, seq, total]) + m.unsqueeze_dim::<4>(0)).reshape([
                kvh,
                rep * seq,
                total,
            ]);
        }
        let p = r16(softmax(scores, 2));
        let out = p
            .matmul(v)
            .reshape([h, seq, hd])
            .swap_dims(0, 1)
            .reshape([seq, h * hd]);
        l.wo.forward(out)
    }
}

/// Where a forward pass writes in the cache, and its causal mask.
struct Positions {
    start: usize,
    capacity: usize,
    mask: Option<Tensor<3>>,
}

/// RMSNorm with weight `[1, hidden]`, computed in f32 as transformers does.
fn rms_norm(x: Tensor<2>, w: &Tensor<2>, eps: f64) -> Tensor<2> {
    let inv = x
        .clone()
        .powf_scalar(2.0)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x * inv * w.clone()
}

/// Rotary embedding, "rotate half" form: `x·cos + rotate_half(x)·sin`.
fn rope(x: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
    let half = x.dims()[2] / 2;
    let x1 = x.clone().narrow(2, 0, half);
    let x2 = x.clone().narrow(2, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
    x * cos.clone() + rotated * sin.clone()
}

/// Additive mask `[1, seq, start+seq]`: position `start+i` sees keys `0..=start+i`.
fn causal_mask(start: usize, seq: usize, dev: &Device) -> Tensor<3> {
    let total = start + seq;
    let mut m = vec![0f32; seq * total];
    for i in 0..seq {
        for j in start + i + 1..total {
            m[i * total + j] = f32::NEG_INFINITY;
        }
    }
    Tensor::<2>::from_data(TensorData::new(m, [seq, total]), dev).unsqueeze_dim(0)
}
