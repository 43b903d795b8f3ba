//! Push-to-talk: `listen.start` opens the microphone, `listen.stop` closes
//! it, and the captured speech is cut with Silero VAD and transcribed with
//! whisper on a thread of its own; the transcript then goes to the answer
//! stage like a typed question.
//!
//! The microphone is open only between start and stop (and never while
//! muted: a mute during capture closes it and drops the audio). Audio stays
//! in memory and is never written to disk.

use crate::config::{ListenConfig, ModelConfig};
use crate::protocol::Code;
use seer_models::generate::CancelToken;
use seer_models::speech::{TranscribeOptions, Transcriber};
use seer_models::vad::{Vad, VadOptions};
use seer_pipelines::state::{State, StateBus};
use seer_pipelines::transcribe::transcribe_clip;
use seer_platform::audio::RATE;
use seer_platform::mic::{MicEvent, Microphone};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a capture reports to the connection that started it.
#[derive(Debug)]
pub enum ListenMsg {
    /// Audio is flowing: the `state listening` event goes out now.
    Listening,
    /// Capture ended; transcribing.
    Transcribing,
    /// The transcript (possibly empty).
    Transcript(String),
    /// The capture failed.
    Failed(Code, String),
    /// Muted or cancelled: nothing to transcribe.
    Aborted,
}

/// The daemon's one microphone and its speech models.
pub struct Listener {
    cfg: ListenConfig,
    model: ModelConfig,
    state: StateBus,
    models: Mutex<Option<(Transcriber, Vad)>>,
    active: Mutex<Option<(String, Arc<AtomicBool>)>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("cfg", &self.cfg).finish()
    }
}

impl Listener {
    /// A listener with `cfg`; models are found through `model`'s store and
    /// loaded on the first capture.
    pub fn new(cfg: ListenConfig, model: ModelConfig, state: StateBus) -> Self {
        Self {
            cfg,
            model,
            state,
            models: Mutex::new(None),
            active: Mutex::new(None),
        }
    }

    fn resolve(&self, what: &str) -> Result<PathBuf, String> {
        self.model.resolve_model(what).map_err(|e| e.to_string())
    }

    /// Starts capturing for request `id`. Messages arrive on `tx`;
    /// `cancel` aborts without transcribing.
    pub fn start(
        self: &Arc<Self>,
        id: &str,
        cancel: CancelToken,
        tx: tokio::sync::mpsc::Sender<ListenMsg>,
    ) -> Result<(), (Code, String)> {
        if self.state.muted() {
            return Err((
                Code::DeviceUnavailable,
                "muted: the microphone is off until unmuted".into(),
            ));
        }
        // Said at once (a D-Bus caller gets it as the method's error); the
        // models themselves load on the capture thread, once.
        let loaded = self
            .models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let paths = if loaded {
            None
        } else {
            let m = self
                .resolve(&self.cfg.model)
                .map_err(|e| (Code::ModelMissing, e))?;
            let v = self
                .resolve(&self.cfg.vad)
                .map_err(|e| (Code::ModelMissing, e))?;
            Some((m, v))
        };
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((other, _)) = active.as_ref() {
                return Err((
                    Code::Busy,
                    format!("the microphone is already listening for `{other}`"),
                ));
            }
            *active = Some((id.to_owned(), stop.clone()));
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("listen".into())
            .spawn(move || {
                let msg = this.capture(paths, &stop, &cancel, &tx);
                *this.active.lock().unwrap_or_else(|p| p.into_inner()) = None;
                if !matches!(msg, ListenMsg::Transcript(_)) {
                    this.state.set(State::Idle);
                }
                let _ = tx.blocking_send(msg);
            });
        if let Err(e) = spawned {
            *self.active.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Err((Code::Internal, format!("starting the listen thread: {e}")));
        }
        Ok(())
    }

    /// The id of the capture running now, if any.
    pub fn active(&self) -> Option<String> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(id, _)| id.clone())
    }

    /// Ends the capture for `id`; false if there is none.
    pub fn stop(&self, id: &str) -> bool {
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

    fn capture(
        &self,
        paths: Option<(PathBuf, PathBuf)>,
        stop: &AtomicBool,
        cancel: &CancelToken,
        tx: &tokio::sync::mpsc::Sender<ListenMsg>,
    ) -> ListenMsg {
        // Models first (once per daemon), so a missing one is said at once.
        {
            let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
            if let (None, Some((m, v))) = (models.as_ref(), paths) {
                let loaded = Transcriber::load(&m)
                    .and_then(|t| Ok((t, Vad::load(&v)?)))
                    .map_err(|e| e.to_string());
                match loaded {
                    Ok(m) => *models = Some(m),
                    Err(e) => return ListenMsg::Failed(Code::ModelMissing, e),
                }
            }
        }
        let (mic_tx, mic_rx) = std::sync::mpsc::sync_channel(256);
        let device = (!self.cfg.device.is_empty()).then(|| self.cfg.device.clone());
        let mic = match Microphone::start(device, mic_tx) {
            Ok(m) => m,
            Err(e) => return ListenMsg::Failed(Code::DeviceUnavailable, e.to_string()),
        };
        let max = (self.cfg.max_seconds * RATE as f64) as usize;
        let mut samples: Vec<f32> = Vec::new();
        let mut flowing = false;
        while !stop.load(Ordering::SeqCst) && samples.len() < max {
            if cancel.is_cancelled() || self.state.muted() {
                return ListenMsg::Aborted;
            }
            match mic_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(MicEvent::Frame(f)) => {
                    if !flowing {
                        flowing = true;
                        self.state.set(State::Listening);
                        let _ = tx.blocking_send(ListenMsg::Listening);
                    }
                    samples.extend(f);
                }
                Ok(MicEvent::Error(e)) => tracing::warn!("microphone: {e}; retrying"),
                Ok(MicEvent::Started {
                    device,
                    rate,
                    channels,
                }) => {
                    tracing::info!(%device, rate, channels, "microphone open")
                }
                Err(_) => {}
            }
        }
        // The device is closed before the (slow) transcription.
        drop(mic);
        if !flowing {
            return ListenMsg::Failed(
                Code::DeviceUnavailable,
                "no audio arrived from the microphone".into(),
            );
        }
        self.state.set(State::Transcribing);
        let _ = tx.blocking_send(ListenMsg::Transcribing);
        let mut models = self.models.lock().unwrap_or_else(|p| p.into_inner());
        let Some((whisper, vad)) = models.as_mut() else {
            return ListenMsg::Failed(Code::Internal, "speech models not loaded".into());
        };
        let opts = TranscribeOptions {
            threads: self.cfg.threads.max(1),
            language: (self.cfg.language != "auto").then(|| self.cfg.language.clone()),
            ..TranscribeOptions::default()
        };
        let vopts = VadOptions {
            speech_pad_ms: 250,
            ..VadOptions::default()
        };
        match transcribe_clip(&samples, Some((vad, &vopts)), whisper, &opts) {
            Ok(u) => ListenMsg::Transcript(
                u.iter()
                    .map(|u| u.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Err(e) => ListenMsg::Failed(Code::Internal, e.to_string()),
        }
    }
}
