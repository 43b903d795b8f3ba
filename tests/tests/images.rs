//! Images on the socket, through the real daemon without a vision model: a
//! good photo (by path or inline base64) is read and then answered
//! `unsupported`, naming the missing `[vision] model`; a truncated JPEG, a
//! PNG header claiming 100000×100000, a text file, a missing file, bad
//! base64 and a malformed `image` get `bad_request` / `too_large` with the
//! problem named, and the same connection still answers a question.

use base64::Engine;
use seer_tests::{Client, Daemon};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

fn photos() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/images")
}

fn ask_image(c: &mut Client, id: &str, image: Value) -> Value {
    c.send(json!({"v": 1, "type": "ask", "id": id, "text": "What is this?", "image": image}));
    let evs = c.recv_until_match(Duration::from_secs(30), |e| e["id"] == id);
    evs.last().cloned().expect("event")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn bad_images_get_their_error_and_the_daemon_keeps_serving() {
    let d = Daemon::start("[vision]\nmax_pixels = 1000000\n");
    let mut c = d.connect();
    let dir = tempfile::tempdir().expect("tempdir");

    // Good images: read, but no vision model is configured.
    let photo = photos().join("coffee_landscape.jpg");
    let ev = ask_image(&mut c, "ok-path", json!({"path": photo}));
    assert_eq!(ev["code"], "unsupported", "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .unwrap_or("")
            .contains("[vision] model"),
        "{ev}"
    );
    // The camera is not even opened without a model to look with.
    let ev = ask_image(&mut c, "cam", json!({"camera": true}));
    assert_eq!(ev["code"], "unsupported", "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .unwrap_or("")
            .contains("[vision] model"),
        "{ev}"
    );
    let bytes = std::fs::read(&photo).expect("photo");
    let ev = ask_image(&mut c, "ok-b64", json!({"base64": b64(&bytes)}));
    assert_eq!(ev["code"], "unsupported", "{ev}");

    // A truncated JPEG.
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let ev = ask_image(&mut c, "cut", json!({"path": cut}));
    assert_eq!(ev["code"], "bad_request", "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .unwrap_or("")
            .contains("truncated JPEG"),
        "{ev}"
    );

    // A PNG claiming 100000×100000: refused from its header.
    let ev = ask_image(
        &mut c,
        "bomb",
        json!({"base64": b64(&std::fs::read(photos().join("bomb.png")).expect("bomb.png"))}),
    );
    assert_eq!(ev["code"], "too_large", "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .unwrap_or("")
            .contains("100000×100000"),
        "{ev}"
    );
    // Bigger than [vision] max_pixels, a real image.
    let big = dir.path().join("big.png");
    image::RgbImage::new(2000, 1000).save(&big).expect("png");
    let ev = ask_image(&mut c, "big", json!({"path": big}));
    assert_eq!(ev["code"], "too_large", "{ev}");
    assert!(
        ev["message"].as_str().unwrap_or("").contains("2000×1000"),
        "{ev}"
    );

    // Not images at all, or not there.
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "What is the capital of France?\n").expect("write");
    for (id, image, needle) in [
        ("txt", json!({"path": txt}), "not a supported image"),
        (
            "missing",
            json!({"path": dir.path().join("nope.jpg")}),
            "nope.jpg",
        ),
        ("bad-b64", json!({"base64": "%%%"}), "base64"),
        (
            "two",
            json!({"path": photo, "base64": "AAAA"}),
            "exactly one",
        ),
        ("url", json!({"url": "http://x/y.jpg"}), "url"),
    ] {
        let ev = ask_image(&mut c, id, image);
        assert_eq!(ev["code"], "bad_request", "{id}: {ev}");
        assert!(
            ev["message"].as_str().unwrap_or("").contains(needle),
            "{id}: {ev}"
        );
    }

    // The connection (and the daemon) go on.
    c.send(json!({"v": 1, "type": "ask", "id": "q", "text": "What is the capital of France?"}));
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "q" && matches!(e["type"].as_str(), Some("answer.end" | "error"))
    });
    let end = evs.last().expect("event");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
}
