//! The one error type of `seer-models`. Every variant names the file, key or
//! value that was wrong so a user can act on the message without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file could not be opened or mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a well-formed GGUF file.
    #[error("{path}: malformed GGUF: {reason}")]
    Gguf {
        /// The file that failed.
        path: PathBuf,
        /// What exactly is wrong, with offsets where they help.
        reason: String,
    },
    /// The file is not a well-formed whisper.cpp (ggml) model.
    #[error("{path}: malformed whisper.cpp model: {reason}")]
    Ggml {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong, with offsets where they help.
        reason: String,
    },
    /// A metadata key the model needs is missing or has the wrong type.
    #[error("{path}: metadata key `{key}`: {reason}")]
    Metadata {
        /// The file (GGUF or config.json) the key was looked up in.
        path: PathBuf,
        /// The key.
        key: String,
        /// Missing, wrong type, out of range, ...
        reason: String,
    },
    /// A tensor the model needs is missing, has the wrong shape or an
    /// unsupported type.
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not a well-formed ONNX model (a Piper voice).
    #[error("{path}: malformed ONNX voice: {reason}")]
    Onnx {
        /// The file that failed.
        path: PathBuf,
        /// What is wrong, with the byte offset where it helps.
        reason: String,
    },
    /// The `espeak-ng` program failed or is missing.
    #[error("phonemes: {0}")]
    Phonemes(String),
    /// The tokenizer could not be built or failed on input.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be parsed or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A request the engine cannot serve (prompt longer than the context, bad
    /// sampling parameter, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The compute backend could not be opened or failed.
    #[error("backend: {0}")]
    Backend(String),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
