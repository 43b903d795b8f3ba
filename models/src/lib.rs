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
//! - [`piper`] speaks: Piper (VITS) voices read from their `.onnx` and run in
//!   burn, with phonemes from the `espeak-ng` program.
//!
//! Weights are read through one internal layer, `weights`: a `Source` of
//! named tensors over a GGUF file or an HF safetensors checkpoint, which
//! both the decoder and the vision tower load from. Modules depend one way:
//! `generate` → `vision` → `llama` → `weights` → `gguf` → `error`.
//!
//! Finding and downloading models is not done here: the catalogue, the
//! models directory and the Hub downloader are the `seer-store` crate, so
//! this crate links no HTTP or TLS. Cancellation is `seer-cancel`'s
//! [`CancelToken`](seer_cancel::CancelToken), shared with the downloader.

pub mod device;
pub mod error;
pub mod fuzz;
pub mod generate;
pub mod gguf;
mod host;
pub mod llama;
pub mod piper;
pub mod speech;
pub mod tokenizer;
pub mod vad;
pub mod vision;
mod weights;

pub use error::{ModelError, Result};
