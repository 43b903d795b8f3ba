//! whisper.cpp through `seer_models::speech` on the converted test models
//! (`scripts/fetch-test-models.sh` converts them from CTranslate2), fed with
//! espeak-ng speech resampled to 16 kHz by sox.

use seer_models::speech::{TranscribeOptions, Transcriber, check_ggml};
use seer_tests::{test_model, word_errors, words};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `text` spoken by espeak-ng (American English voice, 130 words/min), as
/// 16 kHz mono samples.
fn speak(text: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("raw.wav");
    let wav = dir.path().join("16k.wav");
    let ok = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "130", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng (scripts/install-deps.sh installs it)");
    assert!(ok.success());
    let ok = Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&wav)
        .status()
        .expect("sox (scripts/install-deps.sh installs it)");
    assert!(ok.success());
    read_wav(&wav)
}

fn read_wav(p: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(p).expect("wav");
    assert_eq!(r.spec().sample_rate, 16_000);
    r.samples::<i16>()
        .map(|s| s.expect("sample") as f32 / 32768.0)
        .collect()
}

const FRANCE: &str = "What is the capital of France?";
const CAMERA: &str = "Please describe what you see in front of the camera.";

#[test]
fn base_transcribes_spoken_questions_exactly() {
    let mut t = Transcriber::load(&test_model("ggml-base.bin")).expect("load base");
    assert!(t.multilingual());
    let full = TranscribeOptions {
        fit_audio_ctx: false,
        ..TranscribeOptions::default()
    };
    for sentence in [FRANCE, CAMERA] {
        let audio = speak(sentence);
        let got = t.transcribe(&audio, &full).expect("transcribe");
        assert_eq!(got.audio_ctx, 1500);
        assert_eq!(words(&got.text), words(sentence), "{got:?}");
        // The window fitted to the utterance (the default) is many times
        // faster; on this synthetic voice it may slip on one short word
        // ("capital on France"), never more.
        let fitted = t
            .transcribe(&audio, &TranscribeOptions::default())
            .expect("transcribe, fitted window");
        eprintln!(
            "base: {:?} in {} ms (full window: {} ms) for {} ms of audio, RTF {:.2}, audio_ctx {}",
            fitted.text,
            fitted.elapsed_ms,
            got.elapsed_ms,
            fitted.audio_ms,
            fitted.rtf(),
            fitted.audio_ctx
        );
        assert!(
            fitted.audio_ctx < 400,
            "the window was not fitted: {fitted:?}"
        );
        assert!(word_errors(&fitted.text, sentence) <= 1, "{fitted:?}");
    }
    assert_eq!(word_errors("what is the capital on france", FRANCE), 1);
}

#[test]
fn tiny_en_loads_and_transcribes() {
    let mut t = Transcriber::load(&test_model("ggml-tiny.en.bin")).expect("load tiny.en");
    assert!(!t.multilingual());
    let audio = speak(CAMERA);
    let got = t
        .transcribe(&audio, &TranscribeOptions::default())
        .expect("transcribe");
    assert_eq!(words(&got.text), words(CAMERA), "{got:?}");
    // The full 30 s window gives the same words: fitting it loses nothing.
    let full = t
        .transcribe(
            &audio,
            &TranscribeOptions {
                fit_audio_ctx: false,
                timestamps: true,
                ..TranscribeOptions::default()
            },
        )
        .expect("transcribe, full window");
    assert_eq!(full.audio_ctx, 1500);
    assert_eq!(words(&full.text), words(CAMERA), "{full:?}");
    let last = full.segments.last().expect("segments");
    assert!(
        last.end_ms > 1000 && last.end_ms <= full.audio_ms + 500,
        "timestamps: {full:?}"
    );
    // An English-only model refuses another language by name.
    let e = t
        .transcribe(
            &audio,
            &TranscribeOptions {
                language: Some("de".into()),
                ..TranscribeOptions::default()
            },
        )
        .expect_err("German on tiny.en");
    assert!(e.to_string().contains("English-only"), "{e}");
    // Silence and a very short clip are not errors.
    let quiet = t
        .transcribe(&[0.0; 8000], &TranscribeOptions::default())
        .expect("half a second of silence");
    assert!(quiet.text.len() < 40, "{quiet:?}");
}

#[test]
fn damaged_or_foreign_model_files_are_refused_with_the_reason() {
    let good = test_model("ggml-tiny.en.bin");
    let info = check_ggml(&good).expect("a converted model checks out");
    assert_eq!(
        (info.n_vocab, info.n_audio_state, info.n_audio_layer),
        (51864, 384, 4)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut.bin");
    let bytes = std::fs::read(&good).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let e = Transcriber::load(&cut).expect_err("truncated").to_string();
    assert!(e.contains("cut.bin") && e.contains("truncated"), "{e}");
    let e = Transcriber::load(&test_model("SmolLM2-135M-Instruct.Q4_1.gguf"))
        .expect_err("a GGUF is not a whisper model")
        .to_string();
    assert!(e.contains("not a whisper.cpp ggml model"), "{e}");
    // libFuzzer's find: a tensor whose byte size is near u64::MAX once
    // wrapped a bounds check into "fits" (tests/fuzz/corpus/whisper_model/).
    let huge = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz/corpus/whisper_model/crash-size-overflow.bin");
    let e = check_ggml(&huge)
        .expect_err("a tensor bigger than the file")
        .to_string();
    assert!(e.contains("truncated") && e.contains("tensor data"), "{e}");
    let e = Transcriber::load(&dir.path().join("missing.bin"))
        .expect_err("missing")
        .to_string();
    assert!(e.contains("missing.bin"), "{e}");
}
