//! Getting a model into the models directory: [`Hub::pull`] from the Hub,
//! [`install_from`] from a local copy. Both work the same way: take the
//! model directory's lock, write each file to `FILE.partial`, check its
//! sha256, rename it into place ("commit" it), and write the manifest last.
//! A pull that fails for good removes what it created; one that broke off
//! (or was cancelled) keeps its `.partial` files for the next pull to resume.

use crate::catalog::{Entry, FileSpec};
use crate::directory::{
    Checked, InstalledFile, LOCK, MANIFEST, Manifest, ModelStore, Source, lock_model, now,
    write_manifest,
};
use crate::error::StoreError;
use crate::http::{Hub, Remote};
use crate::transfer::{PullEvent, Transfer, hash_file};
use seer_cancel::CancelToken;
use std::fs::File;
use std::path::{Path, PathBuf};

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

/// What is on disk before a pull fetches anything.
struct Survey {
    /// Per file: installed already and still matching.
    done: Vec<Option<InstalledFile>>,
    /// Bytes present (finished files and `.partial` files).
    present: u64,
    /// Bytes still to fetch, where sizes are known.
    needed: u64,
}

impl Hub {
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
            remotes.push(self.with_retries(name, &f.path, on, cancel, |_| self.lookup(entry, f))?);
        }
        let survey = survey(&job.dir, entry, &remotes);
        let total: Option<u64> = remotes.iter().map(|r| r.size).sum();
        on(PullEvent::Resolved {
            name,
            files: entry.files.len(),
            total,
            present: survey.present,
        });
        let available = free_space(&job.dir)?;
        if survey.needed > available {
            return Err(StoreError::NoSpace {
                dir: job.dir.clone(),
                what: format!("model {name}"),
                needed: survey.needed,
                available,
            });
        }
        let mut files = Vec::with_capacity(entry.files.len());
        let mut completed = survey.present;
        for ((f, r), done) in entry.files.iter().zip(&remotes).zip(survey.done) {
            let file = match done {
                Some(done) => done,
                None => self.fetch_file(job, entry, f, r, &mut completed, total, on, cancel)?,
            };
            files.push(file);
        }
        let commit = remotes.iter().find_map(|r| r.commit.clone());
        job.write_manifest(entry, self.endpoint().to_owned(), commit, files)
    }

    /// Fetches one file (resuming its `.partial`), checks and commits it;
    /// `completed` (bytes of the model on disk) moves on with it.
    #[allow(clippy::too_many_arguments)]
    fn fetch_file(
        &self,
        job: &mut Job,
        entry: &Entry,
        f: &FileSpec,
        r: &Remote,
        completed: &mut u64,
        total: Option<u64>,
        on: &mut dyn FnMut(PullEvent<'_>),
        cancel: &CancelToken,
    ) -> Result<InstalledFile, StoreError> {
        let name = entry.name.as_str();
        let (dst, partial) = job.begin_file(&f.path)?;
        let mut t = Transfer::resume(&partial)?;
        // A partial file longer than the file cannot be resumed.
        if r.size.is_some_and(|s| t.len() > s) {
            t.restart()?;
        }
        on(PullEvent::File {
            name,
            file: &f.path,
            size: r.size,
            offset: t.len(),
        });
        // The survey counted what is in the partial file as present.
        let base = *completed - t.len();
        self.with_retries(name, &f.path, on, cancel, |on| {
            self.download(
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
        let checked = match expected(r, f) {
            Some((want, checked)) if want == sha => checked,
            Some((want, checked)) => {
                job.discard_partial();
                return Err(StoreError::ChecksumMismatch {
                    file: f.path.clone(),
                    expected: want,
                    source_of_truth: match checked {
                        Checked::Catalogue => "pinned in the catalogue".into(),
                        _ => format!("published by {}", self.endpoint()),
                    },
                    actual: sha,
                });
            }
            None => Checked::OnArrival,
        };
        job.commit_file(&partial, dst)?;
        *completed = base + t.len();
        on(PullEvent::Progress {
            name,
            file: &f.path,
            completed: *completed,
            total,
        });
        Ok(InstalledFile {
            path: f.path.clone(),
            size: t.len(),
            sha256: sha,
            checked,
        })
    }
}

/// What of `entry` is in `dir` already: finished files that still verify,
/// and partial files to resume.
fn survey(dir: &Path, entry: &Entry, remotes: &[Remote]) -> Survey {
    let mut s = Survey {
        done: vec![None; entry.files.len()],
        present: 0,
        needed: 0,
    };
    for (i, (f, r)) in entry.files.iter().zip(remotes).enumerate() {
        let dst = dir.join(&f.path);
        if let (Some(want), Ok(md)) = (expected(r, f), std::fs::metadata(&dst))
            && Some(md.len()) == r.size
            && let Ok((size, sha)) = hash_file(&dst, &mut |_| {})
            && sha == want.0
        {
            s.present += size;
            s.done[i] = Some(InstalledFile {
                path: f.path.clone(),
                size,
                sha256: sha,
                checked: want.1,
            });
            continue;
        }
        let have = partial_len(&partial_path(&dst), r.size);
        s.present += have;
        s.needed += r.size.map(|size| size - have).unwrap_or(0);
    }
    s
}

/// Bytes in a partial file that a resume can use: none when it is longer
/// than the file it is part of.
fn partial_len(partial: &Path, size: Option<u64>) -> u64 {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    if size.is_some_and(|s| have > s) {
        0
    } else {
        have
    }
}

/// The sha256 a file must have and who says so: the catalogue's pin wins
/// over what the Hub publishes.
fn expected(r: &Remote, f: &FileSpec) -> Option<(String, Checked)> {
    f.sha256
        .clone()
        .map(|s| (s, Checked::Catalogue))
        .or_else(|| r.sha256.clone().map(|s| (s, Checked::Hub)))
}

/// Whether a failed pull keeps its `.partial` files for a resume.
fn keeps_progress(e: &StoreError) -> bool {
    matches!(e, StoreError::Transfer { .. } | StoreError::Cancelled(_))
}

/// One install's hold on a model directory: the lock, and what to remove if
/// it fails for good.
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
        std::fs::create_dir_all(&dir).map_err(StoreError::writing(&dir, 0))?;
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
            std::fs::create_dir_all(parent).map_err(StoreError::writing(parent, 0))?;
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

    /// On a final failure, removes what this install created so the models
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
            let mut t = Transfer::create(&partial)?;
            t.copy_from(&src)?;
            let sha = t.finish()?;
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
                size: t.len(),
                sha256: sha,
                checked,
            });
        }
        job.write_manifest(entry, format!("file://{}", from.display()), None, files)
    })();
    job.finish(result.is_ok());
    result.map(PullOutcome::Installed)
}
