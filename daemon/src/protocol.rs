//! The socket protocol, version 1: one JSON object per line, every message
//! carries `"v": 1`; requests carry a client-chosen `id` that every event
//! answering them echoes. See `docs/protocol.md`.

use seer_pipelines::answer::{AnswerError, TurnEvent};
use serde::Deserialize;
use serde_json::{Value, json};

/// Protocol version spoken here.
pub const VERSION: u64 = 1;

/// Stable error codes (`error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Malformed or invalid request.
    BadRequest,
    /// The model could not be loaded.
    ModelMissing,
    /// A device (microphone, camera, GPU) is not available.
    DeviceUnavailable,
    /// Too many turns queued.
    Busy,
    /// Line or payload over the limit.
    TooLarge,
    /// A request for a subsystem that has not landed yet.
    Unsupported,
    /// The peer is not allowed to use this socket.
    PermissionDenied,
    /// A model download failed (HTTP error, network); pulling again resumes.
    DownloadFailed,
    /// Downloaded bytes did not match the published sha256.
    ChecksumMismatch,
    /// Not enough disk space for a download.
    NoSpace,
    /// A bug or unexpected failure.
    Internal,
}

impl Code {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::ModelMissing => "model_missing",
            Code::DeviceUnavailable => "device_unavailable",
            Code::Busy => "busy",
            Code::TooLarge => "too_large",
            Code::Unsupported => "unsupported",
            Code::PermissionDenied => "permission_denied",
            Code::DownloadFailed => "download_failed",
            Code::ChecksumMismatch => "checksum_mismatch",
            Code::NoSpace => "no_space",
            Code::Internal => "internal",
        }
    }
}

/// Request types that belong to subsystems not built yet; they are answered
/// with `unsupported` and listed as such in `describe`.
pub const UNSUPPORTED: &[&str] = &[];

/// Request types served.
pub const SUPPORTED: &[&str] = &[
    "ask",
    "cancel",
    "stop",
    "subscribe",
    "status",
    "describe",
    "models.list",
    "models.pull",
    "listen.start",
    "listen.stop",
    "set",
];

/// Event names a client may subscribe to.
pub const SUBSCRIBABLE: &[&str] = &["state", "voice"];

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Ask a question.
    Ask(AskRequest),
    /// Cancel the request with this id (on this connection).
    Cancel {
        /// The request to cancel.
        id: String,
    },
    /// Cancel every queued and running turn.
    Stop {
        /// Echoed.
        id: Option<String>,
    },
    /// Receive broadcast events.
    Subscribe {
        /// Echoed.
        id: Option<String>,
        /// Event names (see [`SUBSCRIBABLE`]).
        events: Vec<String>,
    },
    /// Current state and queue.
    Status {
        /// Echoed.
        id: Option<String>,
    },
    /// Version, models, capabilities.
    Describe {
        /// Echoed.
        id: Option<String>,
    },
    /// `models.list`: the catalogue and what is installed.
    ModelsList {
        /// Echoed.
        id: Option<String>,
    },
    /// `models.pull {name}`: download a catalogue model.
    ModelsPull {
        /// Echoed by every event of the pull; `cancel` takes it.
        id: String,
        /// The catalogue name.
        name: String,
    },
    /// `listen.start`: push-to-talk pressed; capture from the microphone.
    ListenStart {
        /// Echoed by the transcript and the answer that follow.
        id: String,
    },
    /// `set`: change a setting (today: the privacy switch).
    Set {
        /// Echoed.
        id: Option<String>,
        /// Mute (true) or unmute the microphone and camera.
        muted: bool,
    },
    /// `listen.stop`: push-to-talk released; transcribe and answer.
    ListenStop {
        /// The `listen.start`'s id.
        id: String,
    },
    /// A known request type whose subsystem has not landed.
    Unsupported {
        /// Echoed.
        id: Option<String>,
        /// The request type.
        kind: String,
    },
}

/// `ask`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// Client-chosen id, echoed by every event of this turn.
    pub id: String,
    /// The question.
    pub text: String,
    /// Continue this conversation.
    #[serde(default)]
    pub conversation: Option<String>,
    /// Answer length limit.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// Stream `answer.delta` events (default true).
    #[serde(default)]
    pub stream: Option<bool>,
    /// An image to look at: exactly one of its fields.
    #[serde(default)]
    pub image: Option<ImageRef>,
}

/// Where an `ask`'s image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    /// A file the daemon reads.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    /// The file's bytes, base64 (standard alphabet, padding optional).
    #[serde(default)]
    pub base64: Option<String>,
    /// The camera's current (sharpest recent) frame.
    #[serde(default)]
    pub camera: Option<bool>,
}

/// A request that could not be parsed: the code, a message naming the
/// problem, and the id if one could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    /// `bad_request` (or `too_large` from the reader).
    pub code: Code,
    /// What was wrong.
    pub message: String,
    /// The request id, when the line had a readable one.
    pub id: Option<String>,
}

fn bad(message: impl Into<String>, id: Option<String>) -> ParseError {
    ParseError {
        code: Code::BadRequest,
        message: message.into(),
        id,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdOnly {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullBody {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    muted: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    #[serde(default)]
    id: Option<String>,
    events: Vec<String>,
}

/// Parses one request line (without its newline).
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        if std::str::from_utf8(line).is_err() {
            bad("the line is not valid UTF-8", None)
        } else {
            bad(format!("invalid JSON: {e}"), None)
        }
    })?;
    let Value::Object(obj) = &value else {
        return Err(bad("a request must be a JSON object", None));
    };
    let id = obj.get("id").and_then(|v| v.as_str()).map(str::to_owned);
    match obj.get("v") {
        None => return Err(bad("missing field `v` (protocol version, must be 1)", id)),
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(v) => {
            return Err(bad(
                format!("unsupported protocol version {v}; this daemon speaks v1"),
                id,
            ));
        }
    }
    let kind = match obj.get("type") {
        None => return Err(bad("missing field `type`", id)),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(bad(
                format!("field `type` must be a string, not {other}"),
                id,
            ));
        }
    };
    let field_err = |e: serde_json::Error| bad(format!("{kind}: {e}"), id.clone());
    // The typed bodies below see only the request's own fields.
    let mut body = obj.clone();
    body.remove("v");
    body.remove("type");
    let body = Value::Object(body);
    Ok(match kind.as_str() {
        "ask" => {
            let a: AskRequest = serde_json::from_value(body.clone()).map_err(field_err)?;
            if a.text.trim().is_empty() {
                return Err(bad("ask: `text` is empty", Some(a.id)));
            }
            if a.id.is_empty() {
                return Err(bad("ask: `id` is empty", None));
            }
            if let Some(img) = &a.image {
                let given = usize::from(img.path.is_some())
                    + usize::from(img.base64.is_some())
                    + usize::from(img.camera == Some(true));
                if given != 1 || img.camera == Some(false) {
                    return Err(bad(
                        "ask.image: give exactly one of `path`, `base64` or `camera: true`",
                        Some(a.id),
                    ));
                }
            }
            Request::Ask(a)
        }
        "cancel" => {
            let c: CancelBody = serde_json::from_value(body.clone()).map_err(field_err)?;
            Request::Cancel { id: c.id }
        }
        "listen.start" | "listen.stop" => {
            let c: CancelBody = serde_json::from_value(body.clone()).map_err(field_err)?;
            if c.id.is_empty() {
                return Err(bad(format!("{kind}: `id` is empty"), None));
            }
            if kind == "listen.start" {
                Request::ListenStart { id: c.id }
            } else {
                Request::ListenStop { id: c.id }
            }
        }
        "subscribe" => {
            let s: SubscribeBody = serde_json::from_value(body.clone()).map_err(field_err)?;
            if let Some(unknown) = s
                .events
                .iter()
                .find(|e| !SUBSCRIBABLE.contains(&e.as_str()))
            {
                return Err(bad(
                    format!(
                        "subscribe: unknown event `{unknown}` (subscribable: {})",
                        SUBSCRIBABLE.join(", ")
                    ),
                    s.id,
                ));
            }
            Request::Subscribe {
                id: s.id,
                events: s.events,
            }
        }
        "stop" | "status" | "describe" | "models.list" => {
            let b: IdOnly = serde_json::from_value(body.clone()).map_err(field_err)?;
            match kind.as_str() {
                "stop" => Request::Stop { id: b.id },
                "status" => Request::Status { id: b.id },
                "models.list" => Request::ModelsList { id: b.id },
                _ => Request::Describe { id: b.id },
            }
        }
        "models.pull" => {
            let b: PullBody = serde_json::from_value(body.clone()).map_err(field_err)?;
            if b.id.is_empty() || b.name.is_empty() {
                return Err(bad(
                    "models.pull: `id` and `name` must not be empty",
                    Some(b.id),
                ));
            }
            Request::ModelsPull {
                id: b.id,
                name: b.name,
            }
        }
        "set" => {
            let b: SetBody = serde_json::from_value(body.clone()).map_err(field_err)?;
            let Some(muted) = b.muted else {
                return Err(bad("set: nothing to set (settable: `muted`)", b.id));
            };
            Request::Set { id: b.id, muted }
        }
        k if UNSUPPORTED.contains(&k) => Request::Unsupported { id, kind },
        other => {
            return Err(bad(
                format!(
                    "unknown request type `{other}` (known: {}, {})",
                    SUPPORTED.join(", "),
                    UNSUPPORTED.join(", ")
                ),
                id,
            ));
        }
    })
}

/// Adds `v` (and `id` when given) to an event object.
pub fn event(kind: &str, id: Option<&str>, mut body: Value) -> String {
    if let Value::Object(m) = &mut body {
        m.insert("v".into(), json!(VERSION));
        m.insert("type".into(), json!(kind));
        if let Some(id) = id {
            m.insert("id".into(), json!(id));
        }
    }
    body.to_string()
}

/// An `error` event.
pub fn error_event(code: Code, message: &str, id: Option<&str>) -> String {
    event(
        "error",
        id,
        json!({ "code": code.as_str(), "message": message }),
    )
}

/// The protocol's code for an answer-stage failure.
pub fn answer_code(e: &AnswerError) -> Code {
    match e {
        AnswerError::Busy(_) => Code::Busy,
        AnswerError::ModelMissing(_) => Code::ModelMissing,
        AnswerError::BadRequest(_) => Code::BadRequest,
        AnswerError::Unsupported(_) => Code::Unsupported,
        AnswerError::Internal(_) => Code::Internal,
    }
}

/// A turn's event as its wire `type` and body (without `v`, `type`, `id`);
/// `None` for a delta when the client asked for no streaming.
pub fn turn_event(ev: TurnEvent, stream: bool) -> Option<(&'static str, Value)> {
    Some(match ev {
        TurnEvent::Queued { position } => {
            ("state", json!({"state": "queued", "position": position}))
        }
        TurnEvent::Thinking => ("state", json!({"state": "thinking"})),
        TurnEvent::Delta(text) if stream => ("answer.delta", json!({"text": text})),
        TurnEvent::Delta(_) => return None,
        TurnEvent::End {
            text,
            stop_reason,
            timings,
        } => (
            "answer.end",
            json!({"text": text, "stop_reason": stop_reason, "timings": timings}),
        ),
        TurnEvent::Cancelled => ("cancelled", json!({})),
        TurnEvent::Failed(e) => (
            "error",
            json!({"code": answer_code(&e).as_str(), "message": e.to_string()}),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> ParseError {
        parse(line.as_bytes()).expect_err(line)
    }

    #[test]
    fn parses_requests() {
        let r = parse(br#"{"v":1,"type":"ask","id":"a","text":"hi","max_tokens":5}"#).expect("ask");
        assert!(matches!(r, Request::Ask(a) if a.text == "hi" && a.max_tokens == Some(5)));
        assert_eq!(
            parse(br#"{"v":1,"type":"cancel","id":"a"}"#).expect("cancel"),
            Request::Cancel { id: "a".into() }
        );
        assert_eq!(
            parse(br#"{"v":1,"type":"set","id":"m","muted":true}"#).expect("set"),
            Request::Set {
                id: Some("m".into()),
                muted: true
            }
        );
        assert_eq!(
            err(r#"{"v":1,"type":"set","id":"m"}"#).code,
            Code::BadRequest
        );
        assert_eq!(
            err(r#"{"v":1,"type":"set","id":"m","volume":3}"#).code,
            Code::BadRequest
        );
        assert_eq!(
            parse(br#"{"v":1,"type":"models.pull","id":"m","name":"x"}"#).expect("pull"),
            Request::ModelsPull {
                id: "m".into(),
                name: "x".into()
            }
        );
        assert!(
            err(r#"{"v":1,"type":"models.pull","id":"m"}"#)
                .message
                .contains("name")
        );
    }

    #[test]
    fn names_the_problem() {
        assert!(err("{").message.contains("invalid JSON"));
        assert!(err("[1]").message.contains("object"));
        assert!(err(r#"{"type":"ask"}"#).message.contains("`v`"));
        assert!(err(r#"{"v":2,"type":"ask"}"#).message.contains("version"));
        assert!(
            err(r#"{"v":1,"type":"fly","id":"x"}"#)
                .message
                .contains("unknown request type `fly`")
        );
        let e = err(r#"{"v":1,"type":"ask","id":"x"}"#);
        assert!(
            e.message.contains("missing field `text`") && e.id.as_deref() == Some("x"),
            "{e:?}"
        );
        assert!(
            err(r#"{"v":1,"type":"ask","id":"x","text":5}"#)
                .message
                .contains("invalid type")
        );
        assert!(
            err(r#"{"v":1,"type":"ask","id":"x","text":"  "}"#)
                .message
                .contains("empty")
        );
        assert!(
            err(r#"{"v":1,"type":"ask","id":"x","text":"a","colour":1}"#)
                .message
                .contains("colour")
        );
        assert!(
            parse(&[0xff, 0xfe])
                .expect_err("utf8")
                .message
                .contains("UTF-8")
        );
    }
}
