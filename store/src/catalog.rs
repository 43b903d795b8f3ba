//! The model catalogue: known-good models with where to fetch them and how to
//! check them. The built-in list is `store/catalog.toml`, compiled in; a user
//! file (`--catalog`, `SEER_CATALOG` or `$XDG_CONFIG_HOME/seer/catalog.toml`)
//! adds entries or replaces built-in ones of the same name.

use crate::error::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The built-in catalogue's text.
pub const BUILTIN: &str = include_str!("../catalog.toml");

/// The catalogue format this build understands.
pub const FORMAT_VERSION: u32 = 1;

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Speech to text (whisper.cpp ggml).
    Speech,
    /// Voice activity detection (Silero, whisper.cpp ggml).
    Vad,
    /// Text-only language model.
    Language,
    /// Vision encoder + language model.
    VisionLanguage,
    /// Text to speech (a Piper voice: `.onnx` + `.onnx.json`).
    Voice,
}

impl Role {
    /// The name used in the catalogue and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Speech => "speech",
            Role::Vad => "vad",
            Role::Language => "language",
            Role::VisionLanguage => "vision-language",
            Role::Voice => "voice",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of a model, as published in its Hub repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Path inside the repository; also its path inside the model's directory.
    pub path: String,
    /// Size in bytes, when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Lower-case hex sha256, when pinned. Without it the download is checked
    /// against the sha256 the Hub publishes for LFS files (`X-Linked-Etag`).
    #[serde(default)]
    pub sha256: Option<String>,
}

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The name users type (`seer models pull NAME`, `model.name`).
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// One line for `seer models list`.
    #[serde(default)]
    pub description: String,
    /// Hugging Face repository, `owner/name`.
    pub repo: String,
    /// A pinned commit (40 hex digits) or, where none is pinned, a branch.
    #[serde(default = "default_revision")]
    pub revision: String,
    /// SPDX-style licence of the weights.
    #[serde(default)]
    pub licence: String,
    /// Profiles (`glasses`, `board`, `laptop`) that recommend this model.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The file a consumer opens (a GGUF); without it, the model directory.
    #[serde(default)]
    pub main: Option<String>,
    /// The files to fetch.
    #[serde(rename = "file")]
    pub files: Vec<FileSpec>,
    /// Fields of this entry that were not checked against a source (e.g.
    /// `revision`, `size`, `sha256`); shown by `seer models list`.
    #[serde(default)]
    pub unverified: Vec<String>,
}

fn default_revision() -> String {
    "main".into()
}

impl Entry {
    /// Sum of the known file sizes, or `None` if any is unknown.
    pub fn size(&self) -> Option<u64> {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Whether `revision` pins a commit rather than following a branch.
    pub fn pinned(&self) -> bool {
        is_hex(&self.revision, 40)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    version: u32,
    #[serde(default)]
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, String>,
    #[serde(default, rename = "model")]
    models: Vec<Entry>,
}

/// The merged catalogue.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<Entry>,
    profiles: BTreeMap<String, String>,
    default_profile: String,
}

impl Catalog {
    /// The built-in catalogue alone.
    pub fn builtin() -> Result<Self, StoreError> {
        let f = parse(BUILTIN, Path::new("(built-in catalog.toml)"))?;
        Ok(Self {
            entries: f.models,
            profiles: f.profiles,
            default_profile: f.default_profile.unwrap_or_else(|| "glasses".into()),
        })
    }

    /// The built-in catalogue plus `extra` (entries with the same name
    /// replace built-in ones; profiles are merged).
    pub fn load(extra: Option<&Path>) -> Result<Self, StoreError> {
        let mut cat = Self::builtin()?;
        if let Some(path) = extra {
            let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
                path: path.to_owned(),
                source,
            })?;
            let f = parse(&text, path)?;
            for e in f.models {
                match cat.entries.iter_mut().find(|x| x.name == e.name) {
                    Some(slot) => *slot = e,
                    None => cat.entries.push(e),
                }
            }
            cat.profiles.extend(f.profiles);
            if let Some(p) = f.default_profile {
                cat.default_profile = p;
            }
            cat.check_profiles(path)?;
        }
        Ok(cat)
    }

    /// Where a user catalogue is looked for when none is named:
    /// `$XDG_CONFIG_HOME/seer/catalog.toml` (or `~/.config/...`), if it exists.
    pub fn user_file() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        let p = base.join("seer/catalog.toml");
        p.is_file().then_some(p)
    }

    /// Every entry, in catalogue order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Profile names with their descriptions.
    pub fn profiles(&self) -> &BTreeMap<String, String> {
        &self.profiles
    }

    /// The profile the run command pulls.
    pub fn default_profile(&self) -> &str {
        &self.default_profile
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// A model name or a profile name, as `seer models pull` takes it.
    pub fn select(&self, what: &str) -> Result<Vec<&Entry>, StoreError> {
        if let Some(e) = self.get(what) {
            return Ok(vec![e]);
        }
        if self.profiles.contains_key(what) {
            return Ok(self
                .entries
                .iter()
                .filter(|e| e.profiles.iter().any(|p| p == what))
                .collect());
        }
        Err(self.unknown(what))
    }

    /// The error for a name that is neither a model nor a profile, listing
    /// what is known.
    pub fn unknown(&self, what: &str) -> StoreError {
        StoreError::UnknownModel {
            name: what.to_owned(),
            known: self
                .entries
                .iter()
                .map(|e| e.name.clone())
                .chain(self.profiles.keys().cloned())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn check_profiles(&self, origin: &Path) -> Result<(), StoreError> {
        let bad = |reason: String| StoreError::Catalog {
            path: origin.to_owned(),
            reason,
        };
        if !self.profiles.contains_key(&self.default_profile) {
            return Err(bad(format!(
                "default_profile = {:?} is not a profile",
                self.default_profile
            )));
        }
        for e in &self.entries {
            if let Some(p) = e.profiles.iter().find(|p| !self.profiles.contains_key(*p)) {
                return Err(bad(format!(
                    "model {:?}: profile {p:?} is not declared in [profiles]",
                    e.name
                )));
            }
        }
        Ok(())
    }
}

fn parse(text: &str, origin: &Path) -> Result<CatalogFile, StoreError> {
    let bad = |reason: String| StoreError::Catalog {
        path: origin.to_owned(),
        reason,
    };
    let f: CatalogFile = toml::from_str(text).map_err(|e| bad(e.to_string().trim().to_owned()))?;
    if f.version != FORMAT_VERSION {
        return Err(bad(format!(
            "version = {} is not supported (this build reads version {FORMAT_VERSION})",
            f.version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &f.models {
        let ctx = |what: String| bad(format!("model {:?}: {what}", e.name));
        if !valid_name(&e.name) {
            return Err(ctx(
                "names are lower-case letters, digits, '.', '-' and '_', starting with a letter or digit".into(),
            ));
        }
        if !seen.insert(e.name.as_str()) {
            return Err(ctx("listed twice".into()));
        }
        if e.repo.split('/').count() != 2 || e.repo.split('/').any(str::is_empty) {
            return Err(ctx(format!("repo = {:?} is not `owner/name`", e.repo)));
        }
        if e.revision.is_empty() || e.revision.contains("..") {
            return Err(ctx(format!("revision = {:?} is not usable", e.revision)));
        }
        if e.files.is_empty() {
            return Err(ctx("has no [[model.file]]".into()));
        }
        for file in &e.files {
            if !safe_relative(&file.path) {
                return Err(ctx(format!(
                    "file path {:?} must be relative, without `..`",
                    file.path
                )));
            }
            if let Some(h) = &file.sha256
                && !is_hex(h, 64)
            {
                return Err(ctx(format!(
                    "file {:?}: sha256 {h:?} is not 64 lower-case hex digits",
                    file.path
                )));
            }
        }
        if let Some(m) = &e.main
            && !e.files.iter().any(|f| &f.path == m)
        {
            return Err(ctx(format!("main = {m:?} is not one of its files")));
        }
        const FIELDS: &[&str] = &["repo", "revision", "size", "sha256", "licence", "files"];
        if let Some(u) = e.unverified.iter().find(|u| !FIELDS.contains(&u.as_str())) {
            return Err(ctx(format!(
                "unverified = {u:?} is not one of {}",
                FIELDS.join(", ")
            )));
        }
    }
    Ok(f)
}

/// Names that are safe as a directory name and easy to type.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && name.len() <= 100
}

/// A relative path that cannot leave the model's directory.
pub(crate) fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

pub(crate) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_is_valid() {
        let c = Catalog::load(None).expect("built-in catalogue");
        c.check_profiles(Path::new("builtin")).expect("profiles");
        for role in [
            Role::Speech,
            Role::Vad,
            Role::Language,
            Role::VisionLanguage,
            Role::Voice,
        ] {
            let pulled = c.select(c.default_profile()).expect("default profile");
            assert!(
                pulled.iter().any(|e| e.role == role),
                "default profile lacks a {role} model"
            );
        }
        for p in ["glasses", "board", "laptop"] {
            assert!(!c.select(p).expect(p).is_empty(), "{p}");
        }
    }

    #[test]
    fn bad_entries_are_named() {
        let e = parse(
            "version = 1\n[[model]]\nname = \"x\"\nrole = \"language\"\nrepo = \"a/b\"\n[[model.file]]\npath = \"../x\"\n",
            Path::new("c.toml"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("c.toml") && e.contains("\"x\"") && e.contains("../x"),
            "{e}"
        );
        let e = parse("version = 2\n", Path::new("c.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("version = 2"), "{e}");
        let e = parse(
            "version = 1\n[[model]]\nname = \"x\"\nrole = \"language\"\nrepo = \"a/b\"\nsize = 3\n",
            Path::new("c.toml"),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("size"), "{e}");
    }
}
