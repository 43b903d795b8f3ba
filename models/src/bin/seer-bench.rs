//! `seer-bench`: prints load time, prefill and decode throughput, time to first
//! token and peak RSS for a GGUF model, as one JSON line, so
//! `scripts/bench-llm.sh` can set it beside llama.cpp on the same input.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use seer_models::device::{self, BackendKind};
use seer_models::generate::{CancelToken, Engine, EngineOptions, Request};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Benchmarks for Seer's models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Language model: load, prefill, decode, TTFT, peak RSS.
    Llm {
        /// GGUF model file.
        #[arg(long)]
        model: PathBuf,
        /// auto, cpu or wgpu.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// CPU threads for the CPU backend.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Text whose first `prompt-tokens` tokens form the prompt.
        #[arg(long)]
        prompt_file: PathBuf,
        /// Prompt length in tokens.
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens to decode (end-of-sequence is ignored).
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Untimed runs first, so kernel compilation (wgpu) is not measured.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
    },
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cli { cmd } = Cli::parse();
    let Cmd::Llm {
        model,
        backend,
        threads,
        prompt_file,
        prompt_tokens,
        gen_tokens,
        warmup,
    } = cmd;
    let backend: BackendKind = backend.parse()?;
    device::set_cpu_threads(threads);
    let opts = EngineOptions {
        backend,
        context_length: prompt_tokens + gen_tokens + 8,
        weights: None,
    };
    let engine =
        Engine::load(&model, &opts).with_context(|| format!("loading {}", model.display()))?;
    let text = std::fs::read_to_string(&prompt_file)
        .with_context(|| format!("reading {}", prompt_file.display()))?;
    let mut ids = engine.tokenizer().encode(&text, true)?;
    if ids.len() < prompt_tokens {
        bail!(
            "{} has only {} tokens; need {prompt_tokens}",
            prompt_file.display(),
            ids.len()
        );
    }
    ids.truncate(prompt_tokens);
    let run = |n: usize| -> Result<_> {
        let mut req = Request::new(ids.clone(), n);
        req.ignore_eos = true;
        Ok(engine.generate(req, CancelToken::new())?.finish()?)
    };
    for _ in 0..warmup {
        run(4)?;
    }
    let out = run(gen_tokens)?;
    let t = &out.timings;
    let json = serde_json::json!({
        "engine": format!("seer/{}", engine.device().kind),
        "adapter": engine.device().description,
        "threads": threads,
        "load_ms": engine.load_time().as_secs_f64() * 1e3,
        "prompt_tokens": t.prompt_tokens,
        "prefill_tok_s": t.prefill_tokens_per_s,
        "ttft_ms": t.time_to_first_token_ms,
        "decode_tokens": t.generated_tokens,
        "decode_tok_s": t.decode_tokens_per_s,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{json}");
    Ok(())
}
