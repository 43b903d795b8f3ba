//! The microphone: cpal capture on a named or the default input device,
//! any native rate/format/channel count, delivered as 16 kHz mono frames of
//! [`FRAME`] samples over a bounded channel.
//!
//! The cpal stream lives on a thread of its own (cpal streams are not
//! `Send`). A device error, or a device that cannot be opened, is reported
//! as [`MicEvent::Error`] and capture is retried with a growing delay, so a
//! microphone that is unplugged and comes back resumes by itself. Frames
//! that the consumer does not take in time are dropped (and counted), never
//! queued without bound.

use crate::audio::{AudioError, FRAME, RATE};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

/// What the microphone reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MicEvent {
    /// Capture (re)started on this device, at its native format.
    Started {
        /// The device's name.
        device: String,
        /// Its rate.
        rate: u32,
        /// Its channels.
        channels: u16,
    },
    /// [`FRAME`] samples at 16 kHz mono.
    Frame(Vec<f32>),
    /// The device failed or is missing; capture is retried.
    Error(String),
}

/// An input device, as `seer devices` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputDevice {
    /// Its name (what `device` matches).
    pub name: String,
    /// Whether it is the host's default input.
    pub default: bool,
    /// Its supported configurations, e.g. "1-2 ch, 8000-192000 Hz, i16".
    pub configs: Vec<String>,
}

/// Input devices of the default host.
pub fn input_devices() -> Result<Vec<InputDevice>, AudioError> {
    quiet_alsa();
    let host = cpal::default_host();
    let default = host
        .default_input_device()
        .and_then(|d| d.description().ok())
        .map(|d| d.name().to_owned());
    let devices = host
        .input_devices()
        .map_err(|e| AudioError::Device(format!("listing input devices: {e}")))?;
    Ok(devices
        .filter_map(|d| {
            let name = d.description().ok()?.name().to_owned();
            let configs = d
                .supported_input_configs()
                .map(|cs| {
                    cs.map(|c| {
                        format!(
                            "{} ch, {}-{} Hz, {:?}",
                            c.channels(),
                            c.min_sample_rate(),
                            c.max_sample_rate(),
                            c.sample_format()
                        )
                    })
                    .collect()
                })
                .unwrap_or_default();
            Some(InputDevice {
                default: default.as_deref() == Some(name.as_str()),
                name,
                configs,
            })
        })
        .collect())
}

/// A running capture; dropping it stops the stream (the device is closed,
/// not just ignored: that is what the privacy switch relies on).
#[derive(Debug)]
pub struct Microphone {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Microphone {
    /// Starts capturing from the input device whose name contains `device`
    /// (or the default one) into `tx`.
    pub fn start(device: Option<String>, tx: SyncSender<MicEvent>) -> Result<Self, AudioError> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("microphone".into())
            .spawn(move || capture_loop(device, tx, s))
            .map_err(|e| AudioError::Device(format!("starting the capture thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Microphone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Routes ALSA's own error messages (`ALSA lib pcm.c:… Unknown PCM …`,
/// a dozen on every retry on a board with no sound card) into the log at
/// debug level (`RUST_LOG=alsa=debug`) instead of stderr. The daemon logs
/// one line per change of the microphone's state instead.
pub fn quiet_alsa() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: sets a process-wide handler once; the handler only formats
    // into a stack buffer and calls `seer_alsa_message`.
    ONCE.call_once(|| unsafe {
        seer_alsa_quiet();
    });
}

unsafe extern "C" {
    fn seer_alsa_quiet() -> std::ffi::c_int;
}

/// Called by the C handler (src/alsa_quiet.c) with ALSA's formatted message.
#[unsafe(no_mangle)]
extern "C" fn seer_alsa_message(
    file: *const std::ffi::c_char,
    line: std::ffi::c_int,
    text: *const std::ffi::c_char,
) {
    let show = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: ALSA passes NUL-terminated strings (or null).
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        }
    };
    tracing::debug!(target: "alsa", "{}:{line}: {}", show(file), show(text));
}

/// Silence from the device this long means it is gone.
const STALL: Duration = Duration::from_secs(2);
/// How long a freshly opened device may take to deliver anything.
const FIRST_DATA: Duration = Duration::from_secs(10);

enum Raw {
    Data(Vec<f32>),
    Error(String),
}

/// After failing this long, the microphone is retried only every [`SLOW_RETRY`].
const GIVE_UP_FAST: Duration = Duration::from_secs(60);
/// The retry interval of a microphone that has been failing for a while.
const SLOW_RETRY: Duration = Duration::from_secs(30);

fn capture_loop(device: Option<String>, tx: SyncSender<MicEvent>, stop: Arc<AtomicBool>) {
    quiet_alsa();
    let mut backoff = Duration::from_millis(250);
    let mut failing_since: Option<std::time::Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        match open(device.as_deref()) {
            Ok((stream, raw, name, rate, channels)) => {
                let opened = std::time::Instant::now();
                if tx
                    .send(MicEvent::Started {
                        device: name,
                        rate,
                        channels,
                    })
                    .is_err()
                {
                    return;
                }
                let err = run(&raw, rate, &tx, &stop);
                // Only a stream that ran a while earns a quick retry: one
                // that opens and then stalls again keeps backing off.
                if opened.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(250);
                    failing_since = None;
                }
                if err.is_some() {
                    // A stream whose server vanished can hang in its drop
                    // (ALSA's pulse plugin deadlocks in the cpal thread);
                    // drop it elsewhere so capture can be retried now.
                    let _ = std::thread::Builder::new()
                        .name("microphone-close".into())
                        .spawn(move || drop(stream));
                } else {
                    drop(stream);
                }
                match err {
                    Some(e) => {
                        if tx.send(MicEvent::Error(e)).is_err() {
                            return;
                        }
                    }
                    None => return,
                }
            }
            Err(e) => {
                if tx.send(MicEvent::Error(e)).is_err() {
                    return;
                }
            }
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // A device that keeps failing is retried every few seconds at
        // first (a restarting sound server), then twice a minute (a board
        // with no sound card should not spin).
        failing_since.get_or_insert_with(std::time::Instant::now);
        let cap = if failing_since.is_some_and(|t| t.elapsed() > GIVE_UP_FAST) {
            SLOW_RETRY
        } else {
            Duration::from_secs(5)
        };
        backoff = (backoff * 2).min(cap);
    }
}

type Opened = (cpal::Stream, Receiver<Raw>, String, u32, u16);

fn open(want: Option<&str>) -> Result<Opened, String> {
    let host = cpal::default_host();
    let dev = match want {
        Some(w) => host
            .input_devices()
            .map_err(|e| format!("listing input devices: {e}"))?
            .find(|d| d.description().is_ok_and(|n| n.name().contains(w)))
            .ok_or_else(|| format!("no input device matching {w:?} (`seer devices` lists them)"))?,
        None => host
            .default_input_device()
            .ok_or_else(|| "no default input device".to_owned())?,
    };
    let name = dev
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| "?".into());
    let cfg = dev
        .default_input_config()
        .map_err(|e| format!("{name}: {e}"))?;
    let (rate, channels) = (cfg.sample_rate(), cfg.channels());
    let (tx, rx) = sync_channel::<Raw>(256);
    let stream = match cfg.sample_format() {
        SampleFormat::F32 => build::<f32>(&dev, cfg.config(), tx),
        SampleFormat::I16 => build::<i16>(&dev, cfg.config(), tx),
        SampleFormat::I32 => build::<i32>(&dev, cfg.config(), tx),
        SampleFormat::U16 => build::<u16>(&dev, cfg.config(), tx),
        SampleFormat::U8 => build::<u8>(&dev, cfg.config(), tx),
        SampleFormat::I8 => build::<i8>(&dev, cfg.config(), tx),
        other => return Err(format!("{name}: sample format {other:?} is not supported")),
    }
    .map_err(|e| format!("{name}: {e}"))?;
    stream.play().map_err(|e| format!("{name}: {e}"))?;
    Ok((stream, rx, name, rate, channels))
}

fn build<T>(
    dev: &cpal::Device,
    cfg: cpal::StreamConfig,
    tx: SyncSender<Raw>,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let channels = cfg.channels.max(1) as usize;
    let etx = tx.clone();
    dev.build_input_stream::<T, _, _>(
        cfg,
        move |data: &[T], _| {
            // Down-mixed here; the audio thread never blocks on the consumer.
            let mono = data
                .chunks_exact(channels)
                .map(|f| f.iter().map(|s| f32::from_sample(*s)).sum::<f32>() / channels as f32)
                .collect();
            let _ = tx.try_send(Raw::Data(mono));
        },
        move |e| {
            let _ = etx.try_send(Raw::Error(e.to_string()));
        },
        None,
    )
}

/// Resamples and frames until the stream fails (`Some(error)`) or `stop`.
fn run(
    raw: &Receiver<Raw>,
    rate: u32,
    tx: &SyncSender<MicEvent>,
    stop: &AtomicBool,
) -> Option<String> {
    let mut rs = if rate == RATE {
        None
    } else {
        match Fft::<f32>::new(rate as usize, RATE as usize, 1024, 1, FixedSync::Input) {
            Ok(r) => Some(r),
            Err(e) => return Some(format!("resampler for {rate} Hz: {e}")),
        }
    };
    let mut pending: Vec<f32> = Vec::new();
    let mut out: Vec<f32> = Vec::new();
    let mut dropped = 0u64;
    let mut last_data = std::time::Instant::now();
    let mut got_data = false;
    while !stop.load(Ordering::SeqCst) {
        let msg = match raw.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // A capture device delivers audio (silence included) all
                // the time; one that goes quiet has gone away without
                // telling (a sound server killed under ALSA's pulse plugin
                // blocks the stream instead of failing it).
                // A device may take a while to deliver its first period
                // (PulseAudio took ~1.8 s here); after that, gaps are short.
                let limit = if got_data { STALL } else { FIRST_DATA };
                if last_data.elapsed() >= limit {
                    return Some(format!(
                        "no audio for {} s: the device or sound server went away",
                        limit.as_secs()
                    ));
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Some("the capture stream ended".into());
            }
        };
        let data = match msg {
            Raw::Data(d) => {
                last_data = std::time::Instant::now();
                got_data = true;
                d
            }
            Raw::Error(e) => return Some(e),
        };
        match rs.as_mut() {
            None => out.extend(data),
            Some(r) => {
                pending.extend(data);
                loop {
                    let need = r.input_frames_next();
                    if pending.len() < need {
                        break;
                    }
                    let chunk: Vec<f32> = pending.drain(..need).collect();
                    let Ok(input) = InterleavedSlice::new(&chunk[..], 1, need) else {
                        break;
                    };
                    match r.process(&input, None) {
                        Ok(o) => out.extend(o.take_data()),
                        Err(e) => return Some(format!("resampling: {e}")),
                    }
                }
            }
        }
        while out.len() >= FRAME {
            let frame: Vec<f32> = out.drain(..FRAME).collect();
            match tx.try_send(MicEvent::Frame(frame)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(dropped, "audio frames dropped: the consumer is too slow");
                    }
                }
                Err(TrySendError::Disconnected(_)) => return None,
            }
        }
    }
    None
}
