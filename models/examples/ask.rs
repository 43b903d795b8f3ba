//! Ask a GGUF chat model one question and stream the answer to stdout.
//!
//! `cargo run -p seer-models --example ask -- --model M.gguf "What is the capital of France?"`
//!
//! This is the engine on its own; the daemon (`seerd`) and CLI (`seer ask`)
//! wrap the same API.

use anyhow::{Context, Result};
use clap::Parser;
use seer_cancel::CancelToken;
use seer_models::device::{self, BackendKind};
use seer_models::generate::{DEFAULT_SYSTEM_PROMPT, Engine, EngineOptions, Request, Sampling};
use seer_models::llama::WeightFormat;
use seer_models::tokenizer::Message;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// GGUF model file.
    #[arg(long, env = "SEER_MODEL")]
    model: PathBuf,
    /// auto, cpu or wgpu.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// CPU threads (CPU backend).
    #[arg(long)]
    threads: Option<usize>,
    /// Maximum answer length in tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// System prompt.
    #[arg(long, default_value = DEFAULT_SYSTEM_PROMPT)]
    system: String,
    /// Weight format: native (ggml blocks, CPU) or f32; default per backend.
    #[arg(long)]
    weights: Option<String>,
    /// Print timings to stderr.
    #[arg(long)]
    timings: bool,
    /// The question.
    question: String,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Some(n) = args.threads {
        device::set_cpu_threads(n);
    }
    let backend: BackendKind = args.backend.parse()?;
    let weights = match args.weights.as_deref() {
        None => None,
        Some("native") => Some(WeightFormat::Native),
        Some("f32") => Some(WeightFormat::F32),
        Some(other) => anyhow::bail!("--weights {other}: expected native or f32"),
    };
    let engine = Engine::load(
        &args.model,
        &EngineOptions {
            backend,
            weights,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading {}", args.model.display()))?;
    let mut messages = Vec::new();
    if !args.system.is_empty() {
        messages.push(Message::new("system", &args.system));
    }
    messages.push(Message::new("user", &args.question));
    let mut req = Request::new(engine.chat_prompt(&messages)?, args.max_tokens);
    req.sampling = Sampling {
        temperature: args.temperature,
        seed: args.seed,
        ..Default::default()
    };
    let mut generation = engine.generate(req, CancelToken::new())?;
    let mut out = std::io::stdout().lock();
    for piece in generation.by_ref() {
        out.write_all(piece?.as_bytes())?;
        out.flush()?;
    }
    writeln!(out)?;
    let res = generation.finish()?;
    if args.timings {
        eprintln!("{}", serde_json::to_string(&res.timings)?);
    }
    Ok(())
}
