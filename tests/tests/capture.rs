//! The real capture path, with no sound card: a private PulseAudio null
//! sink is the default source, cpal records through ALSA's pulse plugin,
//! and `seer transcribe --mic` turns what `paplay` played into text.

use seer_tests::sound::SoundServer;
use seer_tests::{bin, test_model, word_errors, words};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const CAMERA: &str = "Please describe what you see in front of the camera.";

#[test]
fn speech_played_into_the_sound_server_is_captured_and_transcribed() {
    let sound = SoundServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("camera.wav");
    assert!(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "130", "-w"])
            .arg(&wav)
            .arg(CAMERA)
            .status()
            .expect("espeak-ng")
            .success()
    );

    // The device list shows the sound server's ALSA plugin.
    let out = Command::new(bin("seer"))
        .arg("devices")
        .env("PULSE_SERVER", sound.server())
        .output()
        .expect("seer devices");
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("PulseAudio"), "{listed}");
    // And the GPU adapters: lavapipe, its 128 MiB binding limit, and that
    // `auto` passes over a software adapter.
    assert!(listed.contains("llvmpipe"), "{listed}");
    assert!(listed.contains("max binding 128 MiB"), "{listed}");
    assert!(
        listed.contains("backend = \"auto\" runs on: cpu"),
        "{listed}"
    );

    let mut child = Command::new(bin("seer"))
        .args(["transcribe", "--mic", "--seconds", "7", "--json", "--model"])
        .arg(test_model("ggml-base.bin"))
        .arg("--vad")
        .arg(test_model("ggml-silero-v6.2.3.bin"))
        .env("PULSE_SERVER", sound.server())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("seer transcribe --mic");
    // Play only once audio flows: anything played before the first capture
    // callback is lost.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no audio from the microphone: {log:#?}"));
        let started = line.contains("recording");
        log.push(line);
        if started {
            break;
        }
    }
    // A moment of room tone first, as when someone starts speaking.
    std::thread::sleep(Duration::from_millis(400));
    sound.play(&wav);
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {log:#?}");
    let utterances: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(utterances.len(), 1, "{stdout}");
    // Where the capture starts relative to the speech varies from run to
    // run, and whisper's reading of this synthetic voice with it: seen here
    // were the exact sentence and "what you've seen", never worse.
    let text = utterances[0]["text"].as_str().unwrap_or("");
    assert!(
        word_errors(text, CAMERA) <= 1 && words(text).ends_with("in front of the camera"),
        "{stdout}; sound server log: {}",
        std::fs::read_to_string(sound.log()).unwrap_or_default()
    );
}
