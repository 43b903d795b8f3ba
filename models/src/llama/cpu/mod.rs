//! The fused CPU step: the decoder run directly on host memory when the
//! device is the CPU and the weights are ggml blocks.
//!
//! The burn graph in `model.rs` is the reference and the path for wgpu and
//! f32 weights. On the CPU with quantised weights it spends as much time
//! around the matrix products as in them: ~45 small burn ops per layer, the
//! KV history copied every token by `cat`, grouped-query heads expanded by
//! copy, and a rayon hand-off per op (PERF-NOTES has the accounting). This
//! path computes the same function with the same numerics (ggml's integer
//! dot products, an f16 KV cache, f16-rounded attention probabilities) as
//! plain loops:
//!
//! - the KV cache is preallocated f16, `[kv_head][position][head_dim]`,
//!   written in place; grouped-query heads read their shared K/V rows
//!   directly, and the K rows are converted to f32 once for all the query
//!   heads that share them;
//! - RMSNorm, RoPE, biases, SiLU·up and residuals are in-place loops over
//!   `[tokens, width]` rows;
//! - every matrix product and the attention heads are spread over one
//!   persistent [`Pool`] whose workers spin between the loops of a token.
//!
//! `tests/parity.rs` holds this path to the burn graph (logits within 1e-4,
//! identical greedy tokens) on the tiny fixtures, and `tests/smollm2.rs` to
//! llama.cpp's greedy tokens on SmolLM2.

mod pool;
pub mod profile;

use super::qmatmul::{QBlocks, QMatrix, has_avx2};
use crate::host::exp;
use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use pool::Pool;
use profile::{Phase, timed};
use std::sync::Arc;

/// One layer's weights as the fused step reads them.
#[derive(Debug)]
pub(crate) struct FusedLayer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) wqkv: Arc<QMatrix>,
    pub(crate) bqkv: Option<Vec<f32>>,
    pub(crate) wo: Arc<QMatrix>,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) w_gate_up: Arc<QMatrix>,
    pub(crate) w_down: Arc<QMatrix>,
}

/// Sizes the step needs, copied out of the config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) hidden: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) inter: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f32,
}

/// The decoder's weights (shared with the burn model, not copied) and the
/// worker pool that runs its steps.
#[derive(Debug)]
pub(crate) struct FusedModel {
    pub(crate) dims: Dims,
    pub(crate) layers: Vec<FusedLayer>,
    pub(crate) norm: Vec<f32>,
    pub(crate) head: Arc<QMatrix>,
    pub(crate) inv_freq: Vec<f32>,
    pool: Pool,
}

/// The KV history of one sequence: per layer, K and V as f16 bits laid out
/// `[kv_head][position][head_dim]` for every position up to the capacity.
/// Allocated zeroed, so pages are only committed as positions are written.
#[derive(Debug, Clone)]
pub(crate) struct FusedCache {
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    capacity: usize,
}

/// Rows per chunk of a matrix product handed to one thread at a time: a
/// multiple of the kernel's four rows, small enough that two threads finish
/// a 576-row projection together.
const ROW_CHUNK: usize = 32;

/// A raw base pointer that [`for_chunks`] shares between threads; each
/// thread derives a disjoint sub-slice from it.
struct SharedOut(*mut f32);
// SAFETY: only used by `for_chunks`, whose chunks never overlap.
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

impl FusedModel {
    pub(crate) fn new(
        dims: Dims,
        layers: Vec<FusedLayer>,
        norm: Vec<f32>,
        head: Arc<QMatrix>,
        inv_freq: Vec<f32>,
    ) -> Self {
        debug_assert_eq!(head.rows(), dims.vocab);
        Self {
            dims,
            layers,
            norm,
            head,
            inv_freq,
            pool: Pool::new(rayon::current_num_threads()),
        }
    }

    /// An empty cache for `capacity` positions.
    pub(crate) fn new_cache(&self, capacity: usize) -> FusedCache {
        let d = &self.dims;
        let per_layer = d.kv_heads * capacity * d.head_dim;
        FusedCache {
            k: (0..self.layers.len()).map(|_| vec![0; per_layer]).collect(),
            v: (0..self.layers.len()).map(|_| vec![0; per_layer]).collect(),
            capacity,
        }
    }

    /// Runs `n` input embeddings (`x`, `[n, hidden]`) at positions
    /// `start..start + n` and returns logits `[m, vocab]`: every position when
    /// `all_logits`, else the last (m = 1). The caller has checked the
    /// capacity.
    pub(crate) fn forward(
        &self,
        mut x: Vec<f32>,
        n: usize,
        start: usize,
        cache: &mut FusedCache,
        all_logits: bool,
    ) -> Vec<f32> {
        let d = self.dims;
        debug_assert_eq!(x.len(), n * d.hidden);
        debug_assert!(start + n <= cache.capacity);
        let (cos, sin) = self.rope_tables(start, n);
        let mut h = vec![0f32; n * d.hidden];
        for (i, l) in self.layers.iter().enumerate() {
            timed(Phase::Norm, || {
                rms_norm_rows(&x, &l.attn_norm, d.eps, &mut h)
            });
            let mut qkv = self.project(&l.wqkv, &h, n, Phase::Qkv);
            timed(Phase::Rope, || {
                if let Some(b) = &l.bqkv {
                    for row in qkv.chunks_exact_mut(b.len()) {
                        row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
                    }
                }
                self.rope_and_store(
                    &mut qkv,
                    start,
                    &cos,
                    &sin,
                    &mut cache.k[i],
                    &mut cache.v[i],
                );
            });
            let att = timed(Phase::Attention, || {
                self.attention(&qkv, n, start, &cache.k[i], &cache.v[i], cache.capacity)
            });
            let o = self.project(&l.wo, &att, n, Phase::Out);
            timed(Phase::Elementwise, || {
                x.iter_mut().zip(&o).for_each(|(x, o)| *x += o)
            });

            timed(Phase::Norm, || {
                rms_norm_rows(&x, &l.ffn_norm, d.eps, &mut h)
            });
            let gu = self.project(&l.w_gate_up, &h, n, Phase::GateUp);
            let act = timed(Phase::Elementwise, || {
                let mut act = vec![0f32; n * d.inter];
                for (a, g) in act
                    .chunks_exact_mut(d.inter)
                    .zip(gu.chunks_exact(2 * d.inter))
                {
                    let (gate, up) = g.split_at(d.inter);
                    silu_mul(gate, up, a);
                }
                act
            });
            let down = self.project(&l.w_down, &act, n, Phase::Down);
            timed(Phase::Elementwise, || {
                x.iter_mut().zip(&down).for_each(|(x, o)| *x += o)
            });
        }
        let (rows, m) = if all_logits {
            (&x[..], n)
        } else {
            (&x[(n - 1) * d.hidden..], 1)
        };
        let mut h = vec![0f32; m * d.hidden];
        timed(Phase::Norm, || {
            rms_norm_rows(rows, &self.norm, d.eps, &mut h)
        });
        self.project(&self.head, &h, m, Phase::Head)
    }

    /// `x · Wᵀ` for `n` rows of `x`: `[n, W.rows]`, spread over the pool.
    fn project(&self, w: &QMatrix, x: &[f32], n: usize, phase: Phase) -> Vec<f32> {
        let acts: Vec<_> = timed(Phase::Quantize, || {
            x.chunks_exact(w.cols())
                .map(|r| w.quantize_input(r))
                .collect()
        });
        timed(phase, || self.product(w, &acts, n))
    }

    fn product(&self, w: &QMatrix, acts: &[QBlocks], n: usize) -> Vec<f32> {
        let rows = w.rows();
        if n == 1 {
            let mut out = vec![0f32; rows];
            for_chunks(&self.pool, &mut out, ROW_CHUNK, |c, o| {
                w.matvec_rows(&acts[0], c * ROW_CHUNK, o);
            });
            return out;
        }
        // Weight-row-major, so each chunk is contiguous; transposed after.
        let mut by_row = vec![0f32; rows * n];
        for_chunks(&self.pool, &mut by_row, ROW_CHUNK * n, |c, o| {
            w.matmul_rows(acts, c * ROW_CHUNK, o);
        });
        let mut out = vec![0f32; n * rows];
        for (r, col) in by_row.chunks_exact(n).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * rows + r] = v;
            }
        }
        out
    }

    /// cos and sin of every rotary angle, `[n, head_dim / 2]`, for positions
    /// `start..start + n` (f32 product, then cos/sin, as transformers does).
    fn rope_tables(&self, start: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.dims.head_dim / 2;
        let mut cos = Vec::with_capacity(n * half);
        let mut sin = Vec::with_capacity(n * half);
        for p in start..start + n {
            for &f in &self.inv_freq[..half] {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        (cos, sin)
    }

    /// Rotates q and k of each token in place ("rotate half" layout), rounds
    /// q through f16, and writes k and v as f16 into the cache at their
    /// positions.
    fn rope_and_store(
        &self,
        qkv: &mut [f32],
        start: usize,
        cos: &[f32],
        sin: &[f32],
        kc: &mut [u16],
        vc: &mut [u16],
    ) {
        let d = self.dims;
        let (hd, half) = (d.head_dim, d.head_dim / 2);
        let (qd, kvd) = (d.heads * hd, d.kv_heads * hd);
        let cap = kc.len() / kvd;
        for (t, row) in qkv.chunks_exact_mut(qd + 2 * kvd).enumerate() {
            let (c, s) = (
                &cos[t * half..(t + 1) * half],
                &sin[t * half..(t + 1) * half],
            );
            let (q, kv) = row.split_at_mut(qd);
            let (k, v) = kv.split_at_mut(kvd);
            for head in q.chunks_exact_mut(hd).chain(k.chunks_exact_mut(hd)) {
                let (x1, x2) = head.split_at_mut(half);
                for j in 0..half {
                    let (a, b) = (x1[j], x2[j]);
                    x1[j] = a * c[j] - b * s[j];
                    x2[j] = b * c[j] + a * s[j];
                }
            }
            q.iter_mut().for_each(|v| *v = f16::from_f32(*v).to_f32());
            let pos = start + t;
            for g in 0..d.kv_heads {
                let at = (g * cap + pos) * hd;
                let kd: &mut [f16] = kc[at..at + hd].reinterpret_cast_mut();
                kd.convert_from_f32_slice(&k[g * hd..(g + 1) * hd]);
                let vd: &mut [f16] = vc[at..at + hd].reinterpret_cast_mut();
                vd.convert_from_f32_slice(&v[g * hd..(g + 1) * hd]);
            }
        }
    }

    /// Causal attention of `n` tokens over the cache, `[n, heads·head_dim]`.
    /// One work item per (token, kv head): its K and V rows are converted
    /// once and serve all the query heads that share them.
    fn attention(
        &self,
        qkv: &[f32],
        n: usize,
        start: usize,
        kc: &[u16],
        vc: &[u16],
        cap: usize,
    ) -> Vec<f32> {
        let d = self.dims;
        let hd = d.head_dim;
        let rep = d.heads / d.kv_heads;
        let stride = (d.heads + 2 * d.kv_heads) * hd;
        let scale = (hd as f64).powf(-0.5) as f32;
        let mut out = vec![0f32; n * d.heads * hd];
        for_chunks(&self.pool, &mut out, rep * hd, |item, o| {
            let (t, g) = (item / d.kv_heads, item % d.kv_heads);
            let total = start + t + 1;
            let base = g * cap * hd;
            let q0 = t * stride + g * rep * hd;
            attend(Attend {
                q: &qkv[q0..q0 + rep * hd],
                k: &kc[base..base + total * hd],
                v: &vc[base..base + total * hd],
                hd,
                scale,
                out: o,
            });
        });
        out
    }
}

/// Calls `f(i, chunk)` for every `chunk`-long piece of `out` (the last may
/// be shorter), spread over `pool`.
fn for_chunks(pool: &Pool, out: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let len = out.len();
    let base = SharedOut(out.as_mut_ptr());
    pool.run(len.div_ceil(chunk), &|i| {
        let s = i * chunk;
        let e = (s + chunk).min(len);
        // SAFETY: `run` calls each `i` exactly once, so the pieces are
        // disjoint, and `out` outlives `run`.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(s), e - s) };
        f(i, piece);
    });
}

/// One (token, kv head) attention item: the query heads that share a K/V
/// head, against that head's history.
struct Attend<'a> {
    /// `rep` query heads, `[rep, hd]`, already rotated and f16-rounded.
    q: &'a [f32],
    /// The history, f16 bits `[positions, hd]`.
    k: &'a [u16],
    v: &'a [u16],
    hd: usize,
    scale: f32,
    /// `[rep, hd]`.
    out: &'a mut [f32],
}

/// Dispatches [`attend_body`] to a copy compiled for AVX2/FMA/F16C where
/// the CPU has them (the binary targets the baseline ISA).
fn attend(a: Attend<'_>) {
    if has_avx2() {
        // SAFETY: the features were just detected.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            attend_avx2(a)
        };
        return;
    }
    attend_portable(a);
}

/// [`attend_body`] for any CPU (NEON on aarch64 through LLVM).
fn attend_portable(a: Attend<'_>) {
    attend_body(a, |src, dst| {
        src.reinterpret_cast::<f16>().convert_to_f32_slice(dst)
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn attend_avx2(a: Attend<'_>) {
    attend_body(a, |src, dst| {
        if src.len() % 8 != 0 {
            return src.reinterpret_cast::<f16>().convert_to_f32_slice(dst);
        }
        // One F16C instruction per eight values, inlined here: `half`'s
        // slice conversion is a call with its own feature check per row,
        // which cost more than the arithmetic on a 64-value head row.
        for (s, d) in src.chunks_exact(8).zip(dst.chunks_exact_mut(8)) {
            use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
            // SAFETY: both chunks hold exactly eight values; the CPU has
            // F16C (this function's features).
            unsafe {
                let h = _mm_loadu_si128(s.as_ptr().cast::<__m128i>());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
    });
}

/// Scores, softmax and the weighted sum of values. Each K and V row is
/// converted from f16 once, into a row-sized buffer that stays in L1, and
/// serves every query head of the group; plain loops the compiler
/// vectorises (with FMA in the AVX2 copy, NEON on aarch64).
#[inline(always)]
fn attend_body(a: Attend<'_>, to_f32: impl Fn(&[u16], &mut [f32])) {
    let hd = a.hd;
    let total = a.k.len() / hd;
    let rep = a.q.len() / hd;
    let mut row = vec![0f32; hd];
    let mut scores = vec![0f32; rep * total];
    for (p, kr) in a.k.chunks_exact(hd).enumerate() {
        to_f32(kr, &mut row);
        for (r, q) in a.q.chunks_exact(hd).enumerate() {
            scores[r * total + p] = dot(q, &row) * a.scale;
        }
    }
    for s in scores.chunks_exact_mut(total) {
        softmax_f16(s);
    }
    // Summed in a local buffer and stored once: the next item's output
    // may share a cache line with this one's, on another thread.
    let mut acc = vec![0f32; a.out.len()];
    for (p, vr) in a.v.chunks_exact(hd).enumerate() {
        to_f32(vr, &mut row);
        for (r, o) in acc.chunks_exact_mut(hd).enumerate() {
            let w = scores[r * total + p];
            o.iter_mut().zip(&row).for_each(|(o, &v)| *o += w * v);
        }
    }
    a.out.copy_from_slice(&acc);
}

/// `out = silu(gate) · up`, element-wise (AVX2 copy where available).
fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[inline(always)]
    fn body(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + exp(-g)) * u;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn body_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
        body(gate, up, out);
    }
    if has_avx2() {
        // SAFETY: the features were just detected.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            body_avx2(gate, up, out)
        };
        return;
    }
    body(gate, up, out);
}

/// RMSNorm of each `[width]` row of `x` into `out`, with weight `w`:
/// `x · (1/√(mean(x²)+ε)) · w`, the mean accumulated in f64 (ggml's order).
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let width = w.len();
    for (xr, or) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        // Squares summed in f64, as ggml does.
        let ms = (xr.iter().map(|v| f64::from(v * v)).sum::<f64>() / width as f64) as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &x), &w) in or.iter_mut().zip(xr).zip(w) {
            *o = x * inv * w;
        }
    }
}

/// Softmax in place, then each probability rounded through f16, as
/// llama.cpp's f16 attention does. ggml's order: `e^(x−max)` eight at a
/// time, each group's sum (pairwise within the group) added to an f64
/// total, then one scale by the f64 reciprocal.
#[inline(always)]
fn softmax_f16(p: &mut [f32]) {
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f64;
    let mut groups = p.chunks_exact_mut(8);
    for g in &mut groups {
        for v in g.iter_mut() {
            *v = exp(*v - max);
        }
        let h: [f32; 4] = std::array::from_fn(|i| g[i + 4] + g[i]);
        let q = [h[0] + h[2], h[1] + h[3]];
        total += f64::from(q[0] + q[1]);
    }
    // llama.cpp pads the row with masked (-inf) positions to a multiple of
    // 8, so the last group is summed as eight lanes with zeros.
    let rest = groups.into_remainder();
    if !rest.is_empty() {
        let mut g = [0f32; 8];
        for (v, l) in rest.iter_mut().zip(&mut g) {
            *v = exp(*v - max);
            *l = *v;
        }
        let h: [f32; 4] = std::array::from_fn(|i| g[i + 4] + g[i]);
        let q = [h[0] + h[2], h[1] + h[3]];
        total += f64::from(q[0] + q[1]);
    }
    let inv = (1.0 / total) as f32;
    p.iter_mut().for_each(|v| *v *= inv);
    let mut h = vec![f16::ZERO; p.len()];
    h.convert_from_f32_slice(p);
    h.convert_to_f32_slice(p);
}

/// Dot product in eight independent lanes (vectorises; the summation order
/// differs from a gemm's by rounding only).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.split_at(a.len() / 8 * 8);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(8).zip(bc.chunks_exact(8)) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + ar.iter().zip(br).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention over f16 rows against an f64 reference of the same
    /// arithmetic (scores, softmax, f16-rounded probabilities, values).
    #[test]
    fn attend_matches_reference() {
        let (hd, total, rep) = (16, 37, 3);
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.8;
        let q: Vec<f32> = (0..rep * hd)
            .map(|i| f16::from_f32(val(i)).to_f32())
            .collect();
        let k: Vec<u16> = (0..total * hd)
            .map(|i| f16::from_f32(val(i + 11)).to_bits())
            .collect();
        let v: Vec<u16> = (0..total * hd)
            .map(|i| f16::from_f32(val(i + 5)).to_bits())
            .collect();
        let scale = 0.25;
        let mut out = vec![0f32; rep * hd];
        attend(Attend {
            q: &q,
            k: &k,
            v: &v,
            hd,
            scale,
            out: &mut out,
        });
        // The portable copy converts f16 with `half`; F16C's conversion is
        // exact too, so the two agree to the bit.
        let mut portable = vec![0f32; rep * hd];
        attend_portable(Attend {
            q: &q,
            k: &k,
            v: &v,
            hd,
            scale,
            out: &mut portable,
        });
        assert_eq!(out, portable, "dispatched and portable copies differ");
        let kf = |p: usize, j: usize| f64::from(f16::from_bits(k[p * hd + j]).to_f32());
        let vf = |p: usize, j: usize| f64::from(f16::from_bits(v[p * hd + j]).to_f32());
        for r in 0..rep {
            let s: Vec<f64> = (0..total)
                .map(|p| {
                    (0..hd)
                        .map(|j| f64::from(q[r * hd + j]) * kf(p, j))
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            let pr: Vec<f64> = e
                .iter()
                .map(|x| f64::from(f16::from_f64(x / z).to_f32()))
                .collect();
            for j in 0..hd {
                let want: f64 = (0..total).map(|p| pr[p] * vf(p, j)).sum();
                let got = f64::from(out[r * hd + j]);
                assert!(
                    (got - want).abs() < 2e-3,
                    "head {r} dim {j}: {got} vs {want}"
                );
            }
        }
    }
}
