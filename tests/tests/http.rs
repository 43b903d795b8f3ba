//! Seer's OpenAI-compatible API, driven by the real `openai` Python package
//! (pinned, from the venv `scripts/llama-cpp-venv.sh` makes) and by raw
//! HTTP where a client library would hide what is sent.

use seer_tests::peers::{agent, free_port, get, openai_client, post};
use seer_tests::{Client, Daemon, bin};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KEY: &str = "seer-test-key";

fn http_daemon(extra: &str) -> (Daemon, String) {
    let port = free_port();
    let d = Daemon::start(&format!(
        "[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\napi_key = {KEY:?}\nallowed_origins = [\"http://good.example\"]\n{extra}"
    ));
    let base = format!("http://127.0.0.1:{port}");
    // The socket is up before the HTTP listener is served.
    let t0 = Instant::now();
    while get(&format!("{base}/health"), "").0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no /health");
        std::thread::sleep(Duration::from_millis(50));
    }
    (d, base)
}

fn status(c: &mut Client) -> Value {
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    let evs = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "status");
    evs.last().cloned().expect("status")
}

#[test]
fn the_openai_package_lists_models_and_gets_paris_streamed_and_whole() {
    let (d, base) = http_daemon("");
    let v1 = format!("{base}/v1");
    let out = openai_client(&v1, KEY, "basics", None);
    let models = out["models"].as_array().expect("models");
    assert!(
        models
            .iter()
            .any(|m| m.as_str().unwrap_or("").contains("SmolLM2")),
        "{out}"
    );
    assert!(
        out["whole"].as_str().unwrap_or("").contains("Paris"),
        "{out}"
    );
    assert_eq!(out["whole_finish"], "stop", "{out}");
    assert!(out["usage"].as_u64().unwrap_or(0) > 0, "{out}");
    assert!(
        out["streamed"].as_str().unwrap_or("").contains("Paris"),
        "{out}"
    );
    assert_eq!(out["stream_finish"], "stop", "{out}");
    assert!(
        out["chunks"].as_u64().unwrap_or(0) > 3,
        "streamed in pieces: {out}"
    );

    // Home Assistant's setup calls: a dummy tool, three tokens, both ways.
    let ha = openai_client(&v1, KEY, "home_assistant", None);
    assert_eq!(ha["finish"], "length", "{ha}");
    assert_eq!(ha["tool_calls"], Value::Null, "never a tool call: {ha}");
    assert_eq!(ha["completion_tokens"], 3, "{ha}");
    assert_eq!(ha["stream_finish"], "length", "{ha}");
    assert!(!ha["stream_text"].as_str().unwrap_or("").is_empty(), "{ha}");

    // A wrong key, no key: 401, and the server keeps serving.
    let out = openai_client(&v1, KEY, "wrong_key", None);
    assert_eq!(out["status"], 401, "{out}");
    let r = agent().get(&format!("{v1}/models")).call().expect("GET");
    assert_eq!(r.status(), 401);
    // HTTP turns go through the one service: the socket saw them finish.
    let mut c = d.connect();
    assert_eq!(status(&mut c)["pending"], 0);
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let (_d, base) = http_daemon("");
    let url = format!("{base}/v1/chat/completions");
    let (code, body) = post(&url, KEY, &json!({"messages": []}));
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], "messages", "{body}");
    let (code, body) = post(
        &url,
        KEY,
        &json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["param"], "temperature", "{body}");
    let (code, body) = post(
        &url,
        KEY,
        &json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.org/cat.jpg"}}]}]}),
    );
    assert_eq!(code, 400, "{body}");
    // No vision model here: a photo is `unsupported`, said as a 400.
    let (code, body) = post(
        &url,
        KEY,
        &json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]}),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = get(&format!("{base}/v1/nothing"), KEY);
    assert_eq!(code, 404, "{body}");

    // A browser page from an origin that is not allowed.
    let r = agent()
        .get(&format!("{base}/v1/models"))
        .header("Authorization", &format!("Bearer {KEY}"))
        .header("Origin", "http://evil.example")
        .call()
        .expect("GET");
    assert_eq!(r.status(), 403);
    let r = agent()
        .get(&format!("{base}/v1/models"))
        .header("Authorization", &format!("Bearer {KEY}"))
        .header("Origin", "http://good.example")
        .call()
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://good.example")
    );

    // A 100 MB body is refused without being read, and nothing is lost.
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let size = 100 << 20;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    );
    // Only the head: the refusal must come before any of the body is read.
    s.write_all(head.as_bytes()).expect("head");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 413"),
        "{}",
        &reply[..reply.len().min(300)]
    );

    let (code, body) = post(
        &url,
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
}

#[test]
fn a_client_leaving_mid_stream_cancels_its_turn() {
    let (d, base) = http_daemon("");
    let mut c = d.connect();
    let out = openai_client(&format!("{base}/v1"), KEY, "leave_mid_stream", None);
    assert!(!out["received"].as_str().unwrap_or("").is_empty(), "{out}");
    // Asked for 2000 tokens (the context holds 1024): at this machine's
    // speed that runs for many seconds unless the disconnect stopped it.
    let t0 = Instant::now();
    loop {
        let s = status(&mut c);
        if s["pending"] == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the turn kept running after its client left: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the daemon still answers.
    let (code, body) = post(
        &format!("{base}/v1/chat/completions"),
        KEY,
        &json!({"messages": [{"role": "user", "content": "What is the capital of France?"}], "stream": false}),
    );
    assert_eq!(code, 200, "{body}");
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn an_image_part_is_answered_by_the_vision_model() {
    let (_d, base) = http_daemon(&format!(
        "[vision]\nmodel = {:?}\n",
        fixtures().join("smolvlm-tiny/hf")
    ));
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smolvlm-tiny/reference.json")).expect("ref"),
    )
    .expect("json");
    let want = reference["cases"]["astronaut_portrait.untiled"]["greedy_text"]
        .as_str()
        .expect("greedy_text");
    let photo = fixtures().join("images/astronaut_portrait.jpg");
    let out = openai_client(&format!("{base}/v1"), KEY, "image", Some(&photo));
    assert_eq!(
        out["text"].as_str().map(str::trim),
        Some(want.trim()),
        "{out}"
    );
}

#[test]
fn unsafe_or_wrong_network_configs_refuse_to_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            "[http]\nenabled = true\nlisten = \"0.0.0.0:8931\"\n",
            "http.api_key",
        ),
        (
            "[offload]\nmode = \"prefer\"\nurl = \"ftp://example/v1\"\n",
            "offload.url",
        ),
    ];
    for (toml, key) in cases {
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!(
                "[model]\npath = {:?}\n[socket]\npath = {:?}\n{toml}",
                seer_tests::model(),
                dir.path().join("s.sock")
            ),
        )
        .expect("write");
        let out = std::process::Command::new(bin("seerd"))
            .arg("--config")
            .arg(&config)
            .env_remove("SEER_SOCKET")
            .output()
            .expect("run seerd");
        assert!(!out.status.success(), "{toml} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{toml}: {err}");
    }
}
