//! `seer transcribe FILE`: speech in a WAV file to text, locally (no daemon):
//! the same VAD → whisper path the listen stage uses.

use anyhow::{Context, Result, bail};
use seer_daemon::config::Config;
use seer_models::speech::{TranscribeOptions, Transcriber};
use seer_models::vad::{Vad, VadOptions};
use seer_pipelines::transcribe::transcribe_clip;
use seer_platform::audio::read_wav;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct TranscribeArgs {
    /// A WAV file (any rate, channel count, 8–32-bit or float samples).
    file: PathBuf,
    /// Whisper model: a catalogue name (`seer models list`) or a ggml file.
    #[arg(long, default_value = "whisper-tiny.en")]
    model: String,
    /// VAD model: a catalogue name or a file; `none` transcribes everything.
    #[arg(long, default_value = "silero-vad")]
    vad: String,
    /// Spoken language (`en`, `de`, …) or `auto`.
    #[arg(long, default_value = "en")]
    language: String,
    /// Translate into English.
    #[arg(long)]
    translate: bool,
    /// Text that primes the decoder (names, jargon).
    #[arg(long)]
    prompt: Option<String>,
    /// Whisper threads (more than 1 is often slower on small boards).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One JSON object per utterance (start_ms, end_ms, text).
    #[arg(long)]
    json: bool,
}

/// A path that exists, else an installed catalogue model.
fn resolve(what: &str, config: &Config) -> Result<PathBuf> {
    let p = Path::new(what);
    if p.exists() {
        return Ok(p.to_owned());
    }
    Ok(config.model.store().resolve(what)?)
}

pub(crate) fn run(args: TranscribeArgs) -> Result<()> {
    let explicit = std::env::var_os("SEER_CONFIG").is_some();
    let config = Config::load(Config::locate(None).as_deref(), explicit)?;
    let model = resolve(&args.model, &config)?;
    let mut vad = match args.vad.as_str() {
        "none" => None,
        v => Some(Vad::load(&resolve(v, &config)?)?),
    };
    let mut whisper = Transcriber::load(&model)?;
    let clip = read_wav(&args.file)?;
    if clip.samples.is_empty() {
        bail!("{}: no audio", args.file.display());
    }
    let opts = TranscribeOptions {
        threads: args.threads,
        language: (args.language != "auto").then(|| args.language.clone()),
        translate: args.translate,
        initial_prompt: args.prompt.clone(),
        ..TranscribeOptions::default()
    };
    // Generous padding: Silero often calls a last fricative ("France") silence.
    let vopts = VadOptions {
        speech_pad_ms: 250,
        ..VadOptions::default()
    };
    let utterances = transcribe_clip(
        &clip.samples,
        vad.as_mut().map(|v| (v, &vopts)),
        &mut whisper,
        &opts,
    )
    .with_context(|| format!("transcribing {}", args.file.display()))?;
    for u in &utterances {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"start_ms": u.start_ms, "end_ms": u.end_ms, "text": u.text, "elapsed_ms": u.elapsed_ms})
            );
        } else {
            println!(
                "[{:>6.2} → {:>6.2}] {}",
                u.start_ms as f64 / 1000.0,
                u.end_ms as f64 / 1000.0,
                u.text
            );
        }
    }
    if utterances.is_empty() {
        eprintln!("seer: no speech in {}", args.file.display());
    }
    Ok(())
}
