//! Downloads from the Hugging Face Hub's `resolve` endpoints.
//!
//! Each file is first asked about with a `HEAD` that does not follow
//! redirects, like `huggingface_hub` does: that response carries the commit
//! (`X-Repo-Commit`), the LFS object's sha256 (`X-Linked-Etag`) and size
//! (`X-Linked-Size`), and the CDN `Location`. The body is then fetched into
//! `FILE.partial`, with `Range: bytes=N-` when N bytes are already there, and
//! renamed into place only after its sha256 matched. Blocking I/O on the
//! caller's thread: the daemon runs a pull on a thread of its own.

use super::{
    Checked, Entry, FileSpec, InstalledFile, MANIFEST, Manifest, ModelStore, Source, StoreError,
    hash_file, hex, now, write_manifest,
};
use crate::generate::CancelToken;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What a pull reports while it runs. `Progress` comes at most every 100 ms
/// per file, plus once when a file completes.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent<'a> {
    /// The files were looked up; `total` is the model's size when every
    /// file's size is known, `present` what is already on disk.
    Resolved {
        /// The model.
        name: &'a str,
        /// Number of files.
        files: usize,
        /// Bytes in all.
        total: Option<u64>,
        /// Bytes already downloaded (finished files and `.partial` files).
        present: u64,
    },
    /// A file's transfer starts (`offset` > 0: resumed).
    File {
        /// The model.
        name: &'a str,
        /// The file.
        file: &'a str,
        /// Its size, if known.
        size: Option<u64>,
        /// Where the transfer starts.
        offset: u64,
    },
    /// Bytes of the whole model on disk so far.
    Progress {
        /// The model.
        name: &'a str,
        /// The file being transferred.
        file: &'a str,
        /// Bytes of the model done.
        completed: u64,
        /// Bytes of the model in all, if known.
        total: Option<u64>,
    },
    /// A transfer broke off and will be retried from where it stopped.
    Retry {
        /// The model.
        name: &'a str,
        /// The file.
        file: &'a str,
        /// 1 for the first retry.
        attempt: u32,
        /// Why.
        error: String,
        /// How long until the retry.
        delay: Duration,
    },
}

/// How a pull ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullOutcome {
    /// It was installed already; nothing was fetched.
    AlreadyInstalled(Manifest),
    /// It is installed now.
    Installed(Manifest),
}

impl PullOutcome {
    /// The manifest, either way.
    pub fn manifest(&self) -> &Manifest {
        match self {
            PullOutcome::AlreadyInstalled(m) | PullOutcome::Installed(m) => m,
        }
    }
}

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

impl Hub {
    /// A client for `endpoint` (no trailing slash needed).
    pub fn new(endpoint: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            // Redirects are followed by hand: the first response's headers
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

    /// Downloads `entry` into `store` unless it is installed already.
    pub fn pull(
        &self,
        store: &ModelStore,
        entry: &Entry,
        on: &mut dyn FnMut(PullEvent<'_>),
        cancel: &CancelToken,
    ) -> Result<PullOutcome, StoreError> {
        if let Some(m) = installed_match(store, entry)? {
            return Ok(PullOutcome::AlreadyInstalled(m));
        }
        let mut job = Job::begin(store, &entry.name)?;
        let result = self.pull_into(&mut job, entry, on, cancel);
        job.finish(result.is_ok() || result.as_ref().is_err_and(keeps_progress));
        result.map(PullOutcome::Installed)
    }

    fn pull_into(
        &self,
        job: &mut Job,
        entry: &Entry,
        on: &mut dyn FnMut(PullEvent<'_>),
        cancel: &CancelToken,
    ) -> Result<Manifest, StoreError> {
        let name = entry.name.as_str();
        // An earlier manifest no longer describes what will be on disk.
        remove_if_exists(&job.dir.join(MANIFEST))?;
        let mut remotes = Vec::with_capacity(entry.files.len());
        for f in &entry.files {
            remotes.push(self.with_retries(name, &f.path, on, cancel, |_| self.head(entry, f))?);
        }
        // What is on disk already: finished files that still verify, and
        // partial files to resume.
        let mut present = 0u64;
        let mut needed = 0u64;
        let mut done = vec![None; entry.files.len()];
        for (i, (f, r)) in entry.files.iter().zip(&remotes).enumerate() {
            let dst = job.dir.join(&f.path);
            if let (Some(want), Ok(md)) = (r.expected(f), std::fs::metadata(&dst))
                && Some(md.len()) == r.size
                && let Ok((size, sha)) = hash_file(&dst, &mut |_| {})
                && sha == want.0
            {
                present += size;
                done[i] = Some(InstalledFile {
                    path: f.path.clone(),
                    size,
                    sha256: sha,
                    checked: want.1,
                });
                continue;
            }
            let have = std::fs::metadata(partial_path(&dst))
                .map(|m| m.len())
                .unwrap_or(0);
            let have = if r.size.is_some_and(|s| have > s) {
                0
            } else {
                have
            };
            present += have;
            needed += r.size.map(|s| s - have).unwrap_or(0);
        }
        let total: Option<u64> = remotes.iter().map(|r| r.size).sum();
        on(PullEvent::Resolved {
            name,
            files: entry.files.len(),
            total,
            present,
        });
        let available = free_space(&job.dir)?;
        if needed > available {
            return Err(StoreError::NoSpace {
                dir: job.dir.clone(),
                what: format!("model {name}"),
                needed,
                available,
            });
        }
        let mut files = Vec::with_capacity(entry.files.len());
        let mut completed = present;
        for ((f, r), done) in entry.files.iter().zip(&remotes).zip(done) {
            if let Some(done) = done {
                files.push(done);
                continue;
            }
            let (dst, partial) = job.begin_file(&f.path)?;
            let before = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let before = if r.size.is_some_and(|s| before > s) {
                0
            } else {
                before
            };
            let mut t = Transfer::new(&partial)?;
            on(PullEvent::File {
                name,
                file: &f.path,
                size: r.size,
                offset: t.len,
            });
            let base = completed - before;
            self.with_retries(name, &f.path, on, cancel, |on| {
                self.get(
                    r,
                    &mut t,
                    &mut |n| {
                        on(PullEvent::Progress {
                            name,
                            file: &f.path,
                            completed: base + n,
                            total,
                        })
                    },
                    cancel,
                )
            })?;
            let sha = t.finish()?;
            let checked = match r.expected(f) {
                Some((want, checked)) if want == sha => checked,
                Some((want, checked)) => {
                    job.discard_partial();
                    return Err(StoreError::ChecksumMismatch {
                        file: f.path.clone(),
                        expected: want,
                        source_of_truth: match checked {
                            Checked::Catalogue => "pinned in the catalogue".into(),
                            _ => format!("published by {}", self.endpoint),
                        },
                        actual: sha,
                    });
                }
                None => Checked::OnArrival,
            };
            job.commit_file(&partial, dst)?;
            completed = base + t.len;
            on(PullEvent::Progress {
                name,
                file: &f.path,
                completed,
                total,
            });
            files.push(InstalledFile {
                path: f.path.clone(),
                size: t.len,
                sha256: sha,
                checked,
            });
        }
        let commit = remotes.iter().find_map(|r| r.commit.clone());
        job.write_manifest(entry, self.endpoint.clone(), commit, files)
    }

    /// Runs `step` again after errors that keep what was downloaded,
    /// with a growing delay; a step that made progress restarts the count.
    fn with_retries<T>(
        &self,
        name: &str,
        file: &str,
        on: &mut dyn FnMut(PullEvent<'_>),
        cancel: &CancelToken,
        mut step: impl FnMut(&mut dyn FnMut(PullEvent<'_>)) -> Result<T, Step>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(StoreError::Cancelled(name.to_owned()));
            }
            match step(on) {
                Ok(v) => return Ok(v),
                Err(Step::Fatal(e)) => return Err(e),
                Err(Step::Again { error, progressed }) => {
                    if progressed {
                        attempt = 0;
                    }
                    if attempt >= self.retries {
                        return Err(error);
                    }
                    let delay = self.retry_delay * 2u32.saturating_pow(attempt);
                    attempt += 1;
                    on(PullEvent::Retry {
                        name,
                        file,
                        attempt,
                        error: error.to_string(),
                        delay,
                    });
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if cancel.is_cancelled() {
                            return Err(StoreError::Cancelled(name.to_owned()));
                        }
                        std::thread::sleep(Duration::from_millis(50).min(delay));
                    }
                }
            }
        }
    }

    fn resolve_url(&self, entry: &Entry, f: &FileSpec) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            entry.repo,
            encode(&entry.revision, false),
            encode(&f.path, true)
        )
    }

    fn request(
        &self,
        method: &str,
        url: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let req = if method == "HEAD" {
            self.agent.head(url)
        } else {
            self.agent.get(url)
        };
        // The token goes to the Hub only, never to the CDN it redirects to.
        match &self.token {
            Some(t) if origin(url) == origin(&self.endpoint) => {
                req.header("Authorization", format!("Bearer {t}"))
            }
            _ => req,
        }
    }

    fn head(&self, entry: &Entry, f: &FileSpec) -> Result<Remote, Step> {
        let mut url = self.resolve_url(entry, f);
        let mut commit = None;
        let mut sha = None;
        let mut size = None;
        for _ in 0..5 {
            let resp = self
                .request("HEAD", &url)
                .call()
                .map_err(|e| transient(&url, e.to_string(), None, 0, false))?;
            let h = resp.headers();
            let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
            commit = commit.or_else(|| header("x-repo-commit"));
            let etag = header("x-linked-etag").or_else(|| header("etag"));
            if sha.is_none()
                && let Some(e) = etag.map(|e| {
                    e.trim_start_matches("W/")
                        .trim_matches('"')
                        .to_ascii_lowercase()
                })
                && super::catalog::is_hex(&e, 64)
            {
                sha = Some(e);
            }
            let len = header("x-linked-size")
                .or_else(|| header("content-length"))
                .and_then(|s| s.parse::<u64>().ok());
            let status = resp.status().as_u16();
            match status {
                200 => {
                    return Ok(Remote {
                        url,
                        commit,
                        sha256: sha,
                        size: size.or(len),
                    });
                }
                301 | 302 | 303 | 307 | 308 => {
                    size = size.or(header("x-linked-size").and_then(|s| s.parse().ok()));
                    let Some(loc) = header("location") else {
                        return Err(Step::Fatal(StoreError::Http {
                            url,
                            status,
                            hint: " without a Location header".into(),
                        }));
                    };
                    let next = join_url(&url, &loc);
                    // An LFS file: the CDN URL is the body's address; asking
                    // it again is not needed. A same-Hub redirect (a renamed
                    // repository) is followed.
                    if origin(&next) != origin(&self.endpoint) || !next.contains("/resolve/") {
                        return Ok(Remote {
                            url: next,
                            commit,
                            sha256: sha,
                            size,
                        });
                    }
                    url = next;
                }
                s if s >= 500 || s == 429 => {
                    return Err(transient(&url, format!("HTTP {s}"), None, 0, false));
                }
                s => {
                    return Err(Step::Fatal(http_error(
                        &url,
                        s,
                        self.token.is_some(),
                        &entry.repo,
                    )));
                }
            }
        }
        Err(Step::Fatal(StoreError::Http {
            url,
            status: 310,
            hint: ": too many redirects".into(),
        }))
    }

    /// One GET of the rest of `r` into `t`; `progress` gets bytes in the
    /// partial file.
    fn get(
        &self,
        r: &Remote,
        t: &mut Transfer,
        progress: &mut dyn FnMut(u64),
        cancel: &CancelToken,
    ) -> Result<(), Step> {
        if r.size == Some(t.len) {
            return Ok(());
        }
        let start = t.len;
        let mut url = r.url.clone();
        let mut resp = None;
        for _ in 0..5 {
            let mut req = self.request("GET", &url);
            if t.len > 0 {
                req = req.header("Range", format!("bytes={}-", t.len));
            }
            let got = req
                .call()
                .map_err(|e| transient(&url, e.to_string(), Some(&t.path), t.len, false))?;
            match got.status().as_u16() {
                301 | 302 | 303 | 307 | 308 => {
                    let loc = got
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    url = join_url(&url, &loc);
                }
                _ => {
                    resp = Some(got);
                    break;
                }
            }
        }
        let Some(resp) = resp else {
            return Err(Step::Fatal(StoreError::Http {
                url,
                status: 310,
                hint: ": too many redirects".into(),
            }));
        };
        match resp.status().as_u16() {
            206 => {
                let from = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if from != Some(t.len) {
                    t.restart().map_err(Step::Fatal)?;
                    return Err(transient(
                        &url,
                        "the server resumed at the wrong offset".into(),
                        Some(&t.path),
                        0,
                        false,
                    ));
                }
            }
            200 => {
                if t.len > 0 {
                    tracing::info!(%url, "server ignored the Range request; downloading from the start");
                    t.restart().map_err(Step::Fatal)?;
                }
            }
            416 => {
                t.restart().map_err(Step::Fatal)?;
                return Err(transient(
                    &url,
                    "HTTP 416 for the resume range".into(),
                    Some(&t.path),
                    0,
                    false,
                ));
            }
            s if s >= 500 || s == 429 => {
                return Err(transient(
                    &url,
                    format!("HTTP {s}"),
                    Some(&t.path),
                    t.len,
                    false,
                ));
            }
            s => return Err(Step::Fatal(http_error(&url, s, self.token.is_some(), ""))),
        }
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut last = Instant::now();
        loop {
            if cancel.is_cancelled() {
                t.flush().map_err(Step::Fatal)?;
                return Err(Step::Fatal(StoreError::Cancelled(
                    t.path.display().to_string(),
                )));
            }
            let k = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) => {
                    t.flush().map_err(Step::Fatal)?;
                    return Err(transient(
                        &url,
                        e.to_string(),
                        Some(&t.path),
                        t.len,
                        t.len > start,
                    ));
                }
            };
            if let Some(size) = r.size
                && t.len + k as u64 > size
            {
                return Err(Step::Fatal(StoreError::Transfer {
                    url,
                    reason: format!("the server sent more than the announced {size} bytes"),
                    partial: t.path.clone(),
                    kept: 0,
                }));
            }
            t.write(&buf[..k]).map_err(Step::Fatal)?;
            if last.elapsed() >= Duration::from_millis(100) {
                progress(t.len);
                last = Instant::now();
            }
        }
        t.flush().map_err(Step::Fatal)?;
        progress(t.len);
        match r.size {
            Some(size) if t.len < size => Err(transient(
                &url,
                format!("the connection closed after {} of {size} bytes", t.len),
                Some(&t.path),
                t.len,
                t.len > start,
            )),
            _ => Ok(()),
        }
    }
}

/// Whether a failed pull keeps its `.partial` files for a resume.
fn keeps_progress(e: &StoreError) -> bool {
    matches!(e, StoreError::Transfer { .. } | StoreError::Cancelled(_))
}

/// A step's failure: retry (the partial file is kept) or give up.
enum Step {
    Again { error: StoreError, progressed: bool },
    Fatal(StoreError),
}

fn transient(
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

fn http_error(url: &str, status: u16, has_token: bool, repo: &str) -> StoreError {
    let hint = match status {
        401 | 403 if !has_token => format!(
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

/// What the Hub said about one file.
#[derive(Debug, Clone)]
struct Remote {
    url: String,
    commit: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
}

impl Remote {
    /// The sha256 the file must have and who says so.
    fn expected(&self, f: &FileSpec) -> Option<(String, Checked)> {
        f.sha256
            .clone()
            .map(|s| (s, Checked::Catalogue))
            .or_else(|| self.sha256.clone().map(|s| (s, Checked::Hub)))
    }
}

/// The `.partial` file being written, with a running sha256 of its bytes.
struct Transfer {
    path: PathBuf,
    file: std::io::BufWriter<File>,
    hasher: Sha256,
    len: u64,
}

impl Transfer {
    /// Opens (or creates) the partial file and hashes what it holds.
    fn new(path: &Path) -> Result<Self, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::io(path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let k = file.read(&mut buf).map_err(StoreError::io(path))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            len += k as u64;
        }
        file.seek(SeekFrom::End(0)).map_err(StoreError::io(path))?;
        Ok(Self {
            path: path.to_owned(),
            file: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher,
            len,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .map_err(|e| self.write_error(e))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.file.flush().map_err(|e| self.write_error(e))
    }

    fn restart(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let f = self.file.get_mut();
        f.set_len(0).map_err(StoreError::io(&self.path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(StoreError::io(&self.path))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Flushes to stable storage and returns the sha256.
    fn finish(&mut self) -> Result<String, StoreError> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| self.write_error(e))?;
        Ok(hex(&self.hasher.clone().finalize()))
    }

    fn write_error(&self, e: std::io::Error) -> StoreError {
        if is_no_space(&e) {
            StoreError::DiskFull {
                path: self.path.clone(),
                written: self.len,
            }
        } else {
            StoreError::io(&self.path)(e)
        }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || e.kind() == std::io::ErrorKind::FileTooLarge
}

/// One pull's hold on a model directory: the lock, and what to remove if it
/// fails for good.
struct Job {
    dir: PathBuf,
    created_dir: bool,
    created: Vec<PathBuf>,
    partial: Option<PathBuf>,
    lock: Option<File>,
}

impl Job {
    fn begin(store: &ModelStore, name: &str) -> Result<Self, StoreError> {
        let dir = store.model_dir(name);
        let created_dir = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| {
            if is_no_space(&e) {
                StoreError::DiskFull {
                    path: dir.clone(),
                    written: 0,
                }
            } else {
                StoreError::io(&dir)(e)
            }
        })?;
        let lock = match lock_model(&dir, name) {
            Ok(l) => l,
            Err(e) => {
                if created_dir {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                return Err(e);
            }
        };
        Ok(Self {
            dir,
            created_dir,
            created: Vec::new(),
            partial: None,
            lock: Some(lock),
        })
    }

    /// Where repo file `path` goes, and its `.partial` (now tracked), with
    /// the parent directory created.
    fn begin_file(&mut self, path: &str) -> Result<(PathBuf, PathBuf), StoreError> {
        let dst = self.dir.join(path);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(StoreError::io(parent))?;
        }
        let partial = partial_path(&dst);
        self.partial = Some(partial.clone());
        Ok((dst, partial))
    }

    /// Moves a verified partial file into place.
    fn commit_file(&mut self, partial: &Path, dst: PathBuf) -> Result<(), StoreError> {
        std::fs::rename(partial, &dst).map_err(StoreError::io(&dst))?;
        self.partial = None;
        self.created.push(dst);
        Ok(())
    }

    /// Writes the manifest that marks the install complete.
    fn write_manifest(
        &self,
        entry: &Entry,
        endpoint: String,
        commit: Option<String>,
        files: Vec<InstalledFile>,
    ) -> Result<Manifest, StoreError> {
        let m = Manifest {
            name: entry.name.clone(),
            role: entry.role,
            source: Source::Hub {
                endpoint,
                repo: entry.repo.clone(),
                revision: entry.revision.clone(),
                commit,
            },
            root: None,
            main: entry.main.clone(),
            files,
            installed_at: now(),
        };
        write_manifest(&self.dir, &m)?;
        Ok(m)
    }

    fn discard_partial(&mut self) {
        if let Some(p) = self.partial.take() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// On a final failure, removes what this pull created so the models
    /// directory is as it was (partial files included: a checksum or disk
    /// problem will not be fixed by resuming them).
    fn finish(mut self, keep: bool) {
        if !keep {
            self.discard_partial();
            for p in self.created.drain(..) {
                let _ = std::fs::remove_file(p);
            }
        }
        // An empty partial file (the connection failed before any byte)
        // is not worth keeping.
        if let Some(p) = &self.partial
            && std::fs::metadata(p).is_ok_and(|m| m.len() == 0)
        {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_file(self.dir.join(LOCK));
        drop(self.lock.take());
        if self.created_dir {
            if keep {
                // Only if nothing is in it.
                let _ = std::fs::remove_dir(&self.dir);
            } else {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

const LOCK: &str = ".seer-lock";

/// Takes the model directory's lock, so two pulls (CLI and daemon, say)
/// never write the same `.partial` file.
pub(crate) fn lock_model(dir: &Path, name: &str) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::io(&path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            name: name.to_owned(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(&path)(e)),
    }
}

/// The installed manifest if it matches `entry` (same files, same pinned
/// hashes) and its files are all there with their sizes.
fn installed_match(store: &ModelStore, entry: &Entry) -> Result<Option<Manifest>, StoreError> {
    let Ok(Some(m)) = store.manifest(&entry.name) else {
        return Ok(None);
    };
    let same = matches!(&m.source, Source::Hub { repo, .. } if *repo == entry.repo)
        && m.files.len() == entry.files.len()
        && entry.files.iter().all(|f| {
            m.files.iter().any(|i| {
                i.path == f.path
                    && f.size.is_none_or(|s| s == i.size)
                    && f.sha256.as_ref().is_none_or(|h| *h == i.sha256)
            })
        });
    if same && store.resolve(&entry.name).is_ok() {
        Ok(Some(m))
    } else {
        Ok(None)
    }
}

fn remove_if_exists(p: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(p)(e)),
        _ => Ok(()),
    }
}

fn partial_path(dst: &Path) -> PathBuf {
    let mut s = dst.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Free bytes for an unprivileged writer in `dir`'s file system.
fn free_space(dir: &Path) -> Result<u64, StoreError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| StoreError::io(dir)(e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
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

/// Installs `entry` from a local copy (a file for a one-file model, or a
/// directory holding its files): for machines without the network. The
/// copy must match the catalogue's pinned sha256 where there is one.
pub fn install_from(
    store: &ModelStore,
    entry: &Entry,
    from: &Path,
) -> Result<PullOutcome, StoreError> {
    if let Some(m) = installed_match(store, entry)? {
        return Ok(PullOutcome::AlreadyInstalled(m));
    }
    let is_dir = from.is_dir();
    if !is_dir && entry.files.len() != 1 {
        return Err(StoreError::Invalid(format!(
            "{} has {} files; --from must name a directory holding them",
            entry.name,
            entry.files.len()
        )));
    }
    let mut job = Job::begin(store, &entry.name)?;
    let result = (|| {
        remove_if_exists(&job.dir.join(MANIFEST))?;
        let mut files = Vec::new();
        for f in &entry.files {
            let src = if is_dir {
                from.join(&f.path)
            } else {
                from.to_owned()
            };
            let (dst, partial) = job.begin_file(&f.path)?;
            std::fs::copy(&src, &partial).map_err(|e| {
                if is_no_space(&e) {
                    StoreError::DiskFull {
                        path: partial.clone(),
                        written: std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0),
                    }
                } else {
                    StoreError::io(&src)(e)
                }
            })?;
            let (size, sha) = hash_file(&partial, &mut |_| {}).map_err(StoreError::io(&partial))?;
            let checked = match &f.sha256 {
                Some(want) if *want == sha => Checked::Catalogue,
                Some(want) => {
                    job.discard_partial();
                    return Err(StoreError::ChecksumMismatch {
                        file: src.display().to_string(),
                        expected: want.clone(),
                        source_of_truth: "pinned in the catalogue".into(),
                        actual: sha,
                    });
                }
                None => Checked::OnArrival,
            };
            job.commit_file(&partial, dst)?;
            files.push(InstalledFile {
                path: f.path.clone(),
                size,
                sha256: sha,
                checked,
            });
        }
        job.write_manifest(entry, format!("file://{}", from.display()), None, files)
    })();
    job.finish(result.is_ok());
    result.map(PullOutcome::Installed)
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
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("onnx/model q.bin", true), "onnx/model%20q.bin");
    }
}
