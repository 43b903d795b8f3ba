//! `seer-models`: everything in Seer that has weights.
//!
//! - [`gguf`] reads GGUF files (metadata, tensor infos, mapped data) and
//!   dequantises ggml's block formats.
//! - [`llama`] is the one Llama-family decoder (SmolLM2, Llama 3.x, Qwen2.x),
//!   configured from GGUF metadata or an HF `config.json`, written once against
//!   burn's run-time [`burn::tensor::Device`].
//! - [`tokenizer`] builds a `tokenizers` tokenizer from GGUF metadata or
//!   `tokenizer.json` and renders the model's own chat template.
//! - [`generate`] turns a model and tokenizer into a streaming, cancellable
//!   generator with sampling and timings.
//! - [`device`] chooses the compute backend at run time.
//! - [`vision`] is SmolVLM's eyes: the image processor, SigLIP tower and
//!   connector that feed the decoder image features.
//! - [`speech`] transcribes with whisper.cpp (`whisper-rs`).
//! - [`vad`] finds speech with Silero VAD (run by whisper.cpp).
//! - [`store`] is the model catalogue, the models directory and the Hub
//!   downloader.

pub mod device;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod speech;
pub mod store;
pub mod tokenizer;
pub mod vad;
pub mod vision;

pub use error::{ModelError, Result};
