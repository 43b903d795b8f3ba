//! Streaming, cancellable text generation.
//!
//! [`Engine`] owns a [`Llama`](crate::llama::Llama) and its
//! [`TextTokenizer`](crate::tokenizer::TextTokenizer) (and, for SmolVLM,
//! the vision tower). [`Engine::generate`] takes a [`Request`] and a
//! [`seer_cancel::CancelToken`] and returns a [`Generation`]: an iterator of
//! text pieces that are always whole UTF-8 and never contain a stop string
//! or the start of one. [`Generation::finish`] gives the [`Output`]: the
//! full text, why it stopped ([`StopReason`]) and [`Timings`].
//!
//! The parts, each its own module:
//!
//! - `engine`: loading ([`Engine::load`], [`Engine::load_vlm`]), prompts
//!   (chat templates, images) and the token loop ([`Generation`]);
//! - `request`: the plain data a generation takes and gives;
//! - `sampling`: how the next token is chosen ([`Sampling`]);
//! - `stream`: which text may be shown yet ([`StreamDecoder`] for whole
//!   characters, [`StopFilter`] for stop strings); tested without weights.

mod engine;
mod request;
mod sampling;
mod stream;

pub use engine::{Engine, EngineOptions, Generation};
pub use request::{
    DEFAULT_SYSTEM_PROMPT, ImagePrompt, Output, Request, StopReason, Timings, VlmFiles,
};
pub use sampling::{Sampling, argmax};
pub use stream::{StopFilter, StreamDecoder};
