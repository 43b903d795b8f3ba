//! The assistant service: the one owner of turns, voice, camera, models and
//! state, under every front end.
//!
//! Why one service: the socket, D-Bus and every later front end (speech,
//! HTTP) must show one truth. When each ran turns itself, the copies
//! drifted (a D-Bus push-to-talk left the state at `transcribing`; D-Bus
//! reported no vision). Here a front end only translates: it turns its
//! request into a call on [`Assistant`], and the [`TurnHandle`]'s typed
//! [`Event`]s into its own wire format. None of them starts a turn, loads an
//! image or reads a voice event by itself.
//!
//! - [`turn`]: typed questions, image loading, the answer's events.
//! - [`voice`]: push-to-talk and hands-free speech becoming turns, and the
//!   `voice` broadcast.
//! - [`speech`]: which turns are spoken aloud, `say`, barge-in.

mod speech;
mod turn;
mod voice;

pub use speech::SpeechPolicy;
pub use turn::{Canceller, Question, TurnHandle};
pub use voice::Broadcast;

use crate::camera::Camera;
use crate::config::VoiceCamera;
use crate::error::ServiceError;
use crate::listen::Listener;
use crate::models::Models;
use crate::protocol::{
    self, Capabilities, Describe, Event, ModelInfo, Models as ModelsInfo, Status, VisionInfo,
};
use seer_pipelines::answer::{Answerer, Finished};
use seer_pipelines::listen::EarsEvent;
use seer_pipelines::state::{State, StateBus};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};

/// What the service is made of; built once at start-up from the resolved
/// configuration.
pub struct Parts {
    /// The answer stage.
    pub answerer: Answerer,
    /// State and the privacy switch.
    pub state: StateBus,
    /// The microphone and speech models.
    pub listener: Arc<Listener>,
    /// What the always-on listener hears (`None` when listening is off).
    pub heard: Option<tokio::sync::mpsc::Receiver<EarsEvent>>,
    /// The camera.
    pub camera: Arc<Camera>,
    /// The catalogue, models directory and downloads.
    pub models: Arc<Models>,
    /// The language model, as `status` names it.
    pub language: ModelInfo,
    /// The vision-language model (`None`: vision is off).
    pub vision: Option<VisionInfo>,
    /// `[vision] max_pixels`.
    pub max_image_pixels: u64,
    /// When spoken questions look through the camera.
    pub voice_camera: VoiceCamera,
    /// The speech stage (`None`: no voice, answers are text only).
    pub speaker: Option<seer_pipelines::speak::Speaker>,
    /// Which turns speak.
    pub speech_policy: SpeechPolicy,
    /// `[speech] enabled` at start.
    pub speech_enabled: bool,
    /// The voice's `.onnx`, as `describe` names it.
    pub voice: Option<std::path::PathBuf>,
    /// The HTTP API's address, as `describe` names it (`None`: off).
    pub http: Option<String>,
}

/// The assistant. Cheap to share (`Arc`); every method is safe to call
/// from the tokio executor (blocking work goes to threads).
pub struct Assistant {
    answerer: Answerer,
    state: StateBus,
    listener: Arc<Listener>,
    camera: Arc<Camera>,
    models: Arc<Models>,
    language: ModelInfo,
    vision: Option<VisionInfo>,
    max_image_pixels: u64,
    voice_camera: VoiceCamera,
    started: Instant,
    voice: broadcast::Sender<Broadcast>,
    camera_events: broadcast::Sender<Event>,
    captures: AtomicU64,
    speech: speech::SpeechParts,
    voice_file: Option<std::path::PathBuf>,
    http: Option<String>,
}

impl std::fmt::Debug for Assistant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assistant")
            .field("language", &self.language)
            .field("vision", &self.vision)
            .finish()
    }
}

/// How far a broadcast subscriber may fall behind before it skips events.
const BROADCAST: usize = 256;

impl Assistant {
    /// Starts the service. Must run inside the tokio runtime: it spawns the
    /// tasks that act on what the microphone hears and watch the camera.
    pub fn start(parts: Parts) -> Arc<Self> {
        let this = Arc::new(Self {
            answerer: parts.answerer,
            state: parts.state,
            listener: parts.listener,
            camera: parts.camera,
            models: parts.models,
            language: parts.language,
            vision: parts.vision,
            max_image_pixels: parts.max_image_pixels,
            voice_camera: parts.voice_camera,
            started: Instant::now(),
            voice: broadcast::channel(BROADCAST).0,
            camera_events: broadcast::channel(BROADCAST).0,
            captures: AtomicU64::new(0),
            speech: speech::SpeechParts::new(
                parts.speaker,
                parts.speech_policy,
                parts.speech_enabled,
            ),
            voice_file: parts.voice,
            http: parts.http,
        });
        if let Some(heard) = parts.heard {
            tokio::spawn(voice::hands_free(Arc::downgrade(&this), heard));
        }
        tokio::spawn(watch_camera(
            this.camera.subscribe_active(),
            this.camera.subscribe_errors(),
            this.camera_events.clone(),
        ));
        this
    }

    /// `status`.
    pub fn status(&self) -> Status {
        Status {
            state: self.state.get().into(),
            muted: self.state.muted(),
            microphone: self.listener.microphone_active(),
            camera: self.camera.describe(),
            pending: self.answerer.pending(),
            speech: self.speech_available(),
            model: self.language.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            offload: self.answerer.offload_health(),
        }
    }

    /// `describe`: what this daemon can do, the same for every front end.
    pub fn describe(&self) -> Describe {
        let names = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Describe {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: protocol::VERSION,
            requests: names(protocol::SUPPORTED),
            unsupported: names(protocol::UNSUPPORTED),
            subscribable: names(protocol::SUBSCRIBABLE),
            capabilities: Capabilities {
                text: true,
                voice: self.listener.enabled(),
                hands_free: self.listener.hands_free(),
                vision: self.vision.is_some(),
                camera: self.camera.configured(),
                models: true,
                speech: self.voice_file.is_some(),
            },
            models: ModelsInfo {
                language: self.language.clone(),
                vision: self.vision.clone(),
                voice: self.voice_file.clone(),
            },
            offload: self.answerer.offload_health(),
            http: self.http.clone(),
        }
    }

    /// Cancels every queued and running turn, whoever asked, and
    /// silences speech.
    pub fn stop_all(&self) {
        self.answerer.stop_all();
        self.stop_speaking();
    }

    /// Turns waiting or running.
    pub fn pending(&self) -> usize {
        self.answerer.pending()
    }

    /// Cancels everything and gives the cancelled turns up to two seconds
    /// to report `cancelled` to their clients (shutdown).
    pub async fn wind_down(&self) {
        self.stop_all();
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The privacy switch: microphone and camera stay off while it is on.
    pub fn set_muted(&self, muted: bool) {
        self.state.set_muted(muted);
    }

    /// Whether the privacy switch is on.
    pub fn muted(&self) -> bool {
        self.state.muted()
    }

    /// Changes of the privacy switch.
    pub fn subscribe_muted(&self) -> watch::Receiver<bool> {
        self.state.subscribe_muted()
    }

    /// What the assistant is doing.
    pub fn state(&self) -> State {
        self.state.get()
    }

    /// Changes of [`Assistant::state`].
    pub fn subscribe_state(&self) -> broadcast::Receiver<State> {
        self.state.subscribe()
    }

    /// `camera {active, error}` whenever the camera opens, closes or fails.
    pub fn subscribe_camera(&self) -> broadcast::Receiver<Event> {
        self.camera_events.subscribe()
    }

    /// Whether the camera captures now (the privacy indicator).
    pub fn camera_active(&self) -> bool {
        self.camera.active()
    }

    /// Whether audio flows from the microphone now (the privacy indicator).
    pub fn microphone_active(&self) -> bool {
        self.listener.microphone_active()
    }

    /// Every turn that ends with an answer, from any front end.
    pub fn subscribe_finished(&self) -> broadcast::Receiver<Finished> {
        self.answerer.subscribe_finished()
    }

    /// The language model (for D-Bus's `Models`).
    pub fn language(&self) -> &ModelInfo {
        &self.language
    }

    /// `models.list`: reads manifests and sizes directories, off the
    /// executor.
    pub async fn models_list(&self) -> Result<Event, ServiceError> {
        let models = self.models.clone();
        tokio::task::spawn_blocking(move || {
            let rows = crate::models::list(&models.catalog, &models.store)?;
            Ok(Event::ModelsList {
                models: rows,
                dir: models.store.dir().to_owned(),
            })
        })
        .await
        .map_err(|e| ServiceError::internal(format!("listing models: {e}")))?
    }

    /// `models.pull`: downloads catalogue model `name` on a thread of its
    /// own; progress and the end arrive on the handle.
    pub fn models_pull(&self, name: &str) -> Result<TurnHandle, ServiceError> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let canceller = Canceller::new();
        self.models.pull(name, canceller.token(), tx)?;
        Ok(TurnHandle::new(rx, canceller))
    }
}

/// Turns the camera's indicator and failures into `camera` events.
async fn watch_camera(
    mut active: watch::Receiver<bool>,
    mut errors: broadcast::Receiver<String>,
    out: broadcast::Sender<Event>,
) {
    loop {
        let event = tokio::select! {
            changed = active.changed() => {
                if changed.is_err() {
                    break;
                }
                Event::Camera { active: *active.borrow_and_update(), error: None }
            }
            err = errors.recv() => match err {
                Ok(e) => Event::Camera { active: *active.borrow(), error: Some(e) },
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            },
        };
        let _ = out.send(event);
    }
}
