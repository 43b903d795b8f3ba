//! SmolVLM parity: Seer's processor, SigLIP tower, connector, merge and
//! decoder against transformers' outputs on the tiny random-weight fixture
//! (`tests/fixtures/smolvlm-tiny`, written by `scripts/gen_tiny_smolvlm.py`;
//! the math is in `docs/vision-fixtures.md`).
//!
//! Every case is checked from both published formats, the HF directory and
//! llama.cpp's GGUF pair, on the CPU backend with f32 weights.

use burn::prelude::*;
use safetensors::SafeTensors;
use seer_cancel::CancelToken;
use seer_models::device::BackendKind;
use seer_models::generate::{Engine, EngineOptions, Request, VlmFiles};
use seer_models::llama::WeightFormat;
use seer_models::vision::preprocess;
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smolvlm-tiny")
}

struct Reference {
    bytes: Vec<u8>,
    json: Value,
}

impl Reference {
    fn load() -> Self {
        let dir = fixture();
        let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference tensors");
        let json = serde_json::from_str(
            &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
        )
        .expect("reference.json is JSON");
        Self { bytes, json }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("reference.safetensors")
    }

    fn f32s(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = self.tensors();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v, t.shape().to_vec())
    }

    fn i64s(&self, name: &str) -> Vec<u32> {
        let st = self.tensors();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        t.data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u32)
            .collect()
    }

    fn rgb(&self, photo: &str) -> image::RgbImage {
        let st = self.tensors();
        let t = st.tensor(&format!("image.{photo}.rgb")).expect("photo");
        let s = t.shape();
        image::RgbImage::from_raw(s[1] as u32, s[0] as u32, t.data().to_vec()).expect("H×W×3")
    }

    fn case(&self, name: &str) -> &Value {
        &self.json["cases"][name]
    }
}

/// Max |a − b| relative to max |b|: one number that means the same for a
/// LayerNorm output of magnitude 3 and a logit of magnitude 36.
fn rel_err(what: &str, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    err / scale
}

fn vec2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}

fn vec3(t: Tensor<3>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}

fn engines() -> Vec<(&'static str, Engine)> {
    let opts = EngineOptions {
        backend: BackendKind::Cpu,
        context_length: 512,
        weights: Some(WeightFormat::F32),
    };
    let dir = fixture();
    let hf = Engine::load_vlm(&VlmFiles::HfDir(dir.join("hf")), &opts, false).expect("HF dir");
    let gguf = Engine::load_vlm(
        &VlmFiles::GgufPair {
            model: dir.join("gguf/model.gguf"),
            mmproj: dir.join("gguf/mmproj.gguf"),
        },
        &opts,
        false,
    )
    .expect("GGUF pair");
    vec![("hf", hf), ("gguf", gguf)]
}

const IMAGE_CASES: [(&str, &str, bool); 4] = [
    ("astronaut_portrait.untiled", "astronaut_portrait", false),
    ("astronaut_portrait.tiled", "astronaut_portrait", true),
    ("coffee_landscape.untiled", "coffee_landscape", false),
    ("coffee_landscape.tiled", "coffee_landscape", true),
];

#[test]
fn vision_tower_connector_and_merge_match_transformers() {
    let r = Reference::load();
    for (format, mut engine) in engines() {
        for (case, photo, tiled) in IMAGE_CASES {
            engine.set_tiling(tiled);
            let c = r.case(case);
            let vision = engine.vision().expect("a VLM");
            let prepared = vision.prepare(&r.rgb(photo));
            assert_eq!(
                prepared.rows as u64,
                c["rows"].as_u64().expect("rows"),
                "{case}"
            );
            assert_eq!(
                prepared.cols as u64,
                c["cols"].as_u64().expect("cols"),
                "{case}"
            );
            // The processor's pixels are exact (u8 through the formula).
            let st = r.tensors();
            let u8s = st.tensor(&format!("{case}.pixel_u8")).expect("pixel_u8");
            assert_eq!(
                prepared.pixels.len(),
                u8s.data().len(),
                "{case}: tile count"
            );
            for (i, (&p, &u)) in prepared.pixels.iter().zip(u8s.data()).enumerate() {
                let want = (((u as f64) * (1.0 / 255.0)) as f32 - 0.5) / 0.5;
                assert_eq!(p, want, "{case}: pixel {i}");
            }

            let tower = vision.tower();
            let hidden = tower.last_hidden_state(&prepared.pixels).expect("tower");
            let (want, shape) = r.f32s(&format!("{case}.vision.last_hidden_state"));
            assert_eq!(hidden.dims().to_vec(), shape, "{case}");
            let e_tower = rel_err(case, &vec3(hidden.clone()), &want);
            assert!(
                e_tower <= 1e-4,
                "{format} {case}: vision tower off by {e_tower:e} (relative)"
            );

            let features = tower.connect(hidden);
            let (want, _) = r.f32s(&format!("{case}.connector"));
            let e_conn = rel_err(case, &vec2(features.clone()), &want);
            assert!(
                e_conn <= 1e-4,
                "{format} {case}: connector off by {e_conn:e}"
            );
            // And in batches of tiles, as answers run it.
            let batched = vision.encode(&[&prepared]).expect("encode");
            let e = rel_err(case, &vec2(batched), &want);
            assert!(e <= 1e-4, "{format} {case}: batched encode off by {e:e}");

            let prompt = engine
                .image_prompt(
                    &[],
                    c["question"].as_str().expect("question"),
                    &r.rgb(photo),
                )
                .expect("image prompt");
            assert_eq!(
                prompt.ids,
                r.i64s(&format!("{case}.input_ids")),
                "{format} {case}: ids"
            );
            let (want, _) = r.f32s(&format!("{case}.inputs_embeds"));
            let e = rel_err(case, &vec2(prompt.embeds.clone()), &want);
            assert!(e <= 1e-4, "{format} {case}: inputs_embeds off by {e:e}");
            eprintln!(
                "{format} {case}: {} tiles, {} image tokens; relative error tower {e_tower:.1e}, connector {e_conn:.1e}, embeddings {e:.1e}",
                prompt.tiles, prompt.image_tokens
            );
        }
    }
}

#[test]
fn logits_and_greedy_tokens_match_transformers() {
    let r = Reference::load();
    for (format, mut engine) in engines() {
        for (case, photo, tiled) in IMAGE_CASES {
            engine.set_tiling(tiled);
            let c = r.case(case);
            let prompt = engine
                .image_prompt(
                    &[],
                    c["question"].as_str().expect("question"),
                    &r.rgb(photo),
                )
                .expect("image prompt");
            // Last-position logits: the full vector where stored, else the top 5.
            let model = engine.model();
            let mut cache = model.new_cache(512);
            let logits = vec2(
                model
                    .forward_embeds(prompt.embeds.clone(), &mut cache, false)
                    .expect("prefill"),
            );
            let name = format!("{case}.logits_last");
            if r.tensors().tensor(&name).is_ok() {
                let (want, _) = r.f32s(&name);
                let e = rel_err(case, &logits, &want);
                eprintln!("{format} {case}: logits relative error {e:.1e}");
                assert!(e <= 1e-4, "{format} {case}: logits off by {e:e}");
            }
            let top = &c["logits_last_top5"];
            for (id, v) in top["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .zip(top["values"].as_array().expect("values"))
            {
                let (id, v) = (
                    id.as_u64().expect("test fixture") as usize,
                    v.as_f64().expect("test fixture") as f32,
                );
                assert!(
                    (logits[id] - v).abs() <= 1e-4 * v.abs().max(1.0),
                    "{format} {case}: logit {id} is {} (transformers {v})",
                    logits[id]
                );
            }

            let want = r.i64s(&format!("{case}.greedy_ids"));
            let mut req = Request::with_image(prompt, want.len());
            req.ignore_eos = true;
            let out = engine
                .generate(req, CancelToken::new())
                .expect("generate")
                .finish()
                .expect("finish");
            assert_eq!(out.tokens, want, "{format} {case}: greedy tokens");
            assert_eq!(
                out.text,
                c["greedy_text"].as_str().expect("test fixture"),
                "{format} {case}: text"
            );
            assert!(out.timings.image_encode_ms > 0.0);
        }

        // No image: the same decoder answers a text prompt.
        let c = r.case("text");
        let ids = r.i64s("text.input_ids");
        let mut cache = engine.model().new_cache(512);
        let logits = vec2(
            engine
                .model()
                .forward(&ids, &mut cache, false)
                .expect("text"),
        );
        let (want, _) = r.f32s("text.logits_last");
        let e = rel_err("text", &logits, &want);
        assert!(e <= 1e-4, "{format} text: logits off by {e:e}");
        let mut req = Request::new(ids, 16);
        req.ignore_eos = true;
        let out = engine
            .generate(req, CancelToken::new())
            .expect("test fixture")
            .finish()
            .expect("test fixture");
        assert_eq!(
            out.tokens,
            r.i64s("text.greedy_ids"),
            "{format} text greedy"
        );
        assert_eq!(
            c["question"].as_str(),
            Some("What is the capital of France?")
        );
    }
}

#[test]
fn a_question_cannot_smuggle_an_image_placeholder() {
    let (_, engine) = engines().remove(0);
    let img = image::RgbImage::from_pixel(64, 48, image::Rgb([200, 10, 10]));
    let err = engine
        .image_prompt(&[], "what is <image> here?", &img)
        .expect_err("two placeholders for one image");
    assert!(err.to_string().contains("<image>"), "{err}");
    // A degenerate 1×1 image still makes a prompt.
    let tiny = image::RgbImage::from_pixel(1, 1, image::Rgb([0, 0, 0]));
    engine.image_prompt(&[], "what?", &tiny).expect("1×1 image");
}

#[test]
fn broken_vision_files_are_named() {
    let dir = tempfile::tempdir().expect("test fixture");
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).expect("test fixture");
    for f in std::fs::read_dir(fixture().join("hf")).expect("test fixture") {
        let f = f.expect("test fixture");
        std::fs::copy(f.path(), hf.join(f.file_name())).expect("test fixture");
    }
    let opts = EngineOptions {
        backend: BackendKind::Cpu,
        ..EngineOptions::default()
    };
    // processor_config.json disagreeing with the model.
    std::fs::write(hf.join("processor_config.json"), r#"{"image_seq_len": 64}"#)
        .expect("test fixture");
    let err = Engine::load_vlm(&VlmFiles::HfDir(hf.clone()), &opts, false)
        .expect_err("a broken model must not load");
    let msg = err.to_string();
    assert!(
        msg.contains("processor_config.json") && msg.contains("image_seq_len"),
        "{msg}"
    );
    std::fs::copy(
        fixture().join("hf/processor_config.json"),
        hf.join("processor_config.json"),
    )
    .expect("test fixture");

    // A text-only GGUF as the mmproj.
    let err = Engine::load_vlm(
        &VlmFiles::GgufPair {
            model: fixture().join("gguf/model.gguf"),
            mmproj: fixture().join("gguf/model.gguf"),
        },
        &opts,
        false,
    )
    .expect_err("a broken model must not load");
    assert!(err.to_string().contains("clip.projector_type"), "{err}");

    // A truncated safetensors file.
    let st = std::fs::read(hf.join("model.safetensors")).expect("test fixture");
    std::fs::write(hf.join("model.safetensors"), &st[..st.len() / 2]).expect("test fixture");
    let err = Engine::load_vlm(&VlmFiles::HfDir(hf.clone()), &opts, false)
        .expect_err("a broken model must not load");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let _ = preprocess::expand_image_prompt(0, 0, 4);
}

/// The same vision code on the wgpu backend (Mesa lavapipe in CI): the tower,
/// connector and merged embeddings within the same bar, and the greedy
/// tokens identical, for the tiled photo (7 tiles, batched 2 at a time).
#[test]
fn wgpu_matches_transformers() {
    let r = Reference::load();
    let opts = EngineOptions {
        backend: BackendKind::Wgpu,
        context_length: 512,
        weights: Some(WeightFormat::F32),
    };
    let engine = Engine::load_vlm(&VlmFiles::HfDir(fixture().join("hf")), &opts, true)
        .expect("loads on wgpu (install mesa-vulkan-drivers)");
    let case = "coffee_landscape.tiled";
    let c = r.case(case);
    let prompt = engine
        .image_prompt(
            &[],
            c["question"].as_str().expect("question"),
            &r.rgb("coffee_landscape"),
        )
        .expect("image prompt");
    assert_eq!(prompt.ids, r.i64s(&format!("{case}.input_ids")));
    let (want, _) = r.f32s(&format!("{case}.inputs_embeds"));
    let e = rel_err(case, &vec2(prompt.embeds.clone()), &want);
    eprintln!("wgpu {case}: embeddings relative error {e:.1e}");
    assert!(e <= 1e-4, "wgpu {case}: inputs_embeds off by {e:e}");
    let want = r.i64s(&format!("{case}.greedy_ids"));
    let mut req = Request::with_image(prompt, want.len());
    req.ignore_eos = true;
    let out = engine
        .generate(req, CancelToken::new())
        .expect("generate")
        .finish()
        .expect("finish");
    assert_eq!(out.tokens, want, "wgpu {case}: greedy tokens");
}
