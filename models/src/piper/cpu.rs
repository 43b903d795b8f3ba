//! The voice's 1-D convolutions (and HiFi-GAN's transposed ones) on the
//! CPU, as GEMMs straight on `[C, T]`.
//!
//! Why not burn's `conv1d` here: on its CPU backend every call re-lays the
//! weights out, transposes the input to channels-last and runs im2col in
//! 512-column tiles, which `perf` showed as a third of synthesis time on
//! top of the GEMMs themselves. A Piper voice is nothing but batch-1 1-D
//! convolutions over long signals (HiFi-GAN runs them over every audio
//! sample). Here the weights are laid out once, at load; a convolution
//! gathers the shifted input windows of a few hundred output columns at a
//! time into an L2-sized block (a plain row copy per tap and channel) and
//! runs one GEMM over the whole `K·C_in` reduction, tiles in parallel; a
//! transposed convolution is one GEMM per tap into a strided destination.
//! Used only on the CPU device; burn's graph stays the reference
//! (`SEER_FUSED_CPU=0`) and runs on wgpu.

use crate::host::{SendPtr, parallelism};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

/// One convolution's weights, laid out for [`CpuConv::run`]. The geometry
/// (padding, dilation) is given per call: the text encoder's FFN changes
/// its padding after load.
#[derive(Debug)]
pub(super) struct CpuConv {
    /// Taps `[C_out][K][C_in]`: row `o` is output channel `o`'s weights in
    /// the order the gathered input block is laid out.
    w: Weights,
}

/// Weights re-laid for a GEMM, their bias and sizes: what both kinds of
/// convolution hold.
#[derive(Debug)]
struct Weights {
    taps: Vec<f32>,
    bias: Vec<f32>,
    c_out: usize,
    c_in: usize,
    k: usize,
}

impl Weights {
    /// Moves `weight[from(o, i, t)]` to `taps[to(o, i, t)]` for every output
    /// channel, input channel and tap. `None` if the sizes disagree.
    fn new(
        weight: &[f32],
        [c_out, c_in, k]: [usize; 3],
        bias: Option<Vec<f32>>,
        from: impl Fn(usize, usize, usize) -> usize,
        to: impl Fn(usize, usize, usize) -> usize,
    ) -> Option<Self> {
        if weight.len() != c_out * c_in * k || k == 0 {
            return None;
        }
        let bias = bias.unwrap_or_else(|| vec![0.0; c_out]);
        if bias.len() != c_out {
            return None;
        }
        let mut taps = vec![0.0; weight.len()];
        for o in 0..c_out {
            for i in 0..c_in {
                for t in 0..k {
                    taps[to(o, i, t)] = weight[from(o, i, t)];
                }
            }
        }
        Some(Self {
            taps,
            bias,
            c_out,
            c_in,
            k,
        })
    }
}

/// Zero padding before and after the input, and the kernel's dilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) pad_left: usize,
    pub(super) pad_right: usize,
    pub(super) dilation: usize,
}

impl CpuConv {
    /// From a PyTorch/ONNX weight `[C_out, C_in, K]` (row-major) and an
    /// optional bias of `C_out` values. `None` if the sizes disagree.
    pub(super) fn new(
        weight: &[f32],
        [c_out, c_in, k]: [usize; 3],
        bias: Option<Vec<f32>>,
    ) -> Option<Self> {
        let w = Weights::new(
            weight,
            [c_out, c_in, k],
            bias,
            |o, i, t| (o * c_in + i) * k + t,
            |o, i, t| (o * k + t) * c_in + i,
        )?;
        Some(Self { w })
    }

    /// Input channels.
    pub(super) fn c_in(&self) -> usize {
        self.w.c_in
    }

    /// Output channels.
    pub(super) fn c_out(&self) -> usize {
        self.w.c_out
    }

    /// Output length for an input of `t` samples (`None`: shorter than the
    /// kernel's reach).
    pub(super) fn out_len(&self, t: usize, g: Geometry) -> Option<usize> {
        (t + g.pad_left + g.pad_right)
            .checked_sub(g.dilation * (self.w.k - 1))
            .filter(|&n| n > 0)
    }

    /// Convolves `x` (`[C_in, t]`, row-major) and returns `[C_out, T_out]`
    /// plus `residual` when one is given (same shape as the output: the
    /// residual add is free, as the products accumulate into it).
    ///
    /// # Panics
    /// If `x` or `residual` has the wrong length; callers check the shapes.
    pub(super) fn run(
        &self,
        x: &[f32],
        t: usize,
        g: Geometry,
        residual: Option<Vec<f32>>,
    ) -> Vec<f32> {
        assert_eq!(x.len(), self.w.c_in * t, "conv input size");
        let Some(t_out) = self.out_len(t, g) else {
            return Vec::new();
        };
        let mut out = residual.unwrap_or_else(|| vec![0.0; self.w.c_out * t_out]);
        assert_eq!(out.len(), self.w.c_out * t_out, "conv residual size");
        for (row, b) in out.chunks_exact_mut(t_out).zip(&self.w.bias) {
            row.iter_mut().for_each(|v| *v += b);
        }
        // Column tiles: each gathers its K shifted input windows into a
        // cache-sized `[K·C_in, n]` block and runs one GEMM over the whole
        // reduction, so the output is read and written once per tile rather
        // than once per tap. Tiles are independent: rayon runs them.
        let kc = self.w.k * self.w.c_in;
        let tile = (TILE_FLOATS / kc).clamp(16, 1024).min(t_out);
        let dst = SendPtr(out.as_mut_ptr());
        (0..t_out.div_ceil(tile)).into_par_iter().for_each_init(
            || vec![0.0f32; kc * tile],
            |col, ti| {
                let j0 = ti * tile;
                let n = tile.min(t_out - j0);
                self.gather(x, t, g, j0, n, &mut col[..kc * n]);
                // SAFETY: dst is out[.., j0..j0+n] with row stride t_out
                // (j0 + n <= t_out), a column range no other tile
                // touches; lhs is the whole `c_out × k·c_in` weight
                // matrix; rhs is this tile's `k·c_in × n` block.
                unsafe {
                    gemm(
                        self.w.c_out,
                        n,
                        kc,
                        dst.get().add(j0),
                        1,
                        t_out as isize,
                        true,
                        self.w.taps.as_ptr(),
                        1,
                        kc as isize,
                        col.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            },
        );
        out
    }

    /// Writes the input windows output columns `j0..j0+n` read into `col`
    /// (`[K][C_in][n]`): row `(tap, i)` is channel `i` shifted by the tap's
    /// offset, zero where it falls in the padding.
    fn gather(&self, x: &[f32], t: usize, g: Geometry, j0: usize, n: usize, col: &mut [f32]) {
        for tap in 0..self.w.k {
            // Output column j reads input column j + shift.
            let shift = (tap * g.dilation) as isize - g.pad_left as isize;
            let start = j0 as isize + shift;
            // The part of [start, start + n) inside [0, t).
            let lo = start.max(0).min(start + n as isize);
            let hi = (start + n as isize).min(t as isize).max(lo);
            let (a, b) = ((lo - start) as usize, (hi - start) as usize);
            for i in 0..self.w.c_in {
                let row = &mut col[(tap * self.w.c_in + i) * n..][..n];
                row[..a].fill(0.0);
                row[b..].fill(0.0);
                if b > a {
                    let src = i * t + lo as usize;
                    row[a..b].copy_from_slice(&x[src..src + (b - a)]);
                }
            }
        }
    }
}

/// Floats in one tile's gathered input block (256 KiB: it stays in L2
/// while the GEMM runs over it).
const TILE_FLOATS: usize = 64 << 10;

/// A transposed convolution (HiFi-GAN's upsampling) as per-tap GEMMs: tap
/// `k`'s `[C_out, C_in]` product with the whole input lands on every
/// `stride`-th output column from `k - pad` on (a strided destination, which
/// the GEMM takes as is), accumulating where taps overlap.
#[derive(Debug)]
pub(super) struct CpuConvT {
    /// Taps `[K][C_out][C_in]`.
    w: Weights,
}

impl CpuConvT {
    /// From an ONNX/PyTorch `ConvTranspose` weight `[C_in, C_out, K]` (one
    /// group) and an optional bias of `C_out` values.
    pub(super) fn new(
        weight: &[f32],
        [c_in, c_out, k]: [usize; 3],
        bias: Option<Vec<f32>>,
    ) -> Option<Self> {
        let w = Weights::new(
            weight,
            [c_out, c_in, k],
            bias,
            |o, i, t| (i * c_out + o) * k + t,
            |o, i, t| (t * c_out + o) * c_in + i,
        )?;
        Some(Self { w })
    }

    /// Input channels.
    pub(super) fn c_in(&self) -> usize {
        self.w.c_in
    }

    /// Output channels.
    pub(super) fn c_out(&self) -> usize {
        self.w.c_out
    }

    /// Output length for `t` input samples, stride `s` and padding `pad`
    /// on both sides (dilation 1, no output padding).
    pub(super) fn out_len(&self, t: usize, s: usize, pad: usize) -> Option<usize> {
        ((t.checked_sub(1)?) * s + self.w.k)
            .checked_sub(2 * pad)
            .filter(|&n| n > 0)
    }

    /// Upsamples `x` (`[C_in, t]`) to `[C_out, T_out]`.
    ///
    /// # Panics
    /// If `x` has the wrong length; callers check the shapes.
    pub(super) fn run(&self, x: &[f32], t: usize, s: usize, pad: usize) -> Vec<f32> {
        assert_eq!(x.len(), self.w.c_in * t, "transposed conv input size");
        let Some(t_out) = self.out_len(t, s, pad) else {
            return Vec::new();
        };
        let mut out = vec![0.0; self.w.c_out * t_out];
        for (row, b) in out.chunks_exact_mut(t_out).zip(&self.w.bias) {
            row.fill(*b);
        }
        let (t_i, t_o, s_i) = (t as isize, t_out as isize, s as isize);
        for tap in 0..self.w.k {
            // Input column j lands on output column j·s + tap - pad.
            let off = tap as isize - pad as isize;
            let j0 = ((-off).max(0) + s_i - 1) / s_i;
            let j1 = ((t_o - 1 - off).div_euclid(s_i) + 1).min(t_i);
            if j1 <= j0 {
                continue;
            }
            let n = (j1 - j0) as usize;
            let col = (j0 * s_i + off) as usize;
            // SAFETY: dst columns col + m·s for m < n stay below t_out
            // ((j1-1)·s + off <= t_out - 1) and at or above 0 (j0·s + off
            // >= 0); lhs is tap `tap`'s c_out × c_in block; rhs is
            // x[.., j0..j1] with row stride t.
            unsafe {
                gemm(
                    self.w.c_out,
                    n,
                    self.w.c_in,
                    out.as_mut_ptr().add(col),
                    s_i,
                    t_o,
                    true,
                    self.w.taps.as_ptr().add(tap * self.w.c_out * self.w.c_in),
                    1,
                    self.w.c_in as isize,
                    x.as_ptr().add(j0 as usize),
                    1,
                    t_i,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism(),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, one output at a time.
    fn reference(
        w: &[f32],
        [c_out, c_in, k]: [usize; 3],
        bias: &[f32],
        x: &[f32],
        t: usize,
        (pl, pr): (usize, usize),
        dil: usize,
    ) -> Vec<f32> {
        let t_out = t + pl + pr - dil * (k - 1);
        let mut y = vec![0.0; c_out * t_out];
        for o in 0..c_out {
            for j in 0..t_out {
                let mut s = bias[o];
                for i in 0..c_in {
                    for tap in 0..k {
                        let p = j as isize + (tap * dil) as isize - pl as isize;
                        if p >= 0 && (p as usize) < t {
                            s += w[(o * c_in + i) * k + tap] * x[i * t + p as usize];
                        }
                    }
                }
                y[o * t_out + j] = s;
            }
        }
        y
    }

    #[test]
    fn tiled_gemms_match_the_definition() {
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // (c_out, c_in, k, t, pads, dilation): same-padded, dilated,
        // unpadded, padding wider than the input, one-sample input, and
        // long enough for several column tiles.
        for &(c_out, c_in, k, t, pads, dil) in &[
            (3, 4, 5, 3000, (6, 6), 3),
            (5, 3, 3, 17, (1, 1), 1),
            (4, 6, 7, 40, (9, 9), 3),
            (3, 2, 5, 9, (0, 0), 1),
            (2, 3, 3, 2, (4, 4), 2),
            (3, 3, 1, 1, (0, 0), 1),
        ] {
            let w: Vec<f32> = (0..c_out * c_in * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..c_out).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..c_in * t).map(|_| rnd()).collect();
            let conv = CpuConv::new(&w, [c_out, c_in, k], Some(b.clone())).expect("sizes agree");
            let g = Geometry {
                pad_left: pads.0,
                pad_right: pads.1,
                dilation: dil,
            };
            let want = reference(&w, [c_out, c_in, k], &b, &x, t, pads, dil);
            let got = conv.run(&x, t, g, None);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            let res: Vec<f32> = (0..want.len()).map(|_| rnd()).collect();
            let got = conv.run(&x, t, g, Some(res.clone()));
            for ((g, w), r) in got.iter().zip(&want).zip(&res) {
                assert!((g - (w + r)).abs() < 1e-5, "{g} vs {w} + {r}");
            }
        }
    }

    /// The transposed convolution by its definition: input sample j of
    /// channel i adds `w[i][o][tap]·x` to output j·s + tap - pad.
    fn reference_t(
        w: &[f32],
        [c_in, c_out, k]: [usize; 3],
        bias: &[f32],
        x: &[f32],
        t: usize,
        s: usize,
        pad: usize,
    ) -> Vec<f32> {
        let t_out = (t - 1) * s + k - 2 * pad;
        let mut y: Vec<f32> = (0..c_out * t_out).map(|n| bias[n / t_out]).collect();
        for i in 0..c_in {
            for o in 0..c_out {
                for j in 0..t {
                    for tap in 0..k {
                        let p = (j * s + tap) as isize - pad as isize;
                        if p >= 0 && (p as usize) < t_out {
                            y[o * t_out + p as usize] +=
                                w[(i * c_out + o) * k + tap] * x[i * t + j];
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn transposed_per_tap_gemms_match_the_definition() {
        let mut seed = 7u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        // (c_in, c_out, k, t, stride, pad): HiFi-GAN's 16/8/4 and 4/2/1
        // geometries, no padding, one input sample.
        for &(c_in, c_out, k, t, s, pad) in &[
            (6, 4, 16, 9, 8, 4),
            (4, 3, 4, 13, 2, 1),
            (3, 2, 3, 5, 2, 0),
            (2, 2, 4, 1, 2, 1),
        ] {
            let w: Vec<f32> = (0..c_out * c_in * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..c_out).map(|_| rnd()).collect();
            let x: Vec<f32> = (0..c_in * t).map(|_| rnd()).collect();
            let conv = CpuConvT::new(&w, [c_in, c_out, k], Some(b.clone())).expect("sizes agree");
            let want = reference_t(&w, [c_in, c_out, k], &b, &x, t, s, pad);
            let got = conv.run(&x, t, s, pad);
            assert_eq!(got.len(), want.len(), "{c_in} {c_out} {k} {t} {s} {pad}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn mismatched_sizes_are_refused() {
        assert!(CpuConv::new(&[0.0; 5], [2, 1, 3], None).is_none());
        assert!(CpuConv::new(&[0.0; 6], [2, 1, 3], Some(vec![0.0])).is_none());
        assert!(CpuConvT::new(&[0.0; 6], [2, 1, 3], Some(vec![0.0, 0.0])).is_none());
    }
}
