//! Quantised matrix × vector products on the CPU, with ggml's numerics.
//!
//! Weights stay in their GGUF blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): a Q4_1
//! SmolLM2-135M is ~100 MB in memory instead of ~540 MB as f32, and decoding,
//! which is bound by bytes of weights read per token, reads a quarter of the
//! bytes. Activations are quantised per 32-value block to Q8_0/Q8_1 with f16
//! scales and the dot products are integer sums, exactly as ggml's CPU backend
//! computes them, so greedy decoding follows llama.cpp's token choices even
//! where two logits are within a few hundredths of each other (SmolLM2-135M's
//! first answer token is such a near-tie).
//!
//! burn's own quantised tensors dequantise the whole weight on every call on
//! the CPU backend (10–55× slower than f32, see BURN-NOTES), so this runs on
//! host memory: the activation is read out of the tensor, multiplied here with
//! rayon across output rows, and written back. On the `flex` backend those
//! copies are a few kilobytes per token.

use crate::gguf::GgmlType;
use half::f16;
use rayon::prelude::*;

/// A `[rows, cols]` weight (rows = output features) in ggml blocks.
#[derive(Debug, Clone)]
pub(crate) struct QMatrix {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

/// Which activation format a weight type's dot product uses (ggml's `vec_dot_type`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ActFormat {
    Q8_0,
    Q8_1,
}

impl QMatrix {
    /// Whether this module can multiply by weights of type `ty`.
    pub(crate) fn supports(ty: GgmlType) -> bool {
        matches!(
            ty,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0
        )
    }

    /// Wraps raw blocks; the caller has checked the type and that `data` holds
    /// exactly `rows × cols` values.
    pub(crate) fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Self {
        debug_assert!(Self::supports(ty));
        debug_assert_eq!(data.len(), rows * cols / 32 * ty.block_layout().1);
        Self {
            ty,
            rows,
            cols,
            data,
        }
    }

    /// Output features.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Rows `ids` dequantised to f32, concatenated (embedding lookup).
    pub(crate) fn dequantize_rows(&self, ids: &[u32]) -> Vec<f32> {
        let row_bytes = self.cols / 32 * self.ty.block_layout().1;
        let mut out = vec![0f32; ids.len() * self.cols];
        for (o, &id) in out.chunks_exact_mut(self.cols).zip(ids) {
            let r = id as usize * row_bytes;
            crate::gguf::dequantize_into(self.ty, &self.data[r..r + row_bytes], o);
        }
        out
    }

    fn act_format(&self) -> ActFormat {
        match self.ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => ActFormat::Q8_1,
            _ => ActFormat::Q8_0,
        }
    }

    /// `y = x · Wᵀ` for `x` of shape `[n, cols]` (row-major), giving `[n, rows]`.
    pub(crate) fn matmul(&self, x: &[f32], n: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), n * self.cols);
        let fmt = self.act_format();
        let acts: Vec<QBlocks> = x
            .chunks_exact(self.cols)
            .map(|r| quantize_row_best(r, fmt))
            .collect();
        let row_bytes = self.cols / 32 * self.ty.block_layout().1;
        // Parallel over output rows; each task unpacks a weight block once and
        // uses it for every input row, so prefill reads the weights once.
        let mut by_row = vec![0f32; self.rows * n];
        if rayon::current_num_threads() == 1 {
            // Handing work to a one-thread pool costs two context switches
            // per call, ~15% of a decode step: run it here instead.
            for (sums, w) in by_row.chunks_mut(n).zip(self.data.chunks_exact(row_bytes)) {
                row_dot(self.ty, w, &acts, sums);
            }
        } else {
            by_row
                .par_chunks_mut(n)
                .zip(self.data.par_chunks_exact(row_bytes))
                .with_min_len(64)
                .for_each(|(sums, w)| row_dot(self.ty, w, &acts, sums));
        }
        if n == 1 {
            return by_row;
        }
        let mut out = vec![0f32; n * self.rows];
        for (r, col) in by_row.chunks_exact(n).enumerate() {
            for (i, &v) in col.iter().enumerate() {
                out[i * self.rows + r] = v;
            }
        }
        out
    }
}

/// Dispatches to a copy of [`row_dot_generic`] compiled for the best
/// instruction set this CPU has (the binary itself targets the baseline, so
/// it runs on any x86-64 or aarch64 board).
fn row_dot(ty: GgmlType, w: &[u8], acts: &[QBlocks], sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features the function is compiled for were just detected.
            unsafe { row_dot_avx2(ty, w, acts, sums) };
            return;
        }
    }
    row_dot_generic(ty, w, acts, sums);
}

/// AVX2 integer dot products for the common formats (Q4_0, Q4_1, Q8_0), as
/// ggml's x86 kernels do them: unpack 32 weights into a register, multiply
/// with the activation bytes with `maddubs`, widen with `madd`, accumulate in
/// float lanes. Block sums are exact integers; only the float summation order
/// differs from the generic path (≈1e-7 relative). Other formats use the
/// generic body compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn row_dot_avx2(ty: GgmlType, w: &[u8], acts: &[QBlocks], sums: &mut [f32]) {
    if !matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
        return row_dot_generic(ty, w, acts, sums);
    }
    // Activation rows in groups of up to 8, with their accumulators in
    // registers/stack: one weight unpack serves the whole group.
    for (group, out) in acts.chunks(8).zip(sums.chunks_mut(8)) {
        row_dot_avx2_group(ty, w, group, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn row_dot_avx2_group(ty: GgmlType, w: &[u8], acts: &[QBlocks], sums: &mut [f32]) {
    use std::arch::x86_64::*;
    let bb = ty.block_layout().1;
    let low_nibbles = _mm256_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    // Hardware f16 → f32 (the `half` crate would check for F16C on every call).
    let h = |b: &[u8], i: usize| -> f32 {
        let bits = u16::from_le_bytes([b[i], b[i + 1]]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    };
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut msum = [0f32; 8];
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        // Weights as 32 bytes: unsigned (Q4_1) or signed (Q4_0, Q8_0).
        let (wv, d, m, signed) = match ty {
            GgmlType::Q8_0 => {
                // SAFETY: `blk` is a 34-byte block; bytes 2..34 are read.
                let v = unsafe { _mm256_loadu_si256(blk.as_ptr().add(2).cast()) };
                (v, h(blk, 0), 0.0, true)
            }
            _ => {
                let off = if ty == GgmlType::Q4_1 { 4 } else { 2 };
                // SAFETY: the block holds 16 nibble bytes at `off`.
                let packed = unsafe { _mm_loadu_si128(blk.as_ptr().add(off).cast()) };
                let both = _mm256_set_m128i(_mm_srli_epi16::<4>(packed), packed);
                let v = _mm256_and_si256(both, low_nibbles);
                if ty == GgmlType::Q4_0 {
                    (
                        _mm256_sub_epi8(v, _mm256_set1_epi8(8)),
                        h(blk, 0),
                        0.0,
                        true,
                    )
                } else {
                    (v, h(blk, 0), h(blk, 2), false)
                }
            }
        };
        // maddubs wants an unsigned left operand: move the weights' signs
        // onto the activations (|w|·sign(a, w)), as ggml does.
        let (wu, sign_src) = if signed {
            (_mm256_sign_epi8(wv, wv), Some(wv))
        } else {
            (wv, None)
        };
        for (i, a) in acts.iter().enumerate() {
            let qa = &a.qs[b * 32..b * 32 + 32];
            // SAFETY: `qa` is exactly 32 bytes.
            let av = unsafe { _mm256_loadu_si256(qa.as_ptr().cast()) };
            let av = match sign_src {
                Some(s) => _mm256_sign_epi8(av, s),
                None => av,
            };
            let p = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(wu, av), ones));
            // Lane-wise float accumulation across blocks and a separate sum of
            // the Q8_1 min terms: the order ggml's AVX2 kernels use.
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d[b]), p, acc[i]);
            msum[i] += m * a.s[b];
        }
    }
    for ((sum, v), ms) in sums.iter_mut().zip(acc).zip(msum) {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        *sum += _mm_cvtss_f32(s) + ms;
    }
}

/// One weight row against every activation row, block by block, in ggml's
/// order: `Σ_blocks d_w·d_x·Σ(q_w·q_x) + m_w·s_x`.
#[inline(always)]
fn row_dot_generic(ty: GgmlType, w: &[u8], acts: &[QBlocks], sums: &mut [f32]) {
    let bb = ty.block_layout().1;
    let mut wq = [0i8; 32];
    for (b, blk) in w.chunks_exact(bb).enumerate() {
        let (d, m) = unpack(ty, blk, &mut wq);
        for (a, sum) in acts.iter().zip(sums.iter_mut()) {
            let qa: &[i8; 32] = a.qs[b * 32..b * 32 + 32]
                .try_into()
                .expect("32-value block");
            *sum += d * a.d[b] * idot(&wq, qa) as f32 + m * a.s[b];
        }
    }
}

/// Σ a·b over a block, written so the compiler vectorises it (widen, multiply-add).
#[inline(always)]
fn idot(a: &[i8; 32], b: &[i8; 32]) -> i32 {
    let mut s = 0i32;
    for j in 0..32 {
        s += a[j] as i32 * b[j] as i32;
    }
    s
}

/// A weight block's 32 integer values (offset-corrected where the format is
/// signed) and its scale and minimum (0 for formats without one).
#[inline(always)]
fn unpack(ty: GgmlType, blk: &[u8], q: &mut [i8; 32]) -> (f32, f32) {
    match ty {
        GgmlType::Q4_0 => {
            for j in 0..16 {
                q[j] = (blk[2 + j] & 0x0f) as i8 - 8;
                q[j + 16] = (blk[2 + j] >> 4) as i8 - 8;
            }
            (f16_at(blk, 0), 0.0)
        }
        GgmlType::Q4_1 => {
            for j in 0..16 {
                q[j] = (blk[4 + j] & 0x0f) as i8;
                q[j + 16] = (blk[4 + j] >> 4) as i8;
            }
            (f16_at(blk, 0), f16_at(blk, 2))
        }
        GgmlType::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = ((blk[6 + j] & 0x0f) | h0) as i8 - 16;
                q[j + 16] = ((blk[6 + j] >> 4) | h1) as i8 - 16;
            }
            (f16_at(blk, 0), 0.0)
        }
        GgmlType::Q5_1 => {
            let qh = u32::from_le_bytes([blk[4], blk[5], blk[6], blk[7]]);
            for j in 0..16 {
                let h0 = (((qh >> j) << 4) & 0x10) as u8;
                let h1 = ((qh >> (j + 12)) & 0x10) as u8;
                q[j] = ((blk[8 + j] & 0x0f) | h0) as i8;
                q[j + 16] = ((blk[8 + j] >> 4) | h1) as i8;
            }
            (f16_at(blk, 0), f16_at(blk, 2))
        }
        GgmlType::Q8_0 => {
            for j in 0..32 {
                q[j] = blk[2 + j] as i8;
            }
            (f16_at(blk, 0), 0.0)
        }
        other => unreachable!("QMatrix::supports rejects {other}"),
    }
}

/// One activation row quantised to 32-value blocks.
struct QBlocks {
    qs: Vec<i8>,
    /// Scale per block, rounded through f16 as ggml stores it.
    d: Vec<f32>,
    /// Q8_1 only: `d · Σq` per block, rounded through f16.
    s: Vec<f32>,
}

/// [`quantize_row`] compiled for AVX2 where the CPU has it, so rounding is one
/// instruction instead of a libm call.
fn quantize_row_best(x: &[f32], fmt: ActFormat) -> QBlocks {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were just detected.
            return unsafe { quantize_row_avx2(x, fmt) };
        }
    }
    quantize_row(x, fmt)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_row_avx2(x: &[f32], fmt: ActFormat) -> QBlocks {
    quantize_row(x, fmt)
}

/// ggml's `quantize_row_q8_0` / `quantize_row_q8_1`.
#[inline(always)]
fn quantize_row(x: &[f32], fmt: ActFormat) -> QBlocks {
    let nb = x.len() / 32;
    let mut out = QBlocks {
        qs: vec![0; x.len()],
        d: Vec::with_capacity(nb),
        s: Vec::with_capacity(nb),
    };
    for (b, xs) in x.chunks_exact(32).enumerate() {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (j, &v) in xs.iter().enumerate() {
            // ggml's SIMD paths round half to even.
            let q = (v * id).round_ties_even() as i32;
            out.qs[b * 32 + j] = q as i8;
            sum += q;
        }
        out.d.push(f16::from_f32(d).to_f32());
        out.s.push(match fmt {
            ActFormat::Q8_1 => f16::from_f32(d * sum as f32).to_f32(),
            ActFormat::Q8_0 => 0.0,
        });
    }
    out
}

#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize_into;

    /// A deterministic pseudo-random stream, enough to fill test blocks.
    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    /// Random but well-formed blocks: finite f16 scales, any quant bits.
    fn random_blocks(ty: GgmlType, rows: usize, cols: usize, seed: &mut u64) -> Vec<u8> {
        let (be, bb) = ty.block_layout();
        let mut data = Vec::new();
        for _ in 0..rows * cols / be {
            let mut blk: Vec<u8> = (0..bb).map(|_| lcg(seed) as u8).collect();
            let d = f16::from_f32(0.01 + (lcg(seed) % 100) as f32 * 1e-3).to_le_bytes();
            blk[0..2].copy_from_slice(&d);
            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                let m = f16::from_f32(-0.05 + (lcg(seed) % 100) as f32 * 1e-3).to_le_bytes();
                blk[2..4].copy_from_slice(&m);
            }
            data.extend(blk);
        }
        data
    }

    /// The kernel equals "dequantised weights · ggml-quantised activations"
    /// computed in f64: the integer arithmetic is exact, only f32 summation
    /// differs.
    #[test]
    fn kernel_matches_dequantised_reference() {
        let mut seed = 7;
        let (rows, cols, n) = (5, 96, 3);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let data = random_blocks(ty, rows, cols, &mut seed);
            let mut w = vec![0f32; rows * cols];
            dequantize_into(ty, &data, &mut w);
            let x: Vec<f32> = (0..n * cols)
                .map(|_| (lcg(&mut seed) % 2000) as f32 / 1000.0 - 1.0)
                .collect();
            let m = QMatrix::new(ty, rows, cols, data);
            let got = m.matmul(&x, n);
            for i in 0..n {
                let a = quantize_row(&x[i * cols..(i + 1) * cols], m.act_format());
                for r in 0..rows {
                    let mut want = 0f64;
                    for b in 0..cols / 32 {
                        let wq = &w[r * cols + b * 32..r * cols + b * 32 + 32];
                        let qa = &a.qs[b * 32..b * 32 + 32];
                        let dot: f64 = wq
                            .iter()
                            .zip(qa)
                            .map(|(&wv, &q)| wv as f64 * q as f64)
                            .sum();
                        want += dot * a.d[b] as f64;
                    }
                    let g = got[i * rows + r] as f64;
                    // Q8_1's sum term is rounded through f16 by design.
                    let tol = 1e-4 * want.abs().max(1.0)
                        + if m.act_format() == ActFormat::Q8_1 {
                            2e-2
                        } else {
                            0.0
                        };
                    assert!(
                        (g - want).abs() <= tol,
                        "{ty} row {r} input {i}: {g} vs {want}"
                    );
                }
            }
        }
    }
}
