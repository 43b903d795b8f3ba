//! The D-Bus front end: `org.seer.Assistant1` at `/org/seer/Assistant1`.
//!
//! Thin by design: every method hands off to the same answer stage and state
//! bus the socket uses, so both front ends show one truth. Properties follow
//! the [`StateBus`]; the `Answer` signal is emitted for every finished turn,
//! whichever front end asked.

// zbus's `#[interface]` generates undocumented helpers (`state_changed`, ...).
#![allow(missing_docs)]

use crate::listen::Listener;
use crate::protocol::{Code, ImageRef};
use seer_models::generate::CancelToken;
use seer_pipelines::answer::{AnswerError, Answerer, Ask, TurnEvent};
use seer_pipelines::listen::PttMsg;
use seer_pipelines::state::StateBus;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{fdo, interface};

/// Well-known bus name.
pub const NAME: &str = "org.seer.Assistant1";
/// Object path.
pub const PATH: &str = "/org/seer/Assistant1";
/// The option keys `Ask` accepts.
pub const ASK_OPTIONS: &[&str] = &["image_path", "use_camera", "max_tokens", "conversation"];

/// Errors returned to D-Bus callers, named `org.seer.Assistant1.Error.<Variant>`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.seer.Assistant1.Error")]
pub enum Error {
    /// A zbus failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The call was malformed (empty text, unknown option, wrong option type).
    BadRequest(String),
    /// The language model could not be loaded.
    ModelMissing(String),
    /// A device is missing.
    DeviceUnavailable(String),
    /// Too many questions waiting.
    Busy(String),
    /// The question was cancelled (`Stop`, or another front end).
    Cancelled(String),
    /// The subsystem has not landed in this build.
    Unsupported(String),
    /// Anything else.
    Internal(String),
}

impl From<AnswerError> for Error {
    fn from(e: AnswerError) -> Self {
        let m = e.to_string();
        match e {
            AnswerError::Busy(_) => Error::Busy(m),
            AnswerError::ModelMissing(_) => Error::ModelMissing(m),
            AnswerError::BadRequest(_) => Error::BadRequest(m),
            AnswerError::Unsupported(_) => Error::Unsupported(m),
            AnswerError::Internal(_) => Error::Internal(m),
        }
    }
}

/// The served object.
pub struct Assistant {
    answerer: Answerer,
    state: StateBus,
    models: HashMap<String, String>,
    listener: Option<Arc<Listener>>,
    camera: Option<(Arc<crate::camera::Camera>, u64)>,
    /// Whether a vision model is configured (the camera is never opened
    /// for nothing).
    vision: bool,
    captures: AtomicU64,
}

impl Assistant {
    /// An object serving `answerer` and `state`; `models` is role → model.
    pub fn new(answerer: Answerer, state: StateBus, models: HashMap<String, String>) -> Self {
        Self {
            answerer,
            state,
            models,
            listener: None,
            camera: None,
            vision: false,
            captures: AtomicU64::new(0),
        }
    }

    /// Serves the `image_path` and `use_camera` options and `CameraActive`
    /// (`max_pixels` bounds `image_path` images).
    /// `vision` says whether a vision model is configured.
    pub fn with_camera(
        mut self,
        camera: Arc<crate::camera::Camera>,
        max_pixels: u64,
        vision: bool,
    ) -> Self {
        self.camera = Some((camera, max_pixels));
        self.vision = vision;
        self
    }

    /// Serves `StartListening`/`StopListening` with `listener`.
    pub fn with_listener(mut self, listener: Arc<Listener>) -> Self {
        self.listener = Some(listener);
        self
    }
}

fn owned<'a>(v: impl Into<Value<'a>>) -> OwnedValue {
    // Only values holding file descriptors fail to convert; none are built here.
    v.into()
        .try_into()
        .expect("plain values convert to OwnedValue")
}

#[interface(name = "org.seer.Assistant1")]
impl Assistant {
    /// Answers `text`; replies once the answer is complete. Options:
    /// `max_tokens` (u), `conversation` (s), `image_path` (s, a photo to
    /// look at) and `use_camera` (b, look through the camera).
    async fn ask(
        &self,
        text: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, Error> {
        if text.trim().is_empty() {
            return Err(Error::BadRequest("the question text is empty".into()));
        }
        let mut ask = Ask {
            text,
            conversation: None,
            max_tokens: None,
            image: None,
        };
        let mut image = None;
        for (key, value) in &options {
            match key.as_str() {
                "max_tokens" => {
                    let n = u32::try_from(value).map_err(|_| {
                        Error::BadRequest("option max_tokens must be a uint32 (u)".into())
                    })?;
                    ask.max_tokens = Some(n as usize);
                }
                "conversation" => {
                    let s = <&str>::try_from(value).map_err(|_| {
                        Error::BadRequest("option conversation must be a string (s)".into())
                    })?;
                    ask.conversation = Some(s.to_owned());
                }
                "image_path" => {
                    let s = <&str>::try_from(value).map_err(|_| {
                        Error::BadRequest("option image_path must be a string (s)".into())
                    })?;
                    if image.is_some() {
                        return Err(Error::BadRequest(
                            "give image_path or use_camera, not both".into(),
                        ));
                    }
                    image = Some(ImageRef {
                        path: Some(s.into()),
                        base64: None,
                        camera: None,
                    });
                }
                "use_camera" => {
                    let on = bool::try_from(value).map_err(|_| {
                        Error::BadRequest("option use_camera must be a boolean (b)".into())
                    })?;
                    if on {
                        if image.is_some() {
                            return Err(Error::BadRequest(
                                "give image_path or use_camera, not both".into(),
                            ));
                        }
                        image = Some(ImageRef {
                            path: None,
                            base64: None,
                            camera: Some(true),
                        });
                    }
                }
                other => {
                    return Err(Error::BadRequest(format!(
                        "unknown option `{other}` (known: {})",
                        ASK_OPTIONS.join(", ")
                    )));
                }
            }
        }
        if let Some(image) = image {
            let Some((camera, max)) = self.camera.clone() else {
                return Err(Error::Unsupported("images are not configured".into()));
            };
            if !self.vision {
                return Err(Error::Unsupported(
                    "no vision model is configured ([vision] model); this daemon cannot look at images"
                        .into(),
                ));
            }
            let got =
                tokio::task::spawn_blocking(move || crate::vision::load(&image, max, &camera))
                    .await
                    .map_err(|e| Error::Internal(format!("reading the image: {e}")))?;
            ask.image = Some(got.map_err(|(code, m)| match code {
                Code::TooLarge | Code::BadRequest => Error::BadRequest(m),
                Code::DeviceUnavailable => Error::DeviceUnavailable(m),
                Code::Unsupported => Error::Unsupported(m),
                _ => Error::Internal(m),
            })?);
        }
        let mut turn = self.answerer.submit(ask)?;
        while let Some(ev) = turn.events.recv().await {
            match ev {
                TurnEvent::End { text, .. } => return Ok(text.trim().to_owned()),
                TurnEvent::Cancelled => {
                    return Err(Error::Cancelled("the question was cancelled".into()));
                }
                TurnEvent::Failed(e) => return Err(e.into()),
                _ => {}
            }
        }
        Err(Error::Internal("the answer stage stopped".into()))
    }

    /// Push-to-talk start: opens the microphone. After `StopListening`
    /// the transcript is answered; the answer comes as the `Answer` signal.
    async fn start_listening(&self) -> Result<(), Error> {
        let Some(listener) = &self.listener else {
            return Err(Error::Unsupported("listening is not configured".into()));
        };
        let id = format!("dbus-{}", self.captures.fetch_add(1, Ordering::SeqCst));
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        listener
            .push_to_talk(&id, CancelToken::new(), tx)
            .map_err(|(code, m)| match code {
                Code::ModelMissing => Error::ModelMissing(m),
                Code::DeviceUnavailable => Error::DeviceUnavailable(m),
                Code::Busy => Error::Busy(m),
                _ => Error::Internal(m),
            })?;
        let answerer = self.answerer.clone();
        let listener2 = listener.clone();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                match msg {
                    PttMsg::Transcript(text) if !text.trim().is_empty() => {
                        listener2.announce_transcript(&id, &text);
                        let image = crate::listen::look_for(listener2.eyes(), &text).await;
                        let ask = Ask {
                            text,
                            conversation: None,
                            max_tokens: None,
                            image,
                        };
                        // The answer is announced by the `Answer` signal.
                        match answerer.submit(ask) {
                            Ok(mut turn) => while turn.events.recv().await.is_some() {},
                            Err(e) => tracing::warn!("D-Bus push-to-talk: {e}"),
                        }
                        return;
                    }
                    PttMsg::Failed(e) => tracing::warn!("D-Bus push-to-talk: {e}"),
                    _ => {}
                }
            }
        });
        Ok(())
    }

    /// Push-to-talk stop: closes the microphone and answers what was said.
    async fn stop_listening(&self) -> Result<(), Error> {
        let listener = self
            .listener
            .as_ref()
            .ok_or_else(|| Error::Unsupported("listening is not configured".into()))?;
        match listener.active() {
            Some(id) if id.starts_with("dbus-") && listener.stop(&id) => Ok(()),
            _ => Err(Error::BadRequest(
                "not listening (StartListening first)".into(),
            )),
        }
    }

    /// Cancels every queued and running question.
    async fn stop(&self) {
        self.answerer.stop_all();
    }

    /// Version, models, devices and capabilities.
    async fn describe(&self) -> HashMap<String, OwnedValue> {
        let caps: HashMap<&str, bool> = [
            ("text", true),
            ("voice", self.listener.is_some()),
            ("vision", false),
            ("models", true),
        ]
        .into();
        let mut d = HashMap::new();
        d.insert("version".to_owned(), owned(env!("CARGO_PKG_VERSION")));
        d.insert("models".to_owned(), owned(self.models.clone()));
        d.insert("devices".to_owned(), owned(Vec::<String>::new()));
        d.insert("capabilities".to_owned(), owned(caps));
        d
    }

    /// idle, listening, transcribing, thinking or speaking.
    #[zbus(property)]
    async fn state(&self) -> String {
        self.state.get().as_str().to_owned()
    }

    /// The privacy switch: while true, microphone and camera stay off.
    #[zbus(property)]
    async fn muted(&self) -> bool {
        self.state.muted()
    }

    /// Sets the privacy switch.
    #[zbus(property)]
    async fn set_muted(&mut self, muted: bool) {
        self.state.set_muted(muted);
    }

    /// Whether audio flows from the microphone (hands-free listening or a
    /// push-to-talk capture): the privacy indicator. Every change is
    /// announced.
    #[zbus(property)]
    async fn microphone_active(&self) -> bool {
        self.listener
            .as_ref()
            .is_some_and(|l| l.microphone_active())
    }

    /// Whether the camera is capturing: the privacy indicator. It turns on
    /// with a look and off after the keep-warm time or on mute; every
    /// change is announced.
    #[zbus(property)]
    async fn camera_active(&self) -> bool {
        self.camera.as_ref().is_some_and(|(c, _)| c.active())
    }

    /// Role → model.
    #[zbus(property)]
    async fn models(&self) -> HashMap<String, String> {
        self.models.clone()
    }

    /// Seer's version.
    #[zbus(property)]
    async fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// A question heard (hands-free or push-to-talk); `final` is always
    /// true today (no partial transcripts).
    #[zbus(signal)]
    async fn transcript(emitter: &SignalEmitter<'_>, text: &str, r#final: bool)
    -> zbus::Result<()>;

    /// A finished turn, from any front end.
    #[zbus(signal)]
    async fn answer(emitter: &SignalEmitter<'_>, question: &str, answer: &str) -> zbus::Result<()>;
}

/// Which bus to serve on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// The user's session bus.
    Session,
    /// The system bus (needs the policy file in share/dbus-1/system.d).
    System,
}

/// Why D-Bus could not be served.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No bus to connect to: the daemon carries on without D-Bus.
    #[error("cannot connect to the {bus} bus: {source}")]
    NoBus {
        /// session or system.
        bus: &'static str,
        /// Why.
        source: zbus::Error,
    },
    /// Another process owns the name.
    #[error(
        "the bus name {NAME} is already owned by {owner}; stop that seerd, or set dbus.required = false"
    )]
    NameTaken {
        /// Its unique name.
        owner: String,
    },
    /// Anything else.
    #[error("D-Bus: {0}")]
    Other(#[from] zbus::Error),
}

/// Connects, serves the object, claims the name, and starts the tasks that
/// forward state, mute and answer changes as D-Bus signals.
pub async fn start(bus: Bus, assistant: Assistant) -> Result<zbus::Connection, StartError> {
    let state = assistant.state.clone();
    let voice = assistant.listener.as_ref().map(|l| l.subscribe());
    let camera = assistant.camera.as_ref().map(|(c, _)| c.subscribe_active());
    let mut finished = assistant.answerer.subscribe_finished();
    let builder = match bus {
        Bus::Session => zbus::connection::Builder::session(),
        Bus::System => zbus::connection::Builder::system(),
    };
    let bus_name = if bus == Bus::Session {
        "session"
    } else {
        "system"
    };
    let conn = builder
        .and_then(|b| b.serve_at(PATH, assistant))
        .map_err(|source| StartError::NoBus {
            bus: bus_name,
            source,
        })?
        .build()
        .await
        .map_err(|source| StartError::NoBus {
            bus: bus_name,
            source,
        })?;
    match conn
        .request_name_with_flags(NAME, fdo::RequestNameFlags::DoNotQueue.into())
        .await
    {
        Ok(fdo::RequestNameReply::PrimaryOwner) | Ok(fdo::RequestNameReply::AlreadyOwner) => {}
        Ok(_) | Err(zbus::Error::NameTaken) => {
            let owner = match fdo::DBusProxy::new(&conn).await {
                Ok(p) => match zbus::names::BusName::try_from(NAME) {
                    Ok(n) => p
                        .get_name_owner(n)
                        .await
                        .map(|o| o.to_string())
                        .unwrap_or_else(|_| "another process".into()),
                    Err(_) => "another process".into(),
                },
                Err(_) => "another process".into(),
            };
            return Err(StartError::NameTaken { owner });
        }
        Err(e) => return Err(e.into()),
    }
    let iface = conn.object_server().interface::<_, Assistant>(PATH).await?;

    let i = iface.clone();
    let mut states = state.subscribe();
    tokio::spawn(async move {
        loop {
            match states.recv().await {
                Ok(_) => {
                    let _ = i.get().await.state_changed(i.signal_emitter()).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    let i = iface.clone();
    let mut muted = state.subscribe_muted();
    tokio::spawn(async move {
        while muted.changed().await.is_ok() {
            let obj = i.get().await;
            let _ = obj.muted_changed(i.signal_emitter()).await;
            let _ = obj.microphone_active_changed(i.signal_emitter()).await;
            let _ = obj.camera_active_changed(i.signal_emitter()).await;
        }
    });
    if let Some(mut camera) = camera {
        let i = iface.clone();
        tokio::spawn(async move {
            while camera.changed().await.is_ok() {
                let obj = i.get().await;
                if let Err(e) = obj.camera_active_changed(i.signal_emitter()).await {
                    tracing::warn!("D-Bus CameraActive change not announced: {e}");
                }
            }
        });
    }
    if let Some(mut voice) = voice {
        let i = iface.clone();
        tokio::spawn(async move {
            loop {
                match voice.recv().await {
                    Ok(ev) if ev.kind == "microphone" => {
                        let obj = i.get().await;
                        let _ = obj.microphone_active_changed(i.signal_emitter()).await;
                    }
                    Ok(ev) if ev.kind == "transcript.final" => {
                        let text = ev.body["text"].as_str().unwrap_or_default();
                        let _ = Assistant::transcript(i.signal_emitter(), text, true).await;
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        });
    }
    let i = iface;
    tokio::spawn(async move {
        loop {
            match finished.recv().await {
                Ok(f) => {
                    let _ = Assistant::answer(i.signal_emitter(), &f.question, &f.answer).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    Ok(conn)
}
