//! Images attached to questions: read, bounded and decoded before a turn
//! starts, so a bad image gets its error (`too_large`, `bad_request`) and
//! never costs more than the configured pixel budget, and the model only
//! ever sees a decoded RGB frame.

use crate::camera::Camera;
use crate::config::VoiceCamera;
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

/// The camera as spoken questions use it, when both a camera and a vision
/// model are configured: `[vision] voice_camera` decides which questions
/// get the current frame.
#[derive(Debug, Clone)]
pub struct VoiceEyes {
    /// The daemon's camera.
    pub camera: Arc<Camera>,
    /// `never`, `when-asked` or `always`.
    pub rule: VoiceCamera,
}

impl VoiceEyes {
    /// Whether `question` gets the camera's frame.
    pub fn wants(&self, question: &str) -> bool {
        match self.rule {
            VoiceCamera::Never => false,
            VoiceCamera::Always => true,
            VoiceCamera::WhenAsked => mentions_looking(question),
        }
    }

    /// The frame for `question`, if it gets one. Blocking. A camera that
    /// fails is logged and the question is answered without it: a spoken
    /// question should get an answer, not an error about a lens.
    pub fn frame_for(&self, question: &str) -> Option<Arc<image::RgbImage>> {
        if !self.wants(question) {
            return None;
        }
        match self.camera.look() {
            Ok(f) => Some(f.image),
            Err((_, m)) => {
                tracing::warn!("spoken question answered without the camera: {m}");
                None
            }
        }
    }
}

/// Whether a question is about what is in view: it talks about looking,
/// seeing or reading, or points at "this"/"these"/"here".
pub fn mentions_looking(question: &str) -> bool {
    const WORDS: &[&str] = &[
        "look", "looking", "looks", "see", "seeing", "seen", "read", "reading", "view", "this",
        "these", "holding", "front",
    ];
    question
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .map(|w| w.to_lowercase())
        .any(|w| WORDS.contains(&w.as_str()))
        && !question.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::mentions_looking;

    #[test]
    fn questions_about_the_view_are_recognised() {
        for q in [
            "What am I looking at?",
            "Can you read this sign?",
            "What is this?",
            "Do you see a cat?",
            "what's in front of me",
        ] {
            assert!(mentions_looking(q), "{q}");
        }
        for q in [
            "What is the capital of France?",
            "Tell me a joke",
            "Is it raining here?",
            "",
        ] {
            assert!(!mentions_looking(q), "{q}");
        }
    }
}
