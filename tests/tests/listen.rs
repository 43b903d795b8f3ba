//! Push-to-talk through the real daemon: `listen.start` opens the
//! microphone (cpal → ALSA → a private PulseAudio null sink), espeak speech
//! is played into the sink, `listen.stop` ends the capture, and the socket
//! gets `state` listening → transcribing, `transcript.final` and the answer.

use seer_tests::sound::SoundServer;
use seer_tests::{Client, Daemon, test_model, word_errors};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn say(dir: &Path, text: &str) -> PathBuf {
    let wav = dir.join("q.wav");
    assert!(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "130", "-w"])
            .arg(&wav)
            .arg(text)
            .status()
            .expect("espeak-ng")
            .success()
    );
    wav
}

fn daemon(sound: &SoundServer) -> Daemon {
    Daemon::start_with_env(
        &format!(
            "[listen]\nmodel = {:?}\nvad = {:?}\n",
            test_model("ggml-base.bin"),
            test_model("ggml-silero-v6.2.3.bin")
        ),
        &[("PULSE_SERVER", sound.server().as_str())],
    )
}

/// Push-to-talk for `wav`: start, wait for audio, play, stop; the events.
fn push_to_talk(c: &mut Client, sound: &SoundServer, wav: &Path, id: &str) -> Vec<Value> {
    c.send(json!({"v": 1, "type": "listen.start", "id": id}));
    let first = c.recv_until(&["state", "error"]);
    let last = first.last().expect("event");
    assert_eq!(last["state"], "listening", "{first:?}");
    std::thread::sleep(Duration::from_millis(300));
    sound.play(wav);
    std::thread::sleep(Duration::from_millis(300));
    c.send(json!({"v": 1, "type": "listen.stop", "id": id}));
    let mut evs = first;
    evs.extend(c.recv_until(&["answer.end", "error", "cancelled"]));
    evs
}

/// The example is "What is the capital of France?", but whisper hears
/// this synthetic voice's "of France" as "and friends" whenever the window is
/// fitted to the utterance (only the full 30 s window gets it right; see
/// models/tests/speech.rs), so the spoken question here is Japan's.
#[test]
fn push_to_talk_transcribes_the_question_and_answers_it() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(&sound);
    let mut c = d.connect();
    let q = "What is the capital of Japan?";
    let evs = push_to_talk(&mut c, &sound, &say(dir.path(), q), "ptt1");
    let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
    let states: Vec<&str> = evs.iter().filter_map(|e| e["state"].as_str()).collect();
    assert!(
        states.starts_with(&["listening", "transcribing"]),
        "{evs:#?}"
    );
    let transcript = evs
        .iter()
        .find(|e| e["type"] == "transcript.final")
        .unwrap_or_else(|| panic!("no transcript: {kinds:?}"));
    let heard = transcript["text"].as_str().unwrap_or("");
    assert!(word_errors(heard, q) <= 1, "heard {heard:?}");
    let end = evs.last().expect("event");
    assert_eq!(end["type"], "answer.end", "{evs:#?}");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Tokyo"),
        "{end}"
    );
    assert!(evs.iter().all(|e| e["id"] == "ptt1"), "{evs:#?}");

    // A stop for nothing is a bad request; the connection goes on.
    c.send(json!({"v": 1, "type": "listen.stop", "id": "nope"}));
    assert_eq!(c.recv()["code"], "bad_request");
}

#[test]
fn a_missing_speech_model_is_named_and_the_daemon_keeps_serving() {
    let sound = SoundServer::start();
    let empty = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start_with_env(
        "[listen]\nmodel = \"whisper-small\"\n",
        &[
            ("PULSE_SERVER", sound.server().as_str()),
            ("SEER_MODELS_DIR", empty.path().to_str().expect("utf-8")),
        ],
    );
    let mut c = d.connect();
    c.send(json!({"v": 1, "type": "listen.start", "id": "l"}));
    let ev = c.recv();
    assert_eq!(ev["code"], "model_missing", "{ev}");
    assert!(
        ev["message"]
            .as_str()
            .unwrap_or("")
            .contains("seer models pull whisper-small"),
        "{ev}"
    );
    c.send(json!({"v": 1, "type": "status", "id": "s"}));
    assert_eq!(c.recv()["type"], "status");
}
