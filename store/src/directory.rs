//! The models directory: one directory per installed model under
//! `$XDG_CACHE_HOME/seer/models` ([`ModelStore::default_dir`]), each with a
//! `seer-model.json` [`Manifest`] written last, so a model is either fully
//! installed or not at all, and a lock file that keeps two pulls (the CLI's
//! and the daemon's, say) out of each other's way.

use crate::catalog::{Role, valid_name};
use crate::error::StoreError;
use crate::transfer::hash_file;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// The manifest's file name inside a model directory.
pub const MANIFEST: &str = "seer-model.json";

/// The lock file's name inside a model directory.
pub(crate) const LOCK: &str = ".seer-lock";

/// Where an installed model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Downloaded from a Hub.
    Hub {
        /// The endpoint (`HF_ENDPOINT`).
        endpoint: String,
        /// The repository.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The commit the Hub resolved it to (`X-Repo-Commit`), if it said.
        commit: Option<String>,
    },
    /// Registered with `seer models add`; the files stay where they are.
    Local {
        /// The file or directory that was added.
        path: PathBuf,
    },
}

/// How an installed file's sha256 was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Checked {
    /// Equal to the catalogue's pinned sha256.
    Catalogue,
    /// Equal to the sha256 the Hub published for the LFS object.
    Hub,
    /// Neither published one: hashed on arrival, checked from then on.
    OnArrival,
}

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    /// Path relative to the model's root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, lower-case hex.
    pub sha256: String,
    /// Where the sha256 was checked against.
    pub checked: Checked,
}

/// `seer-model.json`: what is installed, so `verify` can re-check it and the
/// daemon can find it without the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The model's name.
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// Where it came from.
    pub source: Source,
    /// The directory the files are relative to; `None` = the model directory.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The file a consumer opens; `None` = the root directory.
    #[serde(default)]
    pub main: Option<String>,
    /// The files.
    pub files: Vec<InstalledFile>,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
}

impl Manifest {
    /// Total size of the files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The models directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    dir: PathBuf,
}

impl ModelStore {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/seer/models`, else `~/.cache/seer/models`, else
    /// `/var/cache/seer/models` (a service without a home directory).
    pub fn default_dir() -> PathBuf {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .map(|c| c.join("seer/models"))
            .unwrap_or_else(|| PathBuf::from("/var/cache/seer/models"))
    }

    /// The models directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of model `name` (installed or not).
    pub fn model_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The manifest of `name`, if it is installed.
    pub fn manifest(&self, name: &str) -> Result<Option<Manifest>, StoreError> {
        let path = self.model_dir(name).join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                name: name.to_owned(),
                path,
                reason: format!("unreadable manifest ({e})"),
            })
    }

    /// Every installed model, by name.
    pub fn installed(&self) -> Result<Vec<Manifest>, StoreError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&self.dir)(e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(StoreError::io(&self.dir))?;
            let Some(name) = ent.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some(m) = self.manifest(&name)? {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The root the manifest's files are relative to.
    pub fn root(&self, m: &Manifest) -> PathBuf {
        m.root.clone().unwrap_or_else(|| self.model_dir(&m.name))
    }

    /// The path a consumer opens: the main file, or the model's root.
    pub fn path_of(&self, m: &Manifest) -> PathBuf {
        let root = self.root(m);
        match &m.main {
            Some(f) => root.join(f),
            None => root,
        }
    }

    /// The path of installed model `name`, or an error naming the pull
    /// command. Only sizes are checked here; `verify` re-hashes.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, StoreError> {
        let m = self
            .manifest(name)?
            .ok_or_else(|| StoreError::NotInstalled {
                name: name.to_owned(),
                dir: self.dir.clone(),
            })?;
        let root = self.root(&m);
        for f in &m.files {
            let p = root.join(&f.path);
            match std::fs::metadata(&p) {
                Ok(md) if md.len() == f.size => {}
                Ok(md) => {
                    return Err(StoreError::Corrupt {
                        name: m.name.clone(),
                        path: p,
                        reason: format!("{} bytes, {} were installed", md.len(), f.size),
                    });
                }
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        name: m.name.clone(),
                        path: p,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(self.path_of(&m))
    }

    /// Bytes used on disk by `name`'s directory (files of a local model are
    /// not counted: they are not in the store).
    pub fn disk_usage(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
                    _ => 0,
                })
                .sum()
        }
        walk(&self.model_dir(name))
    }

    /// Deletes model `name` (for a local model, only its registration).
    pub fn remove(&self, name: &str) -> Result<bool, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!("{name:?} is not a model name")));
        }
        let dir = self.model_dir(name);
        if !dir.exists() {
            return Ok(false);
        }
        let lock = lock_model(&dir, name)?;
        std::fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
        drop(lock);
        Ok(true)
    }

    /// Re-hashes every file of `name` against its manifest; `progress` gets
    /// (bytes hashed, total).
    pub fn verify(
        &self,
        name: &str,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Manifest, StoreError> {
        let m = self
            .manifest(name)?
            .ok_or_else(|| StoreError::NotInstalled {
                name: name.to_owned(),
                dir: self.dir.clone(),
            })?;
        let root = self.root(&m);
        let total = m.size();
        let mut done = 0;
        for f in &m.files {
            let p = root.join(&f.path);
            let (size, sha) = hash_file(&p, &mut |n| progress(done + n, total)).map_err(|e| {
                StoreError::Corrupt {
                    name: m.name.clone(),
                    path: p.clone(),
                    reason: e.to_string(),
                }
            })?;
            if size != f.size || sha != f.sha256 {
                return Err(StoreError::Corrupt {
                    name: m.name.clone(),
                    path: p,
                    reason: format!(
                        "sha256 {sha} ({size} bytes), installed as {} ({} bytes)",
                        f.sha256, f.size
                    ),
                });
            }
            done += size;
        }
        progress(total, total);
        Ok(m)
    }

    /// Registers a local GGUF file or model directory under `name` without
    /// copying it; its files are hashed now so `verify` can check them later.
    pub fn add(&self, path: &Path, name: &str, role: Role) -> Result<Manifest, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "{name:?} is not a valid model name (lower-case letters, digits, '.', '-', '_')"
            )));
        }
        let path = std::fs::canonicalize(path).map_err(StoreError::io(path))?;
        let dir = self.model_dir(name);
        if dir.join(MANIFEST).exists() {
            return Err(StoreError::Invalid(format!(
                "a model called {name:?} is already installed; `seer models rm {name}` first"
            )));
        }
        let md = std::fs::metadata(&path).map_err(StoreError::io(&path))?;
        let (root, rels, main) = if md.is_dir() {
            let mut rels = Vec::new();
            collect_files(&path, "", &mut rels).map_err(StoreError::io(&path))?;
            if rels.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "{} has no files",
                    path.display()
                )));
            }
            (path.clone(), rels, None)
        } else {
            let parent = path.parent().map(Path::to_owned).unwrap_or_default();
            let file = path
                .file_name()
                .and_then(|f| f.to_str())
                .ok_or_else(|| {
                    StoreError::Invalid(format!("{} is not a UTF-8 file name", path.display()))
                })?
                .to_owned();
            (parent, vec![file.clone()], Some(file))
        };
        let mut files = Vec::new();
        for rel in rels {
            let p = root.join(&rel);
            let (size, sha256) = hash_file(&p, &mut |_| {}).map_err(StoreError::io(&p))?;
            files.push(InstalledFile {
                path: rel,
                size,
                sha256,
                checked: Checked::OnArrival,
            });
        }
        let m = Manifest {
            name: name.to_owned(),
            role,
            source: Source::Local { path: path.clone() },
            root: Some(root),
            main,
            files,
            installed_at: now(),
        };
        std::fs::create_dir_all(&dir).map_err(StoreError::writing(&dir, 0))?;
        write_manifest(&dir, &m)?;
        Ok(m)
    }
}

fn collect_files(root: &Path, prefix: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut ents: Vec<_> = std::fs::read_dir(root.join(prefix))?.collect::<Result<_, _>>()?;
    ents.sort_by_key(|e| e.file_name());
    for e in ents {
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let t = e.file_type()?;
        if t.is_dir() {
            collect_files(root, &rel, out)?;
        } else if t.is_file() || t.is_symlink() {
            out.push(rel);
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch, for [`Manifest::installed_at`].
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes the manifest through a temporary file and a rename: it is the
/// mark of a complete install, so it must never be half-written.
pub(crate) fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{MANIFEST}.tmp"));
    let text = serde_json::to_string_pretty(m).map_err(|e| StoreError::Invalid(e.to_string()))?;
    std::fs::write(&tmp, text + "\n").map_err(StoreError::writing(&tmp, 0))?;
    let dst = dir.join(MANIFEST);
    std::fs::rename(&tmp, &dst).map_err(StoreError::io(&dst))
}

/// Takes the model directory's lock, so two pulls (CLI and daemon, say)
/// never write the same `.partial` file.
pub(crate) fn lock_model(dir: &Path, name: &str) -> Result<File, StoreError> {
    let path = dir.join(LOCK);
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::writing(&path, 0))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            name: name.to_owned(),
            lock: path,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io(&path)(e)),
    }
}
