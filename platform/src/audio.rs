//! Audio: conversion to 16 kHz mono and WAV files as frame streams.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

/// The rate every stage downstream works at (whisper and Silero's).
pub const RATE: u32 = 16_000;

/// Samples per frame: 32 ms, one Silero VAD window.
pub const FRAME: usize = 512;

/// What can go wrong reading audio.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file cannot be read, or is not a WAV file we understand.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why (names the format detail where it is one).
        reason: String,
    },
    /// The audio cannot be converted (zero rate or channels, …).
    #[error("audio conversion: {0}")]
    Convert(String),
    /// An audio device cannot be listed or opened.
    #[error("audio device: {0}")]
    Device(String),
}

/// A whole clip, converted.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// 16 kHz mono samples in [-1, 1].
    pub samples: Vec<f32>,
    /// The source's rate.
    pub source_rate: u32,
    /// The source's channel count.
    pub source_channels: u16,
}

impl Clip {
    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / RATE as u64
    }
}

/// Interleaved samples at `rate` with `channels` channels → 16 kHz mono
/// (channels averaged, then resampled with rubato's FFT resampler).
pub fn to_mono_16k(interleaved: &[f32], channels: u16, rate: u32) -> Result<Vec<f32>, AudioError> {
    if channels == 0 || rate == 0 {
        return Err(AudioError::Convert(format!(
            "{channels} channels at {rate} Hz"
        )));
    }
    let ch = channels as usize;
    let mono: Vec<f32> = interleaved
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    if rate == RATE || mono.is_empty() {
        return Ok(mono);
    }
    let mut rs = Fft::<f32>::new(rate as usize, RATE as usize, 1024, 1, FixedSync::Input)
        .map_err(|e| AudioError::Convert(format!("resampler for {rate} Hz: {e}")))?;
    let input = InterleavedSlice::new(&mono[..], 1, mono.len())
        .map_err(|e| AudioError::Convert(e.to_string()))?;
    let out = rs
        .process_all(&input, mono.len(), None)
        .map_err(|e| AudioError::Convert(format!("resampling from {rate} Hz: {e}")))?;
    Ok(out.take_data())
}

/// Reads a WAV file (8/16/24/32-bit integer or 32-bit float, any rate and
/// channel count) as 16 kHz mono.
pub fn read_wav(path: &Path) -> Result<Clip, AudioError> {
    let bad = |reason: String| AudioError::File {
        path: path.to_owned(),
        reason,
    };
    let mut r = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = r.spec();
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?,
        hound::SampleFormat::Int => {
            if !(1..=32).contains(&spec.bits_per_sample) {
                return Err(bad(format!("{}-bit samples", spec.bits_per_sample)));
            }
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?
        }
    };
    let samples = to_mono_16k(&interleaved, spec.channels, spec.sample_rate)
        .map_err(|e| bad(e.to_string()))?;
    Ok(Clip {
        samples,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
    })
}

/// Writes 16 kHz mono `samples` as a 16-bit WAV file (the listen stage's
/// debug dump; audio is never written anywhere else).
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<(), AudioError> {
    let bad = |e: hound::Error| AudioError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(bad)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * i16::MAX as f32) as i16)
            .map_err(bad)?;
    }
    w.finalize().map_err(bad)
}

/// How fast a [`WavSource`] delivers its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// One frame every 32 ms, like a microphone.
    RealTime,
    /// As fast as the receiver takes them.
    Fast,
}

/// A WAV file played as a stream of 16 kHz mono frames of [`FRAME`]
/// samples (the last one zero-padded), over a bounded channel.
#[derive(Debug, Clone)]
pub struct WavSource {
    clip: Clip,
    pace: Pace,
}

impl WavSource {
    /// Reads and converts `path`.
    pub fn open(path: &Path, pace: Pace) -> Result<Self, AudioError> {
        Ok(Self {
            clip: read_wav(path)?,
            pace,
        })
    }

    /// The converted clip.
    pub fn clip(&self) -> &Clip {
        &self.clip
    }

    /// Sends every frame to `tx` on the calling thread; stops early (false)
    /// when the receiver is gone.
    pub fn play(&self, tx: &SyncSender<Vec<f32>>) -> bool {
        let t0 = Instant::now();
        for (i, chunk) in self.clip.samples.chunks(FRAME).enumerate() {
            if self.pace == Pace::RealTime {
                let due = t0 + Duration::from_micros((i * FRAME) as u64 * 1_000_000 / RATE as u64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let mut frame = chunk.to_vec();
            frame.resize(FRAME, 0.0);
            if tx.send(frame).is_err() {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, secs: f32, channels: u16) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .flat_map(|i| {
                let v = (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5;
                std::iter::repeat_n(v, channels as usize)
            })
            .collect()
    }

    /// Dominant frequency by counting zero crossings.
    fn pitch(s: &[f32]) -> f32 {
        let crossings = s.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        crossings as f32 * RATE as f32 / s.len() as f32
    }

    #[test]
    fn any_rate_and_channels_become_16k_mono_with_pitch_and_length_kept() {
        for (rate, ch) in [
            (44_100, 2),
            (48_000, 1),
            (22_050, 1),
            (8_000, 2),
            (16_000, 2),
        ] {
            let out = to_mono_16k(&sine(rate, 440.0, 1.0, ch), ch, rate).expect("convert");
            assert!(
                (out.len() as i64 - 16_000).abs() <= 16,
                "{rate} Hz: {} samples",
                out.len()
            );
            let p = pitch(&out[1000..out.len() - 1000]);
            assert!((p - 440.0).abs() < 5.0, "{rate} Hz x{ch}: pitch {p}");
        }
        assert!(to_mono_16k(&[0.0; 4], 0, 16_000).is_err());
    }

    #[test]
    fn wav_files_of_several_formats_read_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = sine(22_050, 300.0, 0.5, 2);
        let p16 = dir.path().join("s16.wav");
        let mut w = hound::WavWriter::create(
            &p16,
            hound::WavSpec {
                channels: 2,
                sample_rate: 22_050,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
        )
        .expect("create");
        for v in &src {
            w.write_sample((v * 32767.0) as i16).expect("write");
        }
        w.finalize().expect("finalize");
        let pf = dir.path().join("f32.wav");
        let mut w = hound::WavWriter::create(
            &pf,
            hound::WavSpec {
                channels: 2,
                sample_rate: 22_050,
                bits_per_sample: 32,
                sample_format: hound::SampleFormat::Float,
            },
        )
        .expect("create");
        for v in &src {
            w.write_sample(*v).expect("write");
        }
        w.finalize().expect("finalize");
        let a = read_wav(&p16).expect("s16");
        let b = read_wav(&pf).expect("f32");
        assert_eq!((a.source_rate, a.source_channels), (22_050, 2));
        assert_eq!(a.samples.len(), b.samples.len());
        let diff = a
            .samples
            .iter()
            .zip(&b.samples)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "{diff}");
        assert!((a.duration_ms() as i64 - 500).abs() <= 2);

        // A frame stream: fixed-size frames covering the clip.
        let src = WavSource::open(&p16, Pace::Fast).expect("open");
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let n = src.clip().samples.len();
        let t = std::thread::spawn(move || src.play(&tx));
        let frames: Vec<Vec<f32>> = rx.iter().collect();
        assert!(t.join().expect("join"));
        assert!(frames.iter().all(|f| f.len() == FRAME));
        assert_eq!(frames.len(), n.div_ceil(FRAME));

        let bad = dir.path().join("bad.wav");
        std::fs::write(&bad, b"RIFF....not really").expect("write");
        let e = read_wav(&bad).expect_err("garbage").to_string();
        assert!(e.contains("bad.wav"), "{e}");
    }
}
