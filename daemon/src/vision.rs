//! Images attached to questions, before there is a vision model to look at
//! them: the daemon already reads, bounds and decodes them exactly as it
//! will then, so a bad image gets its error (`too_large`, `bad_request`)
//! and never costs more than the configured pixel budget.

use crate::protocol::{Code, ImageRef};
use base64::Engine;
use seer_platform::frames::{self, ImageError};

/// Reads and decodes `image` (on a blocking thread: it is file I/O and
/// CPU work), refusing more than `max_pixels`.
pub fn load(image: &ImageRef, max_pixels: u64) -> Result<image::RgbImage, (Code, String)> {
    let decoded = if let Some(path) = &image.path {
        frames::load(path, max_pixels)
    } else if let Some(b64) = &image.base64 {
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64.trim_end_matches('=').as_bytes())
            .map_err(|e| {
                (
                    Code::BadRequest,
                    format!("ask.image.base64: not valid base64 ({e})"),
                )
            })?;
        frames::decode(&bytes, "ask.image.base64", max_pixels)
    } else {
        return Err((
            Code::Unsupported,
            "ask.image.camera: no camera in this build yet; send `path` or `base64`".into(),
        ));
    };
    decoded.map_err(|e| {
        let code = match e {
            ImageError::TooLarge { .. } => Code::TooLarge,
            _ => Code::BadRequest,
        };
        (code, format!("ask.image: {e}"))
    })
}
