//! Quantised matrix × vector products on the CPU, with ggml's numerics.
//!
//! Weights stay in their GGUF blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, and f16
//! in [`fp16`]): a Q4_1
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

mod fp16;

use crate::gguf::GgmlType;
use half::f16;
use rayon::prelude::*;

pub(crate) use crate::host::has_avx2;

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
    /// f16 weights: the activation rounded through f16.
    F16,
}

impl QMatrix {
    /// Whether this module can multiply by weights of type `ty`.
    pub(crate) fn supports(ty: GgmlType) -> bool {
        matches!(
            ty,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::F16
        )
    }

    /// Wraps raw blocks; the caller has checked the type and that `data` holds
    /// exactly `rows × cols` values.
    pub(crate) fn new(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Self {
        debug_assert!(Self::supports(ty));
        let (be, bb) = ty.block_layout();
        debug_assert_eq!(data.len(), rows * cols / be * bb);
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
        let row_bytes = self.row_bytes();
        let mut out = vec![0f32; ids.len() * self.cols];
        for (o, &id) in out.chunks_exact_mut(self.cols).zip(ids) {
            let r = id as usize * row_bytes;
            crate::gguf::dequantize_into(self.ty, &self.data[r..r + row_bytes], o);
        }
        out
    }

    /// Input features.
    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// The block type.
    pub(crate) fn ty(&self) -> GgmlType {
        self.ty
    }

    /// The raw blocks, row after row.
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }

    /// Bytes per row of blocks.
    fn row_bytes(&self) -> usize {
        let (be, bb) = self.ty.block_layout();
        self.cols / be * bb
    }

    /// One input row quantised the way this weight type's dot product wants.
    pub(crate) fn quantize_input(&self, x: &[f32]) -> QBlocks {
        debug_assert_eq!(x.len(), self.cols);
        quantize_row_best(x, self.act_format())
    }

    /// `out[i] = W[first + i] · a` for one quantised input row: the
    /// single-token (decode) product.
    pub(crate) fn matvec_rows(&self, a: &QBlocks, first: usize, out: &mut [f32]) {
        assert!(first + out.len() <= self.rows, "rows out of range");
        assert_eq!(a.width(), self.cols, "activation width");
        let rb = self.row_bytes();
        let w = &self.data[first * rb..(first + out.len()) * rb];
        if self.ty == GgmlType::F16 {
            fp16::matmul_rows(w, self.cols, &[a.hs.as_slice()], out);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() && matches!(self.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
                // SAFETY: the features were just detected; `w` holds
                // `out.len()` whole rows and `a` one row of `cols` values.
                unsafe { matvec_avx2(self.ty, w, rb, a, out) };
                return;
            }
        }
        for (o, row) in out.iter_mut().zip(w.chunks_exact(rb)) {
            *o = 0.0;
            row_dot_generic(
                self.ty,
                row,
                std::slice::from_ref(a),
                std::slice::from_mut(o),
            );
        }
    }

    /// `out[r·n + i] = W[first + r] · acts[i]` (weight-row-major): the
    /// many-token (prefill) product; each weight block is unpacked once for
    /// all `n` inputs.
    pub(crate) fn matmul_rows(&self, acts: &[QBlocks], first: usize, out: &mut [f32]) {
        let n = acts.len();
        let rb = self.row_bytes();
        let rows = out.len() / n;
        let w = &self.data[first * rb..(first + rows) * rb];
        if self.ty == GgmlType::F16 {
            let hs: Vec<&[f32]> = acts.iter().map(|a| &a.hs[..]).collect();
            fp16::matmul_rows(w, self.cols, &hs, out);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2() && matches!(self.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0) {
                // SAFETY: the features were just detected; `w` holds `rows`
                // whole rows and every activation `cols` values.
                unsafe { matmul_avx2(self.ty, w, rb, acts, out) };
                return;
            }
        }
        out.fill(0.0);
        for (sums, row) in out.chunks_exact_mut(n).zip(w.chunks_exact(rb)) {
            row_dot(self.ty, row, acts, sums);
        }
    }

    fn act_format(&self) -> ActFormat {
        match self.ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => ActFormat::Q8_1,
            GgmlType::F16 => ActFormat::F16,
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
        let row_bytes = self.row_bytes();
        let halves: Vec<&[f32]> = acts.iter().map(|a| &a.hs[..]).collect();
        // `rows` weight rows (`w`) against every input, weight-row-major.
        let strip = |sums: &mut [f32], w: &[u8]| {
            if self.ty == GgmlType::F16 {
                fp16::matmul_rows(w, self.cols, &halves, sums);
            } else {
                for (s, w) in sums.chunks_mut(n).zip(w.chunks_exact(row_bytes)) {
                    row_dot(self.ty, w, &acts, s);
                }
            }
        };
        // Parallel over strips of output rows; each task unpacks a weight
        // block once and uses it for every input row, so prefill reads the
        // weights once.
        const STRIP: usize = 64;
        let mut by_row = vec![0f32; self.rows * n];
        if rayon::current_num_threads() == 1 {
            // Handing work to a one-thread pool costs two context switches
            // per call, ~15% of a decode step: run it here instead.
            strip(&mut by_row, &self.data);
        } else {
            by_row
                .par_chunks_mut(n * STRIP)
                .zip(self.data.par_chunks(row_bytes * STRIP))
                .for_each(|(sums, w)| strip(sums, w));
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
        if has_avx2() {
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
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.ds[b][0]), p, acc[i]);
            msum[i] += m * a.ds[b][1];
        }
    }
    for ((sum, v), ms) in sums.iter_mut().zip(acc).zip(msum) {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        *sum += _mm_cvtss_f32(s) + ms;
    }
}

/// Dispatches [`matvec_avx2_typed`] by weight type, one row at a time.
/// Interleaving rows so that each activation block is loaded once for
/// several of them was measured slower here (SmolLM2's shapes, one thread:
/// Q8_0 5.3 against 3.2 ns per block with four rows, Q4_1 2.8 against 2.4):
/// the product is bound by memory, and one sequential stream per row is
/// what the hardware prefetcher follows best.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matvec_avx2(ty: GgmlType, w: &[u8], rb: usize, a: &QBlocks, out: &mut [f32]) {
    // SAFETY (all calls below): the caller's contract, passed on; each call
    // gets exactly its rows of `w` and of `out`.
    unsafe fn rows<const T: u8, const R: usize>(w: &[u8], rb: usize, a: &QBlocks, out: &mut [f32]) {
        let mut quads = out.chunks_exact_mut(R);
        let mut r = 0;
        for o in &mut quads {
            let o: &mut [f32; R] = o.try_into().expect("R rows");
            unsafe { matvec_avx2_typed::<T, R>(w[r * rb..].as_ptr(), rb, a, o) };
            r += R;
        }
        for o in quads.into_remainder() {
            let mut one = [0f32; 1];
            unsafe { matvec_avx2_typed::<T, 1>(w[r * rb..].as_ptr(), rb, a, &mut one) };
            *o = one[0];
            r += 1;
        }
    }
    unsafe {
        match ty {
            GgmlType::Q4_0 => rows::<K_Q4_0, 1>(w, rb, a, out),
            GgmlType::Q4_1 => rows::<K_Q4_1, 1>(w, rb, a, out),
            GgmlType::Q8_0 => rows::<K_Q8_0, 1>(w, rb, a, out),
            other => unreachable!("matvec_rows only dispatches Q4_0/Q4_1/Q8_0 here, not {other}"),
        }
    }
}

const K_Q4_0: u8 = 0;
const K_Q4_1: u8 = 1;
const K_Q8_0: u8 = 2;

/// `R` weight rows (starting at `w`, `rb` bytes apart) against one
/// activation row, for one weight type fixed at compile time: no per-block
/// dispatch, no bounds checks. Per block and row: the weight scale (and Q4_1 minimum) converted
/// by one `vcvtph2ps` and multiplied by the activation's pair in one `mulps`;
/// 32 weights unpacked into a register; `maddubs`/`madd` integer products
/// (exact); one FMA into the row's float lanes. Q4_1's `m·s` terms collect in
/// lane 1 of a separate accumulator.
///
/// # Safety
/// AVX2, FMA and F16C present; `w` points at `R` rows of `rb` bytes of
/// blocks of the type `T` names; `a` has `rb / block_bytes` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn matvec_avx2_typed<const T: u8, const R: usize>(
    w: *const u8,
    rb: usize,
    a: &QBlocks,
    out: &mut [f32; R],
) {
    use std::arch::x86_64::*;
    let bb = block_bytes::<T>();
    let nb = a.ds.len();
    let ones = _mm256_set1_epi16(1);
    let low = _mm256_set1_epi8(0x0f);
    let eight = _mm256_set1_epi8(8);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut mins = [_mm_setzero_ps(); R];
    // Pointers advanced block by block (no index arithmetic in the loop).
    let mut qs = a.qs.as_ptr();
    let mut ds = a.ds.as_ptr();
    // SAFETY: row `r` starts `r·rb` bytes into the caller's `R` rows.
    let mut rowp: [*const u8; R] = std::array::from_fn(|r| unsafe { w.add(r * rb) });
    for _ in 0..nb {
        // SAFETY: one block of the activation and of each of the `R` rows
        // is left (the function's contract); the pointers then move past it.
        unsafe {
            let qa = _mm256_loadu_si256(qs.cast());
            let ad = _mm_castsi128_ps(_mm_loadl_epi64(ds.cast()));
            qs = qs.add(32);
            ds = ds.add(1);
            for r in 0..R {
                let blk = rowp[r];
                rowp[r] = blk.add(bb);
                let (scales, wv) = match T {
                    K_Q4_1 => {
                        let dm = _mm_cvtsi32_si128(std::ptr::read_unaligned(blk.cast::<i32>()));
                        let packed = _mm_loadu_si128(blk.add(4).cast());
                        let v = _mm256_and_si256(
                            _mm256_set_m128i(_mm_srli_epi16::<4>(packed), packed),
                            low,
                        );
                        (_mm_mul_ps(_mm_cvtph_ps(dm), ad), v)
                    }
                    K_Q4_0 => {
                        let d = i32::from(std::ptr::read_unaligned(blk.cast::<u16>()));
                        let packed = _mm_loadu_si128(blk.add(2).cast());
                        let v = _mm256_and_si256(
                            _mm256_set_m128i(_mm_srli_epi16::<4>(packed), packed),
                            low,
                        );
                        (
                            _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d)), ad),
                            _mm256_sub_epi8(v, eight),
                        )
                    }
                    _ => {
                        let d = i32::from(std::ptr::read_unaligned(blk.cast::<u16>()));
                        (
                            _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d)), ad),
                            _mm256_loadu_si256(blk.add(2).cast()),
                        )
                    }
                };
                let prod = if T == K_Q4_1 {
                    mins[r] = _mm_add_ps(mins[r], scales);
                    _mm256_maddubs_epi16(wv, qa)
                } else {
                    // maddubs wants an unsigned left operand: |w| and the
                    // sign of w moved onto the activation.
                    _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qa, wv))
                };
                let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(scales), dot, acc[r]);
            }
        }
    }
    for r in 0..R {
        let v = acc[r];
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        out[r] = _mm_cvtss_f32(s) + _mm_cvtss_f32(_mm_movehdup_ps(mins[r]));
    }
}

/// Many-token products in register tiles of two weight rows × four
/// activation rows: each weight block is unpacked once per tile and each
/// activation block loaded once per pair of rows. The weight scales (and
/// Q4_1 minimums) of a strip of rows are converted to f32 once, for every
/// tile of the strip, and the minimum terms are a separate dot product over
/// blocks afterwards.
///
/// # Safety
/// AVX2, FMA and F16C present; `w` is `out.len() / acts.len()` rows of `rb`
/// bytes of `ty` blocks; every activation has `rb / block_bytes` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn matmul_avx2(ty: GgmlType, w: &[u8], rb: usize, acts: &[QBlocks], out: &mut [f32]) {
    unsafe fn typed<const T: u8>(w: &[u8], rb: usize, acts: &[QBlocks], out: &mut [f32]) {
        let n = acts.len();
        let rows = out.len() / n;
        let bb = block_bytes::<T>();
        let nb = rb / bb;
        let mut d = vec![0f32; 2 * nb];
        let mut m = vec![0f32; 2 * nb];
        let mut r = 0;
        while r < rows {
            let strip = (rows - r).min(2);
            for i in 0..strip {
                let row = &w[(r + i) * rb..(r + i + 1) * rb];
                for (b, blk) in row.chunks_exact(bb).enumerate() {
                    d[i * nb + b] = f16_at(blk, 0);
                    m[i * nb + b] = if T == K_Q4_1 { f16_at(blk, 2) } else { 0.0 };
                }
            }
            let mut c = 0;
            while c < n {
                let group = (n - c).min(4);
                let mut sums = [[0f32; 4]; 2];
                // SAFETY: rows `r..r + strip` and activations `c..c + group`
                // exist; the scale arrays hold `strip · nb` values.
                unsafe {
                    let wp = w.as_ptr().add(r * rb);
                    match (strip, group) {
                        (2, 4) => tile::<T, 2, 4>(wp, rb, nb, &acts[c..], &d, &mut sums),
                        (1, 4) => tile::<T, 1, 4>(wp, rb, nb, &acts[c..], &d, &mut sums),
                        (2, _) => {
                            for j in 0..group {
                                let mut one = [[0f32; 4]; 2];
                                tile::<T, 2, 1>(wp, rb, nb, &acts[c + j..], &d, &mut one);
                                sums[0][j] = one[0][0];
                                sums[1][j] = one[1][0];
                            }
                        }
                        _ => {
                            for j in 0..group {
                                let mut one = [[0f32; 4]; 2];
                                tile::<T, 1, 1>(wp, rb, nb, &acts[c + j..], &d, &mut one);
                                sums[0][j] = one[0][0];
                            }
                        }
                    }
                }
                for i in 0..strip {
                    for j in 0..group {
                        let mut v = sums[i][j];
                        if T == K_Q4_1 {
                            let a = &acts[c + j].ds;
                            v += m[i * nb..(i + 1) * nb]
                                .iter()
                                .zip(a)
                                .map(|(m, ds)| m * ds[1])
                                .sum::<f32>();
                        }
                        out[(r + i) * n + c + j] = v;
                    }
                }
                c += group;
            }
            r += strip;
        }
    }
    unsafe {
        match ty {
            GgmlType::Q4_0 => typed::<K_Q4_0>(w, rb, acts, out),
            GgmlType::Q4_1 => typed::<K_Q4_1>(w, rb, acts, out),
            GgmlType::Q8_0 => typed::<K_Q8_0>(w, rb, acts, out),
            other => unreachable!("matmul_rows only dispatches Q4_0/Q4_1/Q8_0 here, not {other}"),
        }
    }
}

const fn block_bytes<const T: u8>() -> usize {
    match T {
        K_Q4_0 => 18,
        K_Q4_1 => 20,
        _ => 34,
    }
}

/// One `R × C` tile: `R` weight rows from `w` against the first `C`
/// activations, without the Q4_1 minimum terms. `d` holds the `R` rows'
/// scales as f32, `nb` per row.
///
/// # Safety
/// AVX2, FMA and F16C present; `R` rows at `w`; `acts.len() ≥ C`, each with
/// `nb` blocks; `d.len() ≥ R · nb`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn tile<const T: u8, const R: usize, const C: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    acts: &[QBlocks],
    d: &[f32],
    out: &mut [[f32; 4]; 2],
) {
    use std::arch::x86_64::*;
    let bb = block_bytes::<T>();
    let ones = _mm256_set1_epi16(1);
    let low = _mm256_set1_epi8(0x0f);
    let eight = _mm256_set1_epi8(8);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let qs: [*const i8; C] = std::array::from_fn(|c| acts[c].qs.as_ptr());
    let ds: [*const [f32; 2]; C] = std::array::from_fn(|c| acts[c].ds.as_ptr());
    for b in 0..nb {
        // SAFETY: block `b` exists in every row, activation and scale array
        // (the function's contract).
        unsafe {
            let mut wv = [_mm256_setzero_si256(); R];
            let mut dw = [_mm256_setzero_ps(); R];
            for r in 0..R {
                let blk = w.add(r * rb + b * bb);
                dw[r] = _mm256_broadcast_ss(&*d.as_ptr().add(r * nb + b));
                wv[r] = match T {
                    K_Q8_0 => _mm256_loadu_si256(blk.add(2).cast()),
                    _ => {
                        let off = if T == K_Q4_1 { 4 } else { 2 };
                        let packed = _mm_loadu_si128(blk.add(off).cast());
                        let v = _mm256_and_si256(
                            _mm256_set_m128i(_mm_srli_epi16::<4>(packed), packed),
                            low,
                        );
                        if T == K_Q4_0 {
                            _mm256_sub_epi8(v, eight)
                        } else {
                            v
                        }
                    }
                };
            }
            for c in 0..C {
                let qa = _mm256_loadu_si256(qs[c].add(b * 32).cast());
                let da = _mm256_broadcast_ss(&(*ds[c].add(b))[0]);
                for r in 0..R {
                    let prod = if T == K_Q4_1 {
                        _mm256_maddubs_epi16(wv[r], qa)
                    } else {
                        _mm256_maddubs_epi16(
                            _mm256_sign_epi8(wv[r], wv[r]),
                            _mm256_sign_epi8(qa, wv[r]),
                        )
                    };
                    let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(prod, ones));
                    acc[r][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw[r], da), dot, acc[r][c]);
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            let v = acc[r][c];
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            out[r][c] = _mm_cvtss_f32(s);
        }
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
            *sum += d * a.ds[b][0] * idot(&wq, qa) as f32 + m * a.ds[b][1];
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
pub(crate) struct QBlocks {
    /// Quantised values (empty for f16 weights).
    qs: Vec<i8>,
    /// Per block: the scale `d`, rounded through f16 as ggml stores it, and
    /// (Q8_1 only, else 0) `d · Σq`, rounded the same way. Kept as a pair so a
    /// kernel reads both with one load.
    ds: Vec<[f32; 2]>,
    /// For f16 weights only: the values rounded through f16.
    hs: Vec<f32>,
}

impl QBlocks {
    /// Values in the row.
    fn width(&self) -> usize {
        self.qs.len().max(self.hs.len())
    }
}

/// [`quantize_row`] compiled for AVX2 where the CPU has it, so rounding is one
/// instruction instead of a libm call.
fn quantize_row_best(x: &[f32], fmt: ActFormat) -> QBlocks {
    if fmt == ActFormat::F16 {
        return QBlocks {
            qs: Vec::new(),
            ds: Vec::new(),
            hs: fp16::round_row(x),
        };
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
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
        ds: Vec::with_capacity(nb),
        hs: Vec::new(),
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
        let s = match fmt {
            ActFormat::Q8_1 => f16::from_f32(d * sum as f32).to_f32(),
            ActFormat::Q8_0 | ActFormat::F16 => 0.0,
        };
        out.ds.push([f16::from_f32(d).to_f32(), s]);
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
                        want += dot * a.ds[b][0] as f64;
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

    /// The single-token kernels (AVX2 here, the generic body elsewhere)
    /// give the many-token kernel's sums for every row, including row
    /// counts that do not fill a group of four.
    #[test]
    fn matvec_rows_matches_matmul() {
        let mut seed = 11;
        let (rows, cols) = (11, 160);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let data = random_blocks(ty, rows, cols, &mut seed);
            let x: Vec<f32> = (0..cols)
                .map(|_| (lcg(&mut seed) % 2000) as f32 / 1000.0 - 1.0)
                .collect();
            let m = QMatrix::new(ty, rows, cols, data);
            let want = m.matmul(&x, 1);
            let a = m.quantize_input(&x);
            for (first, len) in [(0, rows), (3, 5), (10, 1), (2, 8)] {
                let mut got = vec![f32::NAN; len];
                m.matvec_rows(&a, first, &mut got);
                for (i, g) in got.iter().enumerate() {
                    let w = want[first + i];
                    assert!(
                        (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{ty} row {}: {g} vs {w}",
                        first + i
                    );
                }
            }
        }
    }

    /// f16 weights through `QMatrix`: every entry point (the burn graph's
    /// `matmul`, the fused step's `matvec_rows` and `matmul_rows` at row
    /// offsets) gives the f64 sum of f16 weights times f16-rounded inputs.
    #[test]
    fn f16_rows_match_reference_at_every_entry() {
        let mut seed = 17;
        let (rows, cols) = (11, 40);
        let val = |s: &mut u64| (lcg(s) % 2000) as f32 / 1000.0 - 1.0;
        let w: Vec<f32> = (0..rows * cols)
            .map(|_| f16::from_f32(val(&mut seed)).to_f32())
            .collect();
        let data: Vec<u8> = w
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let m = QMatrix::new(GgmlType::F16, rows, cols, data);
        assert_eq!(m.dequantize_rows(&[3]), w[3 * cols..4 * cols]);
        let n = 5;
        let x: Vec<f32> = (0..n * cols).map(|_| val(&mut seed)).collect();
        let want = |r: usize, i: usize| -> f64 {
            (0..cols)
                .map(|j| {
                    f64::from(w[r * cols + j]) * f64::from(f16::from_f32(x[i * cols + j]).to_f32())
                })
                .sum()
        };
        let close = |g: f32, w: f64, what: &str| {
            assert!(
                (f64::from(g) - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{what}: {g} vs {w}"
            );
        };
        let all = m.matmul(&x, n);
        let acts: Vec<_> = x.chunks_exact(cols).map(|r| m.quantize_input(r)).collect();
        for i in 0..n {
            for r in 0..rows {
                close(
                    all[i * rows + r],
                    want(r, i),
                    &format!("matmul row {r} input {i}"),
                );
            }
        }
        for (first, len) in [(0, rows), (3, 5), (10, 1)] {
            let mut one = vec![f32::NAN; len];
            m.matvec_rows(&acts[2], first, &mut one);
            let mut many = vec![f32::NAN; len * n];
            m.matmul_rows(&acts, first, &mut many);
            for r in 0..len {
                close(
                    one[r],
                    want(first + r, 2),
                    &format!("matvec row {}", first + r),
                );
                for i in 0..n {
                    close(
                        many[r * n + i],
                        want(first + r, i),
                        &format!("matmul_rows row {} input {i}", first + r),
                    );
                }
            }
        }
    }

    /// The portable body (what a Pi runs) against the dequantised f64
    /// reference, for every supported type, whatever this CPU has.
    #[test]
    fn generic_path_matches_scalar_reference() {
        let mut seed = 5;
        let cols = 128;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let data = random_blocks(ty, 1, cols, &mut seed);
            let mut w = vec![0f32; cols];
            dequantize_into(ty, &data, &mut w);
            let x: Vec<f32> = (0..cols)
                .map(|_| (lcg(&mut seed) % 2000) as f32 / 1000.0 - 1.0)
                .collect();
            let fmt = if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                ActFormat::Q8_1
            } else {
                ActFormat::Q8_0
            };
            let a = quantize_row(&x, fmt);
            let mut got = [0f32];
            row_dot_generic(ty, &data, std::slice::from_ref(&a), &mut got);
            let want: f64 = (0..cols)
                .map(|j| w[j] as f64 * a.qs[j] as f64 * a.ds[j / 32][0] as f64)
                .sum();
            let tol = 1e-4 * want.abs().max(1.0) + if fmt == ActFormat::Q8_1 { 2e-2 } else { 0.0 };
            assert!(
                (got[0] as f64 - want).abs() <= tol,
                "{ty}: {} vs {want}",
                got[0]
            );
        }
    }

    /// The tiled many-token kernel gives the grouped kernel's sums for
    /// every row and input, with strips and tiles left over at both edges.
    #[test]
    fn matmul_rows_matches_matmul() {
        let mut seed = 13;
        let (rows, cols) = (7, 96);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let data = random_blocks(ty, rows, cols, &mut seed);
            let m = QMatrix::new(ty, rows, cols, data);
            for n in [2, 4, 5, 9] {
                let x: Vec<f32> = (0..n * cols)
                    .map(|_| (lcg(&mut seed) % 2000) as f32 / 1000.0 - 1.0)
                    .collect();
                let want = m.matmul(&x, n);
                let acts: Vec<_> = x.chunks_exact(cols).map(|r| m.quantize_input(r)).collect();
                for (first, len) in [(0, rows), (1, 5), (6, 1)] {
                    let mut got = vec![f32::NAN; len * n];
                    m.matmul_rows(&acts, first, &mut got);
                    for r in 0..len {
                        for i in 0..n {
                            let (g, w) = (got[r * n + i], want[i * rows + first + r]);
                            assert!(
                                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                                "{ty} n {n} row {} input {i}: {g} vs {w}",
                                first + r
                            );
                        }
                    }
                }
            }
        }
    }
}
