//! The D-Bus front end: `org.seer.Assistant1` at `/org/seer/Assistant1`.
//!
//! A thin adapter over the assistant service ([`crate::service`]): every
//! method is a call on [`Assistant`](ServiceAssistant), properties read it,
//! and signals follow its typed broadcasts, so the socket and D-Bus show
//! one truth.

// zbus's `#[interface]` generates undocumented helpers (`state_changed`, ...).
#![allow(missing_docs)]

use crate::error::ServiceError;
use crate::protocol::{Code, Event, ImageRef};
use crate::service::{Assistant as ServiceAssistant, Question, TurnHandle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use zbus::object_server::{InterfaceRef, SignalEmitter};
use zbus::zvariant::{OwnedValue, Value};
use zbus::{fdo, interface};

/// Well-known bus name.
pub const NAME: &str = "org.seer.Assistant1";
/// Object path.
pub const PATH: &str = "/org/seer/Assistant1";
/// The option keys `Ask` accepts.
pub const ASK_OPTIONS: &[&str] = &[
    "image_path",
    "use_camera",
    "max_tokens",
    "conversation",
    "speak",
];

/// Errors returned to D-Bus callers, named `org.seer.Assistant1.Error.<Variant>`:
/// one per protocol [`Code`], plus `Cancelled`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.seer.Assistant1.Error")]
pub enum Error {
    /// A zbus failure.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The call was malformed (empty text, unknown option, wrong option type).
    BadRequest(String),
    /// A model could not be loaded.
    ModelMissing(String),
    /// A device is missing, or muted.
    DeviceUnavailable(String),
    /// Too many questions waiting, or the microphone is taken.
    Busy(String),
    /// An image over `[vision] max_pixels`.
    TooLarge(String),
    /// The question was cancelled (`Stop`, or another front end).
    Cancelled(String),
    /// Nothing configured here can serve it.
    Unsupported(String),
    /// Not allowed.
    PermissionDenied(String),
    /// A model download failed.
    DownloadFailed(String),
    /// A download did not match its checksum.
    ChecksumMismatch(String),
    /// Not enough disk space.
    NoSpace(String),
    /// The offload server failed.
    OffloadFailed(String),
    /// Anything else.
    Internal(String),
}

impl From<ServiceError> for Error {
    fn from(e: ServiceError) -> Self {
        let m = e.message;
        match e.code {
            Code::BadRequest => Error::BadRequest(m),
            Code::ModelMissing => Error::ModelMissing(m),
            Code::DeviceUnavailable => Error::DeviceUnavailable(m),
            Code::Busy => Error::Busy(m),
            Code::TooLarge => Error::TooLarge(m),
            Code::Unsupported => Error::Unsupported(m),
            Code::PermissionDenied => Error::PermissionDenied(m),
            Code::DownloadFailed => Error::DownloadFailed(m),
            Code::ChecksumMismatch => Error::ChecksumMismatch(m),
            Code::NoSpace => Error::NoSpace(m),
            Code::OffloadFailed => Error::OffloadFailed(m),
            Code::Internal => Error::Internal(m),
        }
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::BadRequest(m.into())
}

/// The served object.
pub struct Assistant {
    service: Arc<ServiceAssistant>,
    /// The push-to-talk capture `StartListening` began (so `StopListening`
    /// ends only its own, never a socket client's).
    capture: Mutex<Option<String>>,
}

impl Assistant {
    /// An object serving `service`.
    pub fn new(service: Arc<ServiceAssistant>) -> Self {
        Self {
            service,
            capture: Mutex::new(None),
        }
    }

    fn capture(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.capture.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn owned<'a>(v: impl Into<Value<'a>>) -> OwnedValue {
    // Only values holding file descriptors fail to convert; none are built here.
    v.into()
        .try_into()
        .expect("plain values convert to OwnedValue")
}

/// `Ask`'s options as a question.
fn question(text: String, options: &HashMap<String, OwnedValue>) -> Result<Question, Error> {
    if text.trim().is_empty() {
        return Err(bad("the question text is empty"));
    }
    let mut q = Question::text(text);
    let set_image = |q: &mut Question, image: ImageRef| {
        if q.image.replace(image).is_some() {
            return Err(bad("give image_path or use_camera, not both"));
        }
        Ok(())
    };
    for (key, value) in options {
        match key.as_str() {
            "max_tokens" => {
                let n = u32::try_from(value)
                    .map_err(|_| bad("option max_tokens must be a uint32 (u)"))?;
                q.max_tokens = Some(n as usize);
            }
            "conversation" => {
                let s = <&str>::try_from(value)
                    .map_err(|_| bad("option conversation must be a string (s)"))?;
                q.conversation = Some(s.to_owned());
            }
            "image_path" => {
                let s = <&str>::try_from(value)
                    .map_err(|_| bad("option image_path must be a string (s)"))?;
                set_image(&mut q, ImageRef::Path(s.into()))?;
            }
            "use_camera" => {
                let on = bool::try_from(value)
                    .map_err(|_| bad("option use_camera must be a boolean (b)"))?;
                if on {
                    set_image(&mut q, ImageRef::Camera)?;
                }
            }
            "speak" => {
                q.speak =
                    bool::try_from(value).map_err(|_| bad("option speak must be a boolean (b)"))?;
            }
            other => {
                return Err(bad(format!(
                    "unknown option `{other}` (known: {})",
                    ASK_OPTIONS.join(", ")
                )));
            }
        }
    }
    Ok(q)
}

/// The answer's text once the turn ends.
async fn answer(mut turn: TurnHandle) -> Result<String, Error> {
    while let Some(ev) = turn.events.recv().await {
        match ev {
            Event::AnswerEnd { text, .. } => return Ok(text.trim().to_owned()),
            Event::Cancelled {} => {
                return Err(Error::Cancelled("the question was cancelled".into()));
            }
            Event::Error { code, message } => return Err(ServiceError::new(code, message).into()),
            _ => {}
        }
    }
    Err(Error::Internal("the answer stage stopped".into()))
}

#[interface(name = "org.seer.Assistant1")]
impl Assistant {
    /// Answers `text`; replies once the answer is complete. Options:
    /// `max_tokens` (u), `conversation` (s), `image_path` (s, a photo to
    /// look at), `use_camera` (b, look through the camera) and `speak` (b,
    /// also say the answer aloud; the reply does not wait for the speech).
    async fn ask(
        &self,
        text: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, Error> {
        let q = question(text, &options)?;
        answer(self.service.ask(q)).await
    }

    /// Push-to-talk start: opens the microphone. After `StopListening`
    /// the transcript is answered; the answer comes as the `Answer` signal.
    async fn start_listening(&self) -> Result<(), Error> {
        let mut turn = self.service.listen("dbus").await?;
        *self.capture() = turn.capture().map(str::to_owned);
        tokio::spawn(async move {
            // The answer is announced by the `Answer` signal; what went
            // wrong only reaches the log (the method has returned).
            while let Some(ev) = turn.events.recv().await {
                if let Event::Error { message, .. } = ev {
                    tracing::warn!("D-Bus push-to-talk: {message}");
                }
            }
        });
        Ok(())
    }

    /// Push-to-talk stop: closes the microphone and answers what was said.
    async fn stop_listening(&self) -> Result<(), Error> {
        let capture = self.capture().take();
        match capture {
            Some(key) if self.service.stop_listening(&key) => Ok(()),
            _ => Err(bad("not listening (StartListening first)")),
        }
    }

    /// Cancels every queued and running question and silences speech.
    async fn stop(&self) {
        self.service.stop_all();
    }

    /// Says `text` aloud; replies as soon as it is queued (`Speaking`
    /// shows the audio). Fails when no voice is loaded or speech is off.
    async fn speak(&self, text: String) -> Result<(), Error> {
        let mut turn = self.service.say(&text)?;
        tokio::spawn(async move {
            while let Some(ev) = turn.events.recv().await {
                if let Event::SpeechEnd {
                    message: Some(m), ..
                } = ev
                {
                    tracing::warn!("D-Bus Speak: {m}");
                }
            }
        });
        Ok(())
    }

    /// Version, models and capabilities, as the socket's `describe` reports
    /// them (the socket's request lists are socket-only); with `[offload]`
    /// on, `offload` (a{sv}: url, mode, breaker, failures, answered,
    /// last_error), and with `[http]` on, `http` (its address).
    async fn describe(&self) -> HashMap<String, OwnedValue> {
        let d = self.service.describe();
        let c = d.capabilities;
        let caps: HashMap<&str, bool> = [
            ("text", c.text),
            ("voice", c.voice),
            ("hands_free", c.hands_free),
            ("vision", c.vision),
            ("camera", c.camera),
            ("models", c.models),
            ("speech", c.speech),
        ]
        .into();
        let mut out = HashMap::new();
        out.insert("version".to_owned(), owned(d.version));
        out.insert("models".to_owned(), owned(models(&self.service)));
        out.insert("capabilities".to_owned(), owned(caps));
        if let Some(o) = d.offload {
            let mut m: HashMap<&str, OwnedValue> = HashMap::new();
            m.insert("url", owned(o.url));
            m.insert("mode", owned(o.mode));
            m.insert("breaker", owned(o.breaker));
            m.insert("failures", owned(o.failures));
            m.insert("answered", owned(o.answered));
            if let Some(e) = o.last_error {
                m.insert("last_error", owned(e));
            }
            out.insert("offload".to_owned(), owned(m));
        }
        if let Some(h) = d.http {
            out.insert("http".to_owned(), owned(h));
        }
        out
    }

    /// idle, listening, transcribing, thinking or speaking.
    #[zbus(property)]
    async fn state(&self) -> String {
        self.service.state().as_str().to_owned()
    }

    /// Whether Seer's voice is playing now; every change is announced.
    #[zbus(property)]
    async fn speaking(&self) -> bool {
        self.service.speaking()
    }

    /// Whether answers may be spoken (`[speech] enabled`). Muting does not
    /// silence speech; turning this off does, at once.
    #[zbus(property)]
    async fn speech_enabled(&self) -> bool {
        self.service.speech_available()
    }

    /// Turns speech on or off.
    #[zbus(property)]
    async fn set_speech_enabled(&mut self, on: bool) {
        self.service.set_speech(on);
    }

    /// The privacy switch: while true, microphone and camera stay off.
    #[zbus(property)]
    async fn muted(&self) -> bool {
        self.service.muted()
    }

    /// Sets the privacy switch.
    #[zbus(property)]
    async fn set_muted(&mut self, muted: bool) {
        self.service.set_muted(muted);
    }

    /// Whether audio flows from the microphone (hands-free listening or a
    /// push-to-talk capture): the privacy indicator. Every change is
    /// announced.
    #[zbus(property)]
    async fn microphone_active(&self) -> bool {
        self.service.microphone_active()
    }

    /// Whether the camera is capturing: the privacy indicator. It turns on
    /// with a look and off after the keep-warm time or on mute; every
    /// change is announced.
    #[zbus(property)]
    async fn camera_active(&self) -> bool {
        self.service.camera_active()
    }

    /// Role → model.
    #[zbus(property)]
    async fn models(&self) -> HashMap<String, String> {
        models(&self.service)
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

/// Role → model, as `Models` and `Describe` name them.
fn models(service: &ServiceAssistant) -> HashMap<String, String> {
    let d = service.describe();
    let mut m = HashMap::from([(
        "language".to_owned(),
        d.models.language.path.display().to_string(),
    )]);
    if let Some(v) = d.models.vision {
        m.insert("vision".to_owned(), v.files);
    }
    m
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
/// turn the service's broadcasts into D-Bus signals.
pub async fn start(bus: Bus, assistant: Assistant) -> Result<zbus::Connection, StartError> {
    let service = assistant.service.clone();
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
    announce(iface, &service);
    Ok(conn)
}

/// A signal or property change to emit.
type Job = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `act`'s job for every broadcast value, for as long as it lasts.
fn on_each<T: Clone + Send + 'static, F>(mut rx: tokio::sync::broadcast::Receiver<T>, mut act: F)
where
    F: FnMut(T) -> Option<Job> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(v) => {
                    if let Some(f) = act(v) {
                        f.await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
}

/// Property changes and signals, from the service's typed broadcasts.
fn announce(iface: InterfaceRef<Assistant>, service: &ServiceAssistant) {
    let i = iface.clone();
    on_each(service.subscribe_state(), move |_| {
        let i = i.clone();
        Some(Box::pin(async move {
            let obj = i.get().await;
            let _ = obj.state_changed(i.signal_emitter()).await;
            let _ = obj.speaking_changed(i.signal_emitter()).await;
        }))
    });
    let i = iface.clone();
    let mut muted = service.subscribe_muted();
    tokio::spawn(async move {
        while muted.changed().await.is_ok() {
            let obj = i.get().await;
            let _ = obj.muted_changed(i.signal_emitter()).await;
            let _ = obj.microphone_active_changed(i.signal_emitter()).await;
            let _ = obj.camera_active_changed(i.signal_emitter()).await;
        }
    });
    let i = iface.clone();
    on_each(service.subscribe_camera(), move |_| {
        let i = i.clone();
        Some(Box::pin(async move {
            if let Err(e) = i
                .get()
                .await
                .camera_active_changed(i.signal_emitter())
                .await
            {
                tracing::warn!("D-Bus CameraActive change not announced: {e}");
            }
        }))
    });
    let i = iface.clone();
    on_each(service.subscribe_voice(), move |b| {
        let i = i.clone();
        match b.event {
            Event::Microphone { .. } => Some(Box::pin(async move {
                let _ = i
                    .get()
                    .await
                    .microphone_active_changed(i.signal_emitter())
                    .await;
            })),
            Event::TranscriptFinal(t) => Some(Box::pin(async move {
                let _ = Assistant::transcript(i.signal_emitter(), &t.text, true).await;
            })),
            _ => None,
        }
    });
    let i = iface;
    on_each(service.subscribe_finished(), move |f| {
        let i = i.clone();
        Some(Box::pin(async move {
            let _ = Assistant::answer(i.signal_emitter(), &f.question, &f.answer).await;
        }))
    });
}
