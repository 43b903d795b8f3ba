//! `seer-store`: where Seer's models live on disk, and how they get there.
//!
//! - [`Catalog`] is the list of known-good models ([`Entry`], each with its
//!   [`FileSpec`]s and [`Role`]) and the profiles that group them: the
//!   built-in `store/catalog.toml` plus an optional user file.
//! - [`ModelStore`] is the models directory (`$XDG_CACHE_HOME/seer/models`):
//!   one directory per model with a [`Manifest`] written last, so a model is
//!   either fully installed or not at all; it resolves names to paths,
//!   verifies, registers local files ([`ModelStore::add`]) and removes.
//! - [`Hub`] downloads catalogue entries from the Hugging Face Hub with
//!   [`Hub::pull`]: `.partial` files resumed with HTTP Range, sha256 checked
//!   before an atomic rename, free space checked before and during, progress
//!   reported as [`PullEvent`]s, stopped by a [`seer_cancel::CancelToken`].
//!   [`install_from`] does the same from a local copy.
//!
//! Inside, `http` makes the requests (one redirect loop, the token kept off
//! the CDN), `transfer` writes and hashes the bytes, `install` turns
//! verified files into an installed model, and `error` holds [`StoreError`]
//! and the one mapping of a full disk to [`StoreError::DiskFull`].
//!
//! This is a crate of its own so that `seer-models`, which runs the models,
//! never links HTTP or TLS; the daemon and the CLI use both.

pub mod catalog;
mod directory;
mod error;
mod http;
mod install;
mod transfer;

pub use catalog::{Catalog, Entry, FileSpec, Role};
pub use directory::{Checked, InstalledFile, MANIFEST, Manifest, ModelStore, Source};
pub use error::{StoreError, human_bytes};
pub use http::{DEFAULT_ENDPOINT, Hub};
pub use install::{PullOutcome, install_from};
pub use transfer::PullEvent;
