//! Load from outside: 10,000 hostile lines over four connections to the
//! real `seerd`. Each line gets its documented error, the connections keep
//! working, the daemon's memory stays flat, and it still answers a real
//! question afterwards.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use seer_tests::{Client, Daemon};
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;

const LINES: usize = 10_000;
const CONNECTIONS: usize = 4;
/// Small, so the oversized lines stay cheap to send.
const MAX_LINE: usize = 64 << 10;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The `i`-th hostile line (no newline) and the error codes allowed for it.
fn hostile(rng: &mut StdRng, i: usize, fifo: &str) -> (Vec<u8>, &'static [&'static str]) {
    const BAD: &[&str] = &["bad_request"];
    const IMAGE: &[&str] = &["bad_request", "too_large", "unsupported"];
    let id = format!("h{i}");
    let line: Vec<u8> = match i % 16 {
        // Random bytes (never a newline), starting with a visible byte:
        // blank lines are ignored by design.
        0 => std::iter::once(rng.random_range(0x21u8..=0x7e))
            .chain((0..rng.random_range(0..300)).map(|_| rng.random_range(0u8..=255)))
            .map(|b| if b == b'\n' { b' ' } else { b })
            .collect(),
        // Truncated JSON.
        1 => {
            let full =
                json!({"v": 1, "type": "ask", "id": id, "text": "What is the capital of France?"})
                    .to_string();
            let cut = rng.random_range(1..full.len());
            full.as_bytes()[..cut].to_vec()
        }
        // Deep nesting.
        2 => {
            let n = rng.random_range(200..20_000);
            let mut v = vec![b'['; n];
            v.extend(std::iter::repeat_n(b']', n / 2));
            v
        }
        // Wrong types.
        3 => json!({"v": 1, "type": "ask", "id": id, "text": ["not", "text"]})
            .to_string()
            .into_bytes(),
        4 => json!({"v": "1", "type": "status", "id": id})
            .to_string()
            .into_bytes(),
        5 => json!({"v": 1, "type": 7, "id": id})
            .to_string()
            .into_bytes(),
        // Huge id and numbers.
        6 => format!(
            r#"{{"v":1,"type":"ask","id":"{}","text":"x","max_tokens":1e400}}"#,
            "9".repeat(rng.random_range(1000..4000))
        )
        .into_bytes(),
        // Over the line limit: too_large, and the connection stays.
        7 => {
            let mut v = br#"{"v":1,"type":"ask","id":"big","text":""#.to_vec();
            v.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
            v.extend(br#""}"#);
            return (v, &["too_large"]);
        }
        // Invalid UTF-8 and lone surrogates.
        8 => {
            let mut v = format!(r#"{{"v":1,"type":"ask","id":"{id}","text":""#).into_bytes();
            v.extend([0xff, 0xfe, 0xc3, 0x28]);
            v.extend(br#""}"#);
            v
        }
        9 => format!(r#"{{"v":1,"type":"ask","id":"{id}","text":"\ud800"}}"#).into_bytes(),
        // Duplicate keys.
        10 => format!(r#"{{"v":1,"v":2,"type":"status","id":"{id}"}}"#).into_bytes(),
        // Every request type with an unknown field.
        11 => {
            let types = [
                "ask",
                "cancel",
                "stop",
                "subscribe",
                "status",
                "describe",
                "models.list",
                "models.pull",
                "listen.start",
                "listen.stop",
                "set",
                "say",
            ];
            let t = types[rng.random_range(0..types.len())];
            json!({"v": 1, "type": t, "id": id, "surprise": {"nested": [1, 2]}})
                .to_string()
                .into_bytes()
        }
        // Images that must never hang or fill memory.
        12 => {
            let paths = [
                "/dev/zero",
                "/proc/self/mem",
                fifo,
                "/",
                "/nonexistent/x.jpg",
                "/etc/passwd",
            ];
            let p = paths[rng.random_range(0..paths.len())];
            let line = json!({"v": 1, "type": "ask", "id": id, "text": "what is this?", "image": {"path": p}});
            return (line.to_string().into_bytes(), IMAGE);
        }
        13 => {
            let line = json!({"v": 1, "type": "ask", "id": id, "text": "x", "image": {"base64": "%%%not base64%%%"}});
            return (line.to_string().into_bytes(), IMAGE);
        }
        // Model names that try to leave the models directory.
        14 => {
            let names = ["../../etc/passwd", "..", "/etc/shadow", "a/../../b", ""];
            json!({"v": 1, "type": "models.pull", "id": id, "name": names[rng.random_range(0..names.len())]})
                .to_string()
                .into_bytes()
        }
        // Not an object, or a blank question.
        _ => {
            let others = [
                "null".to_owned(),
                "42".to_owned(),
                "\"ask\"".to_owned(),
                json!({"v": 1, "type": "ask", "id": id, "text": "   "}).to_string(),
                json!({"v": 1, "type": "ask", "id": "", "text": "x"}).to_string(),
            ];
            others[rng.random_range(0..others.len())]
                .clone()
                .into_bytes()
        }
    };
    (line, BAD)
}

fn status(c: &mut Client) -> Value {
    c.send(json!({"v": 1, "type": "status", "id": "st"}));
    c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "status")
        .pop()
        .expect("status")
}

#[test]
fn ten_thousand_hostile_lines_get_their_errors_and_memory_stays_flat() {
    // `Daemon::start` puts these lines in its `[socket]` table.
    let d = Daemon::start(&format!("max_line_bytes = {MAX_LINE}\n"));
    let dir = tempfile::tempdir().expect("tmp");
    let fifo = dir.path().join("fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mkfifo");
    let fifo = fifo.to_string_lossy().into_owned();

    let run = |seed: u64, count: usize| {
        let mut c = d.connect();
        let mut w = c.writer();
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 0..count {
            let (mut line, codes) = hostile(&mut rng, i, &fifo);
            line.push(b'\n');
            w.write_all(&line).expect("send");
            let ev = c
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("no answer to hostile line {i} ({} bytes)", line.len()));
            assert_eq!(ev["type"], "error", "line {i}: {ev}");
            let code = ev["code"].as_str().unwrap_or("");
            assert!(
                codes.contains(&code),
                "line {i}: {code} not in {codes:?}: {ev}"
            );
        }
        // The connection still serves.
        assert_eq!(status(&mut c)["type"], "status");
    };

    // Warm-up: the first errors allocate what every later one reuses.
    run(1, 400);
    let before = rss_kib(d.child.id());
    std::thread::scope(|s| {
        for k in 0..CONNECTIONS {
            let run = &run;
            s.spawn(move || run(100 + k as u64, LINES / CONNECTIONS));
        }
    });
    let after = rss_kib(d.child.id());
    println!("seerd RSS: {before} KiB before, {after} KiB after {LINES} hostile lines");
    assert!(
        (after as f64) <= before as f64 * 1.10,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let mut c = d.connect();
    assert_eq!(status(&mut c)["pending"], 0);
    c.send(json!({"v": 1, "type": "ask", "id": "real", "text": "What is the capital of France?"}));
    let end = c
        .recv_until_match(Duration::from_secs(120), |e| {
            e["id"] == "real" && e["type"] == "answer.end"
        })
        .pop()
        .expect("end");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
}

/// 64 clients at once, each asking on its own connection: a third cancel
/// their turn at once, a sixth vanish without reading, the rest read their
/// answer. No event carries another client's id, every turn that is read
/// ends exactly once, and the queue drains to nothing.
#[test]
fn sixty_four_clients_with_cancel_storms_and_vanishing_clients() {
    const CLIENTS: usize = 64;
    // Room for all of them: `busy` is a different test.
    let d = Daemon::start("[assistant]\nqueue = 100\n");
    std::thread::scope(|s| {
        for k in 0..CLIENTS {
            let d = &d;
            s.spawn(move || {
                let mut c = d.connect();
                let id = format!("c{k}");
                c.send(json!({"v": 1, "type": "ask", "id": id, "max_tokens": 6,
                    "text": "What is the capital of France?"}));
                match k % 6 {
                    // Vanish: close without reading anything.
                    0 => return,
                    // Cancel storm: cancel at once.
                    1 | 2 => c.send(json!({"v": 1, "type": "cancel", "id": id})),
                    _ => {}
                }
                let evs = c.recv_until_match(Duration::from_secs(300), |e| {
                    e["id"] == id
                        && ["answer.end", "error", "cancelled"]
                            .contains(&e["type"].as_str().unwrap_or(""))
                });
                for e in &evs {
                    assert!(
                        e["id"] == id || e["id"].is_null(),
                        "client {k} got another turn's event: {e}"
                    );
                }
                let end = evs.last().expect("end");
                if k % 6 >= 3 {
                    assert_eq!(end["type"], "answer.end", "client {k}: {end}");
                } else {
                    assert!(
                        end["type"] == "cancelled" || end["type"] == "answer.end",
                        "client {k}: {end}"
                    );
                }
                // Exactly once: nothing more for this id arrives.
                c.send(json!({"v": 1, "type": "status", "id": "after"}));
                let rest = c.recv_until_match(Duration::from_secs(30), |e| e["type"] == "status");
                assert!(
                    rest.iter().all(|e| e["id"] != id),
                    "client {k}: events after the end: {rest:?}"
                );
            });
        }
    });
    let mut c = d.connect();
    let t0 = std::time::Instant::now();
    while status(&mut c)["pending"] != 0 {
        assert!(t0.elapsed() < Duration::from_secs(120), "turns leaked");
        std::thread::sleep(Duration::from_millis(100));
    }
}
