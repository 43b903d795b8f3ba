//! Silero VAD (converted from the PyPI package's TorchScript weights by
//! `scripts/convert_silero_vad.py`) through `seer_models::vad`: speech placed
//! at known times is found there; noise is not speech.

use seer_models::vad::{Vad, VadOptions};
use seer_tests::test_model;
use std::process::Command;

const VAD: &str = "ggml-silero-v6.2.3.bin";
const RATE: usize = 16_000;

/// `text` spoken by espeak-ng, 16 kHz mono, with the silence around it cut
/// (so where the speech is, is known to the sample).
fn speech(text: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("raw.wav");
    let wav = dir.path().join("16k.wav");
    assert!(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "130", "-w"])
            .arg(&raw)
            .arg(text)
            .status()
            .expect("espeak-ng")
            .success()
    );
    assert!(
        Command::new("sox")
            .arg(&raw)
            .args(["-r", "16000", "-c", "1", "-b", "16"])
            .arg(&wav)
            .status()
            .expect("sox")
            .success()
    );
    let mut r = hound::WavReader::open(&wav).expect("wav");
    let s: Vec<f32> = r
        .samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect();
    let first = s.iter().position(|x| x.abs() > 0.01).expect("speech");
    let last = s.iter().rposition(|x| x.abs() > 0.01).expect("speech");
    s[first..=last].to_vec()
}

/// Deterministic white noise of amplitude `a`.
fn noise(n: usize, a: f32) -> Vec<f32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

#[test]
fn speech_is_found_where_it_was_put() {
    let mut vad = Vad::load(&test_model(VAD)).expect("load VAD");
    let a = speech("What is the capital of France?");
    let b = speech("Please describe what you see in front of the camera.");
    // 1 s quiet, a, 1.5 s quiet, b, 1 s quiet; the quiet is faint noise, as
    // from a real microphone.
    let mut audio = noise(RATE, 0.002);
    let a_start = audio.len();
    audio.extend(&a);
    let a_end = audio.len();
    audio.extend(noise(RATE * 3 / 2, 0.002));
    let b_start = audio.len();
    audio.extend(&b);
    let b_end = audio.len();
    audio.extend(noise(RATE, 0.002));
    let ms = |i: usize| (i * 1000 / RATE) as i64;
    let truth = [(ms(a_start), ms(a_end)), (ms(b_start), ms(b_end))];

    let segs = vad
        .segments(&audio, &VadOptions::default())
        .expect("segments");
    assert_eq!(segs.len(), 2, "expected {truth:?}, got {segs:?}");
    for (s, (start, end)) in segs.iter().zip(truth) {
        assert!(
            (s.start_ms as i64 - start).abs() <= 300 && (s.end_ms as i64 - end).abs() <= 300,
            "segment {s:?} is not within 0.3 s of {start}..{end} ms (all: {segs:?})"
        );
    }
    let probs = vad.probabilities(&audio).expect("probabilities");
    assert_eq!(
        probs.len(),
        audio.len().div_ceil(512),
        "one per 32 ms window"
    );
}

#[test]
fn noise_and_silence_are_not_speech() {
    let mut vad = Vad::load(&test_model(VAD)).expect("load VAD");
    for (what, audio) in [
        ("white noise", noise(5 * RATE, 0.3)),
        ("silence", vec![0.0; 5 * RATE]),
    ] {
        let segs = vad
            .segments(&audio, &VadOptions::default())
            .expect("segments");
        assert!(segs.is_empty(), "{what}: {segs:?}");
    }
    assert!(
        vad.segments(&[], &VadOptions::default())
            .expect("empty")
            .is_empty()
    );
}

#[test]
fn damaged_or_foreign_vad_files_are_refused() {
    let good = std::fs::read(test_model(VAD)).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut.bin");
    std::fs::write(&cut, &good[..good.len() - 1000]).expect("write");
    let e = Vad::load(&cut).expect_err("truncated").to_string();
    assert!(e.contains("cut.bin") && e.contains("truncated"), "{e}");
    let e = Vad::load(&test_model("ggml-tiny.en.bin"))
        .expect_err("a whisper model is not a VAD")
        .to_string();
    assert!(
        e.contains("not a Silero VAD") || e.contains("model type"),
        "{e}"
    );
}
