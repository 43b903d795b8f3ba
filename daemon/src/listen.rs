//! The daemon's side of listening: it starts the listen stage
//! ([`seer_pipelines::listen::Ears`]) from `[listen]`, serves push-to-talk
//! for the socket and D-Bus, and turns what the always-on listener heard
//! into voice turns.
//!
//! Hands-free turns have no requesting client, so their events (the
//! transcript, the answer, the microphone's state) go out on a broadcast
//! that socket clients `subscribe` to as `voice` and that D-Bus turns into
//! signals.

use crate::config::{ListenConfig, ListenMode, ModelConfig};
use crate::protocol::{self, Code};
use crate::vision::VoiceEyes;
use seer_models::generate::CancelToken;
use seer_models::speech::TranscribeOptions;
use seer_pipelines::answer::{Answerer, Ask, TurnEvent};
use seer_pipelines::listen::segmenter::SegmenterOptions;
use seer_pipelines::listen::{
    Ears, EarsConfig, EarsEvent, Heard, ListenError, MicStatus, PttMsg, SpeechModels, WakeConfig,
};
use seer_pipelines::state::{State, StateBus};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;

/// An event for `voice` subscribers: its wire type, the turn id (for a
/// hands-free turn's events) and body.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceEvent {
    /// `transcript.final`, `answer.delta`, `answer.end`, `microphone`, …
    pub kind: &'static str,
    /// The hands-free turn (`voice-N`) or push-to-talk request it belongs to.
    pub id: Option<String>,
    /// The fields besides `v`, `type` and `id`.
    pub body: Value,
}

impl VoiceEvent {
    /// The socket line.
    pub fn line(&self) -> String {
        protocol::event(self.kind, self.id.as_deref(), self.body.clone())
    }
}

/// The microphone, the speech models and the voice broadcast.
pub struct Listener {
    cfg: ListenConfig,
    model: ModelConfig,
    state: StateBus,
    /// `None` with `mode = "off"`.
    ears: Option<Ears>,
    voice: broadcast::Sender<VoiceEvent>,
    /// Whether the always-on listener is running (wake mode with models).
    wake: bool,
    /// The camera for spoken questions about what is in view.
    eyes: Option<VoiceEyes>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("cfg", &self.cfg)
            .field("wake", &self.wake)
            .finish()
    }
}

/// The protocol's code for a listen failure.
pub fn code_of(e: &ListenError) -> Code {
    match e {
        ListenError::Muted | ListenError::Device(_) => Code::DeviceUnavailable,
        ListenError::Busy(_) => Code::Busy,
        ListenError::Model(_) => Code::ModelMissing,
        ListenError::Speech(_) | ListenError::Stopped => Code::Internal,
    }
}

impl Listener {
    /// The camera spoken questions may use.
    pub fn eyes(&self) -> Option<VoiceEyes> {
        self.eyes.clone()
    }

    /// Starts listening as `[listen]` says. In wake mode the speech models
    /// must be installed; if they are not, the daemon says how to get them
    /// and carries on with push-to-talk only (which looks again each time).
    /// Must run inside the tokio runtime (it spawns the dispatcher).
    pub fn start(
        cfg: ListenConfig,
        model: ModelConfig,
        state: StateBus,
        answerer: Answerer,
        eyes: Option<VoiceEyes>,
    ) -> Result<Arc<Self>, String> {
        let (voice, _) = broadcast::channel(256);
        let mut this = Self {
            cfg,
            model,
            eyes,
            state: state.clone(),
            ears: None,
            voice,
            wake: false,
        };
        if this.cfg.mode == ListenMode::Off {
            return Ok(Arc::new(this));
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
        let this = Arc::new(this);
        tokio::spawn(dispatch(Arc::downgrade(&this), rx, answerer));
        Ok(this)
    }

    fn ears_config(&self) -> EarsConfig {
        let c = &self.cfg;
        EarsConfig {
            device: (!c.device.is_empty()).then(|| c.device.clone()),
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
                prompt: (!c.prompt.is_empty()).then(|| c.prompt.clone()),
            }),
            ptt_max_seconds: c.max_seconds as f32,
            debug_dir: (!c.debug_audio_dir.as_os_str().is_empty())
                .then(|| c.debug_audio_dir.clone()),
        }
    }

    fn resolve(&self) -> Result<SpeechModels, String> {
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

    /// Whether hands-free (wake phrase) listening runs.
    pub fn hands_free(&self) -> bool {
        self.wake
    }

    /// Starts a push-to-talk capture for request `id`; messages arrive on
    /// `tx`, and `cancel` aborts it.
    pub fn push_to_talk(
        &self,
        id: &str,
        cancel: CancelToken,
        tx: tokio::sync::mpsc::Sender<PttMsg>,
    ) -> Result<(), (Code, String)> {
        let ears = self.ears.as_ref().ok_or_else(|| {
            (
                Code::Unsupported,
                "listening is off ([listen] mode = \"off\")".to_owned(),
            )
        })?;
        let err = |e: ListenError| (code_of(&e), e.to_string());
        if self.state.muted() {
            return Err(err(ListenError::Muted));
        }
        // Resolved here so a missing model is said at once (a D-Bus caller
        // gets it as the method's error); loading happens on the thread.
        let models = if ears.models_loaded() {
            None
        } else {
            Some(self.resolve().map_err(|e| (Code::ModelMissing, e))?)
        };
        ears.push_to_talk(id, cancel, tx, models, false)
            .map_err(err)
    }

    /// The push-to-talk capture running now.
    pub fn active(&self) -> Option<String> {
        self.ears.as_ref().and_then(Ears::active_id)
    }

    /// Ends push-to-talk capture `id`; false if there is none.
    pub fn stop(&self, id: &str) -> bool {
        self.ears.as_ref().is_some_and(|e| e.stop_push_to_talk(id))
    }

    /// Whether audio flows from the microphone now (the privacy indicator).
    pub fn microphone_active(&self) -> bool {
        self.ears.as_ref().is_some_and(Ears::microphone_open)
    }

    /// Voice events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<VoiceEvent> {
        self.voice.subscribe()
    }

    /// Tells `voice` subscribers about a push-to-talk transcript.
    pub fn announce_transcript(&self, id: &str, text: &str) {
        self.publish(
            "transcript.final",
            Some(id.to_owned()),
            json!({"text": text, "source": "push_to_talk"}),
        );
    }

    fn publish(&self, kind: &'static str, id: Option<String>, body: Value) {
        let _ = self.voice.send(VoiceEvent { kind, id, body });
    }
}

/// Acts on what the always-on listener heard.
async fn dispatch(
    listener: std::sync::Weak<Listener>,
    mut rx: tokio::sync::mpsc::Receiver<EarsEvent>,
    answerer: Answerer,
) {
    let turns = AtomicU64::new(0);
    // A question after the wake phrase starts a conversation; a follow-up
    // (no phrase, inside the follow-up window) continues it.
    let mut conversation = String::from("voice");
    // "Hey Seer." alone: the question that follows starts afresh too.
    let mut fresh = false;
    while let Some(ev) = rx.recv().await {
        let Some(l) = listener.upgrade() else { break };
        match ev {
            EarsEvent::Microphone(s) => {
                let body = match &s {
                    MicStatus::Open(device) => {
                        tracing::info!(%device, "microphone capturing");
                        json!({"active": true, "device": device})
                    }
                    MicStatus::Closed => {
                        tracing::info!("microphone closed");
                        json!({"active": false})
                    }
                    MicStatus::Lost(e) => {
                        tracing::warn!("microphone lost: {e}; retrying");
                        json!({"active": false, "error": e})
                    }
                };
                l.publish("microphone", None, body);
            }
            EarsEvent::SpeechStarted | EarsEvent::Transcribing => {}
            EarsEvent::Failed(e) => {
                tracing::error!("hands-free listening stopped: {e}");
                l.publish("microphone", None, json!({"active": false, "error": e}));
            }
            EarsEvent::Heard {
                transcript,
                heard,
                timings,
            } => {
                let timings = json!({
                    "audio_ms": timings.audio_ms,
                    "transcribe_ms": timings.transcribe_ms,
                    "end_of_speech_ms": timings.end_of_speech_ms,
                });
                match heard {
                    Heard::Question { text, woke } => {
                        let id = format!("voice-{}", turns.fetch_add(1, Ordering::SeqCst) + 1);
                        l.publish(
                            "transcript.final",
                            Some(id.clone()),
                            json!({"text": transcript, "question": text, "wake": woke,
                                   "source": "hands_free", "timings": timings}),
                        );
                        if woke || std::mem::take(&mut fresh) {
                            conversation = format!("voice:{id}");
                        }
                        voice_turn(&l, &answerer, id, text, conversation.clone());
                    }
                    Heard::Stop => {
                        tracing::info!(%transcript, "voice command: stop");
                        answerer.stop_all();
                        l.publish(
                            "voice.command",
                            None,
                            json!({"command": "stop", "text": transcript}),
                        );
                    }
                    Heard::WakeOnly => {
                        fresh = true;
                        l.publish("wake", None, json!({"text": transcript}));
                    }
                    Heard::Other => {
                        tracing::debug!(%transcript, "not for the assistant");
                    }
                }
            }
        }
    }
}

/// The camera's frame for a spoken question, when `[vision] voice_camera`
/// says it gets one (taken off the executor: opening a camera blocks).
pub async fn look_for(eyes: Option<VoiceEyes>, question: &str) -> Option<Arc<image::RgbImage>> {
    let eyes = eyes?;
    let q = question.to_owned();
    tokio::task::spawn_blocking(move || eyes.frame_for(&q))
        .await
        .ok()
        .flatten()
}

/// Asks `text` (with the camera's frame when the question gets one) and
/// sends the answer's events to `voice` subscribers.
fn voice_turn(
    l: &Arc<Listener>,
    answerer: &Answerer,
    id: String,
    text: String,
    conversation: String,
) {
    let eyes = l.eyes.clone();
    let answerer = answerer.clone();
    let l = Arc::downgrade(l);
    tokio::spawn(async move {
        let image = look_for(eyes, &text).await;
        let ask = Ask {
            text,
            conversation: Some(conversation),
            max_tokens: None,
            image,
        };
        let mut turn = match answerer.submit(ask) {
            Ok(t) => t,
            Err(e) => {
                if let Some(l) = l.upgrade() {
                    l.state.set_if(&[State::Transcribing], State::Idle);
                    l.publish(
                        "error",
                        Some(id),
                        json!({"code": protocol::answer_code(&e).as_str(), "message": e.to_string()}),
                    );
                }
                return;
            }
        };
        while let Some(ev) = turn.events.recv().await {
            let Some(l) = l.upgrade() else { return };
            if matches!(ev, TurnEvent::End { .. })
                && let Some(ears) = &l.ears
            {
                ears.answered();
            }
            if let Some((kind, body)) = protocol::turn_event(ev, true) {
                l.publish(kind, Some(id.clone()), body);
            }
        }
    });
}
