//! Talking to the Hugging Face Hub (or anything that serves its `resolve`
//! URLs): the [`Hub`] client, its one redirect loop, and the `HEAD` that
//! looks a file up.
//!
//! Redirects are followed by hand, in [`Hub::call`] only, for two reasons:
//! the Hub's own response carries what the CDN's does not (the commit in
//! `X-Repo-Commit`, the LFS object's sha256 in `X-Linked-Etag` and size in
//! `X-Linked-Size`), and the token must reach the Hub's origin, never the
//! CDN a file is redirected to. Each file is first asked about with a `HEAD`
//! that stops at the CDN, as `huggingface_hub` does ([`Hub::lookup`]); the
//! body is fetched by [`transfer`](crate::transfer).

use crate::catalog::{Entry, FileSpec, is_hex};
use crate::error::StoreError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Redirects one request may take; the Hub needs at most two (a renamed
/// repository, then the CDN).
const MAX_REDIRECTS: usize = 5;

/// A Hub client.
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Retries after a broken transfer, each resuming where it stopped; the
    /// count restarts whenever bytes arrived.
    pub retries: u32,
    /// Delay before the first retry (doubled for each further one).
    pub retry_delay: Duration,
}

/// The two requests a pull makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Looks a file up without its body.
    Head,
    /// Fetches the body (or, with a Range, the rest of it).
    Get,
}

/// A response, or where a redirect the caller chose not to follow points.
pub(crate) enum Reply {
    /// A response that is not a redirect, from `url`.
    Response {
        /// The URL that answered, after the redirects taken.
        url: String,
        /// The response, body unread.
        response: ureq::http::Response<ureq::Body>,
    },
    /// A redirect the caller stopped at, and where it points.
    Redirected {
        /// The `Location`, made absolute.
        to: String,
    },
}

/// Why [`Hub::call`] got no usable response.
pub(crate) enum CallError {
    /// No response at all (connection refused, DNS, TLS, a timeout): worth
    /// a retry. The caller knows which partial file it concerns.
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the HTTP stack said.
        reason: String,
    },
    /// A redirect that cannot be followed (no `Location`, too many hops).
    Fatal(StoreError),
}

/// A failed step of a pull: worth retrying (what was downloaded is kept), or
/// not. [`transfer`](crate::transfer)'s retry loop reads it.
pub(crate) enum Step {
    /// Retry after a delay; `progressed` when bytes arrived before it broke,
    /// which restarts the retry count.
    Again {
        /// The error to report if no retry is left.
        error: StoreError,
        /// Bytes arrived in this attempt.
        progressed: bool,
    },
    /// Give up.
    Fatal(StoreError),
}

/// A transfer error worth retrying; `partial` and `kept` say what stays on
/// disk for the resume (none for a lookup).
pub(crate) fn transient(
    url: &str,
    reason: String,
    partial: Option<&Path>,
    kept: u64,
    progressed: bool,
) -> Step {
    Step::Again {
        error: StoreError::Transfer {
            url: url.to_owned(),
            reason,
            partial: partial.map(Path::to_owned).unwrap_or_default(),
            kept,
        },
        progressed,
    }
}

impl CallError {
    /// The [`Step`] for this error; `partial` and `kept` as in [`transient`].
    pub(crate) fn into_step(self, partial: Option<&Path>, kept: u64) -> Step {
        match self {
            CallError::Unreachable { url, reason } => transient(&url, reason, partial, kept, false),
            CallError::Fatal(e) => Step::Fatal(e),
        }
    }
}

/// What the Hub said about one file.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    /// Where the body is (the CDN for an LFS file).
    pub(crate) url: String,
    /// `X-Repo-Commit`: the commit the revision resolved to.
    pub(crate) commit: Option<String>,
    /// The sha256 the Hub publishes (LFS files only).
    pub(crate) sha256: Option<String>,
    /// The size, if announced.
    pub(crate) size: Option<u64>,
}

impl Hub {
    /// A client for `endpoint` (no trailing slash needed).
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            // Redirects are followed by `call`: the first response's headers
            // matter, and the token must not travel to the CDN.
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled transfer fails and is resumed rather than hanging.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("seer/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
            agent,
            retries: 3,
            retry_delay: Duration::from_secs(2),
        }
    }

    /// The endpoint from `HF_ENDPOINT` (default the public Hub) and the
    /// token from `HF_TOKEN` or the token file `huggingface-cli login`
    /// writes (`$HF_TOKEN_PATH`, `$HF_HOME/token`, `~/.cache/huggingface/token`).
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        Self::new(&endpoint, token_from_env())
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Whether a token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The `resolve` URL of a catalogue file.
    fn resolve_url(&self, entry: &Entry, f: &FileSpec) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            entry.repo,
            encode(&entry.revision, false),
            encode(&f.path, true)
        )
    }

    /// Sends `method` to `url` (with `Range: bytes=N-` when `range_from` is
    /// N > 0) and follows redirects. Each redirect response is shown to
    /// `hop` with the absolute URL it points to; `hop` returns false to stop
    /// there without requesting it. This is the only place a redirect is
    /// followed, and every hop goes through the token check of `request`.
    pub(crate) fn call(
        &self,
        method: Method,
        url: &str,
        range_from: u64,
        hop: &mut dyn FnMut(&ureq::http::Response<ureq::Body>, &str) -> bool,
    ) -> Result<Reply, CallError> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.request(method, &url);
            if range_from > 0 {
                req = req.header("Range", format!("bytes={range_from}-"));
            }
            let response = match req.call() {
                Ok(r) => r,
                Err(e) => {
                    return Err(CallError::Unreachable {
                        url,
                        reason: e.to_string(),
                    });
                }
            };
            let status = response.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(Reply::Response { url, response });
            }
            let Some(loc) = header(&response, "location") else {
                return Err(CallError::Fatal(StoreError::Http {
                    url,
                    status,
                    hint: " without a Location header".into(),
                }));
            };
            let next = join_url(&url, &loc);
            if !hop(&response, &next) {
                return Ok(Reply::Redirected { to: next });
            }
            url = next;
        }
        Err(CallError::Fatal(StoreError::Http {
            url,
            status: 310,
            hint: ": too many redirects".into(),
        }))
    }

    /// One request, with the token when it goes to the Hub's own origin.
    fn request(
        &self,
        method: Method,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = match method {
            Method::Head => self.agent.head(url),
            Method::Get => self.agent.get(url),
        };
        // The token goes to the Hub only, never to the CDN it redirects to.
        match &self.token {
            Some(t) if origin(url) == origin(&self.endpoint) => {
                req.header("Authorization", format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    /// Asks the Hub about file `f` of `entry`: where its body is, its size,
    /// its published sha256 and the commit. A same-Hub redirect (a renamed
    /// repository) is followed; one to another origin (the CDN) is where
    /// the body is, and is not asked again.
    pub(crate) fn lookup(&self, entry: &Entry, f: &FileSpec) -> Result<Remote, Step> {
        let mut commit = None;
        let mut sha256 = None;
        let mut size = None;
        let hub = origin(&self.endpoint).to_owned();
        let reply = self
            .call(
                Method::Head,
                &self.resolve_url(entry, f),
                0,
                &mut |resp, next| {
                    commit = commit.take().or_else(|| header(resp, "x-repo-commit"));
                    sha256 = sha256.take().or_else(|| etag_sha256(resp));
                    size = size.or_else(|| header(resp, "x-linked-size")?.parse().ok());
                    origin(next) == hub && next.contains("/resolve/")
                },
            )
            .map_err(|e| e.into_step(None, 0))?;
        let (url, resp) = match reply {
            Reply::Redirected { to } => {
                return Ok(Remote {
                    url: to,
                    commit,
                    sha256,
                    size,
                });
            }
            Reply::Response { url, response } => (url, response),
        };
        match resp.status().as_u16() {
            200 => {
                let len = header(&resp, "x-linked-size")
                    .or_else(|| header(&resp, "content-length"))
                    .and_then(|s| s.parse::<u64>().ok());
                Ok(Remote {
                    commit: commit.or_else(|| header(&resp, "x-repo-commit")),
                    sha256: sha256.or_else(|| etag_sha256(&resp)),
                    size: size.or(len),
                    url,
                })
            }
            s if retryable(s) => Err(transient(&url, format!("HTTP {s}"), None, 0, false)),
            s => Err(Step::Fatal(self.status_error(&url, s, &entry.repo))),
        }
    }

    /// The error for a final status that retrying will not fix, with what to
    /// do about it; `repo` names the repository for a gated one ("" when
    /// the URL is the CDN's).
    pub(crate) fn status_error(&self, url: &str, status: u16, repo: &str) -> StoreError {
        let hint = match status {
            401 | 403 if self.token.is_none() => format!(
                ": the repository {repo} is gated or private; accept its licence on the Hub and set HF_TOKEN (or run `huggingface-cli login`)"
            ),
            401 | 403 => ": the token (HF_TOKEN or the huggingface token file) has no access; accept the model's licence on the Hub".into(),
            404 => ": not found (the catalogue's repo, revision or file name is wrong, or HF_ENDPOINT points elsewhere)".into(),
            _ => String::new(),
        };
        StoreError::Http {
            url: url.to_owned(),
            status,
            hint,
        }
    }
}

/// Statuses a later attempt may not get: server trouble and rate limits.
pub(crate) fn retryable(status: u16) -> bool {
    status >= 500 || status == 429
}

/// A response header as text.
pub(crate) fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The sha256 in an ETag: the Hub's `X-Linked-Etag` for LFS files (a git
/// blob's ETag is a sha1, and is ignored).
fn etag_sha256(resp: &ureq::http::Response<ureq::Body>) -> Option<String> {
    let e = header(resp, "x-linked-etag").or_else(|| header(resp, "etag"))?;
    let e = e
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_ascii_lowercase();
    is_hex(&e, 64).then_some(e)
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after..].find('/') {
        Some(j) => &url[..after + j],
        None => url,
    }
}

/// `loc` (absolute, or absolute-path) relative to `base`.
fn join_url(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        loc.to_owned()
    } else if loc.starts_with('/') {
        format!("{}{loc}", origin(base))
    } else {
        let cut = base.rfind('/').map(|i| i + 1).unwrap_or(base.len());
        format!("{}{loc}", &base[..cut])
    }
}

/// Percent-encodes everything but unreserved characters (and `/` when
/// `keep_slash`: file paths keep their folders, revisions like `refs/pr/1`
/// do not).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `HF_TOKEN`, else the token file `huggingface-cli login` writes.
fn token_from_env() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_owned());
    }
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let file = var("HF_TOKEN_PATH").or_else(|| {
        var("HF_HOME")
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface")))
            .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface")))
            .map(|d| d.join("token"))
    })?;
    let t = std::fs::read_to_string(file).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(origin("https://hf.co/a/b"), "https://hf.co");
        assert_eq!(origin("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(join_url("http://h:1/a/b", "/c?x=1"), "http://h:1/c?x=1");
        assert_eq!(join_url("http://h:1/a/b", "https://cdn/x"), "https://cdn/x");
        assert_eq!(join_url("http://h:1/a/b", "c"), "http://h:1/a/c");
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("onnx/model q.bin", true), "onnx/model%20q.bin");
    }

    #[test]
    fn resolve_urls_encode_revision_and_path() {
        let hub = Hub::new("https://hub.example/", None);
        assert_eq!(hub.endpoint(), "https://hub.example");
        let entry = Entry {
            name: "m".into(),
            role: crate::catalog::Role::Language,
            description: String::new(),
            repo: "owner/repo".into(),
            revision: "refs/pr/1".into(),
            licence: String::new(),
            profiles: Vec::new(),
            main: None,
            files: Vec::new(),
            unverified: Vec::new(),
        };
        let f = FileSpec {
            path: "onnx/model q.bin".into(),
            size: None,
            sha256: None,
        };
        assert_eq!(
            hub.resolve_url(&entry, &f),
            "https://hub.example/owner/repo/resolve/refs%2Fpr%2F1/onnx/model%20q.bin"
        );
    }

    #[test]
    fn status_errors_say_what_to_do() {
        let anon = Hub::new("https://hub.example", None);
        let e = anon.status_error("https://hub.example/x", 401, "owner/gated");
        assert!(e.to_string().contains("owner/gated") && e.to_string().contains("HF_TOKEN"));
        let authed = Hub::new("https://hub.example", Some("t".into()));
        let e = authed.status_error("https://hub.example/x", 403, "owner/gated");
        assert!(e.to_string().contains("has no access"), "{e}");
        assert!(retryable(503) && retryable(429) && !retryable(404));
    }
}
