//! SmolVLM (Idefics3) image preprocessing, bit-exact with transformers 5.24's PIL backend
//! (`Idefics3ImageProcessorPil`) running on Pillow 13.
//!
//! The specification is `docs/vision-fixtures.md` sections 3 ("Image processor", including
//! "Pillow LANCZOS") and 4 ("Prompt expansion"). Why bit-exact rather than "a good Lanczos":
//! the vision tower sees these exact bytes in the reference, so any other resampler (the
//! `image` crate's, llama.cpp's port of pre-12 Pillow, torchvision) shifts pixels by 1-2
//! levels and the parity fixtures could then only be checked with a loose tolerance.
//!
//! Pipeline per image (`split`): resize the longest edge to `longest_edge` (upscaling small
//! images), then either squash to `tile x tile` (untiled) or round both sides up to multiples
//! of the tile, cut row-major tiles and append a squashed global view (tiled). `pixel_values`
//! turns the u8 tiles into the normalised CHW floats the vision tower takes, and
//! `expand_image_prompt` produces the text that replaces one `<image>` in the prompt.
//!
//! The module depends on nothing else in the crate so it can be tested on its own.

use std::borrow::Cow;
use std::f64::consts::PI;

use image::RgbImage;

/// Fixed-point precision of Pillow's 8-bit resampling coefficients
/// (`PRECISION_BITS = 32 - 8 - 2` in `Resample.c`): leaves room for 8-bit pixels and the
/// coefficients' overshoot in an `i32` accumulator.
const PRECISION_BITS: u32 = 22;

/// Rounding bias added to every accumulator before the shift (`1 << (PRECISION_BITS - 1)`).
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// transformers' `MAX_IMAGE_SIZE`: no side of the first resize may exceed this.
const MAX_IMAGE_SIZE: u64 = 4096;

/// Support (half-width, in source pixels at scale 1) of Pillow's LANCZOS filter (`a = 3`).
const LANCZOS_SUPPORT: f64 = 3.0;

/// Bytes per pixel of an [`RgbImage`].
const CHANNELS: usize = 3;

/// Processor settings (from `preprocessor_config.json` / `processor_config.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    /// `size.longest_edge`: the first resize scales the longest side to this (2048 real).
    pub longest_edge: u32,
    /// `max_image_size.longest_edge`: the square tile side the vision tower takes (512 real).
    pub tile: u32,
    /// `image_seq_len`: `<image>` tokens per tile (64 real); from the processor config, not
    /// derived from the model.
    pub image_seq_len: usize,
    /// `do_image_splitting`: tiles plus a global view, or one squashed image.
    pub tiling: bool,
    /// `rescale_factor` (1/255), applied in float64 as transformers does.
    pub rescale_factor: f64,
    /// `image_mean`, per RGB channel.
    pub mean: [f32; 3],
    /// `image_std`, per RGB channel.
    pub std: [f32; 3],
}

/// One image after resizing and splitting.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiles {
    /// Tile rows; 0 when untiled (the prompt then gets the single "global" block).
    pub rows: usize,
    /// Tile columns; 0 when untiled.
    pub cols: usize,
    /// Every image is `tile x tile`: the `rows * cols` tiles in row-major order followed by
    /// the global view, or exactly one image when `rows == cols == 0`.
    pub images: Vec<RgbImage>,
}

/// Resizes exactly as Pillow 13's `Image.resize((width, height), LANCZOS, reducing_gap=None)`
/// does for an RGB image (`src/libImaging/Resample.c`, 8-bit path).
///
/// Same size returns a clone (Pillow returns a copy); a zero output side gives an empty image
/// and a zero input side gives black (no source taps), so nothing here can panic or divide
/// by zero.
///
/// Two separable passes with integer fixed-point coefficients and u8 rounding in between.
/// The pass order is Pillow 12+'s: vertical first iff the height shrinks by more pixels than
/// twice the width does. Older ports (always horizontal first) are 1-2 levels off on such
/// resizes.
pub fn resize_lanczos(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = img.dimensions();
    if (in_w, in_h) == (width, height) {
        return img.clone();
    }
    let mut out = RgbImage::new(width, height);
    if width == 0 || height == 0 {
        return out;
    }
    let src: &[u8] = img.as_raw();
    let need_h = width != in_w;
    let need_v = height != in_h;
    let dh = i64::from(in_h) - i64::from(height);
    let dw = i64::from(in_w) - i64::from(width);
    // ImagingResampleInner (Pillow >= 12): "if height is being scaled down more than twice
    // the amount the width is, run the vertical pass first" (pixel counts, not ratios).
    let vertical_first = dh > 0 && dh > 2 * dw;
    let (in_w, in_h, out_w) = (in_w as usize, in_h as usize, width as usize);
    let dst: &mut [u8] = &mut out;

    match (need_h, need_v) {
        (true, false) => {
            let kh = AxisCoeffs::new(in_w, out_w);
            resample_horizontal(src, in_w, 0..in_h, &kh, dst);
        }
        (false, true) => {
            let kv = AxisCoeffs::new(in_h, height as usize);
            resample_vertical(src, in_w * CHANNELS, 0, &kv, dst);
        }
        (true, true) if vertical_first => {
            let kv = AxisCoeffs::new(in_h, height as usize);
            let kh = AxisCoeffs::new(in_w, out_w);
            let mut tmp = vec![0u8; height as usize * in_w * CHANNELS];
            resample_vertical(src, in_w * CHANNELS, 0, &kv, &mut tmp);
            resample_horizontal(&tmp, in_w, 0..height as usize, &kh, dst);
        }
        (true, true) => {
            let kh = AxisCoeffs::new(in_w, out_w);
            let kv = AxisCoeffs::new(in_h, height as usize);
            // Like Pillow, only the source rows the vertical pass reads go through the
            // horizontal pass (this only saves work; the results are the same).
            let rows = kv.source_range();
            let first = rows.start;
            let mut tmp = vec![0u8; rows.len() * out_w * CHANNELS];
            resample_horizontal(src, in_w, rows, &kh, &mut tmp);
            resample_vertical(&tmp, out_w * CHANNELS, first, &kv, dst);
        }
        (false, false) => {} // unreachable: same size returned above
    }
    out
}

/// Step 1 size rule: scale the longest side to `longest` keeping the aspect ratio, then keep
/// every side within 4096. Takes and returns `(width, height)`.
///
/// Mirrors transformers' `_resize_output_size_rescale_to_max_len` and
/// `_resize_output_size_scale_below_upper_bound` exactly: float64 aspect ratio, `int()`
/// truncation, the shorter side bumped to even (before the 4096 bound, which does not
/// re-round), and at least 1 pixel. Float rounding matters: 240 x 360 at 384 gives
/// `int(384 * 0.6666666666666666) = 255`, bumped to 256. A zero side (Python would raise
/// `ZeroDivisionError`) is treated as 1.
pub fn resize_longest_edge_size(width: u32, height: u32, longest: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
    let longest = u64::from(longest);
    let aspect = w as f64 / h as f64;
    let (mut w, mut h) = if w >= h {
        let mut h = trunc(longest as f64 / aspect);
        if !h.is_multiple_of(2) {
            h += 1;
        }
        (longest, h)
    } else {
        let mut w = trunc(longest as f64 * aspect);
        if !w.is_multiple_of(2) {
            w += 1;
        }
        (w, longest)
    };
    w = w.max(1);
    h = h.max(1);

    // _resize_output_size_scale_below_upper_bound(h, w, MAX_IMAGE_SIZE), on the new size.
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX_IMAGE_SIZE {
        w = MAX_IMAGE_SIZE;
        h = trunc(w as f64 / aspect);
    } else if h > w && h > MAX_IMAGE_SIZE {
        h = MAX_IMAGE_SIZE;
        w = trunc(h as f64 * aspect);
    }
    (to_u32(w.max(1)), to_u32(h.max(1)))
}

/// Steps 1-3 of the processor: the longest-edge resize, then either the squashed
/// `tile x tile` image (tiling off) or the tiles plus the global view (tiling on).
///
/// A `tile` of 0 in the config is treated as 1 rather than dividing by zero.
pub fn split(img: &RgbImage, cfg: &ProcessorConfig) -> Tiles {
    let m = cfg.tile.max(1);
    let (w1, h1) = resize_longest_edge_size(img.width(), img.height(), cfg.longest_edge);
    let step1 = resize_cow(img, w1, h1);
    if !cfg.tiling {
        // Squashed, aspect not kept; and resized twice on purpose (a direct resize from the
        // original gives different pixels than transformers).
        return Tiles {
            rows: 0,
            cols: 0,
            images: vec![resize_lanczos(&step1, m, m)],
        };
    }

    let (w2, h2) = vision_encoder_size(w1, h1, m);
    let step2 = resize_cow(&step1, w2, h2);
    if h2 <= m && w2 <= m {
        // Cannot happen when longest_edge >= tile, but transformers handles it this way.
        return Tiles {
            rows: 0,
            cols: 0,
            images: vec![step2.into_owned()],
        };
    }

    // transformers: (h2 - M) // M + 1, which is h2 / M for every h2 >= 0 and cannot underflow.
    let rows = (h2 / m) as usize;
    let cols = (w2 / m) as usize;
    let mut images = Vec::with_capacity(rows * cols + 1);
    for r in 0..rows {
        for c in 0..cols {
            images.push(crop_tile(&step2, r, c, m as usize));
        }
    }
    images.push(resize_lanczos(&step2, m, m));
    Tiles { rows, cols, images }
}

/// The vision tower's input: `images.len() x 3 x tile x tile` floats in CHW order.
///
/// Per element exactly transformers' PIL path: rescale `(f32)((f64)u8 * rescale_factor)`,
/// then normalise `(x - mean[c]) / std[c]` in f32. With mean = std = 0.5 this is bit-exact
/// with the reference. It is a function of the u8 value and channel only, so it is tabulated
/// once (3 x 256) instead of evaluated per pixel.
///
/// Tiles from [`split`] are always `tile x tile`; any other image is zero-padded at the
/// bottom/right (as transformers pads) or cropped to fit.
pub fn pixel_values(tiles: &Tiles, cfg: &ProcessorConfig) -> Vec<f32> {
    let t = cfg.tile as usize;
    let plane = t * t;
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let x = (v as f64 * cfg.rescale_factor) as f32;
            *out = (x - cfg.mean[c]) / cfg.std[c];
        }
    }

    let mut out = vec![0f32; tiles.images.len() * CHANNELS * plane];
    for (img, dst) in tiles
        .images
        .iter()
        .zip(out.chunks_exact_mut(CHANNELS * plane))
    {
        let w = img.width() as usize;
        if w == 0 {
            continue; // all padding (and `chunks_exact(0)` would panic)
        }
        let (copy_w, copy_h) = (w.min(t), (img.height() as usize).min(t));
        let src: &[u8] = img.as_raw();
        for (y, src_row) in src.chunks_exact(w * CHANNELS).take(copy_h).enumerate() {
            for (x, px) in src_row.chunks_exact(CHANNELS).take(copy_w).enumerate() {
                for (c, (&v, table)) in px.iter().zip(&lut).enumerate() {
                    dst[c * plane + y * t + x] = table[usize::from(v)];
                }
            }
        }
    }
    out
}

/// The text that replaces one `<image>` in the rendered prompt
/// (`Idefics3Processor.replace_image_token`).
///
/// Untiled (`rows == cols == 0`): one global block. Tiled: one unclosed block per tile, `\n`
/// after each row, then `\n` and the closed global block. The last row's `\n` and the global
/// block's `\n` tokenise as one `\n\n` token (1116), which the tokenizer must see as written
/// here. (Only one of `rows`/`cols` zero cannot come from [`split`]; it is handled like
/// transformers does, as a tiled layout without tiles.)
pub fn expand_image_prompt(rows: usize, cols: usize, seq_len: usize) -> String {
    const FAKE: &str = "<fake_token_around_image>";
    const GLOBAL: &str = "<global-img>";
    const IMAGE: &str = "<image>";
    // Only a hint: absurd arguments must not overflow here (they run out of memory below).
    let capacity = (FAKE.len() + "<row_00_col_00>".len())
        .checked_add(IMAGE.len().saturating_mul(seq_len))
        .and_then(|block| rows.checked_mul(cols)?.checked_add(1)?.checked_mul(block))
        .and_then(|n| n.checked_add(rows + 1))
        .unwrap_or(0);
    let mut s = String::with_capacity(capacity);
    if rows != 0 || cols != 0 {
        for r in 1..=rows {
            for c in 1..=cols {
                s.push_str(FAKE);
                s.push_str(&format!("<row_{r}_col_{c}>"));
                push_repeat(&mut s, IMAGE, seq_len);
            }
            s.push('\n');
        }
        s.push('\n');
    }
    s.push_str(FAKE);
    s.push_str(GLOBAL);
    push_repeat(&mut s, IMAGE, seq_len);
    s.push_str(FAKE);
    s
}

fn push_repeat(s: &mut String, piece: &str, n: usize) {
    for _ in 0..n {
        s.push_str(piece);
    }
}

/// `resize_lanczos` that borrows instead of copying when the size is unchanged (Pillow's
/// copy has the same pixels; `split` only reads it).
fn resize_cow(img: &RgbImage, width: u32, height: u32) -> Cow<'_, RgbImage> {
    if img.dimensions() == (width, height) {
        Cow::Borrowed(img)
    } else {
        Cow::Owned(resize_lanczos(img, width, height))
    }
}

/// `resize_for_vision_encoder`'s size rule: round the longer side up to a multiple of the
/// tile, derive the other from the float64 aspect ratio with `int()` truncation, round that
/// up too. Takes and returns `(width, height)`; `m >= 1`.
fn vision_encoder_size(width: u32, height: u32, m: u32) -> (u32, u32) {
    let (w, h, m) = (f64::from(width), f64::from(height), u64::from(m));
    let ceil_to = |v: f64| (v / m as f64).ceil() as u64 * m;
    let aspect = w / h;
    let (w2, h2) = if width >= height {
        let w2 = ceil_to(w);
        (w2, ceil_to(trunc(w2 as f64 / aspect) as f64))
    } else {
        let h2 = ceil_to(h);
        (ceil_to(trunc(h2 as f64 * aspect) as f64), h2)
    };
    (to_u32(w2), to_u32(h2))
}

/// Copies tile `(r, c)` of side `m` out of `img`; the caller guarantees it lies inside.
fn crop_tile(img: &RgbImage, r: usize, c: usize, m: usize) -> RgbImage {
    let mut tile = RgbImage::new(m as u32, m as u32);
    let row_len = img.width() as usize * CHANNELS;
    let src: &[u8] = img.as_raw();
    let x0 = c * m * CHANNELS;
    for (y, dst_row) in tile.chunks_exact_mut(m * CHANNELS).enumerate() {
        let start = (r * m + y) * row_len + x0;
        dst_row.copy_from_slice(&src[start..start + m * CHANNELS]);
    }
    tile
}

/// Python `int(x)` for the non-negative sizes here: truncation toward zero (`as` saturates
/// instead of raising on inf/NaN, which only degenerate inputs reach).
fn trunc(x: f64) -> u64 {
    x as u64
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Per-axis resampling coefficients, computed once per resize (`precompute_coeffs` followed
/// by `normalize_coeffs_8bpc`).
struct AxisCoeffs {
    /// Per output index: the first source index and the number of taps.
    bounds: Vec<(usize, usize)>,
    /// Per output index: offset of its taps in `k`.
    offsets: Vec<usize>,
    /// Fixed-point weights (scaled by 2^22), all outputs' taps back to back.
    k: Vec<i32>,
}

impl AxisCoeffs {
    /// Pillow's `precompute_coeffs` for the full-image box, with `in_size`/`out_size` as
    /// float64 (Pillow goes through a C `float`, which is exact for sizes below 2^24).
    /// Every expression keeps Pillow's operation order so the doubles, and therefore the
    /// rounded integers, are identical.
    fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = LANCZOS_SUPPORT * filterscale;
        let ss = 1.0 / filterscale;
        let in_i = in_size as i64;

        let mut bounds = Vec::with_capacity(out_size);
        let mut offsets = Vec::with_capacity(out_size);
        // A capacity hint only (Pillow's `ksize`), capped so absurd sizes cannot overflow it.
        let ksize = 2 * (support.ceil() as usize).min(1 << 20) + 1;
        let mut k = Vec::with_capacity(out_size.saturating_mul(ksize).min(1 << 26));
        let mut w = Vec::new();
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // C `(int)` casts truncate toward zero, hence no floor().
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_i);
            let n = (xmax - xmin).max(0) as usize;
            w.clear();
            let mut ww = 0.0;
            for x in 0..n {
                let v = lanczos(((x as i64 + xmin) as f64 - center + 0.5) * ss);
                w.push(v);
                ww += v; // sequential double sum, as in C
            }
            offsets.push(k.len());
            for &v in &w {
                let v = if ww != 0.0 { v / ww } else { v };
                let scaled = v * f64::from(1u32 << PRECISION_BITS);
                k.push(if v < 0.0 {
                    (-0.5 + scaled) as i32
                } else {
                    (0.5 + scaled) as i32
                });
            }
            bounds.push((xmin as usize, n));
        }
        Self { bounds, offsets, k }
    }

    /// Taps of output index `i`: first source index and weights.
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (start, n) = self.bounds[i];
        let off = self.offsets[i];
        (start, &self.k[off..off + n])
    }

    /// The source indices any output reads: `bounds[0].start .. last.start + last.len`.
    fn source_range(&self) -> std::ops::Range<usize> {
        match (self.bounds.first(), self.bounds.last()) {
            (Some(&(first, _)), Some(&(last, n))) => first..(last + n).max(first),
            _ => 0..0,
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * PI;
    x.sin() / x
}

/// Pillow's `lanczos_filter`: `sinc(x) * sinc(x / 3)` on `[-3, 3)`.
fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `clip8`: drop the fixed-point fraction and saturate to u8.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over source rows `rows` of a `src_w`-pixel-wide RGB buffer, writing
/// `rows.len()` rows of `kh.bounds.len()` pixels into `dst`.
fn resample_horizontal(
    src: &[u8],
    src_w: usize,
    rows: std::ops::Range<usize>,
    kh: &AxisCoeffs,
    dst: &mut [u8],
) {
    let src_row_len = src_w * CHANNELS;
    let dst_row_len = kh.bounds.len() * CHANNELS;
    if src_row_len == 0 || dst_row_len == 0 {
        // No source pixels: every accumulator stays at the bias, which clips to 0.
        dst.fill(0);
        return;
    }
    let src_rows = src
        .chunks_exact(src_row_len)
        .skip(rows.start)
        .take(rows.len());
    for (src_row, dst_row) in src_rows.zip(dst.chunks_exact_mut(dst_row_len)) {
        for (i, out_px) in dst_row.chunks_exact_mut(CHANNELS).enumerate() {
            let (start, k) = kh.taps(i);
            let window = &src_row[start * CHANNELS..(start + k.len()) * CHANNELS];
            let (mut r, mut g, mut b) = (HALF, HALF, HALF);
            for (px, &kk) in window.chunks_exact(CHANNELS).zip(k) {
                r += i32::from(px[0]) * kk;
                g += i32::from(px[1]) * kk;
                b += i32::from(px[2]) * kk;
            }
            out_px[0] = clip8(r);
            out_px[1] = clip8(g);
            out_px[2] = clip8(b);
        }
    }
}

/// Vertical pass: each output row is a weighted sum of whole source rows, accumulated
/// row-at-a-time into an `i32` buffer (contiguous, vectorisable). `first_row` is the source
/// row that `src`'s first row corresponds to (non-zero after a horizontal pass over a
/// sub-range of rows).
fn resample_vertical(
    src: &[u8],
    row_len: usize,
    first_row: usize,
    kv: &AxisCoeffs,
    dst: &mut [u8],
) {
    if row_len == 0 {
        return;
    }
    let mut acc = vec![0i32; row_len];
    for (i, dst_row) in dst.chunks_exact_mut(row_len).enumerate() {
        acc.fill(HALF);
        let (start, k) = kv.taps(i);
        let rows = src
            .chunks_exact(row_len)
            .skip(start.saturating_sub(first_row));
        for (src_row, &kk) in rows.zip(k) {
            for (a, &p) in acc.iter_mut().zip(src_row) {
                *a += i32::from(p) * kk;
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/smolvlm-tiny"
        ))
    }

    fn tiny_config(tiling: bool) -> ProcessorConfig {
        ProcessorConfig {
            longest_edge: 384,
            tile: 128,
            image_seq_len: 4,
            tiling,
            rescale_factor: 0.00392156862745098,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// All u8 tensors of the reference file, with their shapes.
    fn reference_u8() -> HashMap<String, (Vec<usize>, Vec<u8>)> {
        let bytes = std::fs::read(fixture_dir().join("reference.safetensors"))
            .expect("read reference.safetensors");
        let st =
            safetensors::SafeTensors::deserialize(&bytes).expect("parse reference.safetensors");
        st.tensors()
            .into_iter()
            .filter(|(_, t)| t.dtype() == safetensors::Dtype::U8)
            .map(|(name, t)| (name, (t.shape().to_vec(), t.data().to_vec())))
            .collect()
    }

    fn reference_json() -> serde_json::Value {
        let text = std::fs::read_to_string(fixture_dir().join("reference.json"))
            .expect("read reference.json");
        serde_json::from_str(&text).expect("parse reference.json")
    }

    fn photo(tensors: &HashMap<String, (Vec<usize>, Vec<u8>)>, name: &str) -> RgbImage {
        let (shape, data) = &tensors[&format!("image.{name}.rgb")];
        assert_eq!(shape.len(), 3);
        assert_eq!(shape[2], 3);
        RgbImage::from_raw(shape[1] as u32, shape[0] as u32, data.clone()).expect("image shape")
    }

    /// The tiles as the reference stores them: N x 3 x tile x tile (CHW) u8.
    fn tiles_chw(tiles: &Tiles) -> Vec<u8> {
        let mut out = Vec::new();
        for img in &tiles.images {
            for c in 0..3 {
                out.extend(img.pixels().map(|p| p.0[c]));
            }
        }
        out
    }

    const CASES: [(&str, bool); 4] = [
        ("astronaut_portrait", true),
        ("astronaut_portrait", false),
        ("coffee_landscape", true),
        ("coffee_landscape", false),
    ];

    fn case_name(photo: &str, tiled: bool) -> String {
        format!("{photo}.{}", if tiled { "tiled" } else { "untiled" })
    }

    #[test]
    fn split_matches_reference_bit_exact() {
        let tensors = reference_u8();
        let json = reference_json();
        for (name, tiled) in CASES {
            let case = case_name(name, tiled);
            let meta = &json["cases"][&case];
            let tiles = split(&photo(&tensors, name), &tiny_config(tiled));
            assert_eq!(
                tiles.rows as u64,
                meta["rows"].as_u64().expect("rows"),
                "{case} rows"
            );
            assert_eq!(
                tiles.cols as u64,
                meta["cols"].as_u64().expect("cols"),
                "{case} cols"
            );
            let (shape, want) = &tensors[&format!("{case}.pixel_u8")];
            assert_eq!(
                shape,
                &vec![tiles.images.len(), 3, 128, 128],
                "{case} shape"
            );
            let got = tiles_chw(&tiles);
            let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
            assert_eq!(
                differing, 0,
                "{case}: {differing} bytes differ from transformers"
            );
        }
    }

    #[test]
    fn prompt_expansion_matches_reference() {
        let json = reference_json();
        for (name, tiled) in CASES {
            let case = case_name(name, tiled);
            let meta = &json["cases"][&case];
            let prompt = meta["prompt_text"].as_str().expect("prompt_text");
            let expanded = meta["expanded_text"].as_str().expect("expanded_text");
            let (before, after) = prompt
                .split_once("<image>")
                .expect("one <image> in the prompt");
            assert!(
                expanded.starts_with(before) && expanded.ends_with(after),
                "{case}"
            );
            let want = &expanded[before.len()..expanded.len() - after.len()];
            let rows = meta["rows"].as_u64().expect("rows") as usize;
            let cols = meta["cols"].as_u64().expect("cols") as usize;
            assert_eq!(expand_image_prompt(rows, cols, 4), want, "{case}");
        }
    }

    #[test]
    fn expansion_token_structure() {
        let s = expand_image_prompt(4, 4, 64);
        assert_eq!(s.matches("<image>").count(), 17 * 64);
        assert_eq!(s.matches("<fake_token_around_image>").count(), 16 + 2);
        assert!(s.contains("<image>\n\n<fake_token_around_image><global-img>"));
        assert!(s.starts_with("<fake_token_around_image><row_1_col_1><image>"));
        // One side zero: transformers' loops, not the untiled branch.
        let global = "<fake_token_around_image><global-img><image><fake_token_around_image>";
        assert_eq!(expand_image_prompt(2, 0, 1), format!("\n\n\n{global}"));
        assert_eq!(expand_image_prompt(0, 2, 1), format!("\n{global}"));
        assert_eq!(
            expand_image_prompt(0, 0, 2),
            "<fake_token_around_image><global-img><image><image><fake_token_around_image>"
        );
    }

    #[test]
    fn pixel_values_match_f64_formula() {
        let tensors = reference_u8();
        let cfg = tiny_config(true);
        let tiles = split(&photo(&tensors, "coffee_landscape"), &cfg);
        let got = pixel_values(&tiles, &cfg);
        let (_, u8s) = &tensors["coffee_landscape.tiled.pixel_u8"];
        assert_eq!(got.len(), u8s.len());
        for (&g, &v) in got.iter().zip(u8s) {
            // docs/vision-fixtures.md section 3 step 6.
            let want = (((f64::from(v) * (1.0 / 255.0)) as f32) - 0.5f32) / 0.5f32;
            assert_eq!(g.to_bits(), want.to_bits(), "u8 {v}");
        }
        // The config's factor is the same double as 1/255.
        assert_eq!(cfg.rescale_factor.to_bits(), (1.0f64 / 255.0).to_bits());
    }

    #[test]
    fn pixel_values_general_mean_std_per_channel() {
        let mut cfg = tiny_config(false);
        cfg.tile = 2;
        cfg.mean = [0.485, 0.456, 0.406];
        cfg.std = [0.229, 0.224, 0.225];
        let img = RgbImage::from_fn(2, 2, |x, y| {
            image::Rgb([(x * 100) as u8, (y * 200) as u8, 255])
        });
        let v = pixel_values(
            &Tiles {
                rows: 0,
                cols: 0,
                images: vec![img.clone()],
            },
            &cfg,
        );
        assert_eq!(v.len(), 12);
        for (x, y, p) in img.enumerate_pixels() {
            for c in 0..3 {
                let xf = (f64::from(p.0[c]) * cfg.rescale_factor) as f32;
                let want = (xf - cfg.mean[c]) / cfg.std[c];
                assert_eq!(
                    v[c * 4 + y as usize * 2 + x as usize].to_bits(),
                    want.to_bits()
                );
            }
        }
    }

    #[test]
    fn longest_edge_size_rules() {
        // docs/vision-fixtures.md section 3 step 1; (width, height).
        assert_eq!(resize_longest_edge_size(240, 360, 384), (256, 384)); // int(255.99..) = 255 -> 256
        assert_eq!(resize_longest_edge_size(180, 320, 384), (216, 384)); // upscale
        assert_eq!(resize_longest_edge_size(400, 264, 384), (384, 254)); // int(253.44) = 253 -> 254
        assert_eq!(resize_longest_edge_size(640, 480, 2048), (2048, 1536));
        assert_eq!(resize_longest_edge_size(300, 300, 384), (384, 384));
        // Extreme aspect ratios keep at least one pixel.
        assert_eq!(resize_longest_edge_size(100_000, 1, 384), (384, 1));
        assert_eq!(resize_longest_edge_size(1, 100_000, 384), (1, 384));
        // 4096 bound, applied to the step-1 size without re-rounding to even.
        assert_eq!(resize_longest_edge_size(1000, 500, 8192), (4096, 2048));
        assert_eq!(resize_longest_edge_size(3000, 7000, 5000), (1754, 4096));
        assert_eq!(resize_longest_edge_size(7000, 3001, 5000), (4096, 1756));
        assert_eq!(resize_longest_edge_size(4097, 4097, 4097), (4095, 4096)); // 4098 -> odd 4095
        // Zero sides are treated as 1 instead of dividing by zero.
        assert_eq!(resize_longest_edge_size(0, 0, 384), (384, 384));
        assert_eq!(resize_longest_edge_size(0, 10, 384), (38, 384)); // as 1 x 10
        assert_eq!(resize_longest_edge_size(10, 10, 0), (1, 1));
    }

    #[test]
    fn vision_encoder_size_rules() {
        // docs/vision-fixtures.md section 3 step 2a fixture sizes; (width, height).
        assert_eq!(vision_encoder_size(216, 384, 128), (256, 384));
        assert_eq!(vision_encoder_size(384, 254, 128), (384, 256));
        assert_eq!(vision_encoder_size(2048, 1536, 512), (2048, 1536));
    }

    #[test]
    fn degenerate_images_do_not_panic() {
        let one = RgbImage::from_pixel(1, 1, image::Rgb([10, 200, 30]));
        let big = resize_lanczos(&one, 384, 384);
        assert!(big.pixels().all(|p| p.0 == [10, 200, 30]));
        let strip = RgbImage::from_fn(1, 50, |_, y| image::Rgb([y as u8 * 5, 0, 255]));
        let row = image::imageops::rotate90(&strip);
        for (w, h) in [(1, 1), (7, 3), (1, 384), (384, 1), (0, 5), (5, 0), (1, 50)] {
            let out = resize_lanczos(&strip, w, h);
            assert_eq!(out.dimensions(), (w, h));
            let t = resize_lanczos(&row, w, h);
            assert_eq!(t.dimensions(), (w, h));
        }
        let empty = RgbImage::new(0, 0);
        assert!(
            resize_lanczos(&empty, 4, 4)
                .pixels()
                .all(|p| p.0 == [0, 0, 0])
        );
        for img in [one, strip, row, empty] {
            for tiling in [true, false] {
                let mut cfg = tiny_config(tiling);
                let tiles = split(&img, &cfg);
                assert!(!tiles.images.is_empty());
                assert!(tiles.images.iter().all(|t| t.dimensions() == (128, 128)));
                assert_eq!(
                    pixel_values(&tiles, &cfg).len(),
                    tiles.images.len() * 3 * 128 * 128
                );
                cfg.tile = 0;
                let _ = split(&img, &cfg);
            }
        }
    }

    /// The i32 accumulators cannot overflow: with the extreme u8 values on every tap the
    /// sum stays inside i32 for a sweep of scale factors (Pillow relies on the same bound).
    #[test]
    fn accumulator_bound_fits_i32() {
        let sizes = [
            1usize, 2, 3, 5, 7, 16, 127, 128, 255, 384, 512, 640, 1536, 2048, 4096,
        ];
        for &i in &sizes {
            for &o in &sizes {
                let kc = AxisCoeffs::new(i, o);
                for j in 0..o {
                    let (_, k) = kc.taps(j);
                    let pos: i64 = k.iter().filter(|&&v| v > 0).map(|&v| i64::from(v)).sum();
                    let neg: i64 = k.iter().filter(|&&v| v < 0).map(|&v| i64::from(v)).sum();
                    assert!(
                        i64::from(HALF) + 255 * pos <= i64::from(i32::MAX),
                        "{i}->{o}"
                    );
                    assert!(
                        i64::from(HALF) + 255 * neg >= i64::from(i32::MIN),
                        "{i}->{o}"
                    );
                }
            }
        }
    }

    #[test]
    fn pass_order_matters_for_the_portrait() {
        // The untiled portrait's 216x384 -> 128x128 resize goes vertical first in Pillow 12+;
        // the fixture test proves we match, this shows the old order would not have.
        let tensors = reference_u8();
        let img = resize_lanczos(&photo(&tensors, "astronaut_portrait"), 216, 384);
        let ours = resize_lanczos(&img, 128, 128);
        let kh = AxisCoeffs::new(216, 128);
        let kv = AxisCoeffs::new(384, 128);
        let mut tmp = vec![0u8; 384 * 128 * 3];
        resample_horizontal(img.as_raw(), 216, 0..384, &kh, &mut tmp);
        let mut old = vec![0u8; 128 * 128 * 3];
        resample_vertical(&tmp, 128 * 3, 0, &kv, &mut old);
        assert_ne!(ours.as_raw(), &old);
    }
}
