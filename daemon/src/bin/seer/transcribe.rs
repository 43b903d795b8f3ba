//! `seer transcribe FILE`: speech in a WAV file to text, locally (no daemon):
//! the same VAD → whisper path the listen stage uses.

use anyhow::{Context, Result, bail};
use seer_daemon::config::Config;
use seer_models::speech::{TranscribeOptions, Transcriber};
use seer_models::vad::{Vad, VadOptions};
use seer_pipelines::transcribe::transcribe_clip;
use seer_platform::audio::{RATE, read_wav};
use seer_platform::mic::{MicEvent, Microphone};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct TranscribeArgs {
    /// A WAV file (any rate, channel count, 8–32-bit or float samples).
    #[arg(required_unless_present = "mic")]
    file: Option<PathBuf>,
    /// Record from the microphone instead of reading a file.
    #[arg(long, conflicts_with = "file")]
    mic: bool,
    /// With --mic: seconds to record (counted from the first audio).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// With --mic: the input device whose name contains this (`seer devices`).
    #[arg(long)]
    device: Option<String>,
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

pub(crate) fn run(args: TranscribeArgs) -> Result<()> {
    let explicit = std::env::var_os("SEER_CONFIG").is_some();
    let config = Config::load(Config::locate(None).as_deref(), explicit)?;
    let model = config.model.resolve_model(&args.model)?;
    let mut vad = match args.vad.as_str() {
        "none" => None,
        v => Some(Vad::load(&config.model.resolve_model(v)?)?),
    };
    let mut whisper = Transcriber::load(&model)?;
    let (samples, source) = match &args.file {
        Some(f) => (read_wav(f)?.samples, f.display().to_string()),
        None => (
            record(args.device.clone(), args.seconds)?,
            "the microphone".to_owned(),
        ),
    };
    if samples.is_empty() {
        bail!("{source}: no audio");
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
        &samples,
        vad.as_mut().map(|v| (v, &vopts)),
        &mut whisper,
        &opts,
    )
    .with_context(|| format!("transcribing {source}"))?;
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
        eprintln!("seer: no speech in {source}");
    }
    Ok(())
}

/// Records `seconds` of 16 kHz mono from the microphone, counted from the
/// first frame; device errors are reported and capture keeps retrying until
/// the time (plus 10 s of grace) is up.
fn record(device: Option<String>, seconds: f64) -> Result<Vec<f32>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(256);
    let mic = Microphone::start(device, tx)?;
    let want = (seconds * RATE as f64) as usize;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 10.0);
    let mut samples = Vec::with_capacity(want);
    while samples.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the microphone delivered only {} ms of audio",
                samples.len() * 1000 / RATE as usize
            );
        }
        match rx.recv_timeout(left) {
            Ok(MicEvent::Started {
                device,
                rate,
                channels,
            }) => {
                eprintln!("seer: capturing from {device} ({rate} Hz, {channels} ch)")
            }
            Ok(MicEvent::Frame(f)) => {
                if samples.is_empty() {
                    eprintln!("seer: recording {seconds} s");
                }
                samples.extend(f);
            }
            Ok(MicEvent::Error(e)) => eprintln!("seer: microphone: {e}; retrying"),
            Err(_) => {}
        }
    }
    drop(mic);
    Ok(samples)
}
