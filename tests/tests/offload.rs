//! Offloading answers to a real llama.cpp server (`python -m
//! llama_cpp.server` from the pinned venv) on loopback, serving the same
//! SmolLM2 GGUF: what Seer streams must be what the server itself answers,
//! and a server that dies, freezes or comes back must never cost more than
//! one timeout, nor ever produce a half-remote, half-local answer.

use seer_daemon::config::AssistantConfig;
use seer_tests::peers::{LlamaServer, post};
use seer_tests::{Client, Daemon, model};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const QUESTION: &str = "What is the capital of France?";

fn offload(server: &LlamaServer, extra: &str) -> String {
    format!(
        "[offload]\nurl = {:?}\napi_key = {:?}\n{extra}\n",
        server.url, server.key
    )
}

/// Asks and returns the final event (`answer.end`, `error`, `cancelled`).
fn ask(c: &mut Client, id: &str, text: &str, max_tokens: usize) -> Value {
    c.send(json!({"v": 1, "type": "ask", "id": id, "text": text, "max_tokens": max_tokens}));
    let evs = c.recv_until_match(Duration::from_secs(180), |e| {
        e["id"] == id
            && ["answer.end", "error", "cancelled"].contains(&e["type"].as_str().unwrap_or(""))
    });
    evs.last().cloned().expect("a final event")
}

fn status(c: &mut Client) -> Value {
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    let evs = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "status");
    evs.last().cloned().expect("status")
}

#[test]
fn only_mode_answers_as_the_server_does_and_fails_cleanly_when_it_dies() {
    let mut server = LlamaServer::start(&model(), "offload-key-1");
    let d = Daemon::start(&offload(&server, "mode = \"only\"\n"));
    let mut c = d.connect();
    let end = ask(&mut c, "q1", QUESTION, 64);
    assert_eq!(end["type"], "answer.end", "{end}");
    assert_eq!(end["backend"], "remote", "{end}");
    let seer = end["text"].as_str().expect("text").trim().to_owned();
    assert!(seer.contains("Paris"), "{seer:?}");

    // The server's own greedy answer to the same conversation.
    let (code, direct) = post(
        &format!("{}/chat/completions", server.url),
        &server.key,
        &json!({
            "messages": [
                {"role": "system", "content": AssistantConfig::default().system_prompt},
                {"role": "user", "content": QUESTION},
            ],
            "max_tokens": 64, "temperature": 0,
        }),
    );
    assert_eq!(code, 200, "{direct}");
    let theirs = direct["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(
        seer,
        theirs.trim(),
        "Seer passes the server's answer through unchanged"
    );

    let s = status(&mut c);
    assert_eq!(s["offload"]["breaker"], "closed", "{s}");
    assert_eq!(s["offload"]["answered"], 1, "{s}");
    assert!(
        !s.to_string().contains("offload-key-1"),
        "the key never shows: {s}"
    );

    // Killed mid-answer: the turn fails, no local words are mixed in.
    c.send(
        json!({"v": 1, "type": "ask", "id": "long", "max_tokens": 400,
        "text": "Write a long story about a dragon who learns to fly."}),
    );
    c.recv_until_match(Duration::from_secs(120), |e| {
        e["id"] == "long" && e["type"] == "answer.delta"
    });
    server.kill();
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "long" && ["answer.end", "error"].contains(&e["type"].as_str().unwrap_or(""))
    });
    let end = evs.last().expect("end");
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!(end["code"], "offload_failed", "{end}");

    // Nothing to fall back to in `only` mode: a clear error, at once.
    let end = ask(&mut c, "q2", QUESTION, 32);
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!(end["code"], "offload_failed", "{end}");
    assert!(
        end["message"].as_str().unwrap_or("").contains(&server.url),
        "{end}"
    );
}

#[test]
fn prefer_mode_falls_back_before_the_first_word_and_the_breaker_skips_a_frozen_server() {
    let mut server = LlamaServer::start(&model(), "offload-key-2");
    let d = Daemon::start(&offload(
        &server,
        "mode = \"prefer\"\nfirst_token_timeout_s = 4\nbreaker_failures = 1\nprobe_interval_s = 0.5\n",
    ));
    let mut c = d.connect();
    let end = ask(&mut c, "r1", QUESTION, 32);
    assert_eq!(end["backend"], "remote", "{end}");

    // Frozen: the first-token timeout, then the local answer.
    server.freeze();
    let end = ask(&mut c, "r2", QUESTION, 32);
    assert_eq!(end["type"], "answer.end", "{end}");
    assert_eq!(end["backend"], "local", "{end}");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
    let s = status(&mut c);
    assert_eq!(s["offload"]["breaker"], "open", "{s}");
    assert!(
        s["offload"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("timeout"),
        "{s}"
    );

    // The breaker is open: the next turn does not wait for the timeout.
    let t0 = Instant::now();
    let end = ask(&mut c, "r3", QUESTION, 32);
    let took = t0.elapsed();
    assert_eq!(end["backend"], "local", "{end}");
    assert!(
        took < Duration::from_secs(4),
        "an open breaker must skip the frozen server, but the turn took {took:?}"
    );

    // Thawed: the probe closes the breaker, turns go remote again.
    server.thaw();
    wait_breaker(&mut c, "closed");
    let end = ask(&mut c, "r4", QUESTION, 32);
    assert_eq!(end["backend"], "remote", "{end}");

    // Dead before the first word: the local answer, whole.
    server.kill();
    let end = ask(&mut c, "r5", QUESTION, 32);
    assert_eq!(end["backend"], "local", "{end}");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );

    // Restarted on the same port: remote again.
    server.restart();
    wait_breaker(&mut c, "closed");
    let end = ask(&mut c, "r6", QUESTION, 32);
    assert_eq!(end["backend"], "remote", "{end}");
}

fn wait_breaker(c: &mut Client, want: &str) {
    let t0 = Instant::now();
    loop {
        let s = status(c);
        if s["offload"]["breaker"] == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the breaker never became {want}: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
