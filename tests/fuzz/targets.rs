//! Seer's fuzz targets, written once and run two ways: by
//! `tests/tests/fuzz.rs` in the test command (the committed corpus plus a
//! bounded number of seeded mutations) and by `fuzz/` under libFuzzer,
//! coverage-guided, on the nightly toolchain. Both include this file.
//!
//! Every target takes any bytes. The bar: it returns (an `Ok` or an error
//! naming what was wrong), never panics or aborts, and never allocates
//! beyond the cap the runner enforces. Readers that take a path get the
//! bytes through a scratch file, as a user's file would reach them.

use std::path::PathBuf;

/// Every target's name, as the corpus directories and `fuzz/` name them.
pub(crate) const TARGETS: &[&str] = &[
    "gguf",
    "safetensors",
    "hf_config",
    "protocol",
    "config",
    "image",
    "wav",
    "whisper_model",
    "piper_onnx",
    "piper_config",
    "http_chat",
];

/// A scratch file holding `data`, named for the target and process.
fn scratch(target: &str, ext: &str, data: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("seer-fuzz-{}-{target}.{ext}", std::process::id()));
    std::fs::write(&p, data).expect("writing the fuzz scratch file");
    p
}

/// Runs target `name` on `data`.
pub(crate) fn run(name: &str, data: &[u8]) {
    match name {
        "gguf" => {
            let p = scratch(name, "gguf", data);
            if let Ok(g) = seer_models::gguf::GgufFile::open(&p) {
                let _ = seer_models::llama::LlamaConfig::from_gguf(&g);
                let names: Vec<String> = g.tensors().iter().map(|t| t.name.clone()).collect();
                for t in names {
                    let _ = g.dequantize(&t);
                }
            }
        }
        "safetensors" => {
            let _ = seer_models::fuzz::safetensors(data);
        }
        "hf_config" => {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
                let _ = seer_models::llama::LlamaConfig::from_hf_value(&v, "config.json".as_ref());
            }
            let p = scratch(name, "json", data);
            let _ = seer_models::vision::VisionConfig::from_hf_json(&p);
        }
        "protocol" => {
            let _ = seer_daemon::protocol::parse(data);
        }
        "config" => {
            if let Ok(text) = std::str::from_utf8(data)
                && let Ok(c) = seer_daemon::config::Config::parse(text, "fuzz.toml".as_ref())
            {
                let _ = c.check(None);
                let _ = c.http.resolve(None);
                let _ = c.offload.resolve(None);
            }
        }
        "image" => {
            let _ = seer_platform::frames::decode(data, "fuzz", 4_000_000);
        }
        "wav" => {
            let p = scratch(name, "wav", data);
            let _ = seer_platform::audio::read_wav(&p);
        }
        "whisper_model" => {
            let p = scratch(name, "bin", data);
            let _ = seer_models::speech::check_ggml(&p);
        }
        "piper_onnx" => {
            let p = scratch(name, "onnx", data);
            if let Ok(m) = seer_models::piper::onnx::OnnxFile::open(&p) {
                let names: Vec<(String, Vec<usize>)> = m
                    .nodes()
                    .iter()
                    .flat_map(|n| n.inputs.iter())
                    .filter_map(|i| m.dims(i).map(|d| (i.clone(), d.to_vec())))
                    .collect();
                for (n, dims) in names {
                    let _ = m.floats(&n, &dims);
                }
            }
        }
        "piper_config" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = seer_models::piper::VoiceConfig::parse(text, "voice.onnx.json".as_ref());
            }
        }
        "http_chat" => {
            let _ = seer_daemon::http::parse_chat_request(data);
        }
        other => panic!("no fuzz target {other:?}"),
    }
}
