//! The Unix-socket server: binding (permissions, stale sockets), one task per
//! connection, bounded per-client event queues, and request handling.

use crate::protocol::{self, Code, Request};
use seer_models::generate::CancelToken;
use seer_pipelines::answer::{Answerer, Ask, TurnEvent};
use seer_pipelines::state::{State, StateBus};
use serde_json::json;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, mpsc, watch};

/// Everything a connection needs, shared.
#[derive(Debug)]
pub struct Shared {
    /// The answer stage.
    pub answerer: Answerer,
    /// State broadcasts.
    pub state: StateBus,
    /// Longest request line.
    pub max_line_bytes: usize,
    /// Per-client event queue length.
    pub client_queue: usize,
    /// A group whose members may connect besides the owner.
    pub group: Option<u32>,
    /// What `describe`/`status` report about the model.
    pub model: serde_json::Value,
    /// Start time, for `status`.
    pub started: Instant,
    /// The catalogue, the models directory and downloads.
    pub models: Arc<crate::models::Models>,
    /// The microphone and speech recognition (push-to-talk).
    pub listener: Arc<crate::listen::Listener>,
    /// `[vision] max_pixels`.
    pub max_image_pixels: u64,
    /// The vision-language model (`null` when vision is off).
    pub vision_model: serde_json::Value,
    /// The camera.
    pub camera: Arc<crate::camera::Camera>,
}

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on the path.
    #[error("another seerd is already serving {0}; stop it first or set socket.path / SEER_SOCKET")]
    InUse(PathBuf),
    /// Filesystem or socket error.
    #[error("cannot create socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Resolves `socket.group` (a name from /etc/group, or a numeric id).
pub fn resolve_group(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let groups =
        std::fs::read_to_string("/etc/group").map_err(|e| format!("reading /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("socket.group = {group:?}: no such group in /etc/group"))
}

/// Creates the socket: parent directory 0700, socket 0600 (0750 and 0660,
/// group-owned, when `group` is set). A socket file left by a crashed run
/// (nothing accepts on it) is replaced; a live one is not.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    let (dir_mode, sock_mode) = if group.is_some() {
        (0o750, 0o660)
    } else {
        (0o700, 0o600)
    };
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(dir_mode)).map_err(io)?;
        if group.is_some() {
            std::os::unix::fs::chown(dir, None, group).map_err(io)?;
        }
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_owned())),
            Err(_) => {
                tracing::warn!(path = %path.display(), "removing stale socket from an earlier run");
                std::fs::remove_file(path).map_err(io)?;
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    if group.is_some() {
        std::os::unix::fs::chown(path, None, group).map_err(io)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(sock_mode)).map_err(io)?;
    Ok(listener)
}

/// Whether process `pid` has supplementary group `gid` (SO_PEERCRED only
/// carries the primary group).
fn has_group(pid: i32, gid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .map(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
        })
        .unwrap_or(false)
}

/// The effective uid of this process (the owner of `/proc/self`).
fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = own_uid();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                let peer = stream.peer_cred().ok();
                let uid = peer.as_ref().map(|c| c.uid());
                let in_group = match (shared.group, &peer) {
                    (Some(g), Some(c)) => c.gid() == g || c.pid().is_some_and(|pid| has_group(pid, g)),
                    _ => false,
                };
                if uid.is_none() || (uid != me && !in_group) {
                    tracing::warn!(peer_uid = ?uid, own_uid = ?me, "refusing a connection from another user");
                    tokio::spawn(refuse(stream));
                    continue;
                }
                tokio::spawn(connection(stream, shared.clone(), shutdown.clone()));
            }
        }
    }
}

async fn refuse(mut stream: UnixStream) {
    let line = protocol::error_event(
        Code::PermissionDenied,
        "this socket serves only the user running seerd",
        None,
    );
    let _ = stream.write_all(format!("{line}\n").as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Sends events to one client without ever blocking: when its queue is full
/// the client is too slow, and it is disconnected.
#[derive(Clone, Debug)]
struct ClientTx {
    tx: mpsc::Sender<String>,
    kill: watch::Sender<bool>,
}

impl ClientTx {
    fn send(&self, line: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(line) {
            if !*self.kill.borrow() {
                tracing::warn!("client is not reading; its event queue is full, disconnecting it");
            }
            let _ = self.kill.send(true);
        }
    }
}

/// Reads one line of at most `max` bytes. `Ok(None)` at end of stream;
/// `Ok(Some(Err(n)))` for an over-long line (discarded up to its newline).
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Result<(), usize>>> {
    buf.clear();
    let mut total = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if total == 0 {
                None
            } else if total > max {
                Some(Err(total))
            } else {
                Some(Ok(()))
            });
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        total += take;
        if total <= max {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf.clear();
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(if total > max { Err(total) } else { Ok(()) }));
        }
    }
}

async fn connection(stream: UnixStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<String>(shared.client_queue.max(1));
    let (kill, mut killed) = watch::channel(false);
    let client = ClientTx { tx, kill };
    let writer = tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            if write.write_all(line.as_bytes()).await.is_err()
                || write.write_all(b"\n").await.is_err()
            {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let (gone_tx, gone) = watch::channel(false);
    let conn = Conn {
        client,
        turns: Arc::default(),
        gone,
        subscribed: Arc::new(AtomicBool::new(false)),
        voice: Arc::new(AtomicBool::new(false)),
    };
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        let line = tokio::select! {
            _ = killed.changed() => break,
            _ = shutdown.changed() => break,
            line = read_line(&mut reader, &mut buf, shared.max_line_bytes) => line,
        };
        match line {
            Ok(None) | Err(_) => break,
            Ok(Some(Err(n))) => conn.client.send(protocol::error_event(
                Code::TooLarge,
                &format!(
                    "request line of {n} bytes exceeds socket.max_line_bytes = {}",
                    shared.max_line_bytes
                ),
                None,
            )),
            Ok(Some(Ok(()))) => {
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match protocol::parse(&buf) {
                    Ok(req) => handle(req, &shared, &conn),
                    Err(e) => {
                        conn.client
                            .send(protocol::error_event(e.code, &e.message, e.id.as_deref()))
                    }
                }
            }
        }
    }
    // The client is gone (or too slow, or we are shutting down): its turns
    // stop working for nobody, and its subscription ends.
    for t in conn
        .turns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
    {
        t.cancel.cancel();
    }
    let _ = gone_tx.send(true);
    if *killed.borrow() {
        writer.abort();
    } else {
        drop(conn);
        let _ = writer.await;
    }
}

/// Submits `ask` to the answer stage and forwards its events to `client`
/// under `id` (a typed `ask`, or a spoken question after its transcript).
fn start_turn(
    shared: &Arc<Shared>,
    client: &ClientTx,
    turns: &Arc<Mutex<HashMap<String, TurnEntry>>>,
    id: String,
    ask: Ask,
    stream: bool,
    mut on_answered: Option<Box<dyn FnOnce() + Send>>,
) {
    let mut turn = match shared.answerer.submit(ask) {
        Ok(t) => t,
        Err(e) => {
            // A spoken question leaves `transcribing` for its answer to
            // replace; with no answer coming, clear it.
            shared.state.set_if(&[State::Transcribing], State::Idle);
            client.send(protocol::error_event(
                protocol::answer_code(&e),
                &e.to_string(),
                Some(&id),
            ));
            return;
        }
    };
    let cancel_now = Arc::new(Notify::new());
    turns.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id.clone(),
        TurnEntry {
            cancel: turn.cancel.clone(),
            cancel_now: cancel_now.clone(),
        },
    );
    let client = client.clone();
    let turns = turns.clone();
    tokio::spawn(async move {
        let mut started = false;
        loop {
            let ev = tokio::select! {
                ev = turn.events.recv() => ev,
                _ = cancel_now.notified(), if !started => {
                    // Still queued: say so now; the worker skips it later.
                    client.send(protocol::event("cancelled", Some(&id), json!({})));
                    break;
                }
            };
            let Some(ev) = ev else { break };
            started |= matches!(ev, TurnEvent::Thinking);
            let ended = matches!(ev, TurnEvent::End { .. });
            let Some((kind, body)) = protocol::turn_event(ev, stream) else {
                continue;
            };
            if ended && let Some(done) = on_answered.take() {
                done();
            }
            client.send(protocol::event(kind, Some(&id), body));
        }
        turns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    });
}

/// Whether `id` names a running request on this connection (and says so).
fn id_in_use(turns: &Mutex<HashMap<String, TurnEntry>>, client: &ClientTx, id: &str) -> bool {
    let used = turns
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(id);
    if used {
        client.send(protocol::error_event(
            Code::BadRequest,
            &format!("id `{id}` is already in use by a running request on this connection"),
            Some(id),
        ));
    }
    used
}

/// Makes a background request (a download, a capture) cancellable by
/// `cancel {id}` and by the connection closing.
fn register(turns: &Mutex<HashMap<String, TurnEntry>>, id: &str, cancel: &CancelToken) {
    turns.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id.to_owned(),
        TurnEntry {
            cancel: cancel.clone(),
            cancel_now: Arc::new(Notify::new()),
        },
    );
}

/// One connection's state.
struct Conn {
    client: ClientTx,
    /// Running or queued turns by request id.
    turns: Arc<Mutex<HashMap<String, TurnEntry>>>,
    /// Turns true when the connection ends.
    gone: watch::Receiver<bool>,
    subscribed: Arc<AtomicBool>,
    /// Whether the connection gets `voice` events already.
    voice: Arc<AtomicBool>,
}

/// Sends every broadcast `T` to `client`, rendered by `line`, until the
/// connection ends. A subscriber that lags skips what it missed.
fn forward<T: Clone + Send + 'static>(
    mut rx: tokio::sync::broadcast::Receiver<T>,
    client: ClientTx,
    mut gone: watch::Receiver<bool>,
    line: impl Fn(T) -> String + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            let got = tokio::select! {
                _ = gone.changed() => break,
                got = rx.recv() => got,
            };
            match got {
                Ok(v) => client.send(line(v)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
}

struct TurnEntry {
    cancel: CancelToken,
    /// Wakes the turn's forwarder so a queued turn reports `cancelled` at
    /// once instead of when the worker reaches it.
    cancel_now: Arc<Notify>,
}

fn handle(req: Request, shared: &Arc<Shared>, conn: &Conn) {
    let client = &conn.client;
    let turns = &conn.turns;
    match req {
        Request::Ask(a) => {
            if id_in_use(turns, client, &a.id) {
                return;
            }
            if let Some(image) = a.image {
                // Read, checked (or taken from the camera) off the executor;
                // a bad image gets its own error and the turn never starts.
                // The id is taken meanwhile, so `cancel` and a closing
                // connection reach a turn whose image is still loading.
                let cancel = CancelToken::new();
                register(turns, &a.id, &cancel);
                let (shared, client, turns) = (shared.clone(), client.clone(), turns.clone());
                tokio::spawn(async move {
                    let id = a.id.clone();
                    let fail = |code: Code, message: &str| {
                        turns
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&id);
                        client.send(protocol::error_event(code, message, Some(&id)));
                    };
                    const NO_VLM: &str = "no vision model is configured ([vision] model); this daemon cannot look at images";
                    // Opening the camera for nothing would light the
                    // privacy indicator for nothing.
                    if shared.vision_model.is_null() && image.camera.is_some() {
                        return fail(Code::Unsupported, NO_VLM);
                    }
                    let max = shared.max_image_pixels;
                    let camera = shared.camera.clone();
                    let got = tokio::task::spawn_blocking(move || {
                        crate::vision::load(&image, max, &camera)
                    })
                    .await;
                    let img = match got {
                        Ok(Ok(img)) => img,
                        Ok(Err((code, message))) => return fail(code, &message),
                        Err(e) => return fail(Code::Internal, &format!("reading the image: {e}")),
                    };
                    // A good image, and nothing to look at it with.
                    if shared.vision_model.is_null() {
                        return fail(Code::Unsupported, NO_VLM);
                    }
                    turns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&a.id);
                    if cancel.is_cancelled() {
                        client.send(protocol::event("cancelled", Some(&a.id), json!({})));
                        return;
                    }
                    let ask = Ask {
                        text: a.text,
                        conversation: a.conversation,
                        max_tokens: a.max_tokens,
                        image: Some(img),
                    };
                    start_turn(&shared, &client, &turns, a.id, ask, a.stream.unwrap_or(true), None);
                });
                return;
            }
            let ask = Ask {
                text: a.text,
                conversation: a.conversation,
                max_tokens: a.max_tokens,
                image: None,
            };
            start_turn(shared, client, turns, a.id, ask, a.stream.unwrap_or(true), None);
        }
        Request::Cancel { id } => {
            let found = turns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .map(|t| (t.cancel.clone(), t.cancel_now.clone()));
            match found {
                // The turn's own task reports `cancelled`.
                Some((c, now)) => {
                    c.cancel();
                    now.notify_one();
                }
                None => client.send(protocol::error_event(
                    Code::BadRequest,
                    &format!("cancel: no running request with id `{id}` on this connection"),
                    Some(&id),
                )),
            }
        }
        Request::Stop { id } => {
            shared.answerer.stop_all();
            client.send(protocol::event("stopped", id.as_deref(), json!({})));
        }
        Request::Subscribe { id, events } => {
            client.send(protocol::event(
                "subscribed",
                id.as_deref(),
                json!({"events": events}),
            ));
            // One stream per topic and connection, however often it subscribes.
            let wants = |topic: &str| events.iter().any(|e| e == topic);
            if wants("state") && !conn.subscribed.swap(true, Ordering::SeqCst) {
                let rx = shared.state.subscribe();
                client.send(protocol::event(
                    "state",
                    None,
                    json!({"state": shared.state.get()}),
                ));
                forward(rx, client.clone(), conn.gone.clone(), |s| {
                    protocol::event("state", None, json!({"state": s}))
                });
                // The camera's privacy indicator, as D-Bus's CameraActive.
                // Its failures (a lost device) come as `camera {active, error}`.
                let mut cam = shared.camera.subscribe_active();
                let mut errors = shared.camera.subscribe_errors();
                let (client, mut gone) = (client.clone(), conn.gone.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = gone.changed() => break,
                            changed = cam.changed() => {
                                if changed.is_err() {
                                    break;
                                }
                                let active = *cam.borrow_and_update();
                                client.send(protocol::event("camera", None, json!({"active": active})));
                            }
                            err = errors.recv() => match err {
                                Ok(e) => {
                                    let active = *cam.borrow();
                                    client.send(protocol::event(
                                        "camera",
                                        None,
                                        json!({"active": active, "error": e}),
                                    ));
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => break,
                            },
                        }
                    }
                });
            }
            if wants("voice") && !conn.voice.swap(true, Ordering::SeqCst) {
                let rx = shared.listener.subscribe();
                client.send(protocol::event(
                    "microphone",
                    None,
                    json!({"active": shared.listener.microphone_active(),
                           "hands_free": shared.listener.hands_free()}),
                ));
                forward(rx, client.clone(), conn.gone.clone(), |v| v.line());
            }
        }
        Request::Set { id, muted } => {
            shared.state.set_muted(muted);
            client.send(protocol::event("set", id.as_deref(), json!({"muted": muted})));
        }
        Request::Status { id } => client.send(protocol::event(
            "status",
            id.as_deref(),
            json!({
                "state": shared.state.get(),
                "muted": shared.state.muted(),
                "microphone": shared.listener.microphone_active(),
                "camera": shared.camera.describe(),
                "pending": shared.answerer.pending(),
                "model": shared.model,
                "uptime_s": shared.started.elapsed().as_secs(),
            }),
        )),
        Request::Describe { id } => client.send(protocol::event(
            "describe",
            id.as_deref(),
            json!({
                "version": env!("CARGO_PKG_VERSION"),
                "protocol": protocol::VERSION,
                "requests": protocol::SUPPORTED,
                "unsupported": protocol::UNSUPPORTED,
                "subscribable": protocol::SUBSCRIBABLE,
                "capabilities": {"text": true, "voice": true, "hands_free": shared.listener.hands_free(), "vision": !shared.vision_model.is_null(), "camera": shared.camera.configured(), "models": true},
                "models": {"language": shared.model, "vision": shared.vision_model},
            }),
        )),
        Request::ModelsList { id } => {
            let client = client.clone();
            let models = shared.models.clone();
            tokio::spawn(async move {
                // Listing reads manifests and sizes directories: off the executor.
                let rows = tokio::task::spawn_blocking(move || {
                    crate::models::list(&models.catalog, &models.store)
                        .map(|rows| (rows, models.store.dir().to_owned()))
                })
                .await;
                let line = match rows {
                    Ok(Ok((rows, dir))) => protocol::event(
                        "models.list",
                        id.as_deref(),
                        json!({"models": rows, "dir": dir}),
                    ),
                    Ok(Err(e)) => protocol::error_event(
                        crate::models::code_of(&e),
                        &e.to_string(),
                        id.as_deref(),
                    ),
                    Err(e) => protocol::error_event(Code::Internal, &e.to_string(), id.as_deref()),
                };
                client.send(line);
            });
        }
        Request::ModelsPull { id, name } => {
            if id_in_use(turns, client, &id) {
                return;
            }
            let cancel = CancelToken::new();
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            if let Err((code, message)) = shared.models.pull(&name, cancel.clone(), tx) {
                client.send(protocol::error_event(code, &message, Some(&id)));
                return;
            }
            register(turns, &id, &cancel);
            let client = client.clone();
            let turns = turns.clone();
            tokio::spawn(async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        crate::models::PullMsg::Progress(v) => {
                            client.send(protocol::event("models.progress", Some(&id), v))
                        }
                        crate::models::PullMsg::Done(Ok(v)) => {
                            client.send(protocol::event("models.pulled", Some(&id), v))
                        }
                        crate::models::PullMsg::Done(Err(_)) if cancel.is_cancelled() => {
                            client.send(protocol::event("cancelled", Some(&id), json!({})))
                        }
                        crate::models::PullMsg::Done(Err((code, message))) => {
                            client.send(protocol::error_event(code, &message, Some(&id)))
                        }
                    }
                }
                turns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
        Request::ListenStart { id } => {
            if id_in_use(turns, client, &id) {
                return;
            }
            let cancel = CancelToken::new();
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            if let Err((code, message)) = shared.listener.push_to_talk(&id, cancel.clone(), tx) {
                client.send(protocol::error_event(code, &message, Some(&id)));
                return;
            }
            // `cancel {id}` and a closed connection abort the capture.
            register(turns, &id, &cancel);
            let shared = shared.clone();
            let client = client.clone();
            let turns = turns.clone();
            tokio::spawn(async move {
                use seer_pipelines::listen::PttMsg;
                while let Some(msg) = rx.recv().await {
                    match msg {
                        PttMsg::Listening => client.send(protocol::event(
                            "state",
                            Some(&id),
                            json!({"state": "listening"}),
                        )),
                        PttMsg::Transcribing => client.send(protocol::event(
                            "state",
                            Some(&id),
                            json!({"state": "transcribing"}),
                        )),
                        PttMsg::Transcript(text) => {
                            turns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                            shared.listener.announce_transcript(&id, &text);
                            client.send(protocol::event(
                                "transcript.final",
                                Some(&id),
                                json!({"text": text}),
                            ));
                            if cancel.is_cancelled() {
                                // The connection went away (or cancelled)
                                // while whisper ran: no answer for nobody.
                                shared.state.set_if(&[State::Transcribing], State::Idle);
                                client.send(protocol::event("cancelled", Some(&id), json!({})));
                                return;
                            }
                            if text.trim().is_empty() {
                                shared.state.set_if(&[State::Transcribing], State::Idle);
                                client.send(protocol::error_event(
                                    Code::BadRequest,
                                    "no speech was heard",
                                    Some(&id),
                                ));
                            } else {
                                let image =
                                    crate::listen::look_for(shared.listener.eyes(), &text).await;
                                let ask = Ask {
                                    text,
                                    conversation: None,
                                    max_tokens: None,
                                    image,
                                };
                                start_turn(&shared, &client, &turns, id.clone(), ask, true, None);
                            }
                            return;
                        }
                        PttMsg::Aborted => {
                            client.send(protocol::event("cancelled", Some(&id), json!({})))
                        }
                        PttMsg::Failed(e) => client.send(protocol::error_event(
                            crate::listen::code_of(&e),
                            &e.to_string(),
                            Some(&id),
                        )),
                    }
                }
                turns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        }
        Request::ListenStop { id } => {
            if !shared.listener.stop(&id) {
                client.send(protocol::error_event(
                    Code::BadRequest,
                    &format!("listen.stop: nothing is listening for `{id}`"),
                    Some(&id),
                ));
            }
        }
        Request::Unsupported { id, kind } => client.send(protocol::error_event(
            Code::Unsupported,
            &format!(
                "`{kind}` belongs to a subsystem that has not landed in this build (see describe)"
            ),
            id.as_deref(),
        )),
    }
}
