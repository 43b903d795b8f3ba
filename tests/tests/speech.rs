//! Seer's voice through the real daemon: the Piper test voice on burn,
//! cpal → ALSA → a private PulseAudio null sink (`speaker`), recorded from
//! its monitor and transcribed by whisper base, as a listener would hear it.
//!
//! - A typed `ask {speak: true}` is heard saying "Paris"; `speech.end`
//!   comes after `answer.end`.
//! - A hands-free question (espeak-ng into the microphone's sink) is
//!   answered aloud.
//! - "Stop." said while Seer speaks a long text ends the speech
//!   (`cancelled`), and the loudspeaker goes quiet.
//! - No output device, a voice that does not load, speech turned off:
//!   errors name the cause, and text answers keep coming.

use seer_daemon::protocol::{AskRequest, Code, Event, Received, Request};
use seer_tests::sound::{Recorder, SoundServer};
use seer_tests::{Client, Daemon, bin, test_model};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn voice() -> std::path::PathBuf {
    test_model("piper/en_US-joe-medium.onnx")
}

fn speech_config(extra: &str) -> String {
    format!("[speech]\nvoice = {:?}\n{extra}", voice())
}

fn daemon(sound: &SoundServer, extra: &str) -> Daemon {
    Daemon::start_with_env(extra, &[("PULSE_SERVER", sound.server().as_str())])
}

/// Whisper base's transcript of a 16 kHz s16le recording (`seer transcribe`).
fn transcribe(raw: &Path) -> String {
    let wav = raw.with_extension("wav");
    let ok = Command::new("sox")
        .args([
            "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
        ])
        .arg(raw)
        .arg(&wav)
        .status()
        .expect("sox");
    assert!(ok.success());
    let out = Command::new(bin("seer"))
        .arg("transcribe")
        .arg(&wav)
        .arg("--model")
        .arg(test_model("ggml-base.bin"))
        .arg("--vad")
        .arg(test_model("ggml-silero-v6.2.3.bin"))
        .output()
        .expect("seer transcribe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

fn ask_spoken(c: &mut Client, id: &str, text: &str) -> Vec<Received> {
    c.request(&Request::Ask(AskRequest {
        speak: Some(true),
        ..AskRequest::new(id, text)
    }));
    c.events_until(|e| matches!(e, Event::SpeechEnd { .. }))
}

fn answer_text(evs: &[Received]) -> String {
    evs.iter()
        .find_map(|e| match &e.event {
            Event::AnswerEnd { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer: {evs:#?}"))
}

fn speech_end(evs: &[Received]) -> (String, Option<String>, f64) {
    match &evs.last().expect("events").event {
        Event::SpeechEnd {
            reason,
            message,
            audio_s,
        } => (reason.clone(), message.clone(), *audio_s),
        other => panic!("last event {other:?}, not speech.end: {evs:#?}"),
    }
}

/// Loudest sample.
fn peak(samples: &[f32]) -> f32 {
    samples.iter().fold(0.0f32, |m, s| m.max(s.abs()))
}

#[test]
fn a_spoken_answer_is_heard_saying_paris() {
    let sound = SoundServer::start();
    let d = daemon(&sound, &speech_config(""));
    let mut c = d.connect();
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = sound.record_speaker(&dir.path().join("answer.raw"));
    let evs = ask_spoken(&mut c, "q", "What is the capital of France?");
    assert!(evs.iter().all(|e| e.id.as_deref() == Some("q")), "{evs:#?}");
    let answer = answer_text(&evs);
    assert!(answer.contains("Paris"), "{answer}");
    let kinds: Vec<&str> = evs
        .iter()
        .filter_map(|e| match e.event {
            Event::SpeechStart { .. } => Some("speech.start"),
            Event::AnswerEnd { .. } => Some("answer.end"),
            Event::SpeechEnd { .. } => Some("speech.end"),
            _ => None,
        })
        .collect();
    // The first sentence may start playing before the answer is complete;
    // `speech.end` comes last either way.
    let mut sorted = kinds.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["answer.end", "speech.end", "speech.start"],
        "{evs:#?}"
    );
    assert_eq!(kinds.last(), Some(&"speech.end"), "{evs:#?}");
    let (reason, message, audio_s) = speech_end(&evs);
    assert_eq!(reason, "done", "{message:?}");
    assert!(audio_s > 0.5, "{audio_s} s");
    std::thread::sleep(Duration::from_millis(500));
    let heard = transcribe(&rec.stop());
    assert!(
        heard.contains("paris"),
        "whisper heard {heard:?} for {answer:?}"
    );
    // The connection goes on, and the id is free again.
    c.request(&Request::Ask(AskRequest::new("q", "Say hi.")));
    let evs = c.events_until(|e| e.is_final());
    assert!(
        matches!(evs.last().map(|e| &e.event), Some(Event::AnswerEnd { .. })),
        "{evs:#?}"
    );
}

fn espeak_wav(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let wav = dir.join(name);
    let ok = Command::new("espeak-ng")
        .args(["-s", "130", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng");
    assert!(ok.success());
    wav
}

fn hands_free(sound: &SoundServer) -> Daemon {
    daemon(
        sound,
        &format!(
            "[listen]\nmode = \"wake\"\nmodel = {:?}\nvad = {:?}\n{}",
            test_model("ggml-base.bin"),
            test_model("ggml-silero-v6.2.3.bin"),
            speech_config("")
        ),
    )
}

fn subscribe_voice(c: &mut Client) {
    c.send(serde_json::json!({"v": 1, "type": "subscribe", "id": "sub", "events": ["voice"]}));
    c.recv_until_match(Duration::from_secs(60), |e| {
        e["type"] == "microphone" && e["active"] == true
    });
}

#[test]
fn a_hands_free_question_is_answered_aloud() {
    let sound = SoundServer::start();
    let d = hands_free(&sound);
    let mut c = d.connect();
    subscribe_voice(&mut c);
    let dir = tempfile::tempdir().expect("tempdir");
    let q = espeak_wav(
        dir.path(),
        "q.wav",
        "Hey Seer, what is the capital of France?",
    );
    let rec = sound.record_speaker(&dir.path().join("answer.raw"));
    sound.play(&q);
    let evs = c.events_until(|e| matches!(e, Event::SpeechEnd { .. }));
    let last = evs.last().expect("events");
    assert_eq!(last.id.as_deref(), Some("voice-1"), "{evs:#?}");
    let (reason, message, _) = speech_end(&evs);
    assert_eq!(reason, "done", "{message:?}");
    let answer = answer_text(&evs);
    std::thread::sleep(Duration::from_millis(500));
    let heard = transcribe(&rec.stop());
    assert!(
        heard.contains("paris"),
        "whisper heard {heard:?} for {answer:?}"
    );
}

/// "Stop." while Seer reads a long text: the speech ends `cancelled`
/// (printed: how long after the end of "Stop."), well before the text was
/// through, and nothing more comes out of the loudspeaker.
#[test]
fn saying_stop_while_seer_speaks_silences_it() {
    let sound = SoundServer::start();
    let d = hands_free(&sound);
    let mut c = d.connect();
    subscribe_voice(&mut c);
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = espeak_wav(dir.path(), "stop.wav", "Stop.");
    let long = "The river runs past the old mill. Children play on the green bank. \
                A baker opens her shop at dawn. The bells ring over the square. \
                Fishermen mend their nets by the harbour. The train leaves at noon. \
                Clouds gather over the hills in the evening. Lamps are lit one by one.";
    let rec = sound.record_speaker(&dir.path().join("say.raw"));
    c.request(&Request::Say {
        id: "long".into(),
        text: long.into(),
    });
    c.events_until(|e| matches!(e, Event::SpeechStart { .. }));
    std::thread::sleep(Duration::from_secs(2));
    sound.play(&stop);
    let stop_played = Instant::now();
    let evs = c.events_until(|e| matches!(e, Event::SpeechEnd { .. }));
    let after_stop = stop_played.elapsed();
    let end = evs.last().expect("events");
    assert_eq!(end.id.as_deref(), Some("long"), "{evs:#?}");
    let (reason, _, audio_s) = speech_end(&evs);
    assert_eq!(reason, "cancelled", "{evs:#?}");
    eprintln!(
        "speech.end {} ms after \"Stop.\" was played; {audio_s} s spoken",
        after_stop.as_millis()
    );
    // The text is ~25 s of speech; it was cut short.
    assert!(audio_s < 20.0, "{audio_s} s were spoken");
    // Once the device's buffer has drained, the loudspeaker stays silent.
    std::thread::sleep(Duration::from_millis(400));
    let quiet_from = rec.samples_so_far();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<f32> = rec.samples(quiet_from);
    assert!(after.len() > 16_000, "{} samples recorded", after.len());
    assert!(
        peak(&after) < 0.01,
        "audio after speech.end: peak {}",
        peak(&after)
    );
    let _: Recorder = rec;
}

#[test]
fn no_output_device_ends_speech_with_an_error_and_text_answers_go_on() {
    let sound = SoundServer::start();
    let d = daemon(&sound, &speech_config("device = \"no-such-speaker\"\n"));
    let mut c = d.connect();
    let evs = ask_spoken(&mut c, "q", "What is the capital of France?");
    assert!(answer_text(&evs).contains("Paris"), "{evs:#?}");
    let (reason, message, _) = speech_end(&evs);
    assert_eq!(reason, "error");
    let message = message.expect("message");
    assert!(
        message.contains("no output device matching \"no-such-speaker\""),
        "{message}"
    );
    c.request(&Request::Ask(AskRequest::new(
        "t",
        "What is the capital of France?",
    )));
    let evs = c.events_until(|e| e.is_final());
    assert!(answer_text(&evs).contains("Paris"), "{evs:#?}");
}

#[test]
fn a_voice_that_does_not_load_is_named_and_text_answers_go_on() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("cut.onnx");
    let bytes = std::fs::read(voice()).expect("voice");
    std::fs::write(&bad, &bytes[..bytes.len() / 3]).expect("write");
    std::fs::copy(seer_models_config(&voice()), seer_models_config(&bad)).expect("copy json");
    let d = daemon(&sound, &format!("[speech]\nvoice = {bad:?}\n"));
    let mut c = d.connect();
    c.request(&Request::Say {
        id: "s".into(),
        text: "Hello there.".into(),
    });
    let evs = c.events_until(|e| matches!(e, Event::SpeechEnd { .. } | Event::Error { .. }));
    let (reason, message, _) = speech_end(&evs);
    assert_eq!(reason, "error");
    let message = message.expect("message");
    assert!(message.contains("cut.onnx"), "{message}");
    let evs = ask_spoken(&mut c, "q", "What is the capital of France?");
    assert!(answer_text(&evs).contains("Paris"), "{evs:#?}");
    assert_eq!(speech_end(&evs).0, "error");
}

/// `.onnx.json` beside an `.onnx`.
fn seer_models_config(onnx: &Path) -> std::path::PathBuf {
    let mut p = onnx.as_os_str().to_owned();
    p.push(".json");
    p.into()
}

#[test]
fn speech_switched_off_refuses_say_and_mute_does_not_silence_it() {
    let sound = SoundServer::start();
    let d = daemon(&sound, &speech_config(""));
    let mut c = d.connect();
    c.send(serde_json::json!({"v": 1, "type": "set", "id": "m", "muted": true}));
    let ev = c.recv();
    assert_eq!(
        (ev["muted"].as_bool(), ev["speech"].as_bool()),
        (Some(true), Some(true)),
        "{ev}"
    );
    // Muted: capture is off, speech is not.
    c.request(&Request::Say {
        id: "s".into(),
        text: "Muting stops the microphone, not my voice.".into(),
    });
    let evs = c.events_until(|e| matches!(e, Event::SpeechEnd { .. } | Event::Error { .. }));
    assert_eq!(speech_end(&evs).0, "done", "{evs:#?}");
    c.send(serde_json::json!({"v": 1, "type": "set", "id": "o", "speech": false}));
    assert_eq!(c.recv()["speech"], false);
    c.request(&Request::Say {
        id: "s2".into(),
        text: "Hello.".into(),
    });
    let evs = c.events_until(|e| e.is_final());
    match &evs.last().expect("event").event {
        Event::Error { code, message } => {
            assert_eq!(*code, Code::Unsupported);
            assert!(message.contains("speech is off"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A spoken ask still answers, in text, and says why it was not spoken.
    let evs = ask_spoken(&mut c, "q", "What is the capital of France?");
    assert!(answer_text(&evs).contains("Paris"), "{evs:#?}");
    let (reason, message, _) = speech_end(&evs);
    assert_eq!(reason, "error");
    assert!(message.is_some_and(|m| m.contains("speech is off")));
}
