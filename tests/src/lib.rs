//! Helpers for Seer's end-to-end tests: start the real `seerd` binary on a
//! private socket and speak the protocol to it over a real Unix socket.

//!
//! Everything that speaks the daemon's protocol ([`Daemon`], [`Client`]) is
//! behind the default `daemon` feature, so `seer-models`' tests can use the
//! model and transcript helpers without depending on the daemon (and the
//! downloader under it).

#[cfg(feature = "daemon")]
mod daemon;
pub mod hub;
#[cfg(feature = "daemon")]
pub mod peers;
pub mod sound;
pub mod video;

#[cfg(feature = "daemon")]
pub use daemon::{Client, Daemon};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where cargo put the workspace binaries (`target/<profile>/`), found from
/// this test binary's own path (`target/<profile>/deps/…`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first",
        p.display()
    );
    p
}

/// A `seerd --config CONFIG` command, not started; `SEER_SOCKET` is cleared
/// so the config's socket path is the one used.
pub fn seerd(config: &Path) -> Command {
    let mut c = Command::new(bin("seerd"));
    c.arg("--config").arg(config).env_remove("SEER_SOCKET");
    c
}

/// Waits until something accepts connections on `socket`.
pub fn wait_for_socket(socket: &Path) {
    let t0 = Instant::now();
    while UnixStream::connect(socket).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nothing listens on {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lower case, no punctuation, single spaces: transcripts compared as words.
pub fn words(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Word-level edit distance between two transcripts.
pub fn word_errors(a: &str, b: &str) -> usize {
    let (a, b) = (words(a), words(b));
    let a: Vec<&str> = a.split(' ').collect();
    let b: Vec<&str> = b.split(' ').collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, wa) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, wb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(wa != wb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A real test model that `scripts/fetch-test-models.sh` fetches (and, for
/// whisper and Silero, converts) into `$SEER_TEST_MODELS`
/// (default `/var/cache/seer-ci/models`).
pub fn test_model(name: &str) -> PathBuf {
    let dir = std::env::var_os("SEER_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/seer-ci/models"));
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-test-models.sh (or set SEER_TEST_MODELS)",
        p.display()
    );
    p
}

/// The real language model (SmolLM2-135M-Instruct Q4_1).
pub fn model() -> PathBuf {
    test_model("SmolLM2-135M-Instruct.Q4_1.gguf")
}
