//! `seer say TEXT`: Seer's voice, through the daemon (it plays on the
//! daemon's loudspeaker) or, with `--out`, locally into a WAV file with no
//! daemon.

use anyhow::{Context, Result};
use seer_daemon::config::Config;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub(crate) struct SayArgs {
    /// What to say.
    pub text: String,
    /// Write the audio to this WAV file here instead of playing it through
    /// the daemon (16-bit mono at the voice's rate).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --out: the voice, a catalogue name or an `.onnx` file
    /// (default: the config's `[speech] voice`).
    #[arg(long, requires = "out")]
    pub voice: Option<String>,
}

/// `--out`: synthesises `text` with the voice and writes the WAV.
pub(crate) fn to_file(args: &SayArgs, out: &Path, config: Option<&Path>) -> Result<()> {
    let explicit = config.is_some() || std::env::var_os("SEER_CONFIG").is_some();
    let c = Config::load(Config::locate(config).as_deref(), explicit)?;
    let name = args.voice.clone().unwrap_or_else(|| c.speech.voice.clone());
    let onnx = c.model.resolve_model(&name).with_context(|| {
        format!("voice {name:?} (`seer models pull {name}` installs a catalogue voice)")
    })?;
    let dev = seer_models::device::open(seer_models::device::BackendKind::Cpu)?;
    let voice = seer_models::piper::Voice::load(&onnx, None, &dev.device)?;
    let samples = voice.speak(&args.text)?;
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: voice.sample_rate(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(out, spec)
        .with_context(|| format!("writing {}", out.display()))?;
    for s in &samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    w.finalize()
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!(
        "{}: {:.2} s of audio",
        out.display(),
        samples.len() as f64 / f64::from(voice.sample_rate())
    );
    Ok(())
}
