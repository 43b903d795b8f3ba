//! Images attached to questions: read, bounded and decoded before a turn
//! starts, so a bad image gets its error (`too_large`, `bad_request`) and
//! never costs more than the configured pixel budget, and the model only
//! ever sees a decoded RGB frame.

use crate::camera::Camera;
use crate::error::ServiceError;
use crate::protocol::ImageRef;
use base64::Engine;
use seer_platform::frames;
use std::sync::Arc;

/// Reads and decodes `image` (on a blocking thread: it is file I/O and
/// CPU work), refusing more than `max_pixels`; [`ImageRef::Camera`] takes
/// the camera's sharpest recent frame.
pub fn load(
    image: &ImageRef,
    max_pixels: u64,
    camera: &Arc<Camera>,
) -> Result<Arc<image::RgbImage>, ServiceError> {
    let decoded = match image {
        ImageRef::Camera => return camera.look().map(|f| f.image),
        ImageRef::Path(path) => frames::load(path, max_pixels),
        ImageRef::Base64(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(b64.trim_end_matches('=').as_bytes())
                .map_err(|e| {
                    ServiceError::bad_request(format!("ask.image.base64: not valid base64 ({e})"))
                })?;
            frames::decode(&bytes, "ask.image.base64", max_pixels)
        }
    };
    Ok(Arc::new(decoded?))
}

/// Whether a question is about what is in view: it talks about looking,
/// seeing or reading, or points at "this"/"these" ("here" alone is not
/// enough: "is it raining here?" is not a request to look).
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
