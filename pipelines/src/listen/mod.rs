//! The listen stage: one thread that owns the microphone and the speech
//! models, and turns what is said into [`Heard`] events.
//!
//! Two ways in, sharing one capture:
//! - **push-to-talk** ([`Ears::push_to_talk`] / [`Ears::stop_push_to_talk`]):
//!   everything between start and stop is cut with VAD and transcribed, and
//!   the transcript is the question;
//! - **wake phrase** (when configured): the microphone stays open, the
//!   streaming [`segmenter::Segmenter`] cuts utterances out of it, whisper
//!   transcribes each, and [`wake::classify`] decides whether it was meant
//!   for the assistant ("hey seer …", a follow-up question shortly after an
//!   answer, or "stop").
//!
//! The microphone is open only while something needs it, and never while
//! muted: muting drops the capture (the device is closed), unmuting opens
//! it again. A device that fails or disappears is reported and retried with
//! backoff by [`seer_platform::mic::Microphone`]; the rest of the daemon
//! does not notice. Audio stays in memory unless `debug_dir` is set.
//!
//! Compute (VAD, whisper) runs on this thread, never on the async executor.

pub mod segmenter;
pub mod wake;

use crate::state::{State, StateBus};
use crate::transcribe::transcribe_clip;
use seer_cancel::CancelToken;
use seer_models::ModelError;
use seer_models::speech::{TranscribeOptions, Transcriber, Transcript};
use seer_models::vad::{Vad, VadOptions};
use seer_platform::audio::RATE;
use seer_platform::mic::{MicEvent, Microphone};
use segmenter::{SegmentEvent, Segmenter, SegmenterOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
pub use wake::Heard;

/// The wake phrase and what follows an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct WakeConfig {
    /// The phrase ("hey seer"), matched on whisper's transcript.
    pub phrase: String,
    /// After an answer (or the phrase alone), a question needs no phrase
    /// for this long.
    pub follow_up: Duration,
    /// The decoder prompt for always-on utterances; `None` derives one
    /// from the phrase ([`wake::wake_prompt`]).
    pub prompt: Option<String>,
}

/// How the listen stage runs.
#[derive(Debug, Clone)]
pub struct EarsConfig {
    /// Input device whose name contains this; `None` = the default.
    pub device: Option<String>,
    /// Live segmentation (wake mode).
    pub segmenter: SegmenterOptions,
    /// Whisper settings (threads, language).
    pub transcribe: TranscribeOptions,
    /// Always-on listening for the wake phrase; `None` = push-to-talk only.
    pub wake: Option<WakeConfig>,
    /// Longest push-to-talk capture, seconds.
    pub ptt_max_seconds: f32,
    /// Writes every utterance as a WAV file here (debugging only).
    pub debug_dir: Option<PathBuf>,
}

/// The two speech model files.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechModels {
    /// Whisper ggml file.
    pub whisper: PathBuf,
    /// Silero VAD ggml file.
    pub vad: PathBuf,
}

/// Why listening failed.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The privacy switch is on.
    #[error("muted: the microphone is off until unmuted")]
    Muted,
    /// Another push-to-talk capture is running.
    #[error("the microphone is already listening for `{0}`")]
    Busy(String),
    /// A speech model is missing or broken.
    #[error("{0}")]
    Model(String),
    /// No audio arrived, or the device failed.
    #[error("{0}")]
    Device(String),
    /// Whisper or VAD failed on the audio.
    #[error("speech recognition: {0}")]
    Speech(#[from] ModelError),
    /// The listen thread is gone.
    #[error("the listen stage has stopped")]
    Stopped,
}

/// What a push-to-talk capture reports to whoever started it.
#[derive(Debug)]
pub enum PttMsg {
    /// Audio is flowing.
    Listening,
    /// Capture ended; transcribing.
    Transcribing,
    /// The transcript (empty when nothing was said).
    Transcript(String),
    /// The capture failed.
    Failed(ListenError),
    /// Muted or cancelled: nothing to transcribe.
    Aborted,
}

/// The microphone's state, as the privacy indicator shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum MicStatus {
    /// Audio is flowing from this device.
    Open(String),
    /// Closed on purpose (muted, or nothing needs it).
    Closed,
    /// The device failed or vanished; capture is being retried.
    Lost(String),
}

/// Timings of one always-on utterance, for the logs and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeardTimings {
    /// The utterance's audio, ms.
    pub audio_ms: u64,
    /// Whisper's time, ms.
    pub transcribe_ms: u64,
    /// From the end of speech to the transcript, ms (hangover, VAD hop,
    /// queueing and whisper).
    pub end_of_speech_ms: u64,
    /// The transcript was made when the speaker paused, while the
    /// hangover ran (see [`segmenter::SegmentEvent::Paused`]).
    pub early: bool,
}

/// What the listen stage tells the daemon (wake mode and the microphone).
#[derive(Debug, Clone, PartialEq)]
pub enum EarsEvent {
    /// The microphone opened, closed or failed.
    Microphone(MicStatus),
    /// An always-on utterance started.
    SpeechStarted,
    /// It ended and is being transcribed.
    Transcribing,
    /// The speaker paused and what they said so far reads as a question
    /// for the assistant: if the pause is the end, this will be the
    /// [`EarsEvent::Heard`] that follows. The daemon may start on it (run
    /// the prompt) while the hangover runs; nothing is shown to anyone.
    Anticipated(Heard),
    /// What it said and what it means.
    Heard {
        /// Whisper's transcript.
        transcript: String,
        /// Its meaning.
        heard: Heard,
        /// How long it took.
        timings: HeardTimings,
    },
    /// Wake-mode listening cannot run (its models failed to load).
    Failed(String),
}

/// The running push-to-talk capture's id and its stop flag, shared by the
/// handle (which answers `active`/`stop` at once) and the thread.
type ActivePtt = Arc<Mutex<Option<(String, Arc<AtomicBool>)>>>;

struct PttRequest {
    id: String,
    cancel: CancelToken,
    stop: Arc<AtomicBool>,
    tx: tokio::sync::mpsc::Sender<PttMsg>,
    models: Option<SpeechModels>,
}

enum Cmd {
    Ptt(PttRequest),
    Answered,
}

/// Handle to the listen thread; dropping it stops the thread (and closes
/// the microphone).
pub struct Ears {
    cmds: Sender<Cmd>,
    active: ActivePtt,
    loaded: Arc<AtomicBool>,
    mic_open: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Ears {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ears")
            .field("active", &self.active_id())
            .field("mic_open", &self.microphone_open())
            .finish()
    }
}

impl Drop for Ears {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Ears {
    /// Starts the listen thread. With `cfg.wake`, `models` are loaded at
    /// once and the microphone opens (unless muted); without, nothing
    /// happens until the first push-to-talk. Events go to `events`.
    pub fn spawn(
        cfg: EarsConfig,
        models: Option<SpeechModels>,
        state: StateBus,
        events: tokio::sync::mpsc::Sender<EarsEvent>,
    ) -> Result<Self, ListenError> {
        let (cmds, rx) = std::sync::mpsc::channel();
        let active = Arc::new(Mutex::new(None));
        let loaded = Arc::new(AtomicBool::new(false));
        let mic_open = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut worker = Worker {
            cfg,
            state,
            events,
            cmds: rx,
            active: active.clone(),
            loaded: loaded.clone(),
            mic_open: mic_open.clone(),
            shutdown: shutdown.clone(),
            models: None,
            mic: None,
            mic_rx: None,
            mic_status: MicStatus::Closed,
            pending_device: None,
            segmenter: None,
            ptt: None,
            ptt_samples: Vec::new(),
            ptt_flowing: false,
            expect_until: None,
            early: None,
        };
        let thread = std::thread::Builder::new()
            .name("listen".into())
            .spawn(move || worker.run(models))
            .map_err(|e| ListenError::Device(format!("starting the listen thread: {e}")))?;
        Ok(Self {
            cmds,
            active,
            loaded,
            mic_open,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Whether the speech models are loaded (else a push-to-talk must bring
    /// their paths).
    pub fn models_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Starts a push-to-talk capture for `id`: messages arrive on `tx`;
    /// `cancel` aborts it without transcribing. `models` are needed the
    /// first time (see [`models_loaded`](Self::models_loaded)).
    pub fn push_to_talk(
        &self,
        id: &str,
        cancel: CancelToken,
        tx: tokio::sync::mpsc::Sender<PttMsg>,
        models: Option<SpeechModels>,
        muted: bool,
    ) -> Result<(), ListenError> {
        if muted {
            return Err(ListenError::Muted);
        }
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((other, _)) = active.as_ref() {
                return Err(ListenError::Busy(other.clone()));
            }
            *active = Some((id.to_owned(), stop.clone()));
        }
        let req = PttRequest {
            id: id.to_owned(),
            cancel,
            stop,
            tx,
            models,
        };
        if self.cmds.send(Cmd::Ptt(req)).is_err() {
            *self.active.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(ListenError::Stopped);
        }
        Ok(())
    }

    /// The id of the push-to-talk capture running now.
    pub fn active_id(&self) -> Option<String> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(id, _)| id.clone())
    }

    /// Ends the push-to-talk capture `id`; false if there is none.
    pub fn stop_push_to_talk(&self, id: &str) -> bool {
        match self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some((active, stop)) if active == id => {
                stop.store(true, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    /// Whether audio is flowing from the microphone now (the privacy
    /// indicator).
    pub fn microphone_open(&self) -> bool {
        self.mic_open.load(Ordering::SeqCst)
    }

    /// A spoken question was answered: opens the follow-up window.
    pub fn answered(&self) {
        let _ = self.cmds.send(Cmd::Answered);
    }
}

struct Worker {
    cfg: EarsConfig,
    state: StateBus,
    events: tokio::sync::mpsc::Sender<EarsEvent>,
    cmds: Receiver<Cmd>,
    active: ActivePtt,
    loaded: Arc<AtomicBool>,
    mic_open: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    models: Option<(Transcriber, Vad)>,
    mic: Option<Microphone>,
    mic_rx: Option<Receiver<MicEvent>>,
    mic_status: MicStatus,
    /// The device named by the last `Started`, shown once audio flows.
    pending_device: Option<String>,
    segmenter: Option<Segmenter>,
    ptt: Option<PttRequest>,
    ptt_samples: Vec<f32>,
    ptt_flowing: bool,
    /// Until when a question needs no wake phrase.
    expect_until: Option<Instant>,
    /// Whisper's transcript of the utterance as it stood when the speaker
    /// paused (see [`SegmentEvent::Paused`]).
    early: Option<Early>,
}

/// A transcript made while the hangover ran.
struct Early {
    samples: Vec<f32>,
    transcript: Transcript,
    /// When whisper started, and how long the speaker had been silent then.
    at: Instant,
    silent_ms: u32,
}

fn load_models(m: &SpeechModels) -> Result<(Transcriber, Vad), ListenError> {
    let t = Transcriber::load(&m.whisper).map_err(|e| ListenError::Model(e.to_string()))?;
    let v = Vad::load(&m.vad).map_err(|e| ListenError::Model(e.to_string()))?;
    Ok((t, v))
}

impl Worker {
    fn run(&mut self, models: Option<SpeechModels>) {
        if self.cfg.wake.is_some() {
            match models.as_ref().map(load_models) {
                Some(Ok(m)) => {
                    self.models = Some(m);
                    self.loaded.store(true, Ordering::SeqCst);
                    self.segmenter = Some(Segmenter::new(self.cfg.segmenter.clone()));
                }
                Some(Err(e)) => {
                    self.emit(EarsEvent::Failed(e.to_string()));
                }
                None => self.emit(EarsEvent::Failed("no speech models configured".into())),
            }
        }
        while !self.shutdown.load(Ordering::SeqCst) {
            self.commands();
            let muted = self.state.muted();
            if muted {
                self.abort_ptt();
            }
            let want = !muted && (self.segmenter.is_some() || self.ptt.is_some());
            match (want, self.mic.is_some()) {
                (true, false) => self.open_mic(),
                (false, true) => self.close_mic(),
                _ => {}
            }
            if self.mic.is_none() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            self.pump();
            self.check_ptt();
        }
        self.abort_ptt();
        self.close_mic();
    }

    fn emit(&self, ev: EarsEvent) {
        // Bounded: a daemon that stops reading loses events, never blocks
        // capture.
        if self.events.try_send(ev).is_err() {
            tracing::warn!("listen event dropped: the daemon is not reading them");
        }
    }

    fn set_mic_status(&mut self, s: MicStatus) {
        if self.mic_status != s {
            self.mic_open
                .store(matches!(s, MicStatus::Open(_)), Ordering::SeqCst);
            self.mic_status = s.clone();
            self.emit(EarsEvent::Microphone(s));
        }
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Answered => {
                    if let Some(w) = &self.cfg.wake {
                        self.expect_until = Some(Instant::now() + w.follow_up);
                    }
                }
                Cmd::Ptt(req) => self.begin_ptt(req),
            }
        }
    }

    fn begin_ptt(&mut self, req: PttRequest) {
        if self.models.is_none() {
            let loaded = match req.models.as_ref() {
                Some(m) => load_models(m),
                None => Err(ListenError::Model(
                    "the speech models are not loaded".into(),
                )),
            };
            match loaded {
                Ok(m) => {
                    self.models = Some(m);
                    self.loaded.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    self.finish_ptt(req, PttMsg::Failed(e));
                    return;
                }
            }
        }
        tracing::info!(id = %req.id, "push-to-talk");
        self.ptt_samples.clear();
        self.ptt_flowing = false;
        // Whatever the always-on segmenter was hearing belongs to the
        // push-to-talk capture now.
        self.reset_segmenter();
        self.ptt = Some(req);
    }

    fn finish_ptt(&mut self, req: PttRequest, msg: PttMsg) {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if !matches!(msg, PttMsg::Transcript(_)) {
            self.set_state(State::Idle);
        }
        let _ = req.tx.blocking_send(msg);
    }

    fn abort_ptt(&mut self) {
        if let Some(req) = self.ptt.take() {
            self.ptt_samples = Vec::new();
            self.finish_ptt(req, PttMsg::Aborted);
        }
    }

    /// Sets the listen states without hiding an answer in progress.
    fn set_state(&self, s: State) {
        self.state
            .set_if(&[State::Idle, State::Listening, State::Transcribing], s);
    }

    /// Forgets a half-heard utterance (capture paused, muted, device
    /// lost, push-to-talk took over), and the `listening` it showed.
    fn reset_segmenter(&mut self) {
        self.early = None;
        if let Some(s) = self.segmenter.as_mut() {
            if s.in_speech() {
                self.state.set_if(&[State::Listening], State::Idle);
            }
            s.reset();
        }
    }

    fn open_mic(&mut self) {
        let (tx, rx): (SyncSender<MicEvent>, Receiver<MicEvent>) =
            std::sync::mpsc::sync_channel(256);
        match Microphone::start(self.cfg.device.clone(), tx) {
            Ok(m) => {
                self.mic = Some(m);
                self.mic_rx = Some(rx);
            }
            Err(e) => {
                self.set_mic_status(MicStatus::Lost(e.to_string()));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }

    fn close_mic(&mut self) {
        // The receiver goes first: a capture thread blocked sending to it
        // then returns, and dropping the microphone (which joins that
        // thread and closes the device) cannot hang.
        self.mic_rx = None;
        self.mic = None;
        self.reset_segmenter();
        self.set_mic_status(MicStatus::Closed);
    }

    /// Takes what the microphone delivered in the last 50 ms.
    fn pump(&mut self) {
        let Some(rx) = self.mic_rx.as_ref() else {
            return;
        };
        let first = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ev) => ev,
            Err(RecvTimeoutError::Timeout) => return,
            Err(RecvTimeoutError::Disconnected) => {
                self.mic = None;
                self.mic_rx = None;
                self.set_mic_status(MicStatus::Lost("the capture thread ended".into()));
                return;
            }
        };
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(64));
        for ev in batch {
            match ev {
                MicEvent::Started {
                    device,
                    rate,
                    channels,
                } => {
                    tracing::info!(%device, rate, channels, "microphone open");
                    // Open only once audio flows (the first frame).
                    self.pending_device = Some(device);
                }
                MicEvent::Error(e) => {
                    // Logged once per change by the daemon (`microphone lost`).
                    tracing::debug!("microphone: {e}; retrying");
                    self.reset_segmenter();
                    self.set_mic_status(MicStatus::Lost(e));
                }
                MicEvent::Frame(f) => self.frame(f),
            }
        }
    }

    fn frame(&mut self, f: Vec<f32>) {
        // Frames already queued when the switch flipped are not heard.
        if self.state.muted() {
            return;
        }
        if let Some(device) = self.pending_device.take() {
            self.set_mic_status(MicStatus::Open(device));
        } else if !matches!(self.mic_status, MicStatus::Open(_)) {
            self.set_mic_status(MicStatus::Open(String::new()));
        }
        if let Some(req) = self.ptt.as_ref() {
            if !self.ptt_flowing {
                self.ptt_flowing = true;
                self.set_state(State::Listening);
                let _ = req.tx.blocking_send(PttMsg::Listening);
            }
            self.ptt_samples.extend(f);
            return;
        }
        let speaking = self.state.get() == State::Speaking;
        let (Some(seg), Some((_, vad))) = (self.segmenter.as_mut(), self.models.as_mut()) else {
            return;
        };
        seg.set_speaking(speaking);
        let events = match seg.push(vad, &f) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("VAD: {e}");
                seg.reset();
                return;
            }
        };
        for ev in events {
            match ev {
                SegmentEvent::Started => {
                    self.set_state(State::Listening);
                    self.emit(EarsEvent::SpeechStarted);
                }
                SegmentEvent::Dropped => {
                    self.early = None;
                    self.set_state(State::Idle);
                }
                SegmentEvent::Paused(u) => self.transcribe_early(u),
                SegmentEvent::Utterance(u) => self.utterance(u),
            }
        }
    }

    /// Whisper's options for always-on utterances.
    fn wake_options(&self, wake: &WakeConfig) -> TranscribeOptions {
        TranscribeOptions {
            initial_prompt: Some(
                wake.prompt
                    .clone()
                    .unwrap_or_else(|| wake::wake_prompt(&wake.phrase)),
            ),
            ..self.cfg.transcribe.clone()
        }
    }

    /// The speaker paused: transcribes what they said so far while the
    /// hangover decides whether they are done. Audio keeps queueing in the
    /// microphone's channel meanwhile and is scored afterwards, so a
    /// resumed sentence is heard whole; the early transcript is then thrown
    /// away. The hangover itself is unchanged: a pause mid-sentence still
    /// does not cut the question.
    fn transcribe_early(&mut self, u: segmenter::Utterance) {
        self.early = None;
        let Some(wake) = self.cfg.wake.clone() else {
            return;
        };
        let opts = self.wake_options(&wake);
        let Some((whisper, _)) = self.models.as_mut() else {
            return;
        };
        let at = Instant::now();
        match whisper.transcribe(&u.samples, &opts) {
            Ok(transcript) => {
                let text = wake::collapse_repeats(&transcript.text);
                let expecting = self.expect_until.is_some_and(|t| Instant::now() < t);
                let heard = wake::classify(&text, &wake.phrase, expecting);
                if matches!(heard, Heard::Question { .. }) && !self.state.muted() {
                    self.emit(EarsEvent::Anticipated(heard));
                }
                self.early = Some(Early {
                    samples: u.samples,
                    transcript,
                    at,
                    silent_ms: u.since_speech_end_ms,
                })
            }
            // The utterance, if it comes, is transcribed the usual way.
            Err(e) => tracing::debug!("early transcript: {e}"),
        }
    }

    /// Transcribes an always-on utterance (or takes the transcript made
    /// when the speaker paused, if the audio is the same) and says what it
    /// meant.
    fn utterance(&mut self, u: segmenter::Utterance) {
        let Some(wake) = self.cfg.wake.clone() else {
            return;
        };
        let closed = Instant::now();
        self.set_state(State::Transcribing);
        self.emit(EarsEvent::Transcribing);
        self.dump("utterance", &u.samples);
        let opts = self.wake_options(&wake);
        let early = self.early.take().filter(|e| e.samples == u.samples);
        let Some((whisper, _)) = self.models.as_mut() else {
            return;
        };
        let used_early = early.is_some();
        let (t, end_of_speech_ms) = match early {
            Some(e) => {
                tracing::debug!(
                    silent_ms = e.silent_ms,
                    "using the transcript made when the speaker paused"
                );
                let since = e.silent_ms as u64 + e.at.elapsed().as_millis() as u64;
                (e.transcript, since)
            }
            None => match whisper.transcribe(&u.samples, &opts) {
                Ok(t) => {
                    let since = u.since_speech_end_ms as u64 + closed.elapsed().as_millis() as u64;
                    (t, since)
                }
                Err(e) => {
                    tracing::warn!("whisper: {e}");
                    self.set_state(State::Idle);
                    return;
                }
            },
        };
        if self.state.muted() {
            // Muted while whisper ran: what was said is not used.
            self.set_state(State::Idle);
            return;
        }
        let text = wake::collapse_repeats(&t.text);
        let expecting = self.expect_until.is_some_and(|t| Instant::now() < t);
        let heard = wake::classify(&text, &wake.phrase, expecting);
        match &heard {
            Heard::WakeOnly => self.expect_until = Some(Instant::now() + wake.follow_up),
            Heard::Question { .. } => self.expect_until = None,
            _ => {}
        }
        if !matches!(heard, Heard::Question { .. }) {
            self.set_state(State::Idle);
        }
        let timings = HeardTimings {
            audio_ms: (u.samples.len() * 1000 / RATE as usize) as u64,
            transcribe_ms: t.elapsed_ms,
            end_of_speech_ms,
            early: used_early,
        };
        tracing::info!(
            transcript = %text,
            ?heard,
            audio_ms = timings.audio_ms,
            transcribe_ms = timings.transcribe_ms,
            end_of_speech_ms = timings.end_of_speech_ms,
            early = timings.early,
            "heard"
        );
        self.emit(EarsEvent::Heard {
            transcript: text,
            heard,
            timings,
        });
    }

    /// Ends the push-to-talk capture when asked, cancelled or too long.
    fn check_ptt(&mut self) {
        let Some(req) = self.ptt.as_ref() else {
            return;
        };
        if req.cancel.is_cancelled() {
            self.abort_ptt();
            return;
        }
        let max = (self.cfg.ptt_max_seconds * RATE as f32) as usize;
        if !req.stop.load(Ordering::SeqCst) && self.ptt_samples.len() < max {
            return;
        }
        let Some(req) = self.ptt.take() else {
            return;
        };
        let samples = std::mem::take(&mut self.ptt_samples);
        if !self.ptt_flowing {
            let why = match &self.mic_status {
                MicStatus::Lost(e) => format!("no audio from the microphone: {e}"),
                _ => "no audio arrived from the microphone".into(),
            };
            self.finish_ptt(req, PttMsg::Failed(ListenError::Device(why)));
            return;
        }
        self.set_state(State::Transcribing);
        let _ = req.tx.blocking_send(PttMsg::Transcribing);
        self.dump("push-to-talk", &samples);
        let Some((whisper, vad)) = self.models.as_mut() else {
            self.finish_ptt(req, PttMsg::Failed(ListenError::Stopped));
            return;
        };
        let vopts = VadOptions {
            speech_pad_ms: 250,
            ..VadOptions::default()
        };
        let msg =
            match transcribe_clip(&samples, Some((vad, &vopts)), whisper, &self.cfg.transcribe) {
                Ok(u) => PttMsg::Transcript(
                    u.iter()
                        .map(|u| u.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                Err(e) => PttMsg::Failed(e.into()),
            };
        self.finish_ptt(req, msg);
    }

    /// Writes `samples` to the debug directory, if one is set.
    fn dump(&self, what: &str, samples: &[f32]) {
        let Some(dir) = self.cfg.debug_dir.as_deref() else {
            return;
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let path = dir.join(format!("{what}-{stamp}.wav"));
        match write_debug(dir, &path, samples) {
            Ok(()) => tracing::info!(path = %path.display(), "debug audio written"),
            Err(e) => tracing::warn!("debug audio: {e}"),
        }
    }
}

fn write_debug(dir: &Path, path: &Path, samples: &[f32]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    seer_platform::audio::write_wav(path, samples).map_err(|e| e.to_string())
}
