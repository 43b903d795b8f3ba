//! The daemon's side of listening: starts the listen stage
//! ([`seer_pipelines::listen::Ears`]) from `[listen]` and opens push-to-talk
//! captures. What is heard is acted on by the assistant service
//! ([`crate::service`]), the one place that turns speech into turns.

use crate::config::{ListenConfig, ListenMode, ModelConfig};
use crate::error::ServiceError;
use seer_cancel::CancelToken;
use seer_models::speech::TranscribeOptions;
use seer_pipelines::listen::segmenter::SegmenterOptions;
use seer_pipelines::listen::{Ears, EarsConfig, EarsEvent, PttMsg, SpeechModels, WakeConfig};
use seer_pipelines::state::StateBus;
use std::sync::Arc;
use std::time::Duration;

/// The microphone and the speech models.
pub struct Listener {
    cfg: ListenConfig,
    model: ModelConfig,
    state: StateBus,
    /// `None` with `mode = "off"`.
    ears: Option<Ears>,
    /// Whether the always-on listener is running (wake mode with models).
    wake: bool,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("cfg", &self.cfg)
            .field("wake", &self.wake)
            .finish()
    }
}

impl Listener {
    /// Starts listening as `[listen]` says; what the always-on listener
    /// hears (and the microphone's changes) arrive on the returned
    /// receiver. In wake mode the speech models must be installed; if they
    /// are not, the daemon says how to get them and carries on with
    /// push-to-talk only (which looks again each time). Blocking: it
    /// resolves model files.
    pub fn start(
        cfg: ListenConfig,
        model: ModelConfig,
        state: StateBus,
    ) -> Result<(Arc<Self>, Option<tokio::sync::mpsc::Receiver<EarsEvent>>), String> {
        let mut this = Self {
            cfg,
            model,
            state: state.clone(),
            ears: None,
            wake: false,
        };
        if this.cfg.mode == ListenMode::Off {
            return Ok((Arc::new(this), None));
        }
        let mut models = None;
        if this.cfg.mode == ListenMode::Wake {
            match this.resolve() {
                Ok(m) => {
                    models = Some(m);
                    this.wake = true;
                }
                Err(e) => tracing::warn!(
                    "hands-free listening is off: {e}; push-to-talk still works once it is installed"
                ),
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut ears_cfg = this.ears_config();
        if !this.wake {
            ears_cfg.wake = None;
        }
        let ears = Ears::spawn(ears_cfg, models, state, tx).map_err(|e| e.to_string())?;
        this.ears = Some(ears);
        Ok((Arc::new(this), Some(rx)))
    }

    fn ears_config(&self) -> EarsConfig {
        let c = &self.cfg;
        EarsConfig {
            device: c.device.clone(),
            segmenter: SegmenterOptions {
                start_threshold: c.start_threshold,
                stop_threshold: c.stop_threshold,
                min_speech_ms: c.min_speech_ms,
                hangover_ms: c.hangover_ms,
                max_seconds: c.max_seconds as f32,
                ..SegmenterOptions::default()
            },
            transcribe: TranscribeOptions {
                threads: c.threads.max(1),
                language: (c.language != "auto").then(|| c.language.clone()),
                // Spoken commands: one greedy pass, bounded (see the field).
                fallback: false,
                ..TranscribeOptions::default()
            },
            wake: (c.mode == ListenMode::Wake).then(|| WakeConfig {
                phrase: c.wake_phrase.clone(),
                follow_up: Duration::from_secs_f64(c.follow_up_seconds.max(0.0)),
                prompt: c.prompt.clone(),
            }),
            ptt_max_seconds: c.max_seconds as f32,
            debug_dir: c.debug_audio_dir.clone(),
        }
    }

    /// The speech models' files. Blocking (it looks in the models
    /// directory): call it off the executor.
    pub fn resolve(&self) -> Result<SpeechModels, String> {
        let whisper = self
            .model
            .resolve_model(&self.cfg.model)
            .map_err(|e| e.to_string())?;
        let vad = self
            .model
            .resolve_model(&self.cfg.vad)
            .map_err(|e| e.to_string())?;
        Ok(SpeechModels { whisper, vad })
    }

    /// Whether listening is configured at all (`mode` is not `off`).
    pub fn enabled(&self) -> bool {
        self.ears.is_some()
    }

    /// Whether hands-free (wake phrase) listening runs.
    pub fn hands_free(&self) -> bool {
        self.wake
    }

    /// Whether the speech models are loaded (else a capture needs
    /// [`Listener::resolve`]'s files).
    pub fn models_loaded(&self) -> bool {
        self.ears.as_ref().is_some_and(Ears::models_loaded)
    }

    /// Starts push-to-talk capture `key`; messages arrive on `tx`, and
    /// `cancel` aborts it. `models` are needed until they are loaded.
    pub fn push_to_talk(
        &self,
        key: &str,
        cancel: CancelToken,
        tx: tokio::sync::mpsc::Sender<PttMsg>,
        models: Option<SpeechModels>,
    ) -> Result<(), ServiceError> {
        let ears = self.ears()?;
        Ok(ears.push_to_talk(key, cancel, tx, models, self.state.muted())?)
    }

    fn ears(&self) -> Result<&Ears, ServiceError> {
        self.ears
            .as_ref()
            .ok_or_else(|| ServiceError::unsupported("listening is off ([listen] mode = \"off\")"))
    }

    /// Ends push-to-talk capture `key`; false if it is not the one running.
    pub fn stop(&self, key: &str) -> bool {
        self.ears.as_ref().is_some_and(|e| e.stop_push_to_talk(key))
    }

    /// Whether audio flows from the microphone now (the privacy indicator).
    pub fn microphone_active(&self) -> bool {
        self.ears.as_ref().is_some_and(Ears::microphone_open)
    }

    /// A spoken question was answered: opens the follow-up window.
    pub fn answered(&self) {
        if let Some(e) = &self.ears {
            e.answered();
        }
    }
}
