//! `seer transcribe FILE`: the real binary on WAV files espeak-ng speaks and
//! sox rearranges (22.05 kHz mono as espeak writes it, and 44.1 kHz
//! stereo), through platform's resampler, Silero VAD and whisper base.

use seer_tests::{bin, test_model, words};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const CAMERA: &str = "Please describe what you see in front of the camera.";

/// Two spoken sentences with 1.5 s of silence between them; returns the
/// file and where the second sentence starts (ms).
fn two_sentences(dir: &Path) -> (PathBuf, u64) {
    let a = dir.join("a.wav");
    let b = dir.join("b.wav");
    let gap = dir.join("gap.wav");
    let out = dir.join("two.wav");
    for (p, text) in [(&a, "What is the capital of France?"), (&b, CAMERA)] {
        run(Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "130", "-w"])
            .arg(p)
            .arg(text));
    }
    run(Command::new("sox")
        .args(["-n", "-r", "22050", "-c", "1", "-b", "16"])
        .arg(&gap)
        .args(["trim", "0", "1.5"]));
    run(Command::new("sox").arg(&a).arg(&gap).arg(&b).arg(&out));
    let secs = Command::new("soxi")
        .arg("-D")
        .arg(&a)
        .output()
        .expect("soxi");
    let a_ms = (String::from_utf8_lossy(&secs.stdout)
        .trim()
        .parse::<f64>()
        .expect("duration")
        * 1000.0) as u64;
    (out, a_ms + 1500)
}

fn transcribe(file: &Path, extra: &[&str]) -> Output {
    Command::new(bin("seer"))
        .arg("transcribe")
        .arg(file)
        .arg("--model")
        .arg(test_model("ggml-base.bin"))
        .arg("--vad")
        .arg(test_model("ggml-silero-v6.2.3.bin"))
        .args(extra)
        .output()
        .expect("seer transcribe")
}

fn lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn two_sentences_are_cut_apart_and_transcribed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (two, b_start) = two_sentences(dir.path());
    let stereo = dir.path().join("two-44k-stereo.wav");
    run(Command::new("sox")
        .arg(&two)
        .args(["-r", "44100", "-c", "2"])
        .arg(&stereo));
    for file in [&two, &stereo] {
        let got = lines(&transcribe(file, &["--json"]));
        assert_eq!(got.len(), 2, "{file:?}: {got:?}");
        // The first sentence is one this synthetic voice makes whisper
        // stumble on ("capital and friends"); its first words survive.
        assert!(
            words(got[0]["text"].as_str().unwrap_or("")).starts_with("what is the capital"),
            "{got:?}"
        );
        assert_eq!(
            words(got[1]["text"].as_str().unwrap_or("")),
            words(CAMERA),
            "{got:?}"
        );
        let start = got[1]["start_ms"].as_u64().expect("start");
        assert!(
            start.abs_diff(b_start) <= 500,
            "second sentence at {start} ms, put at {b_start} ms"
        );
        assert!(
            got[0]["end_ms"].as_u64() < got[1]["start_ms"].as_u64(),
            "{got:?}"
        );
    }
    // Without VAD the whole clip goes to whisper at once.
    let got = lines(&transcribe(&two, &["--json", "--vad", "none"]));
    assert!(
        words(got[0]["text"].as_str().unwrap_or("")).ends_with(&words(CAMERA)),
        "{got:?}"
    );
    // The plain output has timestamps.
    let o = transcribe(&two, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("→") && text.contains("camera"), "{text}");
}

#[test]
fn a_missing_model_or_a_bad_file_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (two, _) = two_sentences(dir.path());
    let o = Command::new(bin("seer"))
        .args(["transcribe"])
        .arg(&two)
        .args(["--model", "whisper-small"])
        .env("SEER_MODELS_DIR", dir.path().join("empty"))
        .env("XDG_CONFIG_HOME", dir.path().join("cfg"))
        .env_remove("SEER_CONFIG")
        .output()
        .expect("seer");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("seer models pull whisper-small"), "{err}");
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, "not audio").expect("write");
    let o = transcribe(&junk, &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.wav"), "{err}");
}
