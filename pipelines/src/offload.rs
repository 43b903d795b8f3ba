//! Offloading answers to an OpenAI-compatible server (llama.cpp's server,
//! ollama, vLLM) on a bigger machine.
//!
//! The answer stage calls [`Remote::answer`] on its own thread, as it runs
//! the local engine; the HTTP work runs on a one-thread tokio runtime the
//! [`Remote`] owns, so nothing here touches the daemon's executor. The
//! request is `POST {url}/chat/completions` with `stream: true` and the
//! whole conversation (the API is stateless); the reply is server-sent
//! events parsed by `eventsource-stream`. Cancelling drops the connection,
//! which is how these servers notice a client that left.
//!
//! Why a circuit breaker: a dead or frozen server would otherwise add its
//! first-token timeout to every turn. After `breaker_failures` failures in
//! a row the breaker opens: turns go local at once (or fail at once when
//! the mode is `only`) and a background task probes `GET {url}/models`
//! until the server answers again.

use base64::Engine as _;
use futures_lite::StreamExt;
use seer_cancel::CancelToken;
use seer_models::generate::StopReason;
use seer_models::tokenizer::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When answers go to the remote server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadMode {
    /// Never (the default).
    #[default]
    Off,
    /// Remote first; the local model when the remote fails before its
    /// first word (never a mixed answer).
    Prefer,
    /// Remote only; a remote failure is the turn's error.
    Only,
}

/// Which turns go remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffloadTurns {
    /// Text questions only (photos stay on the device).
    Text,
    /// Questions with a photo only.
    Images,
    /// Both.
    #[default]
    Both,
}

/// Settings of the remote backend.
#[derive(Clone)]
pub struct OffloadConfig {
    /// Base URL ending in `/v1`.
    pub url: String,
    /// Bearer key, if the server wants one. Never logged.
    pub api_key: Option<String>,
    /// The `model` field sent (servers with one model ignore it).
    pub model: String,
    /// When to go remote.
    pub mode: OffloadMode,
    /// Which turns go remote.
    pub turns: OffloadTurns,
    /// Connecting (TCP + TLS).
    pub connect_timeout: Duration,
    /// From sending the request to the first answer text.
    pub first_token_timeout: Duration,
    /// Between two pieces of the streamed answer.
    pub gap_timeout: Duration,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How often the open breaker probes `GET {url}/models`.
    pub probe_interval: Duration,
}

impl std::fmt::Debug for OffloadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffloadConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .field("model", &self.model)
            .field("mode", &self.mode)
            .field("turns", &self.turns)
            .finish_non_exhaustive()
    }
}

/// What a remote turn produced.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    /// The whole answer.
    pub text: String,
    /// Why it ended (`finish_reason`).
    pub stop_reason: StopReason,
    /// Pieces of text received (a stand-in for tokens).
    pub pieces: usize,
    /// Prompt tokens, when the server reported usage.
    pub prompt_tokens: Option<usize>,
    /// Completion tokens, when the server reported usage.
    pub completion_tokens: Option<usize>,
    /// From sending the request to the first text.
    pub first_token_ms: f64,
    /// From sending the request to the end.
    pub total_ms: f64,
}

/// Why a remote turn did not finish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// Nothing of the answer arrived: the caller may answer locally.
    #[error("{0}")]
    BeforeFirst(String),
    /// Part of the answer was already passed on: the turn fails.
    #[error("{0}")]
    AfterFirst(String),
    /// The turn was cancelled (the connection was dropped).
    #[error("cancelled")]
    Cancelled,
}

/// The remote's health, as `status` and `describe` report it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteHealth {
    /// The base URL.
    pub url: String,
    /// `prefer` or `only`.
    pub mode: String,
    /// `closed` (turns go remote), `open` (the server failed; turns stay
    /// local while a probe waits for it).
    pub breaker: String,
    /// Failures in a row.
    pub failures: u32,
    /// The last failure, if any (never contains the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Turns answered remotely since start.
    pub answered: u64,
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open: bool,
    last_error: Option<String>,
    answered: u64,
    probing: bool,
}

/// The remote backend. One per daemon; used from the answer thread.
pub struct Remote {
    cfg: OffloadConfig,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    breaker: Arc<Mutex<Breaker>>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("cfg", &self.cfg).finish()
    }
}

/// A delta consumer: returns `false` when nobody wants more (cancel).
pub type OnDelta<'a> = &'a mut dyn FnMut(&str) -> bool;

/// Generation settings sent with the request.
#[derive(Debug, Clone, Default)]
pub struct RemoteParams {
    /// `max_tokens`.
    pub max_tokens: usize,
    /// `temperature` (0: greedy).
    pub temperature: f32,
    /// `top_p`.
    pub top_p: f32,
    /// `seed`, when sampling.
    pub seed: Option<u64>,
    /// `stop`.
    pub stop: Vec<String>,
}

impl Remote {
    /// A client for `cfg.url`. Fails only when the HTTP client or its
    /// runtime cannot be built (TLS roots, threads).
    pub fn new(cfg: OffloadConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("building the offload HTTP client: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("seer-offload")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the offload runtime: {e}"))?;
        Ok(Self {
            cfg,
            client,
            runtime,
            breaker: Arc::default(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> OffloadMode {
        self.cfg.mode
    }

    /// Whether a turn with (or without) a photo goes remote at all.
    pub fn takes(&self, image: bool) -> bool {
        self.cfg.mode != OffloadMode::Off
            && match self.cfg.turns {
                OffloadTurns::Both => true,
                OffloadTurns::Text => !image,
                OffloadTurns::Images => image,
            }
    }

    /// Whether the breaker lets a turn try the server now.
    pub fn closed(&self) -> bool {
        !lock(&self.breaker).open
    }

    /// A shareable view of the health, for `status`.
    pub fn health_handle(&self) -> HealthHandle {
        HealthHandle {
            url: self.cfg.url.clone(),
            mode: match self.cfg.mode {
                OffloadMode::Off => "off",
                OffloadMode::Prefer => "prefer",
                OffloadMode::Only => "only",
            },
            breaker: self.breaker.clone(),
        }
    }

    /// Answers `messages` (system prompt and history included) and an
    /// optional photo on the server, passing each piece of text to
    /// `on_delta`. Blocks the calling thread (the answer thread).
    pub fn answer(
        &self,
        messages: &[Message],
        image: Option<&image::RgbImage>,
        params: &RemoteParams,
        cancel: &CancelToken,
        on_delta: OnDelta<'_>,
    ) -> Result<RemoteOutput, RemoteError> {
        let body = match request_body(&self.cfg.model, messages, image, params) {
            Ok(b) => b,
            Err(e) => return Err(RemoteError::BeforeFirst(e)),
        };
        // The request runs on the offload runtime; its text comes back
        // here, to the answer thread, which may block on the turn's channel.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        let task = self.runtime.spawn(stream(
            self.client.clone(),
            self.cfg.clone(),
            body,
            cancel.clone(),
            tx,
        ));
        while let Some(text) = rx.blocking_recv() {
            if !on_delta(&text) {
                cancel.cancel();
            }
        }
        let result = self.runtime.block_on(task).unwrap_or_else(|e| {
            Err(RemoteError::AfterFirst(format!(
                "the offload task failed: {e}"
            )))
        });
        let mut b = lock(&self.breaker);
        match &result {
            Ok(_) => {
                b.failures = 0;
                b.answered += 1;
                b.last_error = None;
            }
            Err(RemoteError::Cancelled) => {}
            Err(RemoteError::BeforeFirst(e) | RemoteError::AfterFirst(e)) => {
                b.failures += 1;
                b.last_error = Some(e.clone());
                tracing::warn!(url = %self.cfg.url, failures = b.failures, "offload failed: {e}");
                if b.failures >= self.cfg.breaker_failures.max(1) && !b.open {
                    b.open = true;
                    tracing::warn!(url = %self.cfg.url, "offload breaker open: turns stay local until the server answers again");
                }
                if b.open && !b.probing {
                    b.probing = true;
                    self.runtime.spawn(probe(
                        self.client.clone(),
                        self.cfg.clone(),
                        self.breaker.clone(),
                    ));
                }
            }
        }
        result
    }
}

/// Sends the request and streams the answer's text to `deltas`.
async fn stream(
    client: reqwest::Client,
    cfg: OffloadConfig,
    body: serde_json::Value,
    cancel: CancelToken,
    deltas: tokio::sync::mpsc::Sender<String>,
) -> Result<RemoteOutput, RemoteError> {
    let started = Instant::now();
    let url = format!("{}/chat/completions", cfg.url.trim_end_matches('/'));
    let mut req = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(k) = &cfg.api_key {
        req = req.bearer_auth(k);
    }
    let before = |m: String| RemoteError::BeforeFirst(m);
    let first = cfg.first_token_timeout;
    let resp = match until(req.send(), first, &cancel).await {
        Wait::Done(Ok(r)) => r,
        Wait::Done(Err(e)) => return Err(before(format!("{url}: {}", describe(&e)))),
        Wait::TimedOut => {
            return Err(before(format!(
                "{url}: no response within the first-token timeout ({} s)",
                first.as_secs_f64()
            )));
        }
        Wait::Cancelled => return Err(RemoteError::Cancelled),
    };
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(before(format!(
            "{url}: HTTP {status}: {}",
            error_message(&text)
        )));
    }
    let mut events = eventsource_stream::Eventsource::eventsource(resp.bytes_stream());
    let mut out = RemoteOutput {
        text: String::new(),
        stop_reason: StopReason::Eos,
        pieces: 0,
        prompt_tokens: None,
        completion_tokens: None,
        first_token_ms: 0.0,
        total_ms: 0.0,
    };
    let mut finished = false;
    loop {
        let (limit, what) = if out.pieces == 0 {
            (first.saturating_sub(started.elapsed()), "first-token")
        } else {
            (cfg.gap_timeout, "gap")
        };
        let fail = |m: String| {
            if out.pieces == 0 {
                RemoteError::BeforeFirst(m)
            } else {
                RemoteError::AfterFirst(m)
            }
        };
        let ev = match until(events.next(), limit, &cancel).await {
            Wait::Done(Some(Ok(ev))) => ev,
            Wait::Done(Some(Err(e))) => {
                return Err(fail(format!("{url}: the answer stream broke: {e}")));
            }
            Wait::Done(None) if finished => break,
            Wait::Done(None) => {
                return Err(fail(format!(
                    "{url}: the server closed the answer stream before it was complete"
                )));
            }
            Wait::TimedOut => {
                return Err(fail(format!(
                    "{url}: nothing arrived within the {what} timeout ({} s)",
                    limit.as_secs_f64().max(0.0)
                )));
            }
            Wait::Cancelled => return Err(RemoteError::Cancelled),
        };
        let data = ev.data.trim();
        if data == "[DONE]" {
            break;
        }
        if data.is_empty() {
            continue;
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            fail(format!(
                "{url}: a streamed event is not a completion chunk ({e}): {}",
                clip(data)
            ))
        })?;
        if let Some(err) = chunk.error {
            return Err(fail(format!("{url}: the server reported: {}", err.message)));
        }
        if let Some(u) = chunk.usage {
            out.prompt_tokens = u.prompt_tokens;
            out.completion_tokens = u.completion_tokens;
        }
        for choice in chunk.choices {
            if let Some(text) = choice.delta.and_then(|d| d.content)
                && !text.is_empty()
            {
                if out.pieces == 0 {
                    out.first_token_ms = started.elapsed().as_secs_f64() * 1e3;
                }
                out.pieces += 1;
                out.text.push_str(&text);
                if deltas.send(text).await.is_err() {
                    return Err(RemoteError::Cancelled);
                }
            }
            if let Some(reason) = choice.finish_reason {
                finished = true;
                out.stop_reason = match reason.as_str() {
                    "length" => StopReason::MaxTokens,
                    _ => StopReason::Eos,
                };
            }
        }
    }
    if out.pieces == 0 && !finished {
        return Err(before(format!("{url}: the server sent no answer")));
    }
    out.total_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(out)
}

/// The remote's health, shared with the service for `status`.
#[derive(Clone)]
pub struct HealthHandle {
    url: String,
    mode: &'static str,
    breaker: Arc<Mutex<Breaker>>,
}

impl std::fmt::Debug for HealthHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthHandle")
            .field("url", &self.url)
            .finish()
    }
}

impl HealthHandle {
    /// The health now.
    pub fn get(&self) -> RemoteHealth {
        let b = lock(&self.breaker);
        RemoteHealth {
            url: self.url.clone(),
            mode: self.mode.to_owned(),
            breaker: if b.open { "open" } else { "closed" }.to_owned(),
            failures: b.failures,
            last_error: b.last_error.clone(),
            answered: b.answered,
        }
    }
}

fn lock(b: &Mutex<Breaker>) -> std::sync::MutexGuard<'_, Breaker> {
    b.lock().unwrap_or_else(|p| p.into_inner())
}

/// Probes `GET {url}/models` until the server answers, then closes the
/// breaker.
async fn probe(client: reqwest::Client, cfg: OffloadConfig, breaker: Arc<Mutex<Breaker>>) {
    let url = format!("{}/models", cfg.url.trim_end_matches('/'));
    loop {
        tokio::time::sleep(cfg.probe_interval).await;
        let mut req = client.get(&url).timeout(cfg.first_token_timeout);
        if let Some(k) = &cfg.api_key {
            req = req.bearer_auth(k);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => {
                let mut b = lock(&breaker);
                b.open = false;
                b.failures = 0;
                b.probing = false;
                tracing::info!(url = %cfg.url, "offload server answers again: breaker closed");
                return;
            }
            Ok(r) => tracing::debug!(url = %url, status = %r.status(), "offload probe"),
            Err(e) => tracing::debug!(url = %url, "offload probe: {}", describe(&e)),
        }
    }
}

enum Wait<T> {
    Done(T),
    TimedOut,
    Cancelled,
}

/// Awaits `fut` for at most `limit`, checking `cancel` every 20 ms.
async fn until<F: std::future::Future>(
    fut: F,
    limit: Duration,
    cancel: &CancelToken,
) -> Wait<F::Output> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut fut = std::pin::pin!(fut);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            out = &mut fut => return Wait::Done(out),
            _ = tokio::time::sleep_until(deadline) => return Wait::TimedOut,
            _ = tick.tick() => if cancel.is_cancelled() { return Wait::Cancelled },
        }
    }
}

/// A transport error in words, without the URL's query or any header.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut msg = kind.to_owned();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The `error.message` of an OpenAI-style error body, else the body.
fn error_message(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: ErrorBody,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(b) => b.error.message,
        Err(_) => clip(body),
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

#[derive(serde::Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(serde::Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(serde::Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<usize>,
    #[serde(default)]
    completion_tokens: Option<usize>,
}

/// The request body: the messages, the photo as a JPEG data URI in the
/// last user message, and the generation settings.
fn request_body(
    model: &str,
    messages: &[Message],
    image: Option<&image::RgbImage>,
    p: &RemoteParams,
) -> Result<serde_json::Value, String> {
    let last_user = messages.iter().rposition(|m| m.role == "user");
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let content = match image {
            Some(img) if Some(i) == last_user => serde_json::json!([
                {"type": "text", "text": m.content},
                {"type": "image_url", "image_url": {"url": jpeg_data_uri(img)?}},
            ]),
            _ => serde_json::Value::String(m.content.clone()),
        };
        out.push(serde_json::json!({"role": m.role, "content": content}));
    }
    let mut body = serde_json::json!({
        "model": model,
        "messages": out,
        "stream": true,
        "max_tokens": p.max_tokens,
        "temperature": p.temperature,
    });
    if p.top_p < 1.0 {
        body["top_p"] = p.top_p.into();
    }
    if let Some(seed) = p.seed {
        body["seed"] = seed.into();
    }
    if !p.stop.is_empty() {
        body["stop"] = p.stop.clone().into();
    }
    Ok(body)
}

/// `data:image/jpeg;base64,…` of `img` (quality 90: the vision towers at
/// the other end resize anyway).
fn jpeg_data_uri(img: &image::RgbImage) -> Result<String, String> {
    let mut jpeg = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90);
    img.write_with_encoder(enc)
        .map_err(|e| format!("encoding the photo as JPEG for the offload server: {e}"))?;
    Ok(format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&jpeg)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_history_photo_and_settings() {
        let msgs = vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
            Message::new("user", "What is this?"),
        ];
        let img = image::RgbImage::from_pixel(4, 4, image::Rgb([200, 10, 10]));
        let p = RemoteParams {
            max_tokens: 7,
            temperature: 0.0,
            top_p: 0.5,
            seed: Some(3),
            stop: vec!["\n".into()],
        };
        let b = request_body("m", &msgs, Some(&img), &p).expect("body");
        assert_eq!(b["stream"], true);
        assert_eq!(b["max_tokens"], 7);
        assert_eq!(b["seed"], 3);
        assert_eq!(b["messages"][1]["content"], "Hi");
        let parts = &b["messages"][3]["content"];
        assert_eq!(parts[0]["text"], "What is this?");
        let url = parts[1]["image_url"]["url"].as_str().expect("url");
        assert!(url.starts_with("data:image/jpeg;base64,/9j/"), "{url}");
    }

    #[test]
    fn error_bodies_are_read_for_their_message() {
        assert_eq!(
            error_message(r#"{"error":{"message":"Invalid API Key","type":"x"}}"#),
            "Invalid API Key"
        );
        assert_eq!(error_message("plain text"), "plain text");
    }
}
