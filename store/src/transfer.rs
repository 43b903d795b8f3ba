//! Moving a file's bytes onto disk: the `.partial` file with its running
//! sha256 ([`Transfer`]), the resumable `GET` into it ([`Hub::download`]),
//! the retry loop around both ([`Hub::with_retries`]), and what a pull
//! reports while it runs ([`PullEvent`]).
//!
//! A body is fetched into `FILE.partial`, with `Range: bytes=N-` when N
//! bytes are already there; the bytes already there are hashed when the file
//! is opened, so the sha256 is known the moment the last byte arrives and
//! nothing is read twice. Blocking I/O on the caller's thread: the daemon
//! runs a pull on a thread of its own.

use crate::error::StoreError;
use crate::http::{Hub, Method, Remote, Reply, Step, header, retryable, transient};
use seer_cancel::CancelToken;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often [`PullEvent::Progress`] comes at most, per file.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

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

/// The `.partial` file being written, with a running sha256 of its bytes.
pub(crate) struct Transfer {
    path: PathBuf,
    file: std::io::BufWriter<File>,
    hasher: Sha256,
    len: u64,
}

impl Transfer {
    /// Opens (or creates) the partial file to resume it, hashing what it
    /// already holds.
    pub(crate) fn resume(path: &Path) -> Result<Self, StoreError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(StoreError::writing(path, 0))?;
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

    /// Creates the partial file empty (a copy that is not resumed).
    pub(crate) fn create(path: &Path) -> Result<Self, StoreError> {
        let mut t = Self::resume(path)?;
        t.restart()?;
        Ok(t)
    }

    /// Bytes in it.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `bytes`.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .map_err(StoreError::writing(&self.path, self.len))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Hands buffered bytes to the OS, so what is kept for a resume is what
    /// [`len`](Self::len) says.
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        self.file
            .flush()
            .map_err(StoreError::writing(&self.path, self.len))
    }

    /// Empties the file, for a server that cannot resume where it stopped.
    pub(crate) fn restart(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let f = self.file.get_mut();
        f.set_len(0).map_err(StoreError::io(&self.path))?;
        f.seek(SeekFrom::Start(0))
            .map_err(StoreError::io(&self.path))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    /// Copies all of `src` in (a local install; reads are `src`'s errors,
    /// writes this file's).
    pub(crate) fn copy_from(&mut self, src: &Path) -> Result<(), StoreError> {
        let mut from = File::open(src).map_err(StoreError::io(src))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = from.read(&mut buf).map_err(StoreError::io(src))?;
            if k == 0 {
                return Ok(());
            }
            self.write(&buf[..k])?;
        }
    }

    /// Flushes to stable storage and returns the sha256.
    pub(crate) fn finish(&mut self) -> Result<String, StoreError> {
        self.flush()?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(StoreError::writing(&self.path, self.len))?;
        Ok(hex(&self.hasher.clone().finalize()))
    }
}

impl Hub {
    /// Runs `step` again after errors that keep what was downloaded,
    /// with a growing delay; a step that made progress restarts the count.
    pub(crate) fn with_retries<T>(
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

    /// One GET of the rest of `r` into `t`; `progress` gets bytes in the
    /// partial file.
    pub(crate) fn download(
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
        let (url, resp) = match self
            .call(Method::Get, &r.url, t.len, &mut |_, _| true)
            .map_err(|e| e.into_step(Some(&t.path), t.len))?
        {
            Reply::Response { url, response } => (url, response),
            // `call` stops at a redirect only when told to.
            Reply::Redirected { to } => {
                return Err(Step::Fatal(StoreError::Transfer {
                    url: to,
                    reason: "an unexpected redirect".into(),
                    partial: t.path.clone(),
                    kept: t.len,
                }));
            }
        };
        let broken = |t: &Transfer, reason: String, progressed: bool| {
            transient(&url, reason, Some(&t.path), t.len, progressed)
        };
        match resp.status().as_u16() {
            206 => {
                let from = header(&resp, "content-range")
                    .as_deref()
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if from != Some(t.len) {
                    t.restart().map_err(Step::Fatal)?;
                    return Err(broken(
                        t,
                        "the server resumed at the wrong offset".into(),
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
                return Err(broken(t, "HTTP 416 for the resume range".into(), false));
            }
            s if retryable(s) => return Err(broken(t, format!("HTTP {s}"), false)),
            s => return Err(Step::Fatal(self.status_error(&url, s, ""))),
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
                    return Err(broken(t, e.to_string(), t.len > start));
                }
            };
            if let Some(size) = r.size
                && t.len + k as u64 > size
            {
                return Err(Step::Fatal(StoreError::Transfer {
                    url: url.clone(),
                    reason: format!("the server sent more than the announced {size} bytes"),
                    partial: t.path.clone(),
                    kept: 0,
                }));
            }
            t.write(&buf[..k]).map_err(Step::Fatal)?;
            if last.elapsed() >= PROGRESS_EVERY {
                progress(t.len);
                last = Instant::now();
            }
        }
        t.flush().map_err(Step::Fatal)?;
        progress(t.len);
        match r.size {
            Some(size) if t.len < size => Err(broken(
                t,
                format!("the connection closed after {} of {size} bytes", t.len),
                t.len > start,
            )),
            _ => Ok(()),
        }
    }
}

/// (size, sha256) of a file, reporting bytes hashed so far.
pub(crate) fn hash_file(
    path: &Path,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
        progress(n);
    }
    Ok((n, hex(&h.finalize())))
}

/// Lower-case hex, as sha256 sums are written everywhere here.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn a_resumed_partial_file_hashes_as_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.partial");
        let mut t = Transfer::resume(&p).expect("create");
        assert_eq!(t.len(), 0);
        t.write(b"a").expect("write");
        t.flush().expect("flush");
        drop(t);
        // Reopened, as the next pull does: the byte on disk is hashed first.
        let mut t = Transfer::resume(&p).expect("resume");
        assert_eq!(t.len(), 1);
        t.write(b"bc").expect("write");
        assert_eq!(t.finish().expect("finish"), ABC_SHA256);
        assert_eq!(std::fs::read(&p).expect("read"), b"abc");
        assert_eq!(
            hash_file(&p, &mut |_| {}).expect("hash"),
            (3, ABC_SHA256.into())
        );
    }

    #[test]
    fn restart_and_create_start_from_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.partial");
        std::fs::write(&p, b"stale bytes").expect("write");
        let mut t = Transfer::resume(&p).expect("resume");
        assert_eq!(t.len(), 11);
        t.restart().expect("restart");
        assert_eq!(t.finish().expect("finish"), EMPTY_SHA256);
        std::fs::write(&p, b"stale").expect("write");
        let src = dir.path().join("src");
        std::fs::write(&src, b"abc").expect("write");
        let mut t = Transfer::create(&p).expect("create");
        t.copy_from(&src).expect("copy");
        assert_eq!(t.finish().expect("finish"), ABC_SHA256);
        assert_eq!(std::fs::read(&p).expect("read"), b"abc");
    }

    #[test]
    fn a_missing_copy_source_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Transfer::create(&dir.path().join("f.partial")).expect("create");
        let src = dir.path().join("nowhere.gguf");
        let e = t
            .copy_from(&src)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("nowhere.gguf"), "{e}");
    }
}
