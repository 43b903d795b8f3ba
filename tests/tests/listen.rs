//! Listening through the real daemon: cpal → ALSA → a private PulseAudio
//! null sink, into which espeak-ng speech is played.
//!
//! - Push-to-talk: `listen.start` opens the microphone, `listen.stop` ends
//!   the capture, and the socket gets `state` listening → transcribing,
//!   `transcript.final` and the answer.
//! - Hands-free: "Hey Seer, …" with no request at all is answered to
//!   `voice` subscribers; a follow-up needs no phrase; "Stop." cancels an
//!   answer; muting closes the microphone; a sound server that dies and
//!   comes back is survived.

use seer_daemon::protocol::{Activity, Code, Event, Received, Request};
use seer_tests::sound::SoundServer;
use seer_tests::{Client, Daemon, test_model, word_errors};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn say(dir: &Path, text: &str) -> PathBuf {
    say_as(dir, "en-us", text)
}

/// espeak-ng speech in `voice`, at the 130 words a minute.
fn say_as(dir: &Path, voice: &str, text: &str) -> PathBuf {
    let wav = dir.join(format!("{}.wav", text.len() + voice.len() * 1000));
    assert!(
        Command::new("espeak-ng")
            .args(["-v", voice, "-s", "130", "-w"])
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

/// Push-to-talk for `wav`: start, wait for audio, play, stop; the events,
/// typed (this is the flow every front end shares).
fn push_to_talk(c: &mut Client, sound: &SoundServer, wav: &Path, id: &str) -> Vec<Received> {
    c.request(&Request::ListenStart { id: id.into() });
    let first = c.events_until(|e| matches!(e, Event::State { .. } | Event::Error { .. }));
    let last = &first.last().expect("event").event;
    assert!(
        matches!(
            last,
            Event::State {
                state: Activity::Listening,
                ..
            }
        ),
        "{first:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    sound.play(wav);
    std::thread::sleep(Duration::from_millis(300));
    c.request(&Request::ListenStop { id: id.into() });
    let mut evs = first;
    evs.extend(c.events_until(|e| {
        matches!(
            e,
            Event::AnswerEnd { .. } | Event::Error { .. } | Event::Cancelled {}
        )
    }));
    evs
}

/// What was heard, and the answer's text.
fn heard_and_answer(evs: &[Received]) -> (String, String) {
    let heard = evs
        .iter()
        .find_map(|e| match &e.event {
            Event::TranscriptFinal(t) => Some(t.text.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no transcript: {evs:#?}"));
    let Some(Event::AnswerEnd { text, .. }) = evs.last().map(|e| &e.event) else {
        panic!("no answer: {evs:#?}")
    };
    (heard, text.clone())
}

/// Japan's question in the en-us voice, then France's in the default
/// English one: whisper hears the en-us voice's "of France" as "and
/// friends" whenever the window is fitted to the utterance (only the full
/// 30 s window gets it right; see models/tests/speech.rs).
#[test]
fn push_to_talk_transcribes_the_question_and_answers_it() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = daemon(&sound);
    let mut c = d.connect();
    let q = "What is the capital of Japan?";
    let evs = push_to_talk(&mut c, &sound, &say(dir.path(), q), "ptt1");
    let states: Vec<Activity> = evs
        .iter()
        .filter_map(|e| match e.event {
            Event::State { state, .. } => Some(state),
            _ => None,
        })
        .collect();
    assert!(
        states.starts_with(&[Activity::Listening, Activity::Transcribing]),
        "{evs:#?}"
    );
    let (heard, answer) = heard_and_answer(&evs);
    assert!(word_errors(&heard, q) <= 1, "heard {heard:?}");
    assert!(answer.contains("Tokyo"), "{answer:?}");
    assert!(
        evs.iter().all(|e| e.id.as_deref() == Some("ptt1")),
        "{evs:#?}"
    );

    // The issue's own question, in espeak's default English voice: whisper
    // hears "What is (the|a) capital on France?", which is still Paris.
    let q = "What is the capital of France?";
    let evs = push_to_talk(&mut c, &sound, &say_as(dir.path(), "en", q), "ptt2");
    let (heard, answer) = heard_and_answer(&evs);
    assert!(word_errors(&heard, q) <= 2, "heard {heard:?}");
    assert!(answer.contains("Paris"), "{answer:?}");

    // A stop for nothing is a bad request; the connection goes on.
    c.request(&Request::ListenStop { id: "nope".into() });
    let ev = c.event().event;
    assert!(
        matches!(
            ev,
            Event::Error {
                code: Code::BadRequest,
                ..
            }
        ),
        "{ev:?}"
    );
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

/// A daemon listening hands-free with whisper base.
fn hands_free(sound: &SoundServer, extra: &str) -> Daemon {
    Daemon::start_with_env(
        &format!(
            "[listen]\nmode = \"wake\"\nmodel = {:?}\nvad = {:?}\n{extra}",
            test_model("ggml-base.bin"),
            test_model("ggml-silero-v6.2.3.bin")
        ),
        &[("PULSE_SERVER", sound.server().as_str())],
    )
}

/// Subscribes `c` to voice events and waits until the microphone is
/// `active` (audio is flowing: speech played from now on is heard).
fn subscribe_voice(c: &mut Client) {
    c.send(json!({"v": 1, "type": "subscribe", "id": "sub", "events": ["voice"]}));
    assert_eq!(c.recv()["type"], "subscribed");
    wait_microphone(c, true);
}

/// Waits for the `microphone` event saying `active`; returns it.
fn wait_microphone(c: &mut Client, active: bool) -> Value {
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["type"] == "microphone" && e["active"] == active
    });
    evs.last().cloned().expect("event")
}

/// "Hey Seer, what is the capital of France?" with no request: the
/// transcript and the answer reach `voice` subscribers. Then a follow-up
/// without the phrase is answered, and "Stop." cancels a long answer.
///
/// espeak-ng's default English voice is used here: its "of France" comes
/// out of whisper as "on France" at every alignment tried (the en-us voice
/// sometimes gives "and friends"); SmolLM2 still answers Paris.
#[test]
fn hands_free_wake_phrase_follow_up_and_stop() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("dump");
    let d = hands_free(&sound, &format!("debug_audio_dir = {dump:?}\n"));
    let mut c = d.connect();
    subscribe_voice(&mut c);

    sound.play(&say_as(
        dir.path(),
        "en",
        "Hey Seer, what is the capital of France?",
    ));
    let evs = c.recv_until_match(Duration::from_secs(90), |e| {
        matches!(e["type"].as_str(), Some("answer.end" | "error"))
    });
    let t = evs
        .iter()
        .find(|e| e["type"] == "transcript.final")
        .unwrap_or_else(|| panic!("no transcript: {evs:#?}"));
    assert_eq!(t["wake"], true, "{t}");
    assert_eq!(t["source"], "hands_free", "{t}");
    // Whisper ran during the hangover, on exactly the audio that ended up
    // being the utterance.
    assert_eq!(t["timings"]["early"], true, "{t}");
    let question = t["question"].as_str().unwrap_or("");
    assert!(
        word_errors(question, "What is the capital of France?") <= 1,
        "heard {t}"
    );
    let id = t["id"].as_str().expect("turn id").to_owned();
    let end = evs.last().expect("event");
    assert_eq!(end["type"], "answer.end", "{evs:#?}");
    assert_eq!(end["id"], id.as_str());
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );
    // The whole prompt was run while the hangover timed the pause (the
    // early transcript read as a question): the turn ran only its last
    // token, which the engine always runs for its logits.
    let timings = &end["timings"];
    assert_eq!(
        timings["cached_tokens"].as_u64().map(|c| c + 1),
        timings["prompt_tokens"].as_u64(),
        "{end}"
    );
    // The debug option writes what was heard (and only with it set).
    let dumped = std::fs::read_dir(&dump)
        .map(|d| d.filter_map(Result::ok).count())
        .unwrap_or(0);
    assert!(dumped >= 1, "no utterance WAV in {}", dump.display());

    // Inside the follow-up window no phrase is needed.
    sound.play(&say(dir.path(), "What is the capital of Japan?"));
    let evs = c.recv_until_match(Duration::from_secs(90), |e| {
        matches!(e["type"].as_str(), Some("answer.end" | "error"))
    });
    let t = evs
        .iter()
        .find(|e| e["type"] == "transcript.final")
        .unwrap_or_else(|| panic!("no follow-up transcript: {evs:#?}"));
    assert_eq!(t["wake"], false, "{t}");
    assert_ne!(t["id"], id.as_str(), "a new turn");
    let end = evs.last().expect("event");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Tokyo"),
        "{end}"
    );
    assert!(
        end["timings"]["cached_tokens"].as_u64().unwrap_or(0) > 10,
        "the first exchange is reused: {end}"
    );

    // "Stop." said while an answer is being written cancels it.
    c.send(
        json!({"v": 1, "type": "ask", "id": "story", "max_tokens": 900,
                  "text": "Write a long story about a dragon and a knight."}),
    );
    c.recv_until_match(Duration::from_secs(60), |e| {
        e["type"] == "answer.delta" && e["id"] == "story"
    });
    sound.play(&say(dir.path(), "Stop."));
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "story" && matches!(e["type"].as_str(), Some("cancelled" | "answer.end"))
    });
    assert_eq!(evs.last().expect("event")["type"], "cancelled", "{evs:#?}");
    assert!(
        evs.iter()
            .any(|e| e["type"] == "voice.command" && e["command"] == "stop"),
        "{evs:#?}"
    );
}

/// Muted, the microphone is closed (the `microphone` event says so, and
/// D-Bus-free clients see it in `status`), and speech produces nothing;
/// unmuted, it opens again and speech is heard. Speech without the phrase
/// outside a follow-up window is not a question.
#[test]
fn muted_speech_is_not_heard_and_unmuting_listens_again() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = hands_free(&sound, "");
    let mut c = d.connect();
    subscribe_voice(&mut c);
    let question = say_as(dir.path(), "en", "Hey Seer, what is the capital of Japan?");

    c.send(json!({"v": 1, "type": "set", "id": "m", "muted": true}));
    let evs = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "set");
    assert_eq!(evs.last().expect("set")["muted"], true);
    wait_microphone(&mut c, false);
    c.send(json!({"v": 1, "type": "status", "id": "st"}));
    let st = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "status");
    let st = st.last().expect("status");
    assert_eq!(
        (st["muted"].clone(), st["microphone"].clone()),
        (json!(true), json!(false)),
        "{st}"
    );
    sound.play(&question);
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        if let Some(ev) = c.recv_timeout(Duration::from_millis(500)) {
            assert_ne!(ev["type"], "transcript.final", "heard while muted: {ev}");
        }
    }
    // Push-to-talk is refused while muted.
    c.send(json!({"v": 1, "type": "listen.start", "id": "ptt"}));
    let evs = c.recv_until_match(Duration::from_secs(10), |e| e["type"] == "error");
    assert_eq!(evs.last().expect("error")["code"], "device_unavailable");

    c.send(json!({"v": 1, "type": "set", "id": "u", "muted": false}));
    wait_microphone(&mut c, true);
    // Not addressed to the assistant: no transcript, no answer.
    sound.play(&say(dir.path(), "What is the capital of Japan?"));
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Some(ev) = c.recv_timeout(Duration::from_millis(500)) {
            assert_ne!(ev["type"], "transcript.final", "not addressed: {ev}");
        }
    }
    sound.play(&question);
    let evs = c.recv_until_match(Duration::from_secs(90), |e| {
        matches!(e["type"].as_str(), Some("answer.end" | "error"))
    });
    assert!(
        evs.iter()
            .any(|e| e["type"] == "transcript.final" && e["wake"] == true),
        "{evs:#?}"
    );
    let end = evs.last().expect("event");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Tokyo"),
        "{end}"
    );
}

/// The sound server dies: the daemon says the microphone is gone, keeps
/// answering typed questions, and hears speech again once the server is
/// back.
#[test]
fn a_vanished_sound_server_is_survived_and_capture_recovers() {
    let mut sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = hands_free(&sound, "");
    let mut c = d.connect();
    subscribe_voice(&mut c);

    sound.kill();
    let lost = wait_microphone(&mut c, false);
    assert!(lost["error"].is_string(), "the loss is explained: {lost}");
    c.send(json!({"v": 1, "type": "ask", "id": "typed", "text": "What is the capital of France?"}));
    let evs = c.recv_until_match(Duration::from_secs(60), |e| {
        e["id"] == "typed" && matches!(e["type"].as_str(), Some("answer.end" | "error"))
    });
    let end = evs.last().expect("event");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Paris"),
        "{end}"
    );

    sound.restart();
    wait_microphone(&mut c, true);
    sound.play(&say_as(
        dir.path(),
        "en",
        "Hey Seer, what is the capital of Japan?",
    ));
    let evs = c.recv_until_match(Duration::from_secs(90), |e| {
        matches!(e["type"].as_str(), Some("answer.end" | "error")) && e["id"] != "typed"
    });
    assert!(
        evs.iter().any(|e| e["type"] == "transcript.final"),
        "{evs:#?}"
    );
    let end = evs.last().expect("event");
    assert!(
        end["text"].as_str().unwrap_or("").contains("Tokyo"),
        "{end}"
    );
}

/// A spoken question about what is in view ("What is this thing in front
/// of me?"; `[vision] voice_camera =
/// "when-asked"`, the default) is answered by the vision model with the
/// camera's frame, and the camera turns on; a spoken question about
/// anything else goes to the language model and leaves the camera off.
#[test]
fn a_spoken_question_about_the_view_looks_through_the_camera() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let d = Daemon::start_with_env(
        &format!(
            "[listen]\nmode = \"push-to-talk\"\nmodel = {:?}\nvad = {:?}\n[vision]\nmodel = {:?}\ncamera = {:?}\nkeep_warm_seconds = 30\n",
            test_model("ggml-base.bin"),
            test_model("ggml-silero-v6.2.3.bin"),
            fixtures.join("smolvlm-tiny/hf"),
            fixtures.join("images/coffee_landscape.jpg"),
        ),
        &[("PULSE_SERVER", sound.server().as_str())],
    );
    let mut c = d.connect();
    let status = |c: &mut Client| {
        c.send(json!({"v": 1, "type": "status", "id": "s"}));
        let evs = c.recv_until(&["status"]);
        evs.last().expect("status")["camera"]["active"].clone()
    };

    let evs = push_to_talk(
        &mut c,
        &sound,
        &say(dir.path(), "What is the capital of Japan?"),
        "text",
    );
    let (_, answer) = heard_and_answer(&evs);
    assert!(answer.contains("Tokyo"), "{answer:?}");
    let Some(Event::AnswerEnd { timings, .. }) = evs.last().map(|e| &e.event) else {
        panic!("{evs:#?}")
    };
    assert_eq!(timings.image_encode_ms, 0.0, "{timings:?}");
    assert_eq!(status(&mut c), false, "a text question opened the camera");

    let evs = push_to_talk(
        &mut c,
        &sound,
        &say(dir.path(), "What is this thing in front of me?"),
        "look",
    );
    let (heard, _) = heard_and_answer(&evs);
    let Some(Event::AnswerEnd { timings, .. }) = evs.last().map(|e| &e.event) else {
        panic!("heard {heard:?}: {evs:#?}")
    };
    assert!(
        timings.image_encode_ms > 0.0,
        "heard {heard:?}, answered without the camera: {timings:?}"
    );
    assert_eq!(status(&mut c), true, "the camera is warm after a look");
}
