//! Looking, end to end through the real `seerd`, socket and CLI, with the
//! tiny random-weight SmolVLM fixture (`tests/fixtures/smolvlm-tiny`): its
//! answers are gibberish, but exactly the 16 tokens transformers produced
//! for the same photo and question, so any slip in decoding, resizing,
//! prompt assembly, the vision tower or the merge changes them.
//!
//! The camera is an `ImageSource` (`[vision] camera`, a photo served as a
//! camera at 5 fps): there is no V4L2 device on CI machines.

use base64::Engine;
use seer_tests::{Client, Daemon, bin};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// transformers' greedy answer for a fixture case.
fn greedy_text(case: &str) -> String {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smolvlm-tiny/reference.json"))
            .expect("reference.json"),
    )
    .expect("JSON");
    json["cases"][case]["greedy_text"]
        .as_str()
        .expect("greedy_text")
        .to_owned()
}

fn vision_config(extra: &str) -> String {
    format!(
        "[vision]\nmodel = {:?}\n{extra}",
        fixtures().join("smolvlm-tiny/hf")
    )
}

/// The language model still answers a text question on this connection.
fn assert_text_model_answers(c: &mut Client) {
    c.send(json!({"v": 1, "type": "ask", "id": "t", "text": "What is the capital of France?", "max_tokens": 24}));
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "t" && e["type"] == "answer.end"
    });
    let end = evs.last().expect("end");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
}

/// Asks with an image and returns the final event (`answer.end` or `error`).
fn ask_image(c: &mut Client, id: &str, image: Value) -> Value {
    c.send(json!({
        "v": 1, "type": "ask", "id": id, "text": "What is in this image?",
        "image": image, "max_tokens": 16,
    }));
    let evs = c.recv_until_match(Duration::from_secs(120), |e| {
        e["id"] == id && (e["type"] == "answer.end" || e["type"] == "error")
    });
    evs.last().cloned().expect("event")
}

#[test]
fn ask_with_an_image_returns_transformers_greedy_tokens() {
    let d = Daemon::start(&vision_config(""));
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "describe", "id": "d"}));
    let ev = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "describe");
    let desc = ev.last().expect("describe");
    assert_eq!(desc["capabilities"]["vision"], true, "{desc}");
    assert_eq!(desc["capabilities"]["camera"], false, "{desc}");

    let want = greedy_text("astronaut_portrait.untiled");
    let photo = fixtures().join("images/astronaut_portrait.jpg");
    let ev = ask_image(&mut c, "path", json!({"path": photo}));
    assert_eq!(ev["type"], "answer.end", "{ev}");
    assert_eq!(ev["text"], want.as_str(), "{ev}");
    assert_eq!(ev["stop_reason"], "max_tokens", "{ev}");
    assert!(
        ev["timings"]["image_encode_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{ev}"
    );

    // The same bytes inline give the same answer.
    let bytes = std::fs::read(fixtures().join("images/coffee_landscape.jpg")).expect("photo");
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let ev = ask_image(&mut c, "b64", json!({"base64": b64}));
    assert_eq!(
        ev["text"],
        greedy_text("coffee_landscape.untiled").as_str(),
        "{ev}"
    );

    // A broken image is refused and the text model still answers.
    let ev = ask_image(
        &mut c,
        "text-file",
        json!({"path": fixtures().join("images/README.md")}),
    );
    assert_eq!(ev["code"], "bad_request", "{ev}");
    assert_text_model_answers(&mut c);

    // The CLI: `seer ask --image`.
    let out = std::process::Command::new(bin("seer"))
        .args(["--socket"])
        .arg(&d.socket)
        .args(["ask", "--max-tokens", "16", "--image"])
        .arg(&photo)
        .arg("What is in this image?")
        .output()
        .expect("seer ask --image");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.trim());
}

#[test]
fn tiling_follows_the_config() {
    let d = Daemon::start(&vision_config("tiling = true\n"));
    let mut c = d.connect();
    let photo = fixtures().join("images/coffee_landscape.jpg");
    let ev = ask_image(&mut c, "tiled", json!({"path": photo}));
    assert_eq!(
        ev["text"],
        greedy_text("coffee_landscape.tiled").as_str(),
        "{ev}"
    );
}

/// Waits until `status` says the camera is closed, failing with `why` after `within`.
fn wait_closed(c: &mut Client, within: Duration, why: &str) {
    let t0 = Instant::now();
    while camera_active(c) {
        assert!(t0.elapsed() < within, "{why}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn camera_active(c: &mut Client) -> bool {
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    let evs = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "status");
    evs.last().expect("status")["camera"]["active"]
        .as_bool()
        .expect("camera.active")
}

#[test]
fn the_camera_opens_for_a_look_and_closes_after_keep_warm() {
    let photo = fixtures().join("images/coffee_landscape.jpg");
    let d = Daemon::start(&vision_config(&format!(
        "camera = {photo:?}\nkeep_warm_seconds = 3\n"
    )));
    let mut c = d.connect();
    assert!(!camera_active(&mut c), "the camera is closed until a look");
    // A second client watches the indicator on the socket.
    let mut watcher = d.connect();
    watcher.send(json!({"v": 1, "type": "subscribe", "id": "w", "events": ["state"]}));
    watcher.recv_until(&["subscribed"]);

    let ev = ask_image(&mut c, "look", json!({"camera": true}));
    assert_eq!(
        ev["text"],
        greedy_text("coffee_landscape.untiled").as_str(),
        "{ev}"
    );
    // Closed again within keep-warm (plus slack), without any request.
    wait_closed(&mut c, Duration::from_secs(10), "the camera stayed on");
    let seen = watcher.recv_until_match(Duration::from_secs(5), |e| {
        e["type"] == "camera" && e["active"] == false
    });
    let cams: Vec<&Value> = seen.iter().filter(|e| e["type"] == "camera").collect();
    assert_eq!(cams.len(), 2, "camera on, then off: {seen:#?}");
    assert_eq!(cams[0]["active"], true, "{seen:#?}");

    // `seer look` opens it again.
    let out = std::process::Command::new(bin("seer"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["look", "--max-tokens", "16", "What is in this image?"])
        .output()
        .expect("seer look");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        greedy_text("coffee_landscape.untiled").trim()
    );
    assert!(camera_active(&mut c), "on during keep-warm after a look");

    // Muting closes it, and a look while muted is refused.
    c.send(json!({"v": 1, "type": "set", "id": "m", "muted": true}));
    wait_closed(&mut c, Duration::from_secs(5), "mute left the camera on");
    let ev = ask_image(&mut c, "muted", json!({"camera": true}));
    assert_eq!(ev["code"], "device_unavailable", "{ev}");
    assert!(!camera_active(&mut c));
}

/// With no keep-warm at all, a look is still served (the camera counts as
/// in use while a look waits for its frame) and the camera closes after.
/// An id already taken by a turn whose image is loading is refused.
#[test]
fn a_cold_camera_serves_its_look_and_ids_stay_unique() {
    let photo = fixtures().join("images/coffee_landscape.jpg");
    let d = Daemon::start(&vision_config(&format!(
        "camera = {photo:?}\nkeep_warm_seconds = 0\n"
    )));
    let mut c = d.connect();
    let ev = ask_image(&mut c, "cold", json!({"camera": true}));
    assert_eq!(
        ev["text"],
        greedy_text("coffee_landscape.untiled").as_str(),
        "{ev}"
    );
    wait_closed(&mut c, Duration::from_secs(5), "the camera stayed on");

    c.send(
        json!({"v": 1, "type": "ask", "id": "dup", "text": "What is in this image?",
                  "image": {"camera": true}, "max_tokens": 16}),
    );
    c.send(json!({"v": 1, "type": "ask", "id": "dup", "text": "And now?"}));
    // The image turn takes its id at once, while its frame is still coming:
    // the second line is refused and the first is answered.
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "dup" && (e["type"] == "answer.end" || e["type"] == "error")
    });
    let err = evs.last().expect("event");
    assert_eq!(err["code"], "bad_request", "{evs:#?}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("already in use"),
        "{err}"
    );
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "dup" && (e["type"] == "answer.end" || e["type"] == "error")
    });
    let end = evs.last().expect("event");
    assert_eq!(
        end["text"],
        greedy_text("coffee_landscape.untiled").as_str(),
        "{end}"
    );
}

/// A real V4L2 camera (`[vision] camera = "v4l2:0"`: nokhwa through
/// pipewire-v4l2 to a gst test pattern; see `seer_tests::video`) answers a
/// look with the vision model and lights the indicator. Its source dying is
/// a `camera {error}` event while text questions are still answered; when a
/// source is back, a look is answered again; keep-warm then closes it.
#[test]
fn a_v4l2_camera_answers_a_look_and_survives_losing_its_source() {
    let mut video = seer_tests::video::VideoServer::start("pattern=smpte");
    let env = video.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::start_with_env(
        &vision_config("camera = \"v4l2:0\"\nkeep_warm_seconds = 6\n"),
        &env,
    );
    let mut c = d.connect();
    let mut watcher = d.connect();
    watcher.send(json!({"v": 1, "type": "subscribe", "id": "w", "events": ["state"]}));
    watcher.recv_until(&["subscribed"]);
    assert!(!camera_active(&mut c));
    let ev = ask_image(&mut c, "v4l2", json!({"camera": true}));
    assert_eq!(ev["type"], "answer.end", "{ev}");
    assert!(
        ev["timings"]["image_encode_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{ev}"
    );
    assert_eq!(ev["timings"]["generated_tokens"], 16, "{ev}");
    assert!(camera_active(&mut c), "on during keep-warm");

    video.stop_source();
    let seen = watcher.recv_until_match(Duration::from_secs(15), |e| {
        e["type"] == "camera" && e.get("error").is_some()
    });
    assert!(
        seen.iter()
            .any(|e| e["type"] == "camera" && e.get("error").is_some()),
        "{seen:#?}"
    );
    assert_text_model_answers(&mut c);

    video.start_source();
    let ev = ask_image(&mut c, "again", json!({"camera": true}));
    assert_eq!(ev["type"], "answer.end", "{ev}");
    assert!(
        ev["timings"]["image_encode_ms"].as_f64().unwrap_or(0.0) > 0.0,
        "{ev}"
    );
    wait_closed(&mut c, Duration::from_secs(20), "the camera stayed on");
}
