//! Quantised weights that stay quantised on a GPU (the wgpu backend).
//!
//! Dequantising every GGUF weight to f32 made SmolLM2-135M ~540 MB on the
//! device instead of ~100 MB, and decoding reads every weight byte once per
//! token, so the f32 copy is also four times the memory traffic. Here each
//! ggml block becomes one block of burn's block-quantised tensors (symmetric
//! values packed into `u32` words, one f32 scale per 32 values along the
//! reduction dimension), and burn's matmul dequantises inside its kernels, so
//! no f32 copy of a weight ever exists on the device.
//!
//! burn's schemes have no offset, and ggml's `_1` types (Q4_1, Q5_1) store
//! `q·d + m` with `q` unsigned. Stored centred, `(q−c)·d`, the rest is
//! `m + c·d` per block, and that term is linear in the input: for block `b`
//! of row `r`, `Σᵢ xᵢ·(m + c·d)_rb = m_rb·Σᵢ∈b xᵢ + (c·d)_rb·Σᵢ∈b xᵢ`. So the
//! product is the symmetric matmul plus the input's per-block sums times an
//! `[2·in/32, out]` matrix: one more small matmul (1/16 of the weight's
//! width). The two halves are kept apart because ggml multiplies `m` by the
//! activations' f16-rounded Q8_1 sum, while the centring belongs to the
//! values the symmetric matmul actually summed.
//!
//! The activations are rounded to 8 bits per 32-value block first, with an
//! f16 scale, exactly as ggml's CPU kernels (and llama.cpp's GPU matmuls)
//! quantise them before an integer dot product. The products themselves
//! then run in f32 on values that are integers times two scales, so the
//! result is ggml's to float summation order, and greedy decoding on the
//! GPU follows the CPU path's choices instead of drifting at near-ties.
//!
//! A matrix larger than the adapter allows in one buffer (lavapipe: 128 MiB;
//! the output head of a 150k-token vocabulary) is cut into row pieces that
//! each fit, multiplied piece by piece and joined along the output features.

use super::qmatmul::QMatrix;
use crate::gguf::GgmlType;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use half::f16;

/// Values per ggml block (and per burn block here).
const BLOCK: usize = 32;

/// A `[rows, cols]` weight (rows = output features) quantised on the device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceQuant {
    pieces: Vec<Piece>,
}

/// Consecutive output rows that fit in one device buffer.
#[derive(Debug, Clone)]
struct Piece {
    /// `[rows, cols]`, quantised along `cols`.
    w: Tensor<2>,
    /// A `_1` type's `[2·cols/32, rows]` block offsets: `m`, then `c·d`.
    offsets: Option<Tensor<2>>,
}

/// One ggml block as a symmetric burn block: `value = q·scale + min +
/// centre·scale` (the last two zero for `_0` types).
struct Block {
    q: [i8; BLOCK],
    scale: f32,
    min: f32,
    centre: f32,
}

/// How a ggml type maps onto burn's storage.
fn value_kind(ty: GgmlType) -> Option<(QuantValue, usize)> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => Some((QuantValue::Q4F, 4)),
        // 5-bit values fit a signed byte.
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => Some((QuantValue::Q8F, 8)),
        _ => None,
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decodes one ggml block into centred integers, a scale, the stored minimum
/// and the centring shift, so `(q + centre)·scale + min` is exactly what
/// ggml's dequantiser computes.
fn decode(ty: GgmlType, b: &[u8]) -> Block {
    let mut q = [0i8; BLOCK];
    let d = f16_at(b, 0);
    let (mut min, mut centre) = (0.0, 0.0);
    match ty {
        GgmlType::Q8_0 => {
            for (o, &v) in q.iter_mut().zip(&b[2..34]) {
                *o = v as i8;
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            // Element j is the low nibble of byte j, element j+16 its high one.
            let qs = if ty == GgmlType::Q4_0 {
                &b[2..18]
            } else {
                &b[4..20]
            };
            for (j, &v) in qs.iter().enumerate() {
                q[j] = (v & 0x0f) as i8 - 8;
                q[j + 16] = (v >> 4) as i8 - 8;
            }
            if ty == GgmlType::Q4_1 {
                // q·d + m = (q−8)·d + m + 8d
                (min, centre) = (f16_at(b, 2), 8.0);
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let (qh_at, qs_at) = if ty == GgmlType::Q5_0 { (2, 6) } else { (4, 8) };
            let qh = u32::from_le_bytes([b[qh_at], b[qh_at + 1], b[qh_at + 2], b[qh_at + 3]]);
            for (j, &v) in b[qs_at..qs_at + 16].iter().enumerate() {
                let hi0 = ((qh >> j) & 1) << 4;
                let hi1 = ((qh >> (j + 16)) & 1) << 4;
                q[j] = ((v & 0x0f) as u32 | hi0) as i8 - 16;
                q[j + 16] = ((v >> 4) as u32 | hi1) as i8 - 16;
            }
            if ty == GgmlType::Q5_1 {
                (min, centre) = (f16_at(b, 2), 16.0);
            }
        }
        _ => unreachable!("value_kind admits only Q4/Q5/Q8 types"),
    }
    Block {
        q,
        scale: d,
        min,
        centre,
    }
}

impl DeviceQuant {
    /// Whether this module can hold weights of type `ty`.
    pub(crate) fn supports(ty: GgmlType) -> bool {
        value_kind(ty).is_some()
    }

    /// Uploads `m`'s blocks to `device` in pieces of at most `max_bytes`.
    pub(crate) fn new(m: &QMatrix, device: &Device, max_bytes: usize) -> Self {
        let (ty, rows, cols) = (m.ty(), m.rows(), m.cols());
        let (value, bits) = value_kind(ty).expect("caller checked DeviceQuant::supports");
        let has_offsets = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
        let blocks_per_row = cols / BLOCK;
        // Packed values, scales and (as a separate tensor) offsets per row.
        let row_bytes = cols * bits / 8 + blocks_per_row * 4;
        let per_piece = (max_bytes / row_bytes.max(1)).clamp(1, rows.max(1));
        let bb = ty.block_layout().1;
        let scheme = QuantScheme::default()
            .with_value(value)
            .with_store(QuantStore::PackedU32(0))
            .per_block([BLOCK as u8], ScaleDtype::F32);
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < rows {
            let n = per_piece.min(rows - start);
            let raw = &m.data()[start * blocks_per_row * bb..(start + n) * blocks_per_row * bb];
            let mut values = Vec::with_capacity(n * cols * bits / 8);
            let mut scales = Vec::with_capacity(n * blocks_per_row * 4);
            let mut offsets = vec![
                0f32;
                if has_offsets {
                    2 * n * blocks_per_row
                } else {
                    0
                }
            ];
            for (i, b) in raw.chunks_exact(bb).enumerate() {
                let blk = decode(ty, b);
                if bits == 8 {
                    values.extend(blk.q.iter().map(|&v| v as u8));
                } else {
                    // Eight 4-bit two's-complement values per little-endian
                    // word, the first in the lowest bits.
                    for w in blk.q.chunks_exact(8) {
                        let word = w
                            .iter()
                            .enumerate()
                            .fold(0u32, |acc, (k, &v)| acc | ((v as u32 & 0xf) << (4 * k)));
                        values.extend_from_slice(&word.to_le_bytes());
                    }
                }
                scales.extend_from_slice(&blk.scale.to_le_bytes());
                if has_offsets {
                    // Stored transposed, [2·cols/32, rows], for sums · offsets.
                    let (r, c) = (i / blocks_per_row, i % blocks_per_row);
                    offsets[c * n + r] = blk.min;
                    offsets[(blocks_per_row + c) * n + r] = blk.centre * blk.scale;
                }
            }
            values.extend_from_slice(&scales);
            let data = TensorData::from_bytes_vec(values, [n, cols], DType::QFloat(scheme));
            pieces.push(Piece {
                w: Tensor::from_data(data, device),
                offsets: has_offsets.then(|| {
                    Tensor::from_data(TensorData::new(offsets, [2 * blocks_per_row, n]), device)
                }),
            });
            start += n;
        }
        Self { pieces }
    }

    /// `x·Wᵀ` for activations `[n, cols]`: `[n, rows]`.
    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let offsets = self.pieces.iter().any(|p| p.offsets.is_some());
        let (x, sums) = quantize_activations(x, offsets);
        let mut outs: Vec<Tensor<2>> = self
            .pieces
            .iter()
            .map(|p| {
                let y = x.clone().matmul(p.w.clone().transpose());
                match (&p.offsets, &sums) {
                    (Some(o), Some(s)) => y + s.clone().matmul(o.clone()),
                    _ => y,
                }
            })
            .collect();
        if outs.len() == 1 {
            outs.pop().expect("one piece")
        } else {
            Tensor::cat(outs, 1)
        }
    }
}

/// ggml's `quantize_row_q8_0`/`q8_1` as f32 values: per 32-value block,
/// `d = max|x| / 127`, `q = round(x · (1/d))` (ties to even, as ggml's SIMD
/// paths), and the value `q·d` with `d` rounded to f16 as ggml stores it.
/// Also, per block, `[d·Σq rounded to f16 (Q8_1's sum) | Σ of the values]`,
/// `[n, 2·k/32]`: what a `_1` weight's two offset halves multiply (only
/// computed when `with_sums`; `_0` weights need none).
fn quantize_activations(x: Tensor<2>, with_sums: bool) -> (Tensor<2>, Option<Tensor<2>>) {
    use burn::tensor::FloatDType;
    let [n, k] = x.dims();
    let f16 = |t: Tensor<3>| t.cast(FloatDType::F16).cast(FloatDType::F32);
    let blocks = x.reshape([n, k / BLOCK, BLOCK]);
    let d = blocks.clone().abs().max_dim(2).div_scalar(127.0);
    // An all-zero block quantises to zeros: 1/d is taken as 0 there.
    let zero = d.clone().equal_elem(0.0);
    let id = d
        .clone()
        .mask_fill(zero.clone(), 1.0)
        .recip()
        .mask_fill(zero, 0.0);
    let q = (blocks * id).round();
    let d16 = f16(d.clone());
    let sums = with_sums.then(|| {
        let qsum = q.clone().sum_dim(2);
        Tensor::cat(vec![f16(qsum.clone() * d), qsum * d16.clone()], 1).reshape([n, 2 * k / BLOCK])
    });
    ((q * d16).reshape([n, k]), sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported type's decoded blocks reproduce ggml's dequantiser
    /// (the one tested against gguf-py) value for value.
    #[test]
    fn decoded_blocks_match_the_dequantiser() {
        let mut seed = 0x9e37_79b9_u32;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed >> 24) as u8
        };
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            let bb = ty.block_layout().1;
            for _ in 0..50 {
                let mut b: Vec<u8> = (0..bb).map(|_| byte()).collect();
                // Sane f16 scale/offset (no inf/NaN): exponent bits cleared high.
                b[1] &= 0x3b;
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    b[3] &= 0xbb;
                }
                let mut want = [0f32; BLOCK];
                crate::gguf::dequantize_into(ty, &b, &mut want);
                let blk = decode(ty, &b);
                for (i, &w) in want.iter().enumerate() {
                    let got = (blk.q[i] as f32 + blk.centre) * blk.scale + blk.min;
                    let tol = 1e-6 * (w.abs() + blk.min.abs() + blk.scale.abs() * 32.0);
                    assert!((got - w).abs() <= tol, "{ty} element {i}: {got} vs {w}");
                }
            }
        }
    }
}
