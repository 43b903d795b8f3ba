//! `seer-bench`: prints load time, prefill and decode throughput, time to first
//! token and peak RSS for a GGUF model (`llm`), or vision-encoder time per
//! tile and time to first answer token for a photo (`vlm`), as one JSON
//! line, so `scripts/bench-llm.sh` and `scripts/bench-vlm.sh` can set it
//! beside llama.cpp on the same input. `tts` times a Piper voice (real-time
//! factor, first audio) for `scripts/bench-tts.sh` to set beside onnxruntime.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use seer_cancel::CancelToken;
use seer_models::device::{self, BackendKind};
use seer_models::generate::{Engine, EngineOptions, Request, VlmFiles};
use seer_models::llama;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Benchmarks for Seer's models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `seer-bench llm`.
#[derive(clap::Args)]
struct LlmArgs {
    /// GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// auto, cpu or wgpu.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// CPU threads for the CPU backend.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Text whose first `prompt-tokens` tokens form the prompt (repeated
    /// when it is shorter).
    #[arg(long)]
    prompt_file: PathBuf,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to decode (end-of-sequence is ignored).
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Also time the fused CPU step phase by phase (matrix products,
    /// attention, norms…) and print milliseconds per decoded token.
    #[arg(long)]
    profile: bool,
    /// Untimed runs first, so kernel compilation (wgpu) is not measured.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Language model: load, prefill, decode, TTFT, peak RSS.
    Llm(LlmArgs),
    /// Vision-language model: encoder ms per tile, TTFT for one photo, peak RSS.
    Vlm {
        /// HF SmolVLM directory, or the decoder GGUF (with --mmproj).
        #[arg(long)]
        model: PathBuf,
        /// llama.cpp's mmproj GGUF when --model is a GGUF.
        #[arg(long)]
        mmproj: Option<PathBuf>,
        /// The photo.
        #[arg(long)]
        image: PathBuf,
        /// The question.
        #[arg(long, default_value = "What is in this image?")]
        question: String,
        /// Tiles plus a global view instead of one squashed tile.
        #[arg(long)]
        tiling: bool,
        /// auto, cpu or wgpu.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// CPU threads for the CPU backend.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Tokens to decode (end-of-sequence is ignored).
        #[arg(long, default_value_t = 16)]
        gen_tokens: usize,
        /// Untimed runs first (wgpu compiles its kernels on first use).
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Timed runs; medians are printed.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Piper voice: real-time factor and time to the first sentence's audio.
    Tts {
        /// The voice's `.onnx` (its `.onnx.json` beside it).
        #[arg(long)]
        voice: PathBuf,
        /// Text to speak, one or more sentences.
        #[arg(long)]
        text: String,
        /// auto, cpu or wgpu.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// CPU threads for the CPU backend.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Noise off (scales 0, length, 0): repeatable output.
        #[arg(long)]
        no_noise: bool,
        /// Write the audio of the last run here (16-bit WAV).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Untimed runs first.
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Timed runs; medians are printed.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

/// `seer-bench tts`.
#[allow(clippy::too_many_arguments)]
fn bench_tts(
    voice: PathBuf,
    text: String,
    backend: BackendKind,
    threads: usize,
    no_noise: bool,
    out: Option<PathBuf>,
    warmup: usize,
    runs: usize,
) -> Result<()> {
    use seer_models::piper::{Scales, Voice};
    let dev = device::open(backend)?;
    let t0 = Instant::now();
    let v = Voice::load(&voice, None, &dev.device)
        .with_context(|| format!("loading {}", voice.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut scales = v.config().scales;
    if no_noise {
        scales = Scales {
            noise: 0.0,
            noise_w: 0.0,
            ..scales
        };
    }
    let (mut phon, mut first, mut rtf) = (Vec::new(), Vec::new(), Vec::new());
    let mut audio = Vec::new();
    let mut sentences = 0;
    for i in 0..warmup + runs {
        let t0 = Instant::now();
        let ids = v.ids(&text)?;
        let phon_ms = t0.elapsed().as_secs_f64() * 1e3;
        sentences = ids.len();
        audio.clear();
        let mut first_ms = f64::NAN;
        for (n, s) in ids.iter().enumerate() {
            audio.extend(v.synthesize_ids(s, scales)?.samples);
            if n == 0 {
                first_ms = t0.elapsed().as_secs_f64() * 1e3;
            }
        }
        let total = t0.elapsed().as_secs_f64();
        if i >= warmup {
            phon.push(phon_ms);
            first.push(first_ms);
            rtf.push(total / (audio.len() as f64 / f64::from(v.sample_rate())));
        }
    }
    if let Some(path) = &out {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: v.sample_rate(),
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec)
            .with_context(|| format!("writing {}", path.display()))?;
        for s in &audio {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        w.finalize()?;
    }
    let json = serde_json::json!({
        "engine": format!("seer/{}", dev.kind),
        "threads": threads,
        "load_ms": load_ms,
        "sentences": sentences,
        "audio_s": audio.len() as f64 / f64::from(v.sample_rate()),
        "phonemize_ms": median(phon),
        "first_audio_ms": median(first),
        "rtf": median(rtf),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{json}");
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[allow(clippy::too_many_arguments)]
fn bench_vlm(
    model: PathBuf,
    mmproj: Option<PathBuf>,
    image: PathBuf,
    question: String,
    tiling: bool,
    backend: BackendKind,
    threads: usize,
    gen_tokens: usize,
    warmup: usize,
    runs: usize,
) -> Result<()> {
    let files = match mmproj {
        Some(mmproj) => VlmFiles::GgufPair { model, mmproj },
        None => VlmFiles::HfDir(model),
    };
    let opts = EngineOptions {
        backend,
        context_length: 4096,
        weights: None,
    };
    let engine =
        Engine::load_vlm(&files, &opts, tiling).with_context(|| format!("loading {files:?}"))?;
    let photo = image::open(&image)
        .with_context(|| format!("reading {}", image.display()))?
        .to_rgb8();
    let vision = engine.vision().context("not a vision-language model")?;
    let (mut pre, mut enc, mut ttft, mut prefill, mut decode) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut tiles = 0;
    let mut prompt_tokens = 0;
    for i in 0..warmup + runs {
        // The processor alone, then the tower alone (one batch of all tiles).
        let t0 = Instant::now();
        let prepared = vision.prepare(&photo);
        let pre_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        let f = vision.encode(&[&prepared])?;
        let _ = f.into_data();
        let enc_ms = t0.elapsed().as_secs_f64() * 1e3;
        // The whole turn: processor, tower, merge, prefill, first token, decode.
        let prompt = engine.image_prompt(&[], &question, &photo)?;
        tiles = prompt.tiles;
        prompt_tokens = prompt.ids.len();
        let mut req = Request::with_image(prompt, gen_tokens);
        req.ignore_eos = true;
        let out = engine.generate(req, CancelToken::new())?.finish()?;
        if i >= warmup {
            let t = &out.timings;
            pre.push(pre_ms);
            enc.push(enc_ms / tiles as f64);
            ttft.push(t.image_encode_ms + t.time_to_first_token_ms);
            prefill.push(t.prefill_tokens_per_s);
            decode.push(t.decode_tokens_per_s);
        }
    }
    let json = serde_json::json!({
        "engine": format!("seer/{}", engine.device().kind),
        "adapter": engine.device().description,
        "threads": threads,
        "load_ms": engine.load_time().as_secs_f64() * 1e3,
        "image": image,
        "tiling": tiling,
        "tiles": tiles,
        "tile_px": vision.processor().tile,
        "prompt_tokens": prompt_tokens,
        "preprocess_ms": median(pre),
        "encoder_ms_per_tile": median(enc),
        "ttft_ms": median(ttft),
        "prefill_tok_s": median(prefill),
        "decode_tok_s": median(decode),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{json}");
    Ok(())
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
    let LlmArgs {
        model,
        backend,
        threads,
        prompt_file,
        prompt_tokens,
        gen_tokens,
        profile,
        warmup,
    } = match cmd {
        Cmd::Llm(args) => args,
        Cmd::Vlm {
            model,
            mmproj,
            image,
            question,
            tiling,
            backend,
            threads,
            gen_tokens,
            warmup,
            runs,
        } => {
            device::set_cpu_threads(threads);
            return bench_vlm(
                model,
                mmproj,
                image,
                question,
                tiling,
                backend.parse()?,
                threads,
                gen_tokens,
                warmup,
                runs.max(1),
            );
        }
        Cmd::Tts {
            voice,
            text,
            backend,
            threads,
            no_noise,
            out,
            warmup,
            runs,
        } => {
            device::set_cpu_threads(threads);
            return bench_tts(
                voice,
                text,
                backend.parse()?,
                threads,
                no_noise,
                out,
                warmup,
                runs.max(1),
            );
        }
    };
    let backend: BackendKind = backend.parse()?;
    device::set_cpu_threads(threads);
    let opts = EngineOptions {
        backend,
        context_length: prompt_tokens + gen_tokens + 8,
        weights: None,
    };
    let mut engine =
        Engine::load(&model, &opts).with_context(|| format!("loading {}", model.display()))?;
    // Every run prefills the whole prompt, as llama-bench does.
    engine.set_prompt_reuse(false);
    let text = std::fs::read_to_string(&prompt_file)
        .with_context(|| format!("reading {}", prompt_file.display()))?;
    let once = engine.tokenizer().encode(&text, true)?;
    if once.is_empty() {
        bail!("{} has no tokens", prompt_file.display());
    }
    // A prompt longer than the file (long-context runs) repeats its text.
    let mut ids = Vec::with_capacity(prompt_tokens);
    while ids.len() < prompt_tokens {
        ids.extend_from_slice(&once);
    }
    ids.truncate(prompt_tokens);
    let run = |n: usize| -> Result<_> {
        let mut req = Request::new(ids.clone(), n);
        req.ignore_eos = true;
        Ok(engine.generate(req, CancelToken::new())?.finish()?)
    };
    // The first run after loading pays for compiling (and, on wgpu,
    // autotuning) every kernel shape unless the kernel cache holds them.
    let mut first_run_ms = None;
    for _ in 0..warmup {
        let t0 = Instant::now();
        run(4)?;
        first_run_ms.get_or_insert(t0.elapsed().as_secs_f64() * 1e3);
    }
    // A separate, profiled run: the timers start after the prefill (the
    // first piece of text), so they cover decoding.
    let phases = if profile {
        let mut req = Request::new(ids.clone(), gen_tokens);
        req.ignore_eos = true;
        let mut g = engine.generate(req, CancelToken::new())?;
        g.next().transpose()?;
        let before = g.timings().generated_tokens;
        llama::profile::set_profiling(true);
        let t0 = Instant::now();
        let out = g.finish()?;
        let wall = t0.elapsed().as_secs_f64() * 1e3;
        let phases = llama::profile::profile();
        llama::profile::set_profiling(false);
        Some((phases, out.timings.generated_tokens - before, wall))
    } else {
        None
    };
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
        "fused_cpu_step": engine.model().is_fused(),
        "first_run_ms": first_run_ms,
        "kernel_cache": device::kernel_cache_dir(),
    });
    if let Some((phases, steps, wall)) = phases {
        let per = |ms: f64| ms / steps.max(1) as f64;
        eprintln!("decode phase profile, ms per token over {steps} tokens ({wall:.0} ms):");
        let mut sum = 0.0;
        for (name, ms) in &phases {
            sum += ms;
            eprintln!("  {name:<16} {:8.3}  {:5.1}%", per(*ms), 100.0 * ms / wall);
        }
        eprintln!(
            "  {:<16} {:8.3}  {:5.1}%  (sampling, detokenising: outside the step)",
            "other",
            per(wall - sum),
            100.0 * (wall - sum) / wall
        );
        let map: serde_json::Map<String, serde_json::Value> = phases
            .into_iter()
            .map(|(n, ms)| (n.to_owned(), serde_json::json!(ms)))
            .collect();
        println!(
            "{}",
            serde_json::json!({"profile_ms": map, "wall_ms": wall, "tokens": steps})
        );
    }
    println!("{json}");
    Ok(())
}
