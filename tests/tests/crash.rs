//! `kill -9` of seerd in the middle of its work: during an answer and
//! during a push-to-talk capture, the next start finds the stale socket,
//! replaces it and serves (a model pull killed halfway is in
//! `tests/tests/models.rs`: it resumes).

use seer_tests::sound::SoundServer;
use seer_tests::{Client, Daemon, test_model};
use serde_json::json;
use std::time::Duration;

fn answers_paris(c: &mut Client, id: &str) {
    c.send(json!({"v": 1, "type": "ask", "id": id, "text": "What is the capital of France?", "max_tokens": 24}));
    let end = c
        .recv_until_match(Duration::from_secs(120), |e| {
            e["id"] == id && (e["type"] == "answer.end" || e["type"] == "error")
        })
        .pop()
        .expect("end");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
}

#[test]
fn killed_during_an_answer_or_a_capture_the_next_start_serves() {
    let sound = SoundServer::start();
    let mut d = Daemon::start_with_env(
        &format!(
            "[listen]\nmode = \"push-to-talk\"\nmodel = {:?}\nvad = {:?}\n",
            test_model("ggml-tiny.en.bin"),
            test_model("ggml-silero-v6.2.3.bin")
        ),
        &[("PULSE_SERVER", sound.server().as_str())],
    );
    // During an answer.
    let mut c = d.connect();
    c.send(
        json!({"v": 1, "type": "ask", "id": "long", "max_tokens": 400,
        "text": "Tell me a long story about a dragon."}),
    );
    c.recv_until_match(Duration::from_secs(120), |e| e["type"] == "answer.delta");
    d.kill_and_restart();
    let mut c = d.connect();
    answers_paris(&mut c, "after-answer");

    // During a capture (the microphone open).
    c.send(json!({"v": 1, "type": "listen.start", "id": "ptt"}));
    let ev = c
        .recv_until_match(Duration::from_secs(30), |e| e["id"] == "ptt")
        .pop()
        .expect("state");
    assert_eq!(ev["state"], "listening", "{ev}");
    d.kill_and_restart();
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    let st = c
        .recv_until_match(Duration::from_secs(10), |e| e["type"] == "status")
        .pop()
        .expect("status");
    assert_eq!(st["state"], "idle", "{st}");
    assert_eq!(
        st["microphone"], false,
        "push-to-talk opens it only on request: {st}"
    );
    answers_paris(&mut c, "after-capture");
}
