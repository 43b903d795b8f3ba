//! The speech stage: an answer's text, as it streams, spoken by the Piper
//! voice through the loudspeaker.
//!
//! One dedicated thread owns the voice (synthesis is compute; it never
//! runs on the async executor) and speaks one utterance at a time. An
//! [`Utterance`] is fed deltas; [`Sentences`] cuts them into sentences,
//! which travel over a bounded channel to the thread. The thread
//! synthesises sentence N+1 while N plays: playback has its own bounded
//! queue ([`seer_platform::speaker::QUEUE_SECONDS`]) drained by the audio
//! callback. Stopping (a `stop`, a new question, a barge-in) cancels the
//! utterance and flushes the queue from the caller's thread at once, with a
//! few milliseconds of fade, so silence does not wait for a sentence being
//! synthesised.
//!
//! The state bus shows `speaking` from the first sample until the queue has
//! played out.

pub mod sentences;

pub use sentences::Sentences;

use crate::state::{State, StateBus};
use seer_cancel::CancelToken;
use seer_models::error::ModelError;
use seer_models::piper::{Scales, Voice};
use seer_platform::speaker::Playback;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Sentences one utterance may have waiting for synthesis. An answer is
/// bounded by its token limit, so this is never reached by a real answer;
/// beyond it sentences are dropped with a warning rather than queued
/// without bound.
const SENTENCE_QUEUE: usize = 256;
/// How long the stream stays open after the queue has played out: the
/// device and sound server buffer some audio of their own.
const DEVICE_TAIL: Duration = Duration::from_millis(300);
/// Utterances waiting for the thread (each one cancels the one before).
const JOB_QUEUE: usize = 8;

/// How the voice is played.
#[derive(Debug, Clone)]
pub struct SpeechOptions {
    /// Output device name (substring), `None` for the default.
    pub device: Option<String>,
    /// Gain, 0-2 (1 = as synthesised).
    pub volume: f32,
    /// Piper's `length_scale` (above 1 is slower); `None` keeps the
    /// voice's own.
    pub length_scale: Option<f32>,
    /// Speaking rate on top of that: the length scale is divided by it.
    pub rate: f32,
    /// Let the first sentence end at a comma, to start speaking sooner.
    pub cut_first_clause: bool,
}

impl Default for SpeechOptions {
    fn default() -> Self {
        Self {
            device: None,
            volume: 1.0,
            length_scale: None,
            rate: 1.0,
            cut_first_clause: true,
        }
    }
}

/// Why an utterance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Everything was spoken.
    Done,
    /// Stopped: `stop`, a new question, a barge-in, speech turned off.
    Cancelled,
    /// The voice or the output device failed; the message says which.
    Failed(String),
}

impl EndReason {
    /// The wire name (`done`, `cancelled`, `error`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Cancelled => "cancelled",
            Self::Failed(_) => "error",
        }
    }
}

/// What an utterance reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SpeechEvent {
    /// The first audio went to the device.
    Started {
        /// The voice's sample rate.
        sample_rate: u32,
        /// When the first sentence was complete → first audio queued.
        first_audio_ms: u64,
    },
    /// The utterance is over (played out, stopped or failed).
    Ended {
        /// Why.
        reason: EndReason,
        /// Seconds of audio played (what was cut off does not count).
        audio_s: f64,
    },
}

enum Text {
    Sentence(String, Instant),
    End,
}

struct Job {
    text: std_mpsc::Receiver<Text>,
    cancel: CancelToken,
    events: mpsc::Sender<SpeechEvent>,
}

/// What the caller's thread needs to stop the utterance being spoken.
#[derive(Default)]
struct Current {
    cancel: Option<CancelToken>,
    playback: Option<Arc<Playback>>,
}

/// The speech stage. Cheap to share behind an `Arc`.
pub struct Speaker {
    jobs: std_mpsc::SyncSender<Job>,
    current: Arc<Mutex<Current>>,
    cut_first_clause: bool,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").finish_non_exhaustive()
    }
}

/// Loads the voice on the speech thread (a second or so for a medium
/// voice), so start-up does not wait for it.
pub type VoiceLoader = Box<dyn FnOnce() -> Result<Voice, ModelError> + Send>;

impl Speaker {
    /// Starts the speech thread; the voice is loaded there. A voice that
    /// fails to load is logged once and makes every utterance end with
    /// that error (the daemon keeps answering in text).
    pub fn start(load: VoiceLoader, opts: SpeechOptions, state: StateBus) -> std::io::Result<Self> {
        let (jobs, rx) = std_mpsc::sync_channel(JOB_QUEUE);
        let current = Arc::new(Mutex::new(Current::default()));
        let cut_first_clause = opts.cut_first_clause;
        let worker = Worker {
            opts,
            state,
            current: current.clone(),
        };
        std::thread::Builder::new()
            .name("speech".into())
            .spawn(move || worker.run(load, &rx))?;
        Ok(Self {
            jobs,
            current,
            cut_first_clause,
        })
    }

    /// Begins an utterance, stopping the one being spoken. Its events
    /// arrive on `events`; exactly one of them is [`SpeechEvent::Ended`].
    pub fn begin(&self, events: mpsc::Sender<SpeechEvent>) -> Utterance {
        self.stop();
        let (tx, text) = std_mpsc::sync_channel(SENTENCE_QUEUE);
        let cancel = CancelToken::new();
        let job = Job {
            text,
            cancel: cancel.clone(),
            events: events.clone(),
        };
        if let Err(e) = self.jobs.try_send(job) {
            let reason = match e {
                std_mpsc::TrySendError::Full(_) => "too many answers waiting to be spoken",
                std_mpsc::TrySendError::Disconnected(_) => "the speech thread has stopped",
            };
            let _ = events.try_send(SpeechEvent::Ended {
                reason: EndReason::Failed(reason.into()),
                audio_s: 0.0,
            });
        }
        Utterance {
            tx: Some(tx),
            sentences: Sentences::new(self.cut_first_clause),
            cancel,
            current: self.current.clone(),
        }
    }

    /// Speaks `text` as one utterance (`say`).
    pub fn say(&self, text: &str, events: mpsc::Sender<SpeechEvent>) -> Utterance {
        let mut u = self.begin(events);
        u.push(text);
        u.finish();
        u
    }

    /// Stops whatever is being spoken, at once.
    pub fn stop(&self) {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = &cur.cancel {
            c.cancel();
        }
        if let Some(p) = &cur.playback {
            p.flush();
        }
    }
}

/// One answer being spoken: feed it the answer's deltas, then
/// [`Utterance::finish`]. Dropping it unfinished ends the text there (what
/// was fed is still spoken); [`Utterance::cancel`] stops it.
pub struct Utterance {
    tx: Option<std_mpsc::SyncSender<Text>>,
    sentences: Sentences,
    cancel: CancelToken,
    current: Arc<Mutex<Current>>,
}

impl Utterance {
    /// Adds answer text.
    pub fn push(&mut self, delta: &str) {
        for s in self.sentences.push(delta) {
            self.send(Text::Sentence(s, Instant::now()));
        }
    }

    /// The answer is complete: speaks the rest.
    pub fn finish(&mut self) {
        if let Some(rest) = self.sentences.finish() {
            self.send(Text::Sentence(rest, Instant::now()));
        }
        self.send(Text::End);
        self.tx = None;
    }

    /// Stops this utterance; if it is the one playing, its audio is
    /// flushed at once.
    pub fn cancel(&self) {
        self.cancel.cancel();
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.cancel.as_ref().is_some_and(|c| c.same_as(&self.cancel))
            && let Some(p) = &cur.playback
        {
            p.flush();
        }
    }

    /// Whether it was stopped.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn send(&self, t: Text) {
        if let Some(tx) = &self.tx
            && let Err(std_mpsc::TrySendError::Full(_)) = tx.try_send(t)
        {
            tracing::warn!("speech is {SENTENCE_QUEUE} sentences behind; a sentence was dropped");
        }
    }
}

impl Drop for Utterance {
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.finish();
        }
    }
}

struct Worker {
    opts: SpeechOptions,
    state: StateBus,
    current: Arc<Mutex<Current>>,
}

impl Worker {
    fn run(self, load: VoiceLoader, jobs: &std_mpsc::Receiver<Job>) {
        let t0 = Instant::now();
        let voice = match load() {
            Ok(v) => {
                tracing::info!(
                    voice = %v.path().display(),
                    ms = t0.elapsed().as_millis() as u64,
                    "voice loaded"
                );
                Ok(v)
            }
            Err(e) => {
                tracing::error!("the voice did not load; answers stay text only: {e}");
                Err(e.to_string())
            }
        };
        while let Ok(job) = jobs.recv() {
            let (reason, audio_s) = match &voice {
                Ok(v) => self.speak(v, &job),
                Err(e) => (
                    EndReason::Failed(format!("the voice did not load: {e}")),
                    0.0,
                ),
            };
            {
                let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
                if cur.cancel.as_ref().is_some_and(|c| c.same_as(&job.cancel)) {
                    *cur = Current::default();
                }
            }
            self.state.set_if(&[State::Speaking], State::Idle);
            if let EndReason::Failed(e) = &reason {
                tracing::warn!("speech failed: {e}");
            }
            let _ = job
                .events
                .blocking_send(SpeechEvent::Ended { reason, audio_s });
        }
    }

    /// Speaks one utterance; returns why it ended and how much played.
    fn speak(&self, voice: &Voice, job: &Job) -> (EndReason, f64) {
        let cancel = &job.cancel;
        if cancel.is_cancelled() {
            return (EndReason::Cancelled, 0.0);
        }
        {
            let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
            *cur = Current {
                cancel: Some(cancel.clone()),
                playback: None,
            };
        }
        let scales = Scales {
            length: self
                .opts
                .length_scale
                .unwrap_or(voice.config().scales.length)
                / self.opts.rate.max(0.1),
            ..voice.config().scales
        };
        let keep_going = || !cancel.is_cancelled();
        let mut playback: Option<Arc<Playback>> = None;
        let mut had_text = false;
        let rate = voice.sample_rate();
        let result = (|| -> Result<(), String> {
            loop {
                let (sentence, complete) = match job.text.recv_timeout(Duration::from_millis(50)) {
                    Ok(Text::Sentence(s, at)) => (s, at),
                    Ok(Text::End) | Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        if cancel.is_cancelled() {
                            return Ok(());
                        }
                        continue;
                    }
                };
                had_text = true;
                let ids = voice.ids(&sentence).map_err(|e| e.to_string())?;
                for piece in ids {
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    let audio = voice
                        .synthesize_ids(&piece, scales)
                        .map_err(|e| e.to_string())?;
                    if cancel.is_cancelled() {
                        return Ok(());
                    }
                    let p = match &playback {
                        Some(p) => p.clone(),
                        None => {
                            let p = Arc::new(
                                Playback::open(self.opts.device.as_deref(), rate, self.opts.volume)
                                    .map_err(|e| e.to_string())?,
                            );
                            tracing::debug!(
                                device = p.device(),
                                rate = p.device_rate(),
                                "speaking"
                            );
                            self.current
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .playback = Some(p.clone());
                            playback = Some(p.clone());
                            self.state.set(State::Speaking);
                            let _ = job.events.blocking_send(SpeechEvent::Started {
                                sample_rate: rate,
                                first_audio_ms: complete.elapsed().as_millis() as u64,
                            });
                            p
                        }
                    };
                    p.write(&audio.samples, &keep_going)
                        .map_err(|e| e.to_string())?;
                }
            }
            if let Some(p) = &playback {
                p.finish(&keep_going).map_err(|e| e.to_string())?;
                p.drain(&keep_going).map_err(|e| e.to_string())?;
                if !cancel.is_cancelled() {
                    // The device's own buffer still holds the last sentence's
                    // end: let it play before the stream closes.
                    std::thread::sleep(DEVICE_TAIL);
                }
            } else if had_text && !cancel.is_cancelled() {
                return Err("the text has nothing espeak-ng can pronounce".into());
            }
            Ok(())
        })();
        if let Some(p) = &playback
            && cancel.is_cancelled()
        {
            // Let the fade-out play rather than cutting the stream mid-sample.
            p.flush();
            let t0 = Instant::now();
            let _ = p.drain(&|| t0.elapsed() < Duration::from_millis(100));
        }
        let played = playback.as_ref().map_or(0.0, |p| p.played_seconds());
        match result {
            Err(e) => (EndReason::Failed(e), played),
            Ok(()) if cancel.is_cancelled() => (EndReason::Cancelled, played),
            Ok(()) => (EndReason::Done, played),
        }
    }
}
