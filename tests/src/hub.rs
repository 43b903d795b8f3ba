//! A stand-in for the Hugging Face Hub on 127.0.0.1, for download tests
//! (the real Hub is not reachable from CI).
//!
//! It answers like the Hub's `resolve` endpoint: an LFS file gets a 302 to a
//! CDN path with `X-Repo-Commit`, `X-Linked-Etag` (the sha256) and
//! `X-Linked-Size`; a small file is served directly with a git-style ETag.
//! The CDN path serves `Range` requests with 206 and `Content-Range`. Every
//! request is logged, and faults can be injected per file: close the
//! connection after N bytes, corrupt the bytes, or run a hook halfway.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A fake commit id, as `X-Repo-Commit` reports it.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// What can go wrong while serving one file.
#[derive(Clone, Default)]
pub struct Fault {
    /// Close the connection after this many body bytes (first GET only).
    pub drop_after: Option<u64>,
    /// Serve the bytes with one flipped (the ETag still names the real sha).
    pub corrupt: bool,
    /// Called once when half of the body is sent, before the rest goes out.
    pub at_half: Option<Arc<dyn Fn() + Send + Sync>>,
}

struct File {
    bytes: Arc<Vec<u8>>,
    sha256: String,
    lfs: bool,
    fault: Fault,
    gets: u32,
}

#[derive(Default)]
struct State {
    /// "owner/name/rev/path" → file.
    files: HashMap<String, File>,
    /// Gated repositories and the token they accept.
    gated: HashMap<String, String>,
    /// The CDN's origin.
    cdn: String,
    log: Vec<String>,
}

/// The running server; it lives as long as the test process.
#[derive(Clone)]
pub struct FakeHub {
    /// `http://127.0.0.1:PORT`, for `HF_ENDPOINT`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

/// Hex sha256.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FakeHub {
    /// Starts serving on an ephemeral port.
    /// The Hub and its "CDN" listen on two ports (two origins, as on the
    /// real Hub, whose large files are served from another host).
    pub fn start() -> FakeHub {
        let state = Arc::new(Mutex::new(State::default()));
        let listen = || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake hub");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let st = state.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    let st = st.clone();
                    std::thread::spawn(move || serve(conn, &st));
                }
            });
            url
        };
        let endpoint = listen();
        let cdn = listen();
        state.lock().unwrap_or_else(|p| p.into_inner()).cdn = cdn;
        FakeHub { endpoint, state }
    }

    /// Publishes `bytes` as `path` in `repo` at `revision`; `lfs` files are
    /// redirected to the CDN path like the Hub's large files.
    pub fn add(&self, repo: &str, revision: &str, path: &str, bytes: Vec<u8>, lfs: bool) {
        let sha = sha256(&bytes);
        self.lock().files.insert(
            format!("{repo}/{revision}/{path}"),
            File {
                bytes: Arc::new(bytes),
                sha256: sha,
                lfs,
                fault: Fault::default(),
                gets: 0,
            },
        );
    }

    /// Sets the fault for a published file.
    pub fn fault(&self, repo: &str, revision: &str, path: &str, fault: Fault) {
        let mut st = self.lock();
        let f = st
            .files
            .get_mut(&format!("{repo}/{revision}/{path}"))
            .expect("fault on a published file");
        f.fault = fault;
        f.gets = 0;
    }

    /// Makes `repo` answer 401 unless the request carries `Bearer token`.
    pub fn gate(&self, repo: &str, token: &str) {
        self.lock().gated.insert(repo.to_owned(), token.to_owned());
    }

    /// The requests so far, as "METHOD PATH auth=… range=…" (`auth` is the
    /// Authorization header or `-`).
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn serve(conn: TcpStream, st: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_owned(), target.to_owned());
        let mut range = None;
        let mut auth = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = Some(v.trim().to_owned());
                } else if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim().to_owned());
                }
            }
        }
        st.lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .push(format!(
                "{method} {target} auth={} range={}",
                auth.as_deref().unwrap_or("-"),
                range.as_deref().unwrap_or("-")
            ));
        if !respond(
            &mut out,
            st,
            &method,
            &target,
            range.as_deref(),
            auth.as_deref(),
        ) {
            return;
        }
    }
}

/// Writes one response; false when the connection must close.
fn respond(
    out: &mut TcpStream,
    st: &Mutex<State>,
    method: &str,
    target: &str,
    range: Option<&str>,
    auth: Option<&str>,
) -> bool {
    let head = method == "HEAD";
    let path = target.split('?').next().unwrap_or("");
    let not_found = |out: &mut TcpStream| {
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Error-Code: EntryNotFound\r\n\r\n"
        );
        true
    };
    // /cdn/<sha>: the body, with Range.
    if let Some(sha) = path.strip_prefix("/cdn/") {
        let found = {
            let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
            s.files.values_mut().find(|f| f.sha256 == sha).map(|f| {
                if !head {
                    f.gets += 1;
                }
                (f.bytes.clone(), f.fault.clone(), f.gets)
            })
        };
        let Some((bytes, fault, gets)) = found else {
            return not_found(out);
        };
        return send_body(out, &bytes, sha, range, head, &fault, gets);
    }
    // /<owner>/<name>/resolve/<rev>/<path>
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if segs.len() != 5 || segs[2] != "resolve" {
        return not_found(out);
    }
    let repo = format!("{}/{}", segs[0], segs[1]);
    let token = st
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .gated
        .get(&repo)
        .cloned();
    if let Some(token) = token
        && auth != Some(format!("Bearer {token}").as_str())
    {
        let _ = write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nX-Error-Code: GatedRepo\r\n\r\n"
        );
        return true;
    }
    let rev = segs[3].replace("%2F", "/");
    let key = format!("{}/{}/{rev}/{}", segs[0], segs[1], segs[4]);
    let found = {
        let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
        s.files.get_mut(&key).map(|f| {
            if !head && !f.lfs {
                f.gets += 1;
            }
            (
                f.bytes.clone(),
                f.sha256.clone(),
                f.lfs,
                f.fault.clone(),
                f.gets,
            )
        })
    };
    let Some((bytes, sha, lfs, fault, gets)) = found else {
        return not_found(out);
    };
    if lfs {
        let cdn = st.lock().unwrap_or_else(|p| p.into_inner()).cdn.clone();
        let _ = write!(
            out,
            "HTTP/1.1 302 Found\r\nLocation: {cdn}/cdn/{sha}?X-Amz-Signature=fake\r\nX-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {}\r\nETag: \"{}\"\r\nContent-Length: 0\r\n\r\n",
            bytes.len(),
            &sha[..40]
        );
        return true;
    }
    // A small (git) file: its ETag is a git blob id, not a sha256.
    send_body(out, &bytes, &sha[..40], range, head, &fault, gets)
}

fn send_body(
    out: &mut TcpStream,
    bytes: &[u8],
    etag: &str,
    range: Option<&str>,
    head: bool,
    fault: &Fault,
    gets: u32,
) -> bool {
    let total = bytes.len() as u64;
    let start = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<u64>().ok());
    let (status, from) = match start {
        Some(s) if s >= total => {
            let _ = write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\n\r\n"
            );
            return true;
        }
        Some(s) => ("206 Partial Content", s),
        None => ("200 OK", 0),
    };
    let mut hdr = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nETag: \"{etag}\"\r\nAccept-Ranges: bytes\r\nX-Repo-Commit: {COMMIT}\r\n",
        total - from
    );
    if start.is_some() {
        hdr.push_str(&format!(
            "Content-Range: bytes {from}-{}/{total}\r\n",
            total - 1
        ));
    }
    hdr.push_str("\r\n");
    if out.write_all(hdr.as_bytes()).is_err() {
        return false;
    }
    if head {
        return true;
    }
    let mut body = bytes[from as usize..].to_vec();
    if fault.corrupt && !body.is_empty() {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let cut = match fault.drop_after {
        Some(n) if gets == 1 => Some((n.saturating_sub(from)) as usize),
        _ => None,
    };
    let half = ((total / 2).saturating_sub(from)) as usize;
    let mut sent = 0usize;
    for chunk in body.chunks(64 << 10) {
        if let Some(c) = cut
            && sent + chunk.len() > c
        {
            let _ = out.write_all(&chunk[..c - sent]);
            let _ = out.flush();
            let _ = out.shutdown(std::net::Shutdown::Both);
            return false;
        }
        if let Some(hook) = &fault.at_half
            && sent <= half
            && sent + chunk.len() > half
            && gets == 1
        {
            hook();
        }
        if out.write_all(chunk).is_err() {
            return false;
        }
        sent += chunk.len();
    }
    let _ = out.flush();
    true
}
