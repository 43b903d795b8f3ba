//! [`Hub::pull`] and [`install_from`] against the local stand-in for the
//! Hugging Face Hub (`seer_tests::hub`), at the library level: the redirect
//! to the CDN and the headers read on the way, the token kept off the CDN,
//! a resume with a Range request after a dropped connection, a corrupted
//! download, a cancelled pull, and a local install. `tests/tests/models.rs`
//! runs the same Hub through the `seer` CLI and the daemon.

use seer_cancel::CancelToken;
use seer_store::{
    Checked, Entry, FileSpec, Hub, ModelStore, PullOutcome, Role, Source, StoreError, install_from,
};
use seer_tests::hub::{COMMIT, FakeHub, Fault, sha256};
use std::time::Duration;

const REPO: &str = "seer-test/tiny";

/// Deterministic incompressible bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A Hub publishing `weights.bin` (LFS, pinned in the entry) and
/// `config.json` (a git file, nothing pinned), and an empty models directory.
struct World {
    hub: FakeHub,
    dir: tempfile::TempDir,
    store: ModelStore,
    entry: Entry,
    weights: Vec<u8>,
    config: Vec<u8>,
}

impl World {
    fn new(size: usize) -> World {
        let hub = FakeHub::start();
        let weights = bytes(size, size as u64);
        let config = br#"{"architectures": ["LlamaForCausalLM"]}"#.to_vec();
        hub.add(REPO, "main", "weights.bin", weights.clone(), true);
        hub.add(REPO, "main", "config.json", config.clone(), false);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ModelStore::new(dir.path().join("models"));
        let entry = Entry {
            name: "tiny-multi".into(),
            role: Role::Language,
            description: String::new(),
            repo: REPO.into(),
            revision: "main".into(),
            licence: String::new(),
            profiles: Vec::new(),
            main: Some("weights.bin".into()),
            files: vec![
                FileSpec {
                    path: "weights.bin".into(),
                    size: Some(weights.len() as u64),
                    sha256: Some(sha256(&weights)),
                },
                FileSpec {
                    path: "config.json".into(),
                    size: None,
                    sha256: None,
                },
            ],
            unverified: Vec::new(),
        };
        World {
            hub,
            dir,
            store,
            entry,
            weights,
            config,
        }
    }

    fn client(&self, token: Option<&str>, retries: u32) -> Hub {
        let mut hub = Hub::new(&self.hub.endpoint, token.map(str::to_owned));
        hub.retries = retries;
        hub.retry_delay = Duration::from_millis(10);
        hub
    }

    fn pull(&self, hub: &Hub) -> (Result<PullOutcome, StoreError>, Vec<String>) {
        let mut events = Vec::new();
        let r = hub.pull(
            &self.store,
            &self.entry,
            &mut |e| events.push(format!("{e:?}")),
            &CancelToken::new(),
        );
        (r, events)
    }

    fn model_dir(&self) -> std::path::PathBuf {
        self.store.model_dir(&self.entry.name)
    }
}

#[test]
fn a_pull_follows_the_cdn_redirect_and_a_second_pull_asks_nothing() {
    let w = World::new(300_000);
    let (r, events) = w.pull(&w.client(None, 0));
    let m = match r.expect("pull") {
        PullOutcome::Installed(m) => m,
        other => panic!("not a fresh install: {other:?}"),
    };
    let dir = w.model_dir();
    assert_eq!(
        std::fs::read(dir.join("weights.bin")).expect("weights"),
        w.weights
    );
    assert_eq!(
        std::fs::read(dir.join("config.json")).expect("config"),
        w.config
    );
    assert!(
        matches!(&m.source, Source::Hub { commit: Some(c), .. } if c == COMMIT),
        "the commit comes from the Hub's response before the redirect: {:?}",
        m.source
    );
    let checked: Vec<Checked> = m.files.iter().map(|f| f.checked).collect();
    assert_eq!(checked, [Checked::Catalogue, Checked::OnArrival]);
    assert!(events[0].starts_with("Resolved"), "{events:?}");
    assert!(
        events.iter().any(|e| e.starts_with("Progress")),
        "{events:?}"
    );
    let log = w.hub.log();
    assert!(
        log[0].starts_with("HEAD /seer-test/tiny/resolve/main/weights.bin"),
        "{log:?}"
    );
    // The HEAD stopped at the redirect: the CDN is asked once, for the body.
    assert!(!log.iter().any(|l| l.starts_with("HEAD /cdn/")), "{log:?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("GET /cdn/")).count(),
        1,
        "{log:?}"
    );
    assert_eq!(
        w.store.resolve("tiny-multi").expect("resolve"),
        dir.join("weights.bin")
    );

    w.hub.clear_log();
    let (r, _) = w.pull(&w.client(None, 0));
    assert!(matches!(r, Ok(PullOutcome::AlreadyInstalled(_))), "{r:?}");
    assert!(w.hub.log().is_empty(), "{:?}", w.hub.log());
}

#[test]
fn the_token_reaches_the_hub_and_never_the_cdn() {
    let w = World::new(100_000);
    w.hub.gate(REPO, "hf_secret");
    let (r, _) = w.pull(&w.client(None, 0));
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("401") && e.contains("HF_TOKEN"), "{e}");
    assert!(!w.model_dir().exists(), "a failed pull left its directory");

    w.hub.clear_log();
    let (r, _) = w.pull(&w.client(Some("hf_secret"), 0));
    r.expect("pull with the token");
    let log = w.hub.log();
    assert!(
        log.iter()
            .filter(|l| l.contains("/resolve/"))
            .all(|l| l.contains("auth=Bearer hf_secret")),
        "{log:?}"
    );
    let cdn: Vec<_> = log.iter().filter(|l| l.contains("/cdn/")).collect();
    assert!(
        !cdn.is_empty() && cdn.iter().all(|l| l.contains("auth=-")),
        "{log:?}"
    );
}

#[test]
fn a_dropped_connection_is_kept_and_resumed_with_a_range_request() {
    let w = World::new(2_000_000);
    let cut = 700_000u64;
    let fault = || Fault {
        drop_after: Some(cut),
        ..Fault::default()
    };
    w.hub.fault(REPO, "main", "weights.bin", fault());
    let (r, _) = w.pull(&w.client(None, 0));
    let partial = w.model_dir().join("weights.bin.partial");
    match r {
        Err(StoreError::Transfer {
            partial: p, kept, ..
        }) => {
            assert_eq!(p, partial);
            assert!(kept > 0 && kept <= cut, "kept {kept}");
        }
        other => panic!("expected a transfer error: {other:?}"),
    }
    let kept = std::fs::metadata(&partial).expect("partial kept").len();

    w.hub.clear_log();
    let (r, events) = w.pull(&w.client(None, 0));
    r.expect("resumed pull");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("File") && e.contains(&format!("offset: {kept}"))),
        "{events:?}"
    );
    let log = w.hub.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /cdn/") && l.ends_with(&format!("range=bytes={kept}-"))),
        "{log:?}"
    );
    assert_eq!(
        std::fs::read(w.model_dir().join("weights.bin")).expect("weights"),
        w.weights
    );
    assert!(!partial.exists());

    // With a retry left, one pull resumes by itself and says so.
    assert!(w.store.remove("tiny-multi").expect("rm"));
    w.hub.fault(REPO, "main", "weights.bin", fault());
    let (r, events) = w.pull(&w.client(None, 2));
    r.expect("pull with retries");
    assert!(events.iter().any(|e| e.starts_with("Retry")), "{events:?}");
}

#[test]
fn corrupted_bytes_fail_the_checksum_and_leave_nothing_behind() {
    let w = World::new(200_000);
    w.hub.fault(
        REPO,
        "main",
        "weights.bin",
        Fault {
            corrupt: true,
            ..Fault::default()
        },
    );
    let (r, _) = w.pull(&w.client(None, 0));
    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.contains("weights.bin")
            && e.contains("checksum mismatch")
            && e.contains("pinned in the catalogue"),
        "{e}"
    );
    assert!(!w.model_dir().exists(), "left behind: {:?}", w.model_dir());
}

#[test]
fn a_cancelled_pull_stops_before_asking() {
    let w = World::new(10_000);
    let cancel = CancelToken::new();
    cancel.cancel();
    let r = w
        .client(None, 0)
        .pull(&w.store, &w.entry, &mut |_| {}, &cancel);
    assert!(
        matches!(r, Err(StoreError::Cancelled(ref n)) if n == "tiny-multi"),
        "{r:?}"
    );
    assert!(w.hub.log().is_empty(), "{:?}", w.hub.log());
}

#[test]
fn install_from_copies_checks_and_commits_a_local_copy() {
    let w = World::new(50_000);
    let src = w.dir.path().join("copy");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("weights.bin"), &w.weights).expect("write");
    std::fs::write(src.join("config.json"), &w.config).expect("write");
    let m = match install_from(&w.store, &w.entry, &src).expect("install") {
        PullOutcome::Installed(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(m.files[0].sha256, sha256(&w.weights));
    assert_eq!(m.files[0].checked, Checked::Catalogue);
    assert_eq!(
        std::fs::read(w.model_dir().join("weights.bin")).expect("weights"),
        w.weights
    );
    assert!(matches!(
        install_from(&w.store, &w.entry, &src),
        Ok(PullOutcome::AlreadyInstalled(_))
    ));

    // A copy that is not the pinned file is refused and nothing stays.
    assert!(w.store.remove("tiny-multi").expect("rm"));
    std::fs::write(src.join("weights.bin"), b"not the weights").expect("write");
    let e = install_from(&w.store, &w.entry, &src)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("checksum mismatch") && e.contains("copy/weights.bin"),
        "{e}"
    );
    assert!(!w.model_dir().exists());
    // A missing file in the copy is named.
    std::fs::remove_file(src.join("config.json")).expect("rm");
    std::fs::write(src.join("weights.bin"), &w.weights).expect("write");
    let e = install_from(&w.store, &w.entry, &src)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("config.json"), "{e}");
}
