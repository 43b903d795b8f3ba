//! Seer's OpenAI-compatible HTTP API (`[http]`): `GET /health`,
//! `GET /v1/models`, `POST /v1/chat/completions` (streamed as server-sent
//! events, or whole). See `docs/http.md`.
//!
//! Like the socket and D-Bus, this is only a front end: every request
//! becomes one [`Assistant::ask`], so HTTP turns share the one queue and
//! state, and a client that disconnects cancels its turn (the request's
//! [`Canceller`] fires when the handler or the event stream is dropped).
//! The body is read whole, within `max_body_bytes`, before the turn is
//! queued, so a slow upload never holds the model; a client that stops
//! reading a stream for [`STALL`] has its turn cancelled.

mod openai;

use crate::config::{HttpResolved, Secret};
use crate::protocol::{Code, Event};
use crate::service::{Assistant, Canceller};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openai::{ApiError, ChatRequest, finish_reason, usage};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Parses a chat-completion body as `POST /v1/chat/completions` does, up
/// to the question it would ask (the fuzz target's entry point).
pub fn parse_chat_request(body: &[u8]) -> Result<crate::service::Question, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: ChatRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| e.to_string())?;
    req.into_question()
        .map(|p| p.question)
        .map_err(|e| e.message)
}

/// A streaming client that accepts nothing for this long loses its turn.
pub const STALL: Duration = Duration::from_secs(30);

/// What every handler shares.
struct Shared {
    assistant: Arc<Assistant>,
    api_key: Option<Secret>,
    origins: Vec<String>,
    max_body: usize,
    next_id: AtomicU64,
}

/// Binds `[http] listen` (before start-up completes, so a taken port is
/// a start-up error naming the address).
pub async fn bind(cfg: &HttpResolved) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("http.listen = \"{}\": cannot listen there: {e}", cfg.listen))
}

/// Serves the API until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cfg: HttpResolved,
    assistant: Arc<Assistant>,
    mut stop: watch::Receiver<bool>,
) {
    let shared = Arc::new(Shared {
        assistant,
        api_key: cfg.api_key,
        origins: cfg.allowed_origins,
        max_body: cfg.max_body_bytes,
        next_id: AtomicU64::new(1),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(shared);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    {
        tracing::error!("the HTTP API stopped: {e}");
    }
}

fn error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.body())).into_response()
}

/// Browser origins and the bearer key, before any handler runs. `/health`
/// needs no key (load balancers and `curl` probes).
async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(o) = &origin {
        let allowed = o.to_str().is_ok_and(|o| s.origins.iter().any(|a| a == o));
        if !allowed {
            return error(&ApiError {
                status: 403,
                kind: "permission_error",
                message: format!(
                    "origin {:?} is not in http.allowed_origins",
                    o.to_str().unwrap_or("(not text)")
                ),
                param: None,
                param_path: None,
                code: Some("origin_not_allowed"),
            });
        }
        if req.method() == Method::OPTIONS {
            return cors(StatusCode::NO_CONTENT.into_response(), o);
        }
    }
    if req.uri().path() != "/health"
        && let Some(key) = &s.api_key
        && !authorized(req.headers(), key)
    {
        return error(&ApiError {
            status: 401,
            kind: "invalid_request_error",
            message: "missing or wrong API key: send Authorization: Bearer <http.api_key>".into(),
            param: None,
            param_path: None,
            code: Some("invalid_api_key"),
        });
    }
    // A body announced as too large is refused before a byte of it is
    // read (a body without a length is cut off at the same limit).
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > s.max_body as u64) {
        return error(&too_large());
    }
    let resp = next.run(req).await;
    match &origin {
        Some(o) => cors(resp, o),
        None => resp,
    }
}

fn cors(mut resp: Response, origin: &HeaderValue) -> Response {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    resp
}

/// Compares the whole key whatever the first difference, so response
/// times say nothing about how much of a guess was right.
fn authorized(headers: &HeaderMap, key: &Secret) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), key.expose().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// What is served, for the 404 and 405 messages.
const ROUTES: &str = "GET /v1/models, POST /v1/chat/completions, GET /health";

async fn not_found(req: Request) -> Response {
    error(&ApiError {
        status: 404,
        kind: "invalid_request_error",
        message: format!(
            "{} {} is not served here ({ROUTES})",
            req.method(),
            req.uri().path()
        ),
        param: None,
        param_path: None,
        code: Some("not_found"),
    })
}

/// A served path with the wrong method: a JSON error like every other,
/// not axum's empty 405.
async fn wrong_method(req: Request) -> Response {
    error(&ApiError {
        status: 405,
        kind: "invalid_request_error",
        message: format!(
            "{} is not allowed on {} ({ROUTES})",
            req.method(),
            req.uri().path()
        ),
        param: None,
        param_path: None,
        code: Some("method_not_allowed"),
    })
}

/// The id clients name: the model file's stem.
fn model_id(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

async fn models(State(s): State<Arc<Shared>>) -> Response {
    let d = s.assistant.describe();
    let mut data = vec![json!({
        "id": model_id(&d.models.language.path),
        "object": "model",
        "created": 0,
        "owned_by": "seer",
    })];
    if let Some(v) = &d.models.vision {
        data.push(json!({
            "id": v.files.rsplit('/').next().unwrap_or(&v.files),
            "object": "model",
            "created": 0,
            "owned_by": "seer",
        }));
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Cancels the turn when the request goes away (client disconnect drops
/// the handler, or the event stream, holding this).
struct CancelOnDrop(Canceller);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn chat(State(s): State<Arc<Shared>>, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status().as_u16();
            if status == 413 {
                return error(&too_large());
            }
            return error(&ApiError {
                status,
                kind: "invalid_request_error",
                message: format!("reading the request body: {e}"),
                param: None,
                param_path: None,
                code: None,
            });
        }
    };
    let mut de = serde_json::Deserializer::from_slice(&body);
    let req: ChatRequest = match serde_path_to_error::deserialize(&mut de) {
        Ok(r) => r,
        Err(e) => {
            let path = e.path().to_string();
            let mut err = ApiError::bad(
                "body",
                format!(
                    "the body is not a chat completion request: {path}: {}",
                    e.inner()
                ),
            );
            err.param_path = (path != ".").then_some(path);
            return error(&err);
        }
    };
    let parsed = match req.into_question() {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let model = model_id(&s.assistant.language().path);
    let id = format!(
        "chatcmpl-seer-{}",
        s.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let mut handle = s.assistant.ask(parsed.question);
    let guard = CancelOnDrop(handle.canceller());
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let meta = Meta { id, model, created };
    if !parsed.stream {
        return whole(&mut handle.events, &meta).await;
    }
    // Wait for the first words (or an error) before the headers, so a
    // turn that fails at once gets its HTTP status, not a 200 stream.
    let mut first = Vec::new();
    loop {
        match handle.events.recv().await {
            None => {
                return error(&ApiError::from_service(
                    Code::Internal,
                    "the turn ended without an answer".into(),
                ));
            }
            Some(Event::Error { code, message }) => {
                return error(&ApiError::from_service(code, message));
            }
            Some(Event::Cancelled {}) => return cancelled(),
            Some(ev @ (Event::AnswerDelta { .. } | Event::AnswerEnd { .. })) => {
                first.push(ev);
                break;
            }
            Some(_) => {}
        }
    }
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(pump(
        handle.events,
        first,
        meta,
        parsed.include_usage,
        tx,
        guard,
    ));
    let stream = futures_lite::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

struct Meta {
    id: String,
    model: String,
    created: u64,
}

impl Meta {
    fn chunk(&self, delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }
}

fn too_large() -> ApiError {
    ApiError {
        status: 413,
        kind: "invalid_request_error",
        message: "the request body is larger than http.max_body_bytes".into(),
        param: None,
        param_path: None,
        code: Some("too_large"),
    }
}

fn cancelled() -> Response {
    error(&ApiError {
        status: 503,
        kind: "server_error",
        message: "the turn was cancelled (stop, or the daemon is shutting down)".into(),
        param: None,
        param_path: None,
        code: Some("cancelled"),
    })
}

/// A non-streamed answer: the whole completion in one body.
async fn whole(events: &mut mpsc::Receiver<Event>, m: &Meta) -> Response {
    while let Some(ev) = events.recv().await {
        match ev {
            Event::AnswerEnd {
                text,
                stop_reason,
                timings,
                ..
            } => {
                return axum::Json(json!({
                    "id": m.id,
                    "object": "chat.completion",
                    "created": m.created,
                    "model": m.model,
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": text.trim()},
                        "logprobs": null,
                        "finish_reason": finish_reason(stop_reason),
                    }],
                    "usage": usage(&timings),
                }))
                .into_response();
            }
            Event::Error { code, message } => return error(&ApiError::from_service(code, message)),
            Event::Cancelled {} => return cancelled(),
            _ => {}
        }
    }
    error(&ApiError::from_service(
        Code::Internal,
        "the turn ended without an answer".into(),
    ))
}

/// Feeds a turn's events to the SSE body: the role, the text pieces, the
/// finish reason, usage if asked, `[DONE]`. A client that goes away or
/// stops reading for [`STALL`] cancels the turn (`_guard`).
async fn pump(
    mut events: mpsc::Receiver<Event>,
    first: Vec<Event>,
    m: Meta,
    include_usage: bool,
    tx: mpsc::Sender<SseEvent>,
    _guard: CancelOnDrop,
) {
    let send = |v: serde_json::Value| {
        let tx = tx.clone();
        async move {
            tx.send_timeout(SseEvent::default().data(v.to_string()), STALL)
                .await
                .is_ok()
        }
    };
    if !send(m.chunk(json!({"role": "assistant", "content": ""}), None)).await {
        return;
    }
    let mut pending = first.into_iter();
    loop {
        let ev = match pending.next() {
            Some(ev) => ev,
            None => match events.recv().await {
                Some(ev) => ev,
                None => return,
            },
        };
        match ev {
            Event::AnswerDelta { text } if !send(m.chunk(json!({"content": text}), None)).await => {
                return;
            }
            Event::AnswerEnd {
                stop_reason,
                timings,
                ..
            } => {
                let _ = send(m.chunk(json!({}), Some(finish_reason(stop_reason)))).await;
                if include_usage {
                    let mut u = m.chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = usage(&timings);
                    let _ = send(u).await;
                }
                let _ = tx
                    .send_timeout(SseEvent::default().data("[DONE]"), STALL)
                    .await;
                return;
            }
            Event::Error { code, message } => {
                let _ = send(ApiError::from_service(code, message).body()).await;
                return;
            }
            Event::Cancelled {} => {
                let _ = send(cancelled_body()).await;
                return;
            }
            _ => {}
        }
    }
}

fn cancelled_body() -> serde_json::Value {
    json!({"error": {"message": "the turn was cancelled", "type": "server_error", "param": null, "code": "cancelled"}})
}
