//! Load from outside: 10,000 hostile lines over four connections to the
//! real `seerd`, 64 concurrent clients with cancel storms, and 10,000
//! hostile HTTP requests to its OpenAI-compatible API beside stalled
//! clients. Each request gets its documented error, the connections keep
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

/// Hostile HTTP requests for Seer's OpenAI-compatible API: the `i`-th raw
/// request (one per connection, `Connection: close`) and the statuses
/// allowed for it. None of them is a valid completion, so no turn starts.
fn hostile_http(rng: &mut StdRng, i: usize, key: &str) -> (Vec<u8>, &'static [u16]) {
    let post = |auth: &str, body: &[u8]| {
        let mut r = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: seer\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let auth = format!("Authorization: Bearer {key}\r\n");
    let valid = br#"{"model":"seer","messages":[{"role":"user","content":"What is the capital of France?"}]}"#;
    match i % 12 {
        // Not HTTP at all.
        0 => {
            let n = rng.random_range(1..512);
            let mut b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            b.extend_from_slice(b"\r\n\r\n");
            (b, &[400, 0])
        }
        // Random bytes as the body.
        1 => {
            let n = rng.random_range(0..4096);
            let b: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            (post(&auth, &b), &[400])
        }
        // A valid body cut short.
        2 => {
            let cut = rng.random_range(0..valid.len() - 1);
            (post(&auth, &valid[..cut]), &[400])
        }
        // Nesting far past any parser's depth limit.
        3 => {
            let depth = rng.random_range(200..50_000);
            let mut b = b"{\"messages\":".to_vec();
            b.extend(std::iter::repeat_n(b'[', depth));
            (post(&auth, &b), &[400])
        }
        // Wrong types and values in every field.
        4 => {
            let bodies = [
                json!({"messages": 5}),
                json!({"messages": [{"role": "robot", "content": "hi"}]}),
                json!({"messages": [{"role": "user", "content": {"text": "hi"}}]}),
                json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
                json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e300}),
                json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
                json!({"messages": [{"role": "user", "content": "hi"}], "top_p": [1]}),
                json!({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}),
                json!({"messages": [{"role": "user", "content": "hi"}], "stop": 7}),
                json!({"messages": [{"role": "user", "content": "hi"}], "seed": "x"}),
                json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "file:///etc/passwd"}}]}]}),
                json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                    "image_url": {"url": "data:image/png;base64,!!!"}}]}]}),
                json!({"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]}),
                json!([]),
                json!(null),
            ];
            let b = bodies[rng.random_range(0..bodies.len())].to_string();
            (post(&auth, b.as_bytes()), &[400])
        }
        // Invalid UTF-8 and a lone surrogate inside strings.
        5 => {
            let mut b = br#"{"messages":[{"role":"user","content":""#.to_vec();
            if rng.random() {
                b.extend_from_slice(&[0xff, 0xfe, 0xc3]);
            } else {
                b.extend_from_slice(br"\ud800");
            }
            b.extend_from_slice(br#""}],"max_tokens":"#);
            b.extend_from_slice(b"\"x\"}");
            (post(&auth, &b), &[400])
        }
        // No key, or the wrong one: refused before the body matters.
        6 => {
            let a = if rng.random() {
                String::new()
            } else {
                format!("Authorization: Bearer {key}x\r\n")
            };
            (post(&a, valid), &[401])
        }
        // The wrong method.
        7 => (
            format!("GET /v1/chat/completions HTTP/1.1\r\nHost: seer\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
            &[405],
        ),
        // Paths that are not served, escapes included.
        8 => {
            let paths = ["/v1/../../etc/passwd", "/v1/completions", "/%00", "/v1/models/..%2f..%2f", "//"];
            let p = paths[rng.random_range(0..paths.len())];
            (
                format!("GET {p} HTTP/1.1\r\nHost: seer\r\n{auth}Connection: close\r\n\r\n").into_bytes(),
                &[400, 404],
            )
        }
        // A header past hyper's 400 KB read buffer: refused by hyper (431)
        // or, read whole, by the missing key (401).
        9 => {
            let big = "a".repeat(rng.random_range(500_000..1_000_000));
            (
                format!("GET /v1/models HTTP/1.1\r\nHost: seer\r\nX-Big: {big}\r\nConnection: close\r\n\r\n").into_bytes(),
                &[431, 400, 401, 0],
            )
        }
        // A body over the limit, announced by its length.
        10 => (
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: seer\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                rng.random_range(200_000_000u64..u64::MAX / 2)
            )
            .into_bytes(),
            &[413],
        ),
        // A browser page from an origin that is not allowed.
        _ => {
            let mut r = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: seer\r\n{auth}Origin: http://evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                valid.len()
            )
            .into_bytes();
            r.extend_from_slice(valid);
            (r, &[403])
        }
    }
}

/// Sends one raw request and returns the reply's status (0: the server
/// closed the connection without one) and body.
fn raw_http(addr: &str, req: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // The server may answer (and close) before reading everything sent.
    // The write side stays open: hyper drops a connection whose client
    // half-closes before the reply (its default), as no HTTP client does.
    let _ = s.write_all(req);
    let mut reply = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// 10,000 hostile HTTP requests from four clients while 16 more hold
/// connections open mid-request (a head without its end, a body cut
/// short): each hostile request gets its status with an OpenAI-style
/// error body, the stalled clients hold nothing, memory stays flat, and
/// a real completion is answered while they still hang.
#[test]
fn hostile_http_requests_get_errors_and_stalled_clients_hold_nothing() {
    const KEY: &str = "soak-key";
    const REQUESTS: usize = 10_000;
    let port = seer_tests::peers::free_port();
    let d = Daemon::start(&format!(
        "[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\napi_key = {KEY:?}\n"
    ));
    let addr = format!("127.0.0.1:{port}");
    let t0 = std::time::Instant::now();
    while raw_http(
        &addr,
        b"GET /health HTTP/1.1\r\nHost: seer\r\nConnection: close\r\n\r\n",
    )
    .0 != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "no /health");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stalled: Vec<std::net::TcpStream> = (0..16)
        .map(|k| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            let part: &[u8] = if k % 2 == 0 {
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: seer\r\n"
            } else {
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: seer\r\nAuthorization: Bearer soak-key\r\nContent-Length: 1000\r\n\r\n{\"messages\":"
            };
            s.write_all(part).expect("partial request");
            s
        })
        .collect();

    let run = |seed: u64, count: usize| {
        let mut rng = StdRng::seed_from_u64(seed);
        for i in 0..count {
            let (req, allowed) = hostile_http(&mut rng, i, KEY);
            let (status, body) = raw_http(&addr, &req);
            assert!(
                allowed.contains(&status),
                "request {i} (case {}): {status} not in {allowed:?}: {body}",
                i % 12
            );
            // hyper's own refusals (0, 400 and 431 before a request is
            // parsed) have no body; every other error is OpenAI-shaped.
            if ![0, 400, 431].contains(&status) || body.starts_with('{') {
                let v: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("request {i}: {e}: {body:?}"));
                assert!(v["error"]["message"].is_string(), "request {i}: {v}");
            }
        }
    };
    run(1, 400);
    let before = rss_kib(d.child.id());
    std::thread::scope(|s| {
        for k in 0..4u64 {
            let run = &run;
            s.spawn(move || run(100 + k, REQUESTS / 4));
        }
    });
    let after = rss_kib(d.child.id());
    println!("seerd RSS: {before} KiB before, {after} KiB after {REQUESTS} hostile HTTP requests");
    assert!(
        (after as f64) <= before as f64 * 1.10,
        "RSS grew from {before} KiB to {after} KiB"
    );

    let (code, body) = seer_tests::peers::post(
        &format!("http://{addr}/v1/chat/completions"),
        KEY,
        &json!({"messages": [{"role": "user", "content": "What is the capital of France?"}]}),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .contains("Paris"),
        "{body}"
    );
    drop(stalled);
    let mut c = d.connect();
    assert_eq!(status(&mut c)["pending"], 0);
}
