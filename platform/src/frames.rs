//! Frames in: decoding images safely, scoring their sharpness, keeping the
//! last few, and [`ImageSource`], a stand-in camera made of image files.
//!
//! Decoding reads the header first and refuses an image with more pixels
//! than allowed before any pixel buffer exists, so a decompression bomb (a
//! few bytes claiming 100000×100000) costs nothing; the decoder then runs
//! under the `image` crate's allocation limits as a second line of defence.
//!
//! A "look" should get a sharp frame, not merely the newest: glasses move,
//! and motion blur ruins a vision model's answer. Each frame is scored by
//! the variance of its Laplacian (a standard focus measure: edges make it
//! large, blur makes it small), and [`FrameStore::sharpest`] picks the best
//! of the recent ones.

use image::{ImageReader, RgbImage};
use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Pixels allowed by default: a 12 MP phone photo fits, a bomb does not.
pub const DEFAULT_MAX_PIXELS: u64 = 16_000_000;

/// Image files larger than this are refused unread (a 12 MP JPEG is a
/// few MB; an uncompressed 16 MP BMP is 48 MB).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not an image format we decode (or not an image at all).
    #[error("{what}: not a supported image (JPEG, PNG, WebP, BMP or GIF)")]
    Unsupported {
        /// The file or "image data".
        what: String,
    },
    /// More pixels than allowed; nothing was decoded.
    #[error("{what}: {width}×{height} is {} pixels, more than the {max_pixels} allowed", *width as u64 * *height as u64)]
    TooLarge {
        /// The file or "image data".
        what: String,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The limit.
        max_pixels: u64,
    },
    /// The header or the data is damaged (a truncated file, …).
    #[error("{what}: cannot decode: {reason}")]
    Corrupt {
        /// The file or "image data".
        what: String,
        /// The decoder's reason.
        reason: String,
    },
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Decodes `bytes` (JPEG, PNG, WebP, BMP, GIF) to RGB, refusing more than
/// `max_pixels` before decoding. `what` names the source in errors.
pub fn decode(bytes: &[u8], what: &str, max_pixels: u64) -> Result<RgbImage, ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt {
            what: what.into(),
            reason: e.to_string(),
        })?;
    let format = reader.format();
    if format.is_none() {
        return Err(ImageError::Unsupported { what: what.into() });
    }
    // The JPEG decoder fills a truncated image with grey instead of
    // failing; a JPEG must end its last scan with an end-of-image marker.
    if format == Some(image::ImageFormat::Jpeg) {
        let sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
        let eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
        if !matches!((sos, eoi), (Some(s), Some(e)) if e > s) {
            return Err(ImageError::Corrupt {
                what: what.into(),
                reason: "truncated JPEG (no end-of-image marker after the last scan)".into(),
            });
        }
    }
    let (width, height) = reader.into_dimensions().map_err(|e| classify(e, what))?;
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt {
            what: what.into(),
            reason: format!("{width}×{height} image"),
        });
    }
    if width as u64 * height as u64 > max_pixels {
        return Err(ImageError::TooLarge {
            what: what.into(),
            width,
            height,
            max_pixels,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt {
            what: what.into(),
            reason: e.to_string(),
        })?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel is the largest buffer a decoder needs.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| classify(e, what))?;
    Ok(img.to_rgb8())
}

fn classify(e: image::ImageError, what: &str) -> ImageError {
    match e {
        image::ImageError::Unsupported(_) => ImageError::Unsupported { what: what.into() },
        other => ImageError::Corrupt {
            what: what.into(),
            reason: other.to_string(),
        },
    }
}

/// Reads and decodes an image file (see [`decode`]).
pub fn load(path: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    use std::io::Read;
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    // Only regular files, and only as many bytes as an image may have: a
    // path to /dev/zero or a FIFO must not hang or fill memory. Opening a
    // FIFO blocks until a writer comes, unless it is opened non-blocking
    // (which changes nothing for a regular file).
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(ImageError::Unsupported {
            what: format!("{} (not a regular file)", path.display()),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ImageError::Corrupt {
            what: path.display().to_string(),
            reason: format!("larger than {} MiB", MAX_FILE_BYTES >> 20),
        });
    }
    decode(&bytes, &path.display().to_string(), max_pixels)
}

/// Variance of the Laplacian of the image's luma, on a copy at most 320
/// pixels wide (the score compares frames of one camera; the scale only
/// needs to be the same for all of them).
pub fn sharpness(img: &RgbImage) -> f32 {
    let (w, h) = img.dimensions();
    if w < 3 || h < 3 {
        return 0.0;
    }
    let small;
    let img = if w > 320 {
        let nh = ((h as u64 * 320) / w as u64).max(3) as u32;
        small = image::imageops::resize(img, 320, nh, image::imageops::FilterType::Triangle);
        &small
    } else {
        img
    };
    let (w, h) = img.dimensions();
    let luma: Vec<f32> = img
        .pixels()
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .collect();
    let at = |x: u32, y: u32| luma[(y * w + x) as usize];
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let l =
                (at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y)) as f64;
            sum += l;
            sum2 += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum2 / n - mean * mean) as f32
}

/// One frame from a camera or an [`ImageSource`].
#[derive(Debug, Clone)]
pub struct Frame {
    /// The pixels.
    pub image: Arc<RgbImage>,
    /// When it was captured.
    pub at: Instant,
    /// Its number in the stream.
    pub seq: u64,
    /// [`sharpness`], computed once.
    pub sharpness: f32,
}

impl Frame {
    /// A frame of `image`, scored now.
    pub fn new(image: RgbImage, seq: u64) -> Self {
        let sharpness = sharpness(&image);
        Self {
            image: Arc::new(image),
            at: Instant::now(),
            seq,
            sharpness,
        }
    }
}

/// The last few frames.
#[derive(Debug)]
pub struct FrameStore {
    frames: VecDeque<Frame>,
    capacity: usize,
}

impl FrameStore {
    /// Keeps at most `capacity` frames (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            frames: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds a frame, forgetting the oldest beyond the capacity.
    pub fn push(&mut self, f: Frame) {
        self.frames.push_back(f);
        while self.frames.len() > self.capacity {
            self.frames.pop_front();
        }
    }

    /// The newest frame.
    pub fn latest(&self) -> Option<&Frame> {
        self.frames.back()
    }

    /// The sharpest frame captured within `window` of the newest one (so
    /// a "look" never gets a stale view), or the newest if none is sharper.
    pub fn sharpest(&self, window: Duration) -> Option<&Frame> {
        let newest = self.frames.back()?;
        self.frames
            .iter()
            .filter(|f| newest.at.duration_since(f.at) <= window)
            .max_by(|a, b| a.sharpness.total_cmp(&b.sharpness).then(a.seq.cmp(&b.seq)))
    }

    /// Forgets every frame (the camera stopped: old frames are not "now").
    pub fn clear(&mut self) {
        self.frames.clear();
    }
}

/// What an [`ImageSource`] delivers.
#[derive(Debug, Clone)]
pub enum FrameEvent {
    /// A frame.
    Frame(Frame),
    /// A file could not be used (it is skipped; the others go on).
    Error(String),
}

/// A camera made of image files: one still image, or every image in a
/// folder (sorted by name), delivered in a cycle at a given rate. For
/// tests, demos and boards without a camera.
#[derive(Debug)]
pub struct ImageSource {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "gif"];

/// The image files `path` stands for: itself, or the images in it.
pub fn image_files(path: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_owned(),
        source,
    };
    if !path.is_dir() {
        std::fs::metadata(path).map_err(io)?;
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ImageError::Unsupported {
            what: format!("{} (a folder with no images)", path.display()),
        });
    }
    Ok(files)
}

impl ImageSource {
    /// Starts delivering `path`'s images at `fps` into `tx`. Frames the
    /// consumer does not take in time are dropped, never queued.
    pub fn start(
        path: &Path,
        fps: f32,
        max_pixels: u64,
        tx: SyncSender<FrameEvent>,
    ) -> Result<Self, ImageError> {
        let files = image_files(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let period = Duration::from_secs_f32(1.0 / fps.clamp(0.1, 120.0));
        let thread = std::thread::Builder::new()
            .name("image-source".into())
            .spawn(move || {
                // Decoded once: a still image does not change between frames.
                let mut cache: Vec<Option<RgbImage>> = vec![None; files.len()];
                let mut seq = 0u64;
                let mut next = Instant::now();
                while !s.load(Ordering::SeqCst) {
                    let i = (seq as usize) % files.len();
                    if cache[i].is_none() {
                        match load(&files[i], max_pixels) {
                            Ok(img) => cache[i] = Some(img),
                            Err(e) => {
                                if tx.try_send(FrameEvent::Error(e.to_string())).is_err() {
                                    tracing::debug!("image source: {e}");
                                }
                            }
                        }
                    }
                    if let Some(img) = &cache[i] {
                        match tx.try_send(FrameEvent::Frame(Frame::new(img.clone(), seq))) {
                            Ok(()) | Err(TrySendError::Full(_)) => {}
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                    seq += 1;
                    next += period;
                    // In short naps, so a stop (the camera closing, the
                    // privacy indicator waiting on it) is seen within 50 ms.
                    let now = Instant::now();
                    if next <= now {
                        next = now;
                    }
                    loop {
                        let now = Instant::now();
                        if next <= now || s.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    }
                }
            })
            .map_err(|e| ImageError::Io {
                path: PathBuf::from("image-source thread"),
                source: e,
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ImageSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
