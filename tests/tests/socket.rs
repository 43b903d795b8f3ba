//! The real `seerd` with the real SmolLM2 model, driven over its Unix socket
//! and through the `seer` CLI.

use seer_tests::{Client, Daemon, bin, seerd, wait_for_socket};
use serde_json::{Value, json};
use std::process::Command;
use std::time::{Duration, Instant};

fn ask(id: &str, text: &str) -> Value {
    json!({"v": 1, "type": "ask", "id": id, "text": text})
}

fn answer(c: &mut Client, id: &str) -> (String, Value) {
    let events = c.recv_until(&["answer.end", "error", "cancelled"]);
    let mut streamed = String::new();
    for ev in &events {
        assert_eq!(ev["v"], 1, "{ev}");
        assert_eq!(ev["id"], id, "event for another request: {ev}");
        if ev["type"] == "answer.delta" {
            streamed.push_str(ev["text"].as_str().expect("delta text"));
        }
    }
    (streamed, events.last().cloned().expect("an event"))
}

#[test]
fn ask_streams_an_answer_and_the_cli_prints_it() {
    let d = Daemon::start("");
    let mut c = d.connect();
    c.send(ask("q1", "What is the capital of France?"));
    let (streamed, end) = answer(&mut c, "q1");
    assert_eq!(end["type"], "answer.end", "{end}");
    assert_eq!(
        end["text"], streamed,
        "deltas concatenate to the final text"
    );
    assert!(streamed.contains("Paris"), "{streamed:?}");
    assert_eq!(end["stop_reason"], "eos");
    assert!(
        end["timings"]["prompt_tokens"].as_u64().unwrap_or(0) > 10,
        "{end}"
    );

    let out = Command::new(bin("seer"))
        .args(["--socket"])
        .arg(&d.socket)
        .args(["ask", "What is the capital of France?"])
        .output()
        .expect("run seer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Paris"), "{text}");
}

#[test]
fn malformed_lines_get_named_errors_and_the_connection_keeps_working() {
    let d = Daemon::start("max_line_bytes = 4096\n");
    let mut c = d.connect();
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    for i in 0..25 {
        cases.push((vec![0xff, 0xfe, b'x', i as u8 % 10 + b'0'], "bad_request"));
        cases.push((
            format!("{{\"v\":1,\"type\":\"ask\",\"id\":\"t{i}\"").into_bytes(),
            "bad_request",
        ));
        cases.push((
            format!("{{\"v\":1,\"type\":\"ask\",\"id\":\"w{i}\",\"text\":{i}}}").into_bytes(),
            "bad_request",
        ));
        cases.push((
            format!("{{\"v\":1,\"type\":\"nope{i}\",\"id\":\"u{i}\"}}").into_bytes(),
            "bad_request",
        ));
        cases.push((
            format!("{{\"type\":\"status\",\"id\":\"m{i}\"}}").into_bytes(),
            "bad_request",
        ));
        cases.push((format!("[{i}]").into_bytes(), "bad_request"));
        cases.push((vec![b'x'; 5000 + i], "too_large"));
        cases.push((
            format!("{{\"v\":1,\"type\":\"set\",\"id\":\"l{i}\",\"volume\":{i}}}").into_bytes(),
            "bad_request",
        ));
    }
    assert_eq!(cases.len(), 200);
    for (line, code) in &cases {
        let mut l = line.clone();
        l.push(b'\n');
        c.send_raw(&l);
        let ev = c.recv();
        assert_eq!(ev["type"], "error", "{ev}");
        assert_eq!(
            ev["code"],
            *code,
            "for {:?}: {ev}",
            String::from_utf8_lossy(&line[..line.len().min(60)])
        );
        assert!(!ev["message"].as_str().unwrap_or("").is_empty());
    }
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    let ev = c.recv();
    assert_eq!(ev["type"], "status", "{ev}");
    assert_eq!(ev["id"], "s");
}

#[test]
fn cancel_mid_answer_then_ask_again() {
    let d = Daemon::start("");
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "ask", "id": "long", "text": "Write a long story about a dragon and a knight.", "max_tokens": 400}));
    loop {
        let ev = c.recv();
        if ev["type"] == "answer.delta" {
            break;
        }
        assert_ne!(
            ev["type"], "answer.end",
            "answered before it could be cancelled"
        );
    }
    let t0 = Instant::now();
    c.send(json!({"v": 1, "type": "cancel", "id": "long"}));
    let events = c.recv_until(&["cancelled", "answer.end", "error"]);
    let last = events.last().expect("event");
    assert_eq!(last["type"], "cancelled", "{last}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "cancel took {:?}",
        t0.elapsed()
    );
    c.send(json!({"v": 1, "type": "cancel", "id": "long"}));
    let ev = c.recv();
    assert_eq!(
        (ev["type"].as_str(), ev["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{ev}"
    );
    c.send(ask("next", "What is the capital of Japan?"));
    let (text, end) = answer(&mut c, "next");
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(text.contains("Tokyo"), "{text}");
}

#[test]
fn a_queued_question_cancelled_is_answered_cancelled_at_once() {
    let d = Daemon::start("");
    let mut a = d.connect();
    a.send(json!({"v": 1, "type": "ask", "id": "first", "text": "Write a long story about a dragon.", "max_tokens": 300}));
    loop {
        if a.recv()["type"] == "answer.delta" {
            break;
        }
    }
    let mut b = d.connect();
    b.send(ask("second", "What is the capital of France?"));
    let queued = b.recv();
    assert_eq!(queued["state"], "queued", "{queued}");
    assert_eq!(queued["position"], 1, "{queued}");
    let t0 = Instant::now();
    b.send(json!({"v": 1, "type": "cancel", "id": "second"}));
    let ev = b.recv();
    assert_eq!(ev["type"], "cancelled", "{ev}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    // The first answer carries on undisturbed.
    let events = a.recv_until(&["answer.end", "cancelled", "error"]);
    assert_eq!(events.last().expect("event")["type"], "answer.end");
}

#[test]
fn many_clients_get_their_own_answers() {
    let d = Daemon::start("");
    let socket = d.socket.clone();
    // A client that asks and never reads: it must not hold the others up.
    let mut idle = Client::connect(&socket);
    idle.send(ask("idle", "Tell me a long story."));
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket);
                let id = format!("c{i}");
                c.send(json!({"v": 1, "type": "ask", "id": id, "text": "What is the capital of France?", "max_tokens": 12}));
                let (text, end) = answer(&mut c, &id);
                assert_eq!(end["type"], "answer.end", "{end}");
                assert_eq!(end["text"], text);
                text
            })
        })
        .collect();
    for h in handles {
        let text = h.join().expect("client thread");
        assert!(text.contains("Paris"), "{text}");
    }
    drop(idle);
}

#[test]
fn sigterm_during_an_answer_cancels_it_and_removes_the_socket() {
    let mut d = Daemon::start("");
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "ask", "id": "t", "text": "Write a long story about a dragon.", "max_tokens": 400}));
    loop {
        if c.recv()["type"] == "answer.delta" {
            break;
        }
    }
    let pid = d.child.id().to_string();
    let st = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(st.success());
    let events = c.recv_until(&["cancelled", "answer.end", "error"]);
    assert_eq!(events.last().expect("event")["type"], "cancelled");
    let status = d.child.wait().expect("wait");
    assert!(status.success(), "seerd exited with {status}");
    assert!(!d.socket.exists(), "socket file left behind");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let d = Daemon::start("");
    let config = d.dir.path().join("config.toml");
    let out = seerd(&config).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already serving") && err.contains("seer.sock"),
        "{err}"
    );
    // The first one still answers.
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    assert_eq!(c.recv()["type"], "status");
}

#[test]
fn config_errors_name_the_key_or_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |toml: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, toml).expect("write");
        let out = seerd(&p).output().expect("run");
        assert!(!out.status.success(), "{toml:?} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run("[model]\nbackedn = \"cpu\"\n");
    assert!(e.contains("backedn") && e.contains("c.toml"), "{e}");
    let e = run("[socket]\nmax_line_bytes = \"lots\"\n");
    assert!(e.contains("max_line_bytes"), "{e}");
    let e = run("[model]\npath = \"/nonexistent/model.gguf\"\n");
    assert!(
        e.contains("/nonexistent/model.gguf") && e.contains("model.path"),
        "{e}"
    );
    // --print-config works on an empty file.
    let p = dir.path().join("empty.toml");
    std::fs::write(&p, "").expect("write");
    let out = seerd(&p).arg("--print-config").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("max_line_bytes"));
}

#[test]
fn the_cli_says_when_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(bin("seer"))
        .arg("--socket")
        .arg(dir.path().join("none.sock"))
        .arg("status")
        .output()
        .expect("run seer");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seerd"));
}

/// The socket's directory (0700) and mode (0600) already keep other users
/// out; SO_PEERCRED is the second line. Open the file permissions up and
/// connect as `nobody`: the daemon must still refuse, with a reason.
#[test]
fn a_client_running_as_another_user_is_refused() {
    if !is_root() {
        eprintln!("needs root to switch to `nobody` (CI runs as root)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start("");
    let dir_mode = std::fs::metadata(d.socket.parent().expect("dir"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700, "socket directory mode");
    let sock_mode = std::fs::metadata(&d.socket)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(sock_mode & 0o777, 0o600, "socket mode");
    for p in [d.dir.path(), d.socket.parent().expect("dir")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("seer"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission_denied"), "{err}");
    // The owner is still served.
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    assert_eq!(c.recv()["type"], "status");
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn a_client_that_stops_reading_is_disconnected_without_slowing_others() {
    let d = Daemon::start("client_queue = 4\n");
    let mut slow = d.connect();
    // Tens of thousands of requests and never a read: the replies fill the
    // socket buffer, then this client's queue, and the daemon hangs up.
    let n = 30_000;
    let mut w = slow.writer();
    let flood = std::thread::spawn(move || {
        let line = b"{\"v\":1,\"type\":\"status\",\"id\":\"s\"}\n";
        for _ in 0..n {
            if std::io::Write::write_all(&mut w, line).is_err() {
                return;
            }
        }
    });
    // Meanwhile another client is answered as usual.
    let mut c = d.connect();
    c.send(ask("ok", "What is the capital of France?"));
    let (text, end) = answer(&mut c, "ok");
    assert_eq!(end["type"], "answer.end", "{end}");
    assert!(text.contains("Paris"), "{text}");
    flood.join().expect("flood thread");
    let got = slow.drain_to_eof();
    assert!(
        got < n,
        "the slow client received all {got} replies; it should have been cut off"
    );
}

#[test]
fn readiness_is_notified_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    // A socket file left behind by a crashed daemon.
    let socket = dir.path().join("run/seer.sock");
    std::fs::create_dir_all(socket.parent().expect("dir")).expect("mkdir");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\npath = {:?}\nbackend = \"cpu\"\n[socket]\npath = {:?}\n[dbus]\nbus = \"off\"\n",
            seer_tests::model(),
            socket
        ),
    )
    .expect("config");
    let mut child = seerd(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .expect("seerd");
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("READY datagram");
    assert_eq!(&buf[..n], b"READY=1");
    let mut c = Client::connect(&socket);
    c.send(json!({"v": 1, "type": "describe", "id": "d"}));
    let ev = c.recv();
    assert_eq!(ev["type"], "describe", "{ev}");
    assert_eq!(ev["protocol"], 1);
    assert!(
        ev["requests"]
            .as_array()
            .expect("list")
            .iter()
            .any(|r| r == "set"),
        "{ev}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn lazy_loading_reports_a_missing_model_to_the_asker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("run/seer.sock");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("[model]\npath = \"/nonexistent/m.gguf\"\nload = \"lazy\"\n[socket]\npath = {socket:?}\n[dbus]\nbus = \"off\"\n"),
    )
    .expect("config");
    let mut child = seerd(&config).spawn().expect("seerd");
    wait_for_socket(&socket);
    let mut c = Client::connect(&socket);
    c.send(ask("a", "hello"));
    let events = c.recv_until(&["answer.end", "error", "cancelled"]);
    let last = events.last().expect("event");
    assert_eq!(last["code"], "model_missing", "{last}");
    assert!(
        last["message"]
            .as_str()
            .unwrap_or("")
            .contains("/nonexistent/m.gguf"),
        "{last}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn cli_json_output_and_completions() {
    let d = Daemon::start("");
    let out = Command::new(bin("seer"))
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "ask",
            "--json",
            "--max-tokens",
            "8",
            "What is the capital of France?",
        ])
        .output()
        .expect("seer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(lines.iter().any(|e| e["type"] == "answer.delta"));
    assert_eq!(lines.last().expect("events")["type"], "answer.end");
    let out = Command::new(bin("seer"))
        .args(["completions", "bash"])
        .output()
        .expect("seer");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("seer"));
}

#[test]
fn chat_keeps_a_conversation_going() {
    use std::io::Write;
    let d = Daemon::start("");
    let mut child = Command::new(bin("seer"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("chat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("seer chat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"What is the capital of France?\n\nHow many legs does a spider have?\n")
        .expect("write");
    let out = child.wait_with_output().expect("chat output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(answers[0].contains("Paris"), "{text}");
    assert!(
        answers[1].contains('8') || answers[1].contains("eight"),
        "{text}"
    );
}

/// `socket.group`: members of that group are served too (here `nobody`,
/// whose primary group is `nogroup`), with a group-owned 0660 socket.
#[test]
fn a_member_of_the_configured_group_is_served() {
    if !is_root() {
        eprintln!("needs root to switch to `nobody` (CI runs as root)");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start("group = \"nogroup\"\n");
    let meta = std::fs::metadata(&d.socket).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534, "socket owned by nogroup");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("seer"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("status")
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\""));
}
