//! The loudspeaker: cpal playback on a named or the default output device,
//! fed mono samples at the voice's rate, resampled (rubato) to the device's
//! native rate and copied to all its channels.
//!
//! A [`Playback`] is opened per spoken answer and closed after it, so an
//! output device that disappears between answers is simply opened again
//! next time, and nothing holds the sound card while Seer is silent. The
//! queue between the writer and the audio callback is bounded
//! ([`QUEUE_SECONDS`]): the writer waits for room, the callback never
//! waits. [`Playback::flush`] drops what is queued after a short fade, so a
//! stopped answer goes quiet within one device buffer and without a click.

use crate::audio::AudioError;
use crate::mic::quiet_alsa;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most audio queued ahead of the device. Long enough that the next
/// sentence is synthesised while this one plays (a long sentence is ~6 s),
/// short enough that synthesis does not race far ahead: it would compete
/// with whisper for the CPU just when the wearer interrupts, and a stopped
/// answer wastes what was made. 8 s at 48 kHz is 1.5 MB.
pub const QUEUE_SECONDS: u32 = 8;
/// Length of the fade-out on [`Playback::flush`].
const FADE: Duration = Duration::from_millis(8);
/// A device that takes no audio for this long, with audio queued, is gone.
const STALL: Duration = Duration::from_secs(3);

/// An output device, as `seer devices` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputDevice {
    /// Its name (what `[speech] device` matches).
    pub name: String,
    /// Whether it is the host's default output.
    pub default: bool,
}

/// Output devices of the default host.
pub fn output_devices() -> Result<Vec<OutputDevice>, AudioError> {
    quiet_alsa();
    let host = cpal::default_host();
    let default = host
        .default_output_device()
        .and_then(|d| d.description().ok())
        .map(|d| d.name().to_owned());
    let devices = host
        .output_devices()
        .map_err(|e| AudioError::Device(format!("listing output devices: {e}")))?;
    Ok(devices
        .filter_map(|d| {
            let name = d.description().ok()?.name().to_owned();
            Some(OutputDevice {
                default: default.as_deref() == Some(name.as_str()),
                name,
            })
        })
        .collect())
}

#[derive(Debug, Default)]
struct Queue {
    samples: VecDeque<f32>,
    /// Samples left in a fade-out; the queue is cleared when it ends.
    fading: Option<usize>,
    /// The stream's last reported error. cpal also reports passing
    /// trouble (an xrun, a failed delay query) and plays on, so an error
    /// only ends playback when the device also stops taking audio.
    error: Option<String>,
    /// Samples the device has taken since the last check.
    consumed: u64,
    /// Queued samples that were played (not flushed, not silence).
    played: u64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled whenever the callback takes samples.
    taken: Condvar,
    capacity: usize,
    fade: usize,
    volume: f32,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The audio callback's half: fills `out` (mono) from the queue.
    fn fill(&self, out: &mut [f32]) {
        let mut q = self.lock();
        for o in out.iter_mut() {
            let s = if let Some(left) = q.fading {
                if left == 0 {
                    q.samples.clear();
                    q.fading = None;
                    0.0
                } else {
                    q.fading = Some(left - 1);
                    q.samples.pop_front().unwrap_or(0.0) * left as f32 / self.fade as f32
                }
            } else {
                match q.samples.pop_front() {
                    Some(s) => {
                        q.played += 1;
                        s
                    }
                    None => 0.0,
                }
            };
            *o = s * self.volume;
        }
        q.consumed += out.len() as u64;
        drop(q);
        self.taken.notify_all();
    }
}

/// One spoken answer's playback stream.
pub struct Playback {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    device: String,
    device_rate: u32,
    resampler: Mutex<Option<(Fft<f32>, Vec<f32>)>>,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playback")
            .field("device", &self.device)
            .field("device_rate", &self.device_rate)
            .finish()
    }
}

impl Playback {
    /// Opens the output device whose name contains `device` (or the
    /// default one) for mono audio at `rate` Hz, at `volume` (1 = as is).
    pub fn open(device: Option<&str>, rate: u32, volume: f32) -> Result<Self, AudioError> {
        quiet_alsa();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let want = device.map(str::to_owned);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("speaker".into())
            .spawn(move || stream_thread(want.as_deref(), volume, &tx, &s))
            .map_err(|e| AudioError::Device(format!("starting the playback thread: {e}")))?;
        let (shared, device, device_rate) = match rx.recv() {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(AudioError::Device(e));
            }
            Err(_) => {
                let _ = thread.join();
                return Err(AudioError::Device("the playback thread ended".into()));
            }
        };
        let resampler = if device_rate == rate {
            None
        } else {
            let r = Fft::<f32>::new(
                rate as usize,
                device_rate as usize,
                1024,
                1,
                FixedSync::Input,
            )
            .map_err(|e| {
                AudioError::Convert(format!("resampler {rate} → {device_rate} Hz: {e}"))
            })?;
            Some((r, Vec::new()))
        };
        Ok(Self {
            shared,
            stop,
            thread: Some(thread),
            device,
            device_rate,
            resampler: Mutex::new(resampler),
        })
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The device's rate (what the audio is resampled to).
    pub fn device_rate(&self) -> u32 {
        self.device_rate
    }

    /// Queues `mono` samples (at the rate given to [`Playback::open`]),
    /// waiting for room while `keep_going` says so. Returns early, without
    /// error, once `keep_going` turns false.
    pub fn write(&self, mono: &[f32], keep_going: &dyn Fn() -> bool) -> Result<(), AudioError> {
        let out = match self.resampler().as_mut() {
            None => mono.to_vec(),
            Some((r, pending)) => {
                pending.extend_from_slice(mono);
                resample(r, pending, false)?
            }
        };
        self.queue(&out, keep_going)
    }

    fn resampler(&self) -> MutexGuard<'_, Option<(Fft<f32>, Vec<f32>)>> {
        self.resampler.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues what the resampler still holds (the end of an answer).
    pub fn finish(&self, keep_going: &dyn Fn() -> bool) -> Result<(), AudioError> {
        let out = match self.resampler().as_mut() {
            None => return Ok(()),
            Some((r, pending)) => resample(r, pending, true)?,
        };
        self.queue(&out, keep_going)
    }

    fn queue(&self, mut out: &[f32], keep_going: &dyn Fn() -> bool) -> Result<(), AudioError> {
        let mut q = self.shared.lock();
        let mut last_progress = (q.consumed, Instant::now());
        while !out.is_empty() {
            if !keep_going() {
                return Ok(());
            }
            let room = self.shared.capacity.saturating_sub(q.samples.len());
            if room > 0 && q.fading.is_none() {
                let n = room.min(out.len());
                q.samples.extend(&out[..n]);
                out = &out[n..];
                continue;
            }
            q = self.wait(q, &mut last_progress)?;
        }
        Ok(())
    }

    /// Waits a little for the callback to take samples; a device that
    /// takes nothing for [`STALL`] is an error.
    fn wait<'a>(
        &'a self,
        q: MutexGuard<'a, Queue>,
        last: &mut (u64, Instant),
    ) -> Result<MutexGuard<'a, Queue>, AudioError> {
        let (q, _) = self
            .shared
            .taken
            .wait_timeout(q, Duration::from_millis(50))
            .unwrap_or_else(|p| p.into_inner());
        if q.consumed != last.0 {
            *last = (q.consumed, Instant::now());
        } else if last.1.elapsed() > STALL {
            let why = q
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(AudioError::Device(format!(
                "{}: the output device stopped taking audio{why}",
                self.device
            )));
        }
        Ok(q)
    }

    /// Waits until everything queued has been handed to the device (or
    /// `keep_going` turns false).
    pub fn drain(&self, keep_going: &dyn Fn() -> bool) -> Result<(), AudioError> {
        let mut q = self.shared.lock();
        let mut last_progress = (q.consumed, Instant::now());
        while !q.samples.is_empty() && keep_going() {
            q = self.wait(q, &mut last_progress)?;
        }
        Ok(())
    }

    /// Drops everything queued, after a fade of a few milliseconds.
    pub fn flush(&self) {
        let mut q = self.shared.lock();
        if !q.samples.is_empty() && q.fading.is_none() {
            q.fading = Some(self.shared.fade.min(q.samples.len()));
        }
    }

    /// Seconds of audio played so far (flushed audio does not count).
    pub fn played_seconds(&self) -> f64 {
        self.shared.lock().played as f64 / f64::from(self.device_rate)
    }

    /// Seconds of audio queued and not yet played.
    pub fn queued_seconds(&self) -> f64 {
        self.shared.lock().samples.len() as f64 / f64::from(self.device_rate)
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the resampler over `pending`'s whole chunks (all of it, zero-padded,
/// when `last`).
fn resample(r: &mut Fft<f32>, pending: &mut Vec<f32>, last: bool) -> Result<Vec<f32>, AudioError> {
    let mut out = Vec::new();
    loop {
        let need = r.input_frames_next();
        if pending.len() < need {
            if !last || pending.is_empty() {
                break;
            }
            // The last, partial chunk: padded, and only its share kept.
            let have = pending.len();
            let keep = (have as f64 * r.output_frames_max() as f64 / need as f64).ceil() as usize;
            pending.resize(need, 0.0);
            let chunk = std::mem::take(pending);
            let input = InterleavedSlice::new(&chunk[..], 1, need)
                .map_err(|e| AudioError::Convert(e.to_string()))?;
            let o = r
                .process(&input, None)
                .map_err(|e| AudioError::Convert(format!("resampling: {e}")))?
                .take_data();
            out.extend(&o[..keep.min(o.len())]);
            // The FFT resampler's delay: push silence through so the end of
            // the sentence is heard rather than left inside it.
            let tail = vec![0.0; need];
            let input = InterleavedSlice::new(&tail[..], 1, need)
                .map_err(|e| AudioError::Convert(e.to_string()))?;
            let o = r
                .process(&input, None)
                .map_err(|e| AudioError::Convert(format!("resampling: {e}")))?;
            out.extend(o.take_data());
            break;
        }
        let chunk: Vec<f32> = pending.drain(..need).collect();
        let input = InterleavedSlice::new(&chunk[..], 1, need)
            .map_err(|e| AudioError::Convert(e.to_string()))?;
        let o = r
            .process(&input, None)
            .map_err(|e| AudioError::Convert(format!("resampling: {e}")))?;
        out.extend(o.take_data());
    }
    Ok(out)
}

type Opened = (Arc<Shared>, String, u32);

fn stream_thread(
    want: Option<&str>,
    volume: f32,
    tx: &std::sync::mpsc::SyncSender<Result<Opened, String>>,
    stop: &AtomicBool,
) {
    let (stream, shared) = match open(want, volume) {
        Ok((stream, shared, name, rate)) => {
            if tx.send(Ok((shared.clone(), name, rate))).is_err() {
                return;
            }
            (stream, shared)
        }
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if shared.lock().error.is_some() {
        // A stream whose server vanished can hang in its drop (ALSA's
        // pulse plugin); drop it on a thread of its own.
        let _ = std::thread::Builder::new()
            .name("speaker-close".into())
            .spawn(move || drop(stream));
    } else {
        drop(stream);
    }
}

fn open(
    want: Option<&str>,
    volume: f32,
) -> Result<(cpal::Stream, Arc<Shared>, String, u32), String> {
    let host = cpal::default_host();
    let dev = match want {
        Some(w) => host
            .output_devices()
            .map_err(|e| format!("listing output devices: {e}"))?
            .find(|d| d.description().is_ok_and(|n| n.name().contains(w)))
            .ok_or_else(|| {
                format!("no output device matching {w:?} (`seer devices` lists them)")
            })?,
        None => host
            .default_output_device()
            .ok_or_else(|| "no default output device".to_owned())?,
    };
    let name = dev
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| "?".into());
    let cfg = dev
        .default_output_config()
        .map_err(|e| format!("{name}: {e}"))?;
    let rate = cfg.sample_rate();
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue::default()),
        taken: Condvar::new(),
        capacity: (rate * QUEUE_SECONDS) as usize,
        fade: (rate as usize * FADE.as_millis() as usize / 1000).max(1),
        volume,
    });
    let s = shared.clone();
    let stream = match cfg.sample_format() {
        SampleFormat::F32 => build::<f32>(&dev, cfg.config(), s),
        SampleFormat::I16 => build::<i16>(&dev, cfg.config(), s),
        SampleFormat::I32 => build::<i32>(&dev, cfg.config(), s),
        SampleFormat::U16 => build::<u16>(&dev, cfg.config(), s),
        SampleFormat::U8 => build::<u8>(&dev, cfg.config(), s),
        SampleFormat::I8 => build::<i8>(&dev, cfg.config(), s),
        other => return Err(format!("{name}: sample format {other:?} is not supported")),
    }
    .map_err(|e| format!("{name}: {e}"))?;
    stream.play().map_err(|e| format!("{name}: {e}"))?;
    Ok((stream, shared, name, rate))
}

fn build<T>(
    dev: &cpal::Device,
    cfg: cpal::StreamConfig,
    shared: Arc<Shared>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32> + Send + 'static,
{
    let channels = cfg.channels.max(1) as usize;
    let on_error = shared.clone();
    let mut mono = Vec::new();
    dev.build_output_stream::<T, _, _>(
        cfg,
        move |data: &mut [T], _| {
            mono.resize(data.len() / channels, 0.0);
            shared.fill(&mut mono);
            for (frame, &s) in data.chunks_exact_mut(channels).zip(&mono) {
                frame.fill(T::from_sample(s.clamp(-1.0, 1.0)));
            }
        },
        move |e| {
            tracing::debug!("output stream: {e}");
            on_error.lock().error = Some(e.to_string());
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(samples: &[f32], fade: usize) -> Shared {
        Shared {
            queue: Mutex::new(Queue {
                samples: samples.iter().copied().collect(),
                ..Queue::default()
            }),
            taken: Condvar::new(),
            capacity: 100,
            fade,
            volume: 1.0,
        }
    }

    #[test]
    fn a_flush_fades_out_then_goes_silent() {
        let s = shared(&[1.0; 50], 4);
        s.lock().fading = Some(4);
        let mut out = [9.0; 8];
        s.fill(&mut out);
        assert_eq!(out, [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]);
        assert!(s.lock().samples.is_empty());
    }

    #[test]
    fn an_empty_queue_plays_silence() {
        let s = shared(&[0.5, 0.5], 4);
        let mut out = [9.0; 4];
        s.fill(&mut out);
        assert_eq!(out, [0.5, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn the_resampler_keeps_the_length_and_the_tail() {
        let mut r = Fft::<f32>::new(22050, 48000, 1024, 1, FixedSync::Input).expect("resampler");
        let mut pending = vec![0.1; 22050];
        let mut out = resample(&mut r, &mut pending, false).expect("resample");
        out.extend(resample(&mut r, &mut pending, true).expect("resample tail"));
        // One second in is a bit more than one second out (the delay flushed).
        assert!(
            out.len() >= 48000 && out.len() < 48000 + 4096,
            "{}",
            out.len()
        );
    }
}
