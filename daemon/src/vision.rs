//! Images attached to questions: read, bounded and decoded before a turn
//! starts, so a bad image gets its error (`too_large`, `bad_request`) and
//! never costs more than the configured pixel budget, and the model only
//! ever sees a decoded RGB frame.

use crate::camera::Camera;
use crate::protocol::{Code, ImageRef};
use base64::Engine;
use seer_platform::frames::{self, ImageError};
use std::sync::Arc;

/// Reads and decodes `image` (on a blocking thread: it is file I/O and
/// CPU work), refusing more than `max_pixels`; `camera: true` takes the
/// camera's sharpest recent frame.
pub fn load(
    image: &ImageRef,
    max_pixels: u64,
    camera: &Arc<Camera>,
) -> Result<Arc<image::RgbImage>, (Code, String)> {
    let given = [
        image.path.is_some(),
        image.base64.is_some(),
        image.camera.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() != 1 {
        return Err((
            Code::BadRequest,
            "ask.image: give exactly one of path, base64 or camera".into(),
        ));
    }
    if let Some(on) = image.camera {
        if !on {
            return Err((
                Code::BadRequest,
                "ask.image.camera: must be true (leave out image for a text question)".into(),
            ));
        }
        return camera.look().map(|f| f.image);
    }
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
        return Err((Code::BadRequest, "ask.image: empty".into()));
    };
    decoded.map(Arc::new).map_err(|e| {
        let code = match e {
            ImageError::TooLarge { .. } => Code::TooLarge,
            _ => Code::BadRequest,
        };
        (code, format!("ask.image: {e}"))
    })
}
