//! The Llama-family decoder: one implementation for SmolLM2, Llama 3.x and
//! Qwen2.x, selected by [`LlamaConfig`], never by a copy per model.

mod config;
mod cpu;
mod gpu;
mod load;
mod model;
mod qmatmul;

pub use config::{Arch, Llama3RopeScaling, LlamaConfig};
pub use cpu::profile;
pub use load::{WeightFormat, load_gguf, load_hf};
pub use model::{KvCache, Llama};
