//! Images on the socket, through the real daemon: a good photo (by path or
//! inline base64) is read and accepted as far as this build goes (vision
//! answers `unsupported`, naming the image's size); a truncated JPEG, a
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

/// A valid PNG whose header says 100000×100000 (its data is an empty zlib
/// stream: the decoder must never get that far).
fn bomb_png() -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = 100_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (&b"IHDR"[..], &ihdr[..]),
        (
            &b"IDAT"[..],
            &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1][..],
        ),
        (&b"IEND"[..], &[][..]),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

#[test]
fn bad_images_get_their_error_and_the_daemon_keeps_serving() {
    let d = Daemon::start("[vision]\nmax_pixels = 1000000\n");
    let mut c = d.connect();
    let dir = tempfile::tempdir().expect("tempdir");

    // Good images: read and sized; vision itself has not landed.
    let photo = photos().join("coffee_landscape.jpg");
    let ev = ask_image(&mut c, "ok-path", json!({"path": photo}));
    assert_eq!(ev["code"], "unsupported", "{ev}");
    assert!(
        ev["message"].as_str().unwrap_or("").contains("400×264"),
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
    let ev = ask_image(&mut c, "bomb", json!({"base64": b64(&bomb_png())}));
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
