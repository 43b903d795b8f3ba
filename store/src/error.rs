//! [`StoreError`], the one error type of `seer-store`, and the one place
//! where a failed write becomes [`StoreError::DiskFull`].

use std::path::{Path, PathBuf};

/// What can go wrong with the catalogue, the store or a download. Every
/// message names the model, file or URL involved and, where there is one,
/// the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The catalogue file is malformed.
    #[error("catalogue {path}: {reason}")]
    Catalog {
        /// The catalogue file.
        path: PathBuf,
        /// What is wrong, naming the model and key.
        reason: String,
    },
    /// Neither a catalogue model nor a profile.
    #[error("no model or profile called {name:?} in the catalogue (known: {known})")]
    UnknownModel {
        /// What was asked for.
        name: String,
        /// Every model and profile name.
        known: String,
    },
    /// A catalogue model that is not installed.
    #[error("model {name:?} is not installed in {dir}; run `seer models pull {name}`")]
    NotInstalled {
        /// The model.
        name: String,
        /// The models directory.
        dir: PathBuf,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}{hint}")]
    Http {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// What to do about it.
        hint: String,
    },
    /// The connection failed or broke off; what arrived is kept in the
    /// `.partial` file and the next pull resumes from there.
    #[error("downloading {url}: {reason}{}", if *.kept > 0 { format!(" ({kept} bytes kept in {}; pull again to resume)", partial.display()) } else { String::new() })]
    Transfer {
        /// The URL.
        url: String,
        /// What happened.
        reason: String,
        /// The partial file.
        partial: PathBuf,
        /// Bytes in it.
        kept: u64,
    },
    /// The downloaded bytes are not the published ones. The partial file has
    /// been deleted.
    #[error(
        "{file}: checksum mismatch: expected sha256 {expected} ({source_of_truth}), got {actual}; the download was deleted"
    )]
    ChecksumMismatch {
        /// The file (repo path).
        file: String,
        /// The sha256 it should have.
        expected: String,
        /// Where `expected` came from.
        source_of_truth: String,
        /// The sha256 it had.
        actual: String,
    },
    /// The catalogue and the server disagree on a file's size.
    #[error(
        "{file}: the catalogue says {expected} bytes but {url} has {actual}; the catalogue entry is out of date"
    )]
    SizeMismatch {
        /// The file.
        file: String,
        /// The URL.
        url: String,
        /// Catalogue size.
        expected: u64,
        /// Server size.
        actual: u64,
    },
    /// Not enough free space. Nothing from this download is left behind.
    #[error(
        "not enough free space in {dir}: {what} needs {} more but {} is free; free some space or set a different models directory, then pull again",
        human_bytes(*needed), human_bytes(*available)
    )]
    NoSpace {
        /// The directory.
        dir: PathBuf,
        /// What was being written.
        what: String,
        /// Bytes still needed.
        needed: u64,
        /// Bytes free.
        available: u64,
    },
    /// The disk filled up while writing. The partial file has been deleted.
    #[error(
        "disk full while writing {path} ({} written); the partial download was deleted; free some space, then pull again",
        human_bytes(*written)
    )]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// Bytes in it when the write failed.
        written: u64,
    },
    /// A file on disk is not what was installed.
    #[error("{path}: {reason}; run `seer models pull {name}` to repair it")]
    Corrupt {
        /// The model.
        name: String,
        /// The file.
        path: PathBuf,
        /// Missing, wrong size, wrong sha256.
        reason: String,
    },
    /// Another process is pulling the same model.
    #[error("{name}: another pull of this model is running (lock {lock})")]
    Locked {
        /// The model.
        name: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The pull was cancelled; the partial file is kept for a resume.
    #[error("pull of {0} cancelled")]
    Cancelled(String),
    /// Something the caller asked for that cannot be done.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// Maps a failed read, or any file operation that writes nothing, of
    /// `path` to [`StoreError::Io`].
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Maps a failed write to `path` (which held `written` bytes) to
    /// [`StoreError::DiskFull`] when the file system is out of space or
    /// quota, else to [`StoreError::Io`]. Every write in this crate (partial
    /// files, copies, directories, manifests) goes through here, so a full
    /// disk reads the same whichever write hit it.
    pub(crate) fn writing(
        path: &Path,
        written: u64,
    ) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| {
            if is_disk_full(&source) {
                StoreError::DiskFull {
                    path: path.to_owned(),
                    written,
                }
            } else {
                StoreError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        }
    }
}

/// ENOSPC, EDQUOT and EFBIG: the writes that more space (or a smaller
/// model) would have let succeed.
fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    )
}

/// `1.5 MB`-style sizes for messages and listings (decimal units, like the Hub).
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_whatever_the_errno() {
        // ENOSPC, EDQUOT, EFBIG as the kernel reports them.
        for errno in [28, 122, 27] {
            let e = StoreError::writing(Path::new("/m/x.partial"), 5)(
                std::io::Error::from_raw_os_error(errno),
            );
            assert!(
                matches!(&e, StoreError::DiskFull { path, written: 5 } if path == Path::new("/m/x.partial")),
                "errno {errno}: {e:?}"
            );
            assert!(e.to_string().contains("/m/x.partial"), "{e}");
        }
        let e = StoreError::writing(Path::new("/m/x"), 0)(std::io::Error::from_raw_os_error(13));
        assert!(
            matches!(e, StoreError::Io { .. }),
            "EACCES is not a full disk: {e:?}"
        );
    }

    #[test]
    fn sizes_read_like_the_hub() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
        assert_eq!(human_bytes(2_000_000_000_000_000), "2000.0 TB");
    }
}
