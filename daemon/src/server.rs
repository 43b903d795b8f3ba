//! The Unix-socket front end: binding (permissions, stale sockets), one
//! task per connection with a bounded event queue, and the translation of
//! protocol requests into calls on the assistant service. It runs no turn
//! itself: every request goes to [`Assistant`], and every event it writes
//! is one the service produced.

use crate::protocol::{self, Code, Event, Request, Topic};
use crate::service::{Assistant, Canceller, TurnHandle};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, watch};

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The assistant.
    pub assistant: Arc<Assistant>,
    /// Longest request line.
    pub max_line_bytes: usize,
    /// Per-client event queue length.
    pub client_queue: usize,
    /// A group whose members may connect besides the owner.
    pub group: Option<u32>,
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

/// Accepts connections until `shutdown` turns true. The peer check runs
/// in the connection's own task (it may read `/proc`), never in the
/// accept loop.
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = own_uid();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (shared, shutdown) = (shared.clone(), shutdown.clone());
                    tokio::spawn(async move {
                        if allowed(&stream, me, shared.group).await {
                            connection(stream, shared, shutdown).await;
                        } else {
                            refuse(stream).await;
                        }
                    });
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
        }
    }
}

/// Whether the peer is the owner, or in `group` (primary or supplementary).
async fn allowed(stream: &UnixStream, me: Option<u32>, group: Option<u32>) -> bool {
    let Ok(peer) = stream.peer_cred() else {
        tracing::warn!("refusing a connection whose credentials cannot be read");
        return false;
    };
    if Some(peer.uid()) == me {
        return true;
    }
    let in_group = match (group, peer.pid()) {
        (Some(g), _) if peer.gid() == g => true,
        (Some(g), Some(pid)) => tokio::task::spawn_blocking(move || has_group(pid, g))
            .await
            .unwrap_or(false),
        _ => false,
    };
    if !in_group {
        tracing::warn!(peer_uid = peer.uid(), own_uid = ?me, "refusing a connection from another user");
    }
    in_group
}

async fn refuse(mut stream: UnixStream) {
    let line = protocol::encode(
        None,
        &Event::error(
            Code::PermissionDenied,
            "this socket serves only the user running seerd",
        ),
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
    fn send_line(&self, line: String) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(line) {
            if !*self.kill.borrow() {
                tracing::warn!("client is not reading; its event queue is full, disconnecting it");
            }
            let _ = self.kill.send(true);
        }
    }

    /// Writes `event`, answering request `id` (none for broadcasts).
    fn send(&self, id: Option<&str>, event: &Event) {
        self.send_line(protocol::encode(id, event));
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
        client: ClientTx { tx, kill },
        assistant: shared.assistant.clone(),
        requests: Arc::default(),
        gone,
        topics: Mutex::default(),
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
            Ok(Some(Err(n))) => conn.client.send(
                None,
                &Event::error(
                    Code::TooLarge,
                    format!(
                        "request line of {n} bytes exceeds socket.max_line_bytes = {}",
                        shared.max_line_bytes
                    ),
                ),
            ),
            Ok(Some(Ok(()))) if buf.iter().all(u8::is_ascii_whitespace) => {}
            Ok(Some(Ok(()))) => match protocol::parse(&buf) {
                Ok(req) => conn.handle(req).await,
                Err(e) => conn
                    .client
                    .send(e.id.as_deref(), &Event::error(e.code, e.message)),
            },
        }
    }
    // The client is gone (or too slow, or we are shutting down): its
    // requests stop working for nobody, and its subscriptions end.
    for r in conn.lock().values() {
        r.canceller.cancel();
    }
    let _ = gone_tx.send(true);
    if *killed.borrow() {
        writer.abort();
    } else {
        drop(conn);
        let _ = writer.await;
    }
}

/// A running request of one connection: a turn, a capture, a download.
struct Running {
    canceller: Canceller,
    /// The push-to-talk capture, for `listen.stop`.
    capture: Option<String>,
}

type Requests = Arc<Mutex<HashMap<String, Running>>>;

/// One connection's state.
struct Conn {
    client: ClientTx,
    assistant: Arc<Assistant>,
    /// Running requests by id.
    requests: Requests,
    /// Turns true when the connection ends.
    gone: watch::Receiver<bool>,
    /// Topics this connection has a stream of already.
    topics: Mutex<Vec<Topic>>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(&self, req: Request) {
        let a = &self.assistant;
        match req {
            Request::Ask(ask) => {
                if self.id_free(&ask.id) {
                    let id = ask.id.clone();
                    self.track(id, a.ask(ask.into()));
                }
            }
            Request::Cancel { id } => self.cancel(&id),
            Request::Stop { id } => {
                a.stop_all();
                self.client.send(id.as_deref(), &Event::Stopped {});
            }
            Request::Subscribe { id, events } => self.subscribe(id.as_deref(), events),
            Request::Set { id, muted, speech } => {
                if let Some(muted) = muted {
                    a.set_muted(muted);
                }
                if let Some(on) = speech {
                    a.set_speech(on);
                }
                let ev = Event::Set {
                    muted: a.muted(),
                    speech: a.speech_available(),
                };
                self.client.send(id.as_deref(), &ev);
            }
            Request::Say { id, text } => {
                if self.id_free(&id) {
                    self.start(id, a.say(&text));
                }
            }
            Request::Status { id } => self.client.send(id.as_deref(), &Event::Status(a.status())),
            Request::Describe { id } => self
                .client
                .send(id.as_deref(), &Event::Describe(a.describe())),
            Request::ModelsList { id } => {
                let (a, client) = (a.clone(), self.client.clone());
                tokio::spawn(async move {
                    let ev = a.models_list().await.unwrap_or_else(Event::from);
                    client.send(id.as_deref(), &ev);
                });
            }
            Request::ModelsPull { id, name } => {
                if self.id_free(&id) {
                    self.start(id, a.models_pull(&name));
                }
            }
            Request::ListenStart { id } => {
                if self.id_free(&id) {
                    let started = a.listen(&id).await;
                    self.start(id, started);
                }
            }
            Request::ListenStop { id } => self.listen_stop(&id),
        }
    }

    /// Whether `id` is free on this connection (if not, says so).
    fn id_free(&self, id: &str) -> bool {
        let used = self.lock().contains_key(id);
        if used {
            let e = Event::error(
                Code::BadRequest,
                format!("id `{id}` is already in use by a running request on this connection"),
            );
            self.client.send(Some(id), &e);
        }
        !used
    }

    fn start(&self, id: String, started: Result<TurnHandle, crate::error::ServiceError>) {
        match started {
            Ok(handle) => self.track(id, handle),
            Err(e) => self.client.send(Some(&id), &e.into()),
        }
    }

    /// Forwards a request's events under `id` until its final one;
    /// `cancel {id}` and a closing connection reach it meanwhile.
    fn track(&self, id: String, mut handle: TurnHandle) {
        self.lock().insert(
            id.clone(),
            Running {
                canceller: handle.canceller(),
                capture: handle.capture().map(str::to_owned),
            },
        );
        let (client, requests) = (self.client.clone(), self.requests.clone());
        tokio::spawn(async move {
            while let Some(ev) = handle.events.recv().await {
                let last = handle.ends_with(&ev);
                if last {
                    // Free before the client hears the end, so it may
                    // reuse the id at once.
                    requests
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id);
                }
                client.send(Some(&id), &ev);
                if last {
                    return;
                }
            }
            requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    fn cancel(&self, id: &str) {
        let found = self.lock().get(id).map(|r| r.canceller.clone());
        match found {
            // The request's own events report `cancelled`.
            Some(c) => c.cancel(),
            None => self.client.send(
                Some(id),
                &Event::error(
                    Code::BadRequest,
                    format!("cancel: no running request with id `{id}` on this connection"),
                ),
            ),
        }
    }

    fn listen_stop(&self, id: &str) {
        let capture = self.lock().get(id).and_then(|r| r.capture.clone());
        let stopped = capture.is_some_and(|key| self.assistant.stop_listening(&key));
        if !stopped {
            let e = Event::error(
                Code::BadRequest,
                format!("listen.stop: nothing is listening for `{id}`"),
            );
            self.client.send(Some(id), &e);
        }
    }

    /// One stream per topic and connection, however often it subscribes.
    fn subscribe(&self, id: Option<&str>, events: Vec<Topic>) {
        let a = &self.assistant;
        self.client.send(
            id,
            &Event::Subscribed {
                events: events.clone(),
            },
        );
        let mut have = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        for topic in events {
            if have.contains(&topic) {
                continue;
            }
            have.push(topic);
            match topic {
                Topic::State => {
                    let rx = a.subscribe_state();
                    self.client.send(None, &Event::state(a.state()));
                    self.forward(rx, |s| (None, Event::state(s)));
                    // The camera's privacy indicator, as D-Bus's CameraActive.
                    self.forward(a.subscribe_camera(), |e| (None, e));
                }
                Topic::Voice => {
                    let rx = a.subscribe_voice();
                    self.client.send(None, &a.microphone());
                    self.forward(rx, |b| (b.id, b.event));
                }
            }
        }
    }

    /// Sends every broadcast `T` to the client, rendered by `render`, until
    /// the connection ends. A subscriber that lags skips what it missed.
    fn forward<T: Clone + Send + 'static>(
        &self,
        mut rx: broadcast::Receiver<T>,
        render: impl Fn(T) -> (Option<String>, Event) + Send + 'static,
    ) {
        let (client, mut gone) = (self.client.clone(), self.gone.clone());
        tokio::spawn(async move {
            loop {
                let got = tokio::select! {
                    _ = gone.changed() => break,
                    got = rx.recv() => got,
                };
                match got {
                    Ok(v) => {
                        let (id, ev) = render(v);
                        client.send(id.as_deref(), &ev);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        });
    }
}
