//! The SigLIP tower and the Idefics3 connector on the CPU: GEMMs from the
//! `gemm` crate over plain buffers, with the elementwise work fused around
//! them.
//!
//! Why not burn's graph here (it stays the path on wgpu): on its CPU backend
//! each op is a pass over memory of its own, GELU's cube goes through
//! `powf`, and attention materialises `[heads, 1024, 1024]` scores per tile
//! (48 MB, then softmax's copies). Here:
//! - attention runs per head and per block of 64 query rows: the block's
//!   scores (256 KiB) stay in L2 through scale, softmax and the product with
//!   V, and the blocks run in parallel;
//! - LayerNorm is one pass per row, and the same pass adds the next
//!   residual product's bias to the residual stream, so that product (the
//!   attention output, the MLP's down projection) accumulates straight into
//!   it: no separate bias or residual pass;
//! - GELU is `x·σ(2u)` with the vectorised `exp`, fused with fc1's bias;
//! - weights stay in f16 when the file's values are f16 (SmolVLM's are): a
//!   product widens ~1 MiB of rows at a time into a scratch panel, so the
//!   tower costs half the memory of f32 weights at the same speed.
//!
//! `docs/vision-fixtures.md` gives the arithmetic; `models/tests/vision.rs`
//! holds this path to transformers' numbers.

use super::config::VisionConfig;
use crate::gguf::GgmlType;
use crate::gguf::dequantize_into as dequantize;
use crate::host::{SendPtr, exp, parallelism, with_avx2};
use gemm::{Parallelism, gemm};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Query rows per attention task: the `64 × patches` score block stays in L2.
const QUERY_BLOCK: usize = 64;

/// Floats in one widened panel of f16 weight rows (1 MiB).
const PANEL_FLOATS: usize = 256 << 10;

/// A projection's weights `[out, in]`, in the file's row order.
#[derive(Debug)]
pub(super) struct Mat {
    out: usize,
    inp: usize,
    store: Store,
}

#[derive(Debug)]
enum Store {
    F32(Vec<f32>),
    /// A file's f16 values, or f32 ones that are all exactly f16s.
    F16(Vec<f16>),
    /// ggml blocks as the file has them (the catalogue's Q8_0 `mmproj`),
    /// dequantised a panel at a time: the same values as dequantising once.
    Blocks(GgmlType, Vec<u8>),
}

impl Mat {
    /// Keeps `w` (`out × inp`) in f16 if that loses nothing, else in f32.
    pub(super) fn new(w: Vec<f32>, out: usize, inp: usize) -> Self {
        debug_assert_eq!(w.len(), out * inp);
        let mut h = vec![f16::ZERO; w.len()];
        h.convert_from_f32_slice(&w);
        let exact = h.iter().zip(&w).all(|(a, &b)| a.to_f32() == b);
        let store = if exact { Store::F16(h) } else { Store::F32(w) };
        Self { out, inp, store }
    }

    /// Keeps `rows × inp` values stored as ggml blocks of `ty`: f16 as
    /// f16, other types as the blocks. `None` if `ty` cannot be
    /// dequantised or the bytes do not hold exactly those values.
    pub(super) fn from_blocks(ty: GgmlType, data: Vec<u8>, out: usize, inp: usize) -> Option<Self> {
        let (be, bb) = ty.block_layout();
        if !ty.can_dequantize() || !inp.is_multiple_of(be) || data.len() != out * inp / be * bb {
            return None;
        }
        let store = match ty {
            GgmlType::F32 => return None,
            GgmlType::F16 => Store::F16(
                data.chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            _ => Store::Blocks(ty, data),
        };
        Some(Self { out, inp, store })
    }

    /// Whether the weights are held in f16.
    #[cfg(test)]
    fn is_f16(&self) -> bool {
        matches!(self.store, Store::F16(_))
    }

    /// `dst[r·ld + j] = (dst[r·ld + j] if accumulate) + Σₖ x[r·in + k]·W[j, k]`
    /// for the `m` rows of `x`.
    fn product(&self, x: &[f32], m: usize, dst: &mut [f32], ld: usize, accumulate: bool) {
        let (out, inp) = (self.out, self.inp);
        if m == 0 {
            return;
        }
        assert!(x.len() >= m * inp && ld >= out && dst.len() >= (m - 1) * ld + out);
        match &self.store {
            // SAFETY: the bounds are asserted above.
            Store::F32(w) => unsafe {
                product_nt(
                    m,
                    out,
                    inp,
                    x.as_ptr(),
                    w.as_ptr(),
                    dst.as_mut_ptr(),
                    ld,
                    accumulate,
                )
            },
            Store::F16(_) | Store::Blocks(..) => {
                let rows = (PANEL_FLOATS / inp).clamp(16, out);
                let mut panel = vec![0f32; rows * inp];
                for j0 in (0..out).step_by(rows) {
                    let j1 = (j0 + rows).min(out);
                    let p = &mut panel[..(j1 - j0) * inp];
                    self.widen(j0, p);
                    // SAFETY: as above; columns j0..j1 of `dst`'s rows.
                    unsafe {
                        product_nt(
                            m,
                            j1 - j0,
                            inp,
                            x.as_ptr(),
                            p.as_ptr(),
                            dst.as_mut_ptr().add(j0),
                            ld,
                            accumulate,
                        )
                    }
                }
            }
        }
    }
}

impl Mat {
    /// Rows `j0..` of the weights as f32 into `panel` (whole rows), on the
    /// crate's threads.
    fn widen(&self, j0: usize, panel: &mut [f32]) {
        let inp = self.inp;
        // Rows per task: a few thousand values each.
        let per = (4096 / inp).max(1);
        match &self.store {
            Store::F32(_) => unreachable!("f32 weights are used in place"),
            Store::F16(w) => panel
                .par_chunks_mut(per * inp)
                .zip(w[j0 * inp..].par_chunks(per * inp))
                .for_each(|(d, s)| s[..d.len()].convert_to_f32_slice(d)),
            Store::Blocks(ty, data) => {
                let (be, bb) = ty.block_layout();
                let row_bytes = inp / be * bb;
                panel
                    .par_chunks_mut(per * inp)
                    .zip(data[j0 * row_bytes..].par_chunks(per * row_bytes))
                    .for_each(|(d, s)| dequantize(*ty, &s[..d.len() / be * bb], d));
            }
        }
    }
}

/// `dst (+)= lhs · rhsᵀ` for row-major `lhs` `[m, k]`, `rhs` `[n, k]`, and
/// `dst` rows `ld` apart, on the crate's threads.
///
/// # Safety
/// The pointers must cover those extents.
#[allow(clippy::too_many_arguments)]
unsafe fn product_nt(
    m: usize,
    n: usize,
    k: usize,
    lhs: *const f32,
    rhs: *const f32,
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst,
            1,
            ld as isize,
            accumulate,
            lhs,
            1,
            k as isize,
            rhs,
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// LayerNorm's weight and bias.
type Norm = (Vec<f32>, Vec<f32>);

/// One pre-norm encoder layer.
#[derive(Debug)]
pub(super) struct Layer {
    pub(super) ln1: Norm,
    /// q, k, v rows stacked: `[3D, D]`.
    pub(super) qkv: Mat,
    pub(super) bqkv: Vec<f32>,
    pub(super) wo: Mat,
    pub(super) bo: Vec<f32>,
    pub(super) ln2: Norm,
    pub(super) fc1: Mat,
    pub(super) b1: Vec<f32>,
    pub(super) fc2: Mat,
    pub(super) b2: Vec<f32>,
}

/// The tower and connector on the host.
#[derive(Debug)]
pub(super) struct Tower {
    pub(super) config: VisionConfig,
    /// The patch convolution as `[D, 3·P·P]` rows.
    pub(super) patch: Mat,
    pub(super) patch_b: Vec<f32>,
    /// `[patches, D]`.
    pub(super) pos: Vec<f32>,
    pub(super) layers: Vec<Layer>,
    pub(super) post_ln: Norm,
    /// `[text hidden, D·s²]`.
    pub(super) proj: Mat,
}

impl Tower {
    /// The tower's output (after the post-norm), `[count · patches, D]`, for
    /// the im2col'd patches of `count` tiles (`[count · patches, 3·P·P]`).
    pub(super) fn hidden_states(&self, patches: &[f32], count: usize) -> Vec<f32> {
        let c = &self.config;
        let (d, i) = (c.hidden_size, c.intermediate_size);
        let n = c.grid() * c.grid();
        let rows = count * n;
        let eps = c.layer_norm_eps as f32;
        let mut x = vec![0f32; rows * d];
        self.patch.product(patches, rows, &mut x, d, false);
        x.par_chunks_mut(d).enumerate().for_each(|(r, row)| {
            let pos = &self.pos[(r % n) * d..][..d];
            for ((v, b), p) in row.iter_mut().zip(&self.patch_b).zip(pos) {
                *v = (*v + b) + p;
            }
        });
        let mut y = vec![0f32; rows * d];
        let mut qkv = vec![0f32; rows * 3 * d];
        let mut att = vec![0f32; rows * d];
        let mut hidden = vec![0f32; rows * i];
        for l in &self.layers {
            layer_norm(&mut x, &mut y, d, &l.ln1, eps, Some(&l.bo));
            l.qkv.product(&y, rows, &mut qkv, 3 * d, false);
            add_bias(&mut qkv, &l.bqkv, |v| v);
            self.attention(&qkv, &mut att, count);
            l.wo.product(&att, rows, &mut x, d, true);
            layer_norm(&mut x, &mut y, d, &l.ln2, eps, Some(&l.b2));
            l.fc1.product(&y, rows, &mut hidden, i, false);
            add_bias(&mut hidden, &l.b1, gelu_tanh);
            l.fc2.product(&hidden, rows, &mut x, d, true);
        }
        layer_norm(&mut x, &mut y, d, &self.post_ln, eps, None);
        y
    }

    /// Pixel shuffle and projection: `[count · patches, D]` →
    /// `[count · G², text hidden]` (see `VisionTower::connect`).
    pub(super) fn connect(&self, h: &[f32], count: usize) -> Vec<f32> {
        let c = &self.config;
        let (d, g, s) = (c.hidden_size, c.grid(), c.scale_factor);
        let (n, gg) = (g * g, g / s);
        let (tokens, width) = (count * gg * gg, s * s * d);
        let mut x = vec![0f32; tokens * width];
        x.par_chunks_mut(width).enumerate().for_each(|(tok, row)| {
            let (t, rc) = (tok / (gg * gg), tok % (gg * gg));
            let (big_r, big_c) = (rc / gg, rc % gg);
            for i in 0..s {
                for j in 0..s {
                    let p = t * n + (big_r * s + i) * g + big_c * s + j;
                    row[(i * s + j) * d..][..d].copy_from_slice(&h[p * d..][..d]);
                }
            }
        });
        let text = c.text_hidden_size;
        let mut out = vec![0f32; tokens * text];
        self.proj.product(&x, tokens, &mut out, text, false);
        out
    }

    /// Multi-head self-attention within each tile: `qkv` rows `[q | k | v]`
    /// (`3D` wide) → `out` rows `D` wide, heads side by side.
    fn attention(&self, qkv: &[f32], out: &mut [f32], count: usize) {
        let c = &self.config;
        let (d, heads) = (c.hidden_size, c.num_heads);
        let (n, hd) = (c.grid() * c.grid(), d / heads);
        let ld = 3 * d;
        let blocks = n.div_ceil(QUERY_BLOCK);
        let scale = (hd as f32).powf(-0.5);
        assert!(qkv.len() >= count * n * ld && out.len() >= count * n * d);
        let (src, dst) = (qkv.as_ptr() as usize, SendPtr(out.as_mut_ptr()));
        (0..count * heads * blocks).into_par_iter().for_each_init(
            || vec![0f32; QUERY_BLOCK * n],
            |scores, task| {
                let (tile, head, block) = (
                    task / (heads * blocks),
                    task / blocks % heads,
                    task % blocks,
                );
                let r0 = tile * n + block * QUERY_BLOCK;
                let m = QUERY_BLOCK.min((tile + 1) * n - r0);
                let (base, col) = (tile * n * ld, head * hd);
                let src = src as *const f32;
                // SAFETY: every offset below stays inside `qkv` (rows
                // of this tile, columns of this head) and `out` (this
                // task's rows and head columns, written by no other
                // task), as asserted above.
                unsafe {
                    // scores = scale · Q_block · Kᵀ
                    gemm(
                        m,
                        n,
                        hd,
                        scores.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        src.add(r0 * ld + col),
                        1,
                        ld as isize,
                        src.add(base + d + col),
                        ld as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                    with_avx2(|| scores[..m * n].chunks_exact_mut(n).for_each(softmax));
                    // out block = scores · V
                    gemm(
                        m,
                        hd,
                        n,
                        dst.get().add(r0 * d + col),
                        1,
                        d as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        n as isize,
                        src.add(base + 2 * d + col),
                        1,
                        ld as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            },
        );
    }
}

/// A row's softmax in place.
#[inline(always)]
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / sum(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `Σ f(v)` in eight lanes, so it vectorises.
#[inline(always)]
fn sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y = LayerNorm(x)` row by row (biased variance, as `nn.LayerNorm`); then,
/// with `then_add`, `x += then_add` in the same pass (the bias of the
/// product that will accumulate into `x` next).
fn layer_norm(
    x: &mut [f32],
    y: &mut [f32],
    d: usize,
    (w, b): &Norm,
    eps: f32,
    then_add: Option<&[f32]>,
) {
    x.par_chunks_mut(d)
        .zip(y.par_chunks_mut(d))
        .for_each(|(xr, yr)| {
            with_avx2(|| {
                let mean = sum(xr, |v| v) / d as f32;
                yr.iter_mut()
                    .zip(xr.iter())
                    .for_each(|(o, v)| *o = v - mean);
                let inv = 1.0 / (sum(yr, |c| c * c) / d as f32 + eps).sqrt();
                for ((o, w), b) in yr.iter_mut().zip(w).zip(b) {
                    *o = *o * inv * w + b;
                }
                if let Some(add) = then_add {
                    xr.iter_mut().zip(add).for_each(|(v, a)| *v += a);
                }
            })
        });
}

/// `v = f(v + bias)` over rows as wide as `bias`.
fn add_bias(v: &mut [f32], bias: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    v.par_chunks_mut(bias.len()).for_each(|row| {
        with_avx2(|| row.iter_mut().zip(bias).for_each(|(v, b)| *v = f(*v + b)));
    });
}

/// `gelu_pytorch_tanh`: `0.5·x·(1 + tanh(u))` with `u = √(2/π)·(x + 0.044715·x³)`,
/// computed as the equal `x·σ(2u) = x / (1 + e^(−2u))`: one vectorised `exp`,
/// no `tanh` or `powf` call per value.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Weights that are f16 values run the f16 panel path, others the f32
    /// path, and both give the textbook product (accumulating or not, into
    /// a wider destination, over several panels).
    #[test]
    fn products_match_the_textbook_in_f16_and_f32() {
        let (m, out, inp) = (5, 300, 1000);
        let val = |i: usize| ((i * 7919 % 1013) as f32 / 506.0 - 1.0) * 0.3;
        let exact: Vec<f32> = (0..out * inp)
            .map(|i| f16::from_f32(val(i)).to_f32())
            .collect();
        let mut inexact = exact.clone();
        inexact[17] += 1e-6;
        let x: Vec<f32> = (0..m * inp).map(|i| val(i + 3)).collect();
        for (w, f16_store) in [(exact, true), (inexact, false)] {
            let mat = Mat::new(w.clone(), out, inp);
            assert_eq!(mat.is_f16(), f16_store);
            let ld = out + 7;
            for accumulate in [false, true] {
                let mut dst: Vec<f32> = (0..m * ld).map(|i| i as f32 * 0.01).collect();
                let before = dst.clone();
                mat.product(&x, m, &mut dst, ld, accumulate);
                for r in 0..m {
                    for j in 0..ld {
                        let got = dst[r * ld + j];
                        if j >= out {
                            assert_eq!(got, before[r * ld + j], "column {j} is not written");
                            continue;
                        }
                        let dot: f64 = (0..inp)
                            .map(|k| f64::from(x[r * inp + k]) * f64::from(w[j * inp + k]))
                            .sum();
                        let want = dot
                            + if accumulate {
                                f64::from(before[r * ld + j])
                            } else {
                                0.0
                            };
                        assert!(
                            (f64::from(got) - want).abs() < 1e-4,
                            "f16 {f16_store}, accumulate {accumulate}, [{r}, {j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gelu_matches_the_tanh_form() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let u = 0.797_884_560_8_f64 * (f64::from(x) + 0.044715 * f64::from(x).powi(3));
            let want = 0.5 * f64::from(x) * (1.0 + u.tanh());
            let got = f64::from(gelu_tanh(x));
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "gelu({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn softmax_and_layer_norm_match_f64() {
        let d = 37;
        let row: Vec<f32> = (0..d).map(|i| (i as f32 * 1.7).sin() * 4.0).collect();
        let mut p = row.clone();
        softmax(&mut p);
        let m = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let e: Vec<f64> = row.iter().map(|&v| (f64::from(v) - m).exp()).collect();
        let s: f64 = e.iter().sum();
        for (got, want) in p.iter().zip(&e) {
            assert!((f64::from(*got) - want / s).abs() < 1e-6);
        }
        let w: Vec<f32> = (0..d).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..d).map(|i| i as f32 * -0.02).collect();
        let add: Vec<f32> = (0..d).map(|i| i as f32).collect();
        let mut x = row.clone();
        let mut y = vec![0f32; d];
        layer_norm(&mut x, &mut y, d, &(w.clone(), b.clone()), 1e-6, Some(&add));
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / d as f64;
        for k in 0..d {
            let want = (f64::from(row[k]) - mean) / (var + 1e-6).sqrt() * f64::from(w[k])
                + f64::from(b[k]);
            assert!((f64::from(y[k]) - want).abs() < 1e-5, "y[{k}]");
            assert_eq!(x[k], row[k] + add[k], "x[{k}] gets the next bias");
        }
    }
}
