//! Products with f16 weights, as ggml's CPU backend computes them.
//!
//! `convert_hf_to_gguf.py --outtype f16` writes every projection as f16, and
//! SmolVLM's published GGUFs ship that way. Widening those matrices to f32 on
//! load doubled the decoder's memory (SmolVLM-256M: ~540 MB instead of
//! ~270 MB) and the bytes read per token. Here they stay f16 in memory and
//! are converted eight values at a time inside the dot product.
//!
//! ggml converts the activation to the weight's type (f16) before the
//! product and accumulates in f32. llamafile's tinyBLAS, which llama.cpp
//! uses for f16 × f16 on AVX2, keeps one 8-lane FMA accumulator per output
//! and sums its lanes at the end; the AVX2 kernel below does the same, so
//! the rounding order matches. The generic body (what an aarch64 board
//! runs) sums in the same lane layout with separate multiply and add, which
//! LLVM turns into NEON without per-arch code.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// Values per step of the dot product: one AVX2 register of f32.
const LANES: usize = 8;

/// One activation row rounded through f16, the way ggml converts it for an
/// f16 weight, kept as f32 so no kernel converts it again.
pub(super) fn round_row(x: &[f32]) -> Vec<f32> {
    let mut h = vec![f16::ZERO; x.len()];
    h.convert_from_f32_slice(x);
    let mut out = vec![0f32; x.len()];
    h.convert_to_f32_slice(&mut out);
    out
}

/// `out[r·n + c] = W[r] · acts[c]` for the `out.len() / n` rows of `w`
/// (`cols` little-endian f16 values each), `n = acts.len()`, every
/// activation `cols` values already rounded by [`round_row`].
pub(super) fn matmul_rows(w: &[u8], cols: usize, acts: &[&[f32]], out: &mut [f32]) {
    let n = acts.len();
    debug_assert_eq!(w.len(), out.len() / n * cols * 2);
    #[cfg(target_arch = "x86_64")]
    {
        if crate::host::has_avx2() {
            // SAFETY: the features were just detected; the lengths were
            // checked by the caller (`QMatrix`) and above.
            unsafe { matmul_avx2(w, cols, acts, out) };
            return;
        }
    }
    matmul_generic(w, cols, acts, out);
}

/// The portable body: each weight row widened once into a scratch row, then
/// dotted with every activation in [`dot_lanes`]' order.
pub(super) fn matmul_generic(w: &[u8], cols: usize, acts: &[&[f32]], out: &mut [f32]) {
    let n = acts.len();
    let mut half_row = vec![f16::ZERO; cols];
    let mut row = vec![0f32; cols];
    for (r, sums) in out.chunks_exact_mut(n).enumerate() {
        for (h, b) in half_row
            .iter_mut()
            .zip(w[r * cols * 2..(r + 1) * cols * 2].chunks_exact(2))
        {
            *h = f16::from_le_bytes([b[0], b[1]]);
        }
        half_row.convert_to_f32_slice(&mut row);
        for (s, a) in sums.iter_mut().zip(acts) {
            *s = dot_lanes(&row, a);
        }
    }
}

/// Σ w·a with eight running lane sums, reduced as tinyBLAS's `hsum` does
/// (upper half onto lower, then pairs), the leftover values after.
fn dot_lanes(w: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (wc, wt) = w.split_at(w.len() / LANES * LANES);
    let at = &a[wc.len()..];
    for (w8, a8) in wc.chunks_exact(LANES).zip(a.chunks_exact(LANES)) {
        for k in 0..LANES {
            acc[k] += w8[k] * a8[k];
        }
    }
    let h: [f32; 4] = std::array::from_fn(|k| acc[k] + acc[k + 4]);
    let mut s = (h[0] + h[2]) + (h[1] + h[3]);
    for (w, a) in wt.iter().zip(at) {
        s += w * a;
    }
    s
}

/// Tiles of up to four weight rows × three activations: twelve accumulators
/// in registers, each weight register converted once per tile.
///
/// # Safety
/// AVX2, FMA and F16C present; `w` holds `out.len() / acts.len()` rows of
/// `cols` f16 values; every activation has `cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_avx2(w: &[u8], cols: usize, acts: &[&[f32]], out: &mut [f32]) {
    let n = acts.len();
    let rows = out.len() / n;
    let mut r = 0;
    while r < rows {
        let strip = (rows - r).min(4);
        let mut c = 0;
        while c < n {
            let group = (n - c).min(3);
            let mut sums = [[0f32; 3]; 4];
            let wp = w[r * cols * 2..].as_ptr();
            let a = &acts[c..c + group];
            // SAFETY: `strip` rows from `r` and `group` activations from `c`
            // exist (loop bounds); the caller's contract covers the rest.
            unsafe {
                match (strip, group) {
                    (4, 3) => tile::<4, 3>(wp, cols, a, &mut sums),
                    (4, 2) => tile::<4, 2>(wp, cols, a, &mut sums),
                    (4, 1) => tile::<4, 1>(wp, cols, a, &mut sums),
                    (_, 3) => tile_rows::<3>(wp, cols, strip, a, &mut sums),
                    (_, 2) => tile_rows::<2>(wp, cols, strip, a, &mut sums),
                    _ => tile_rows::<1>(wp, cols, strip, a, &mut sums),
                }
            }
            for i in 0..strip {
                for j in 0..group {
                    out[(r + i) * n + c + j] = sums[i][j];
                }
            }
            c += group;
        }
        r += strip;
    }
}

/// A strip of fewer than four rows, one row at a time.
///
/// # Safety
/// As [`tile`], for `strip` rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_rows<const C: usize>(
    w: *const u8,
    cols: usize,
    strip: usize,
    acts: &[&[f32]],
    out: &mut [[f32; 3]; 4],
) {
    for (i, o) in out.iter_mut().enumerate().take(strip) {
        let mut one = [[0f32; 3]; 4];
        // SAFETY: row `i` of the strip exists (the caller's contract).
        unsafe { tile::<1, C>(w.add(i * cols * 2), cols, acts, &mut one) };
        *o = one[0];
    }
}

/// `R` weight rows × `C` activations. Each output is one 8-lane FMA chain
/// over the row, then tinyBLAS's lane sum; values past the last multiple
/// of eight are added one by one.
///
/// # Safety
/// AVX2, FMA and F16C present; `R` rows of `cols` f16 values at `w`;
/// `acts.len() ≥ C`, each with `cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile<const R: usize, const C: usize>(
    w: *const u8,
    cols: usize,
    acts: &[&[f32]],
    out: &mut [[f32; 3]; 4],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let ap: [*const f32; C] = std::array::from_fn(|c| acts[c].as_ptr());
    let full = cols / LANES * LANES;
    let mut k = 0;
    while k < full {
        // SAFETY: values `k..k + 8` exist in every row and activation.
        unsafe {
            for (r, acc) in acc.iter_mut().enumerate() {
                let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.add((r * cols + k) * 2).cast()));
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(ap[c].add(k)), *acc);
                }
            }
        }
        k += LANES;
    }
    for r in 0..R {
        for c in 0..C {
            let v = acc[r][c];
            let s = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            let mut t = _mm_cvtss_f32(s);
            for j in full..cols {
                // SAFETY: `j < cols`, inside row `r` and activation `c`.
                let (wb, a) = unsafe {
                    (
                        std::ptr::read_unaligned(w.add((r * cols + j) * 2).cast::<u16>()),
                        *ap[c].add(j),
                    )
                };
                t += f16::from_bits(wb).to_f32() * a;
            }
            out[r][c] = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) % 2000) as f32 / 1000.0 - 1.0
    }

    fn f16_bytes(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect()
    }

    /// Both bodies against an f64 sum of the f16 weights times the
    /// f16-rounded activations, with every tile shape and a tail of values
    /// past a multiple of eight.
    #[test]
    fn products_match_an_f64_reference() {
        let mut seed = 3;
        for (rows, cols, n) in [(9, 96, 1), (5, 37, 4), (4, 64, 7), (1, 8, 2)] {
            let wf: Vec<f32> = (0..rows * cols).map(|_| lcg(&mut seed)).collect();
            let w = f16_bytes(&wf);
            let xs: Vec<Vec<f32>> = (0..n)
                .map(|_| round_row(&(0..cols).map(|_| lcg(&mut seed)).collect::<Vec<_>>()))
                .collect();
            let acts: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
            let mut fast = vec![f32::NAN; rows * n];
            let mut generic = vec![f32::NAN; rows * n];
            matmul_rows(&w, cols, &acts, &mut fast);
            matmul_generic(&w, cols, &acts, &mut generic);
            for r in 0..rows {
                for c in 0..n {
                    let want: f64 = (0..cols)
                        .map(|j| f16::from_f32(wf[r * cols + j]).to_f64() * f64::from(xs[c][j]))
                        .sum();
                    for (what, got) in [("avx2", &fast), ("generic", &generic)] {
                        let g = f64::from(got[r * n + c]);
                        assert!(
                            (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                            "{what} {rows}x{cols} n {n} row {r} input {c}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn activations_round_like_ggml() {
        let x = [1.0f32 + 1.0 / 2048.0, 65504.0, -2.0e-8, 0.1];
        let r = round_row(&x);
        assert_eq!(r[0], 1.0, "ties to even");
        assert_eq!(r[1], 65504.0);
        assert_eq!(r[2], -0.0, "below the smallest subnormal");
        assert_eq!(r[3], f16::from_f32(0.1).to_f32());
    }
}
