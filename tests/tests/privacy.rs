//! "Nothing leaves the device", proven from outside: `seerd` started in a
//! fresh network namespace (`unshare -n`, only loopback up) still answers a
//! typed question and a look through the camera, and asking it to download
//! a model fails with `download_failed` at once instead of hanging.

use seer_tests::{Client, Daemon, model};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn final_event(c: &mut Client, id: &str, limit: Duration) -> Value {
    c.recv_until_match(limit, |e| {
        e["id"] == id
            && ["answer.end", "error", "cancelled", "models.pulled"]
                .contains(&e["type"].as_str().unwrap_or(""))
    })
    .pop()
    .expect("a final event")
}

#[test]
fn without_a_network_seer_answers_looks_and_a_pull_fails_cleanly() {
    let models_dir = tempfile::tempdir().expect("tmp");
    // The namespace has no interfaces but loopback, which starts down.
    let wrapper = [
        "unshare",
        "-n",
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$@\"",
        "sh",
    ];
    let photo = fixtures().join("images/astronaut_portrait.jpg");
    let d = Daemon::start_wrapped(
        &wrapper,
        &format!("path = {:?}\nmodels_dir = {:?}", model(), models_dir.path()),
        &format!(
            "[vision]\nmodel = {:?}\ncamera = {photo:?}\n",
            fixtures().join("smolvlm-tiny/hf")
        ),
        &[],
    );
    // It really is in another namespace: its network interfaces are ours
    // minus everything but `lo`.
    let net = std::fs::read_to_string(format!("/proc/{}/net/dev", d.child.id())).expect("net/dev");
    let ifaces: Vec<&str> = net
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "seerd's namespace: {net}");

    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "ask", "id": "q", "text": "What is the capital of France?"}));
    let end = final_event(&mut c, "q", Duration::from_secs(120));
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );

    c.send(
        json!({"v": 1, "type": "ask", "id": "look", "text": "What is in this image?",
        "image": {"camera": true}, "max_tokens": 8}),
    );
    let end = final_event(&mut c, "look", Duration::from_secs(120));
    assert_eq!(end["type"], "answer.end", "{end}");

    let t0 = Instant::now();
    c.send(json!({"v": 1, "type": "models.pull", "id": "p", "name": "smollm2-135m-instruct"}));
    let end = final_event(&mut c, "p", Duration::from_secs(120));
    println!(
        "pull without a network ended after {:?}: {end}",
        t0.elapsed()
    );
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!(end["code"], "download_failed", "{end}");
    // Nothing half-downloaded is left as an installed model.
    c.send(json!({"v": 1, "type": "models.list", "id": "l"}));
    let list = c
        .recv_until_match(Duration::from_secs(10), |e| e["type"] == "models.list")
        .pop()
        .expect("list");
    let installed: Vec<&Value> = list["models"]
        .as_array()
        .map(|m| m.iter().filter(|r| r["installed"] == true).collect())
        .unwrap_or_default();
    assert!(installed.is_empty(), "{list}");
}
