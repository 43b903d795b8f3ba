//! Parity with transformers on tiny random-weight Llama and Qwen2 models
//! (fixtures from `tests/fixtures/gen_tiny_models.py`): the same logits from
//! the HF checkpoint, the F32 GGUF and a quantised GGUF, by full prefill and by
//! token-at-a-time decoding, and the same greedy continuation.

use burn::tensor::Device;
use seer_cancel::CancelToken;
use seer_models::device::{BackendKind, OpenedDevice};
use seer_models::generate::{Engine, Request};
use seer_models::gguf::GgufFile;
use seer_models::llama::{KvCache, Llama, WeightFormat, load_gguf, load_hf};
use seer_models::tokenizer::TextTokenizer;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Vec<u32>>,
    logits_f32: Vec<Vec<Vec<f32>>>,
    logits_quant: Vec<Vec<Vec<f32>>>,
    greedy_f32: Vec<Vec<u32>>,
    greedy_quant: Vec<Vec<u32>>,
    quant_gguf: String,
}

fn dir(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(arch)
}

fn reference(arch: &str) -> Reference {
    let text = std::fs::read_to_string(dir(arch).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference parses")
}

fn cpu() -> Device {
    Device::flex()
}

fn logits(model: &Llama, tokens: &[u32]) -> Vec<Vec<f32>> {
    logits_in(model, tokens, &mut model.new_cache(128))
}

fn logits_in(model: &Llama, tokens: &[u32], cache: &mut KvCache) -> Vec<Vec<f32>> {
    let l = model.forward(tokens, cache, true).expect("forward");
    let [n, v] = l.dims();
    let flat = l.into_data().try_into_vec::<f32>().expect("f32 logits");
    assert_eq!(flat.len(), n * v);
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}

/// The model's own full-sequence logits, to check its incremental path against.
fn logits_of(model: &Llama, r: &Reference) -> Vec<Vec<Vec<f32>>> {
    r.prompts.iter().map(|p| logits(model, p)).collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "positions");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len(), "vocab");
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn check_logits(model: &Llama, r: &Reference, want: &[Vec<Vec<f32>>], tol: f32, what: &str) {
    for (p, prompt) in r.prompts.iter().enumerate() {
        let got = logits(model, prompt);
        let err = max_abs_diff(&got, &want[p]);
        assert!(
            err <= tol,
            "{what}, prompt {p}: max abs error {err} > {tol}"
        );
    }
}

/// Prefill a prefix, then feed the rest one token at a time: each step's
/// logits must equal the full-sequence logits at that position.
fn check_incremental(model: &Llama, r: &Reference, want: &[Vec<Vec<f32>>], tol: f32, what: &str) {
    let prompt = r.prompts.iter().max_by_key(|p| p.len()).expect("a prompt");
    let p = r.prompts.iter().position(|x| x == prompt).expect("index");
    let split = 3;
    let mut cache = model.new_cache(128);
    let first = model
        .forward(&prompt[..split], &mut cache, false)
        .expect("prefill");
    let mut steps = vec![first];
    for &t in &prompt[split..] {
        steps.push(model.forward(&[t], &mut cache, false).expect("decode"));
    }
    for (k, l) in steps.into_iter().enumerate() {
        let pos = split - 1 + k;
        let got = l.into_data().try_into_vec::<f32>().expect("f32");
        let err = max_abs_diff(&[got], &[want[p][pos].clone()]);
        assert!(
            err <= tol,
            "{what}: incremental position {pos}: error {err} > {tol}"
        );
    }
    assert_eq!(cache.len(), prompt.len());
}

fn check_greedy(
    gguf_path: &Path,
    device: Device,
    kind: BackendKind,
    r: &Reference,
    want: &[Vec<u32>],
    what: &str,
) {
    let g = GgufFile::open(gguf_path).expect("gguf");
    let model = load_gguf(&g, &device, WeightFormat::F32).expect("load");
    let tok = TextTokenizer::from_gguf(&g).expect("tokenizer");
    let opened = OpenedDevice {
        device,
        kind,
        description: "test".into(),
    };
    let engine = Engine::from_parts(model, tok, opened, 128, Duration::ZERO);
    for (p, prompt) in r.prompts.iter().enumerate() {
        let mut req = Request::new(prompt.clone(), 8);
        req.ignore_eos = true;
        let out = engine
            .generate(req, CancelToken::new())
            .expect("start")
            .finish()
            .expect("generate");
        assert_eq!(
            out.tokens, want[p],
            "{what}: greedy continuation of prompt {p}"
        );
    }
}

fn parity(arch: &str) {
    let r = reference(arch);
    let d = dir(arch);
    let hf = load_hf(&d, &cpu()).expect("HF checkpoint loads");
    check_logits(&hf, &r, &r.logits_f32, 1e-4, &format!("{arch} safetensors"));

    let g = GgufFile::open(d.join("model-f32.gguf")).expect("f32 gguf");
    let m = load_gguf(&g, &cpu(), WeightFormat::F32).expect("f32 gguf loads");
    // GGUF stores eps as f32 and bakes Llama-3 scaling into `rope_freqs`.
    let normalise = |c: &seer_models::llama::LlamaConfig| {
        let mut c = c.clone();
        c.rms_norm_eps = c.rms_norm_eps as f32 as f64;
        c.rope_scaling = None;
        c
    };
    assert_eq!(
        normalise(m.config()),
        normalise(hf.config()),
        "GGUF metadata and config.json describe the same model"
    );
    check_logits(&m, &r, &r.logits_f32, 1e-4, &format!("{arch} f32 gguf"));
    check_incremental(&m, &r, &r.logits_f32, 1e-4, &format!("{arch} f32 gguf"));

    let gq = GgufFile::open(d.join(&r.quant_gguf)).expect("quant gguf");
    let q = load_gguf(&gq, &cpu(), WeightFormat::F32).expect("quant gguf loads");
    check_logits(
        &q,
        &r,
        &r.logits_quant,
        1e-4,
        &format!("{arch} {}", r.quant_gguf),
    );
    check_incremental(
        &q,
        &r,
        &r.logits_quant,
        1e-4,
        &format!("{arch} {}", r.quant_gguf),
    );

    // ggml's integer kernels quantise activations to 8 bits: close to the
    // f32 reference, not equal to it. Its incremental path must still agree
    // with its own full prefill.
    let native = load_gguf(&gq, &cpu(), WeightFormat::Native).expect("native quant loads");
    let err = worst_error(&native, &r, &r.logits_quant);
    eprintln!("{arch} native kernel vs f32 reference: max abs logit error {err}");
    // Logits here have a standard deviation near 2; 8-bit activations and
    // f16 attention cost about 1% of that.
    assert!(
        err < 0.35,
        "{arch} native kernel: max abs logit error {err}"
    );
    let own = logits_of(&native, &r);
    check_incremental(&native, &r, &own, 1e-4, &format!("{arch} native"));
    check_fused_against_graph(&native, &r, arch);

    check_greedy(
        &d.join("model-f32.gguf"),
        cpu(),
        BackendKind::Cpu,
        &r,
        &r.greedy_f32,
        &format!("{arch} f32"),
    );
    check_greedy(
        &d.join(&r.quant_gguf),
        cpu(),
        BackendKind::Cpu,
        &r,
        &r.greedy_quant,
        &format!("{arch} quant"),
    );
}

/// The fused CPU step (what the native weights run on the CPU) against the
/// burn graph over the same blocks: the same integer products and f16
/// rounding, so logits agree to float summation order, and a greedy
/// continuation token for token.
fn check_fused_against_graph(native: &Llama, r: &Reference, arch: &str) {
    assert!(
        native.is_fused(),
        "{arch}: native CPU weights run the fused step"
    );
    for (p, prompt) in r.prompts.iter().enumerate() {
        let fused = logits_in(native, prompt, &mut native.new_cache(128));
        let graph = logits_in(native, prompt, &mut native.new_reference_cache(128));
        let err = max_abs_diff(&fused, &graph);
        eprintln!("{arch} fused vs graph, prompt {p}: max abs logit error {err}");
        assert!(
            err <= 1e-4,
            "{arch} fused vs graph, prompt {p}: {err} > 1e-4"
        );
    }
    // Greedy decoding, 24 tokens, each path feeding its own choices.
    assert_eq!(
        greedy(native, native.new_cache(128), &r.prompts[0], 24),
        greedy(native, native.new_reference_cache(128), &r.prompts[0], 24),
        "{arch}: fused and graph greedy continuations"
    );
}

/// `steps` tokens after `prompt`, each the argmax of the last logits
/// (the first index on ties, as llama.cpp picks), fed back one at a time.
fn greedy(model: &Llama, mut cache: KvCache, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut last = model.forward(prompt, &mut cache, false).expect("prefill");
    let mut out = Vec::with_capacity(steps);
    while out.len() < steps {
        let v = last.into_data().try_into_vec::<f32>().expect("f32");
        let next = (0..v.len())
            .max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a)))
            .expect("logits") as u32;
        out.push(next);
        last = model.forward(&[next], &mut cache, false).expect("decode");
    }
    out
}

/// The largest logit error of `model` over every prompt of `r`.
fn worst_error(model: &Llama, r: &Reference, want: &[Vec<Vec<f32>>]) -> f32 {
    r.prompts
        .iter()
        .zip(want)
        .map(|(prompt, w)| max_abs_diff(&logits(model, prompt), w))
        .fold(0.0, f32::max)
}

/// llama.cpp's greedy tokens on `model-f16.gguf` (`gen_f16_gguf.py`).
#[derive(Deserialize)]
struct F16Reference {
    greedy: Vec<F16Greedy>,
}

#[derive(Deserialize)]
struct F16Greedy {
    prompt: Vec<u32>,
    generated: Vec<u32>,
}

/// f16 weights (what `convert_hf_to_gguf.py --outtype f16` writes) stay f16
/// on the CPU: the fused step runs them, close to transformers' f32 logits,
/// equal to the burn graph over the same weights, and picking llama.cpp's
/// greedy tokens on the same file.
fn f16_parity(arch: &str) {
    let r = reference(arch);
    let d = dir(arch);
    let g = GgufFile::open(d.join("model-f16.gguf")).expect("f16 gguf");
    let m = load_gguf(&g, &cpu(), WeightFormat::Native).expect("native f16 loads");
    let err = worst_error(&m, &r, &r.logits_f32);
    eprintln!("{arch} f16 weights vs f32 reference: max abs logit error {err}");
    // f16 keeps 11 significant bits of weights and activations: about 0.01
    // here, on logits whose standard deviation is near 2.
    assert!(err < 0.05, "{arch} f16: max abs logit error {err}");
    let own = logits_of(&m, &r);
    check_incremental(&m, &r, &own, 1e-4, &format!("{arch} f16"));
    check_fused_against_graph(&m, &r, &format!("{arch} f16"));

    let text = std::fs::read_to_string(d.join("reference-f16.json")).expect("reference-f16.json");
    let want: F16Reference = serde_json::from_str(&text).expect("reference-f16.json parses");
    for case in &want.greedy {
        let got = greedy(&m, m.new_cache(128), &case.prompt, case.generated.len());
        assert_eq!(
            got, case.generated,
            "{arch} f16: greedy tokens against llama.cpp for prompt {:?}",
            case.prompt
        );
    }
}

#[test]
fn llama_f16_matches_llama_cpp() {
    f16_parity("llama");
}

#[test]
fn qwen2_f16_matches_llama_cpp() {
    f16_parity("qwen2");
}

#[test]
fn llama_matches_transformers() {
    parity("llama");
}

#[test]
fn qwen2_matches_transformers() {
    parity("qwen2");
}

/// The same model code on the wgpu backend (Mesa lavapipe in CI).
#[test]
fn wgpu_matches_transformers() {
    let dev = seer_models::device::open(BackendKind::Wgpu)
        .expect("wgpu device (install mesa-vulkan-drivers)");
    for arch in ["llama", "qwen2"] {
        let r = reference(arch);
        let d = dir(arch);
        let g = GgufFile::open(d.join("model-f32.gguf")).expect("gguf");
        let m = load_gguf(&g, &dev.device, WeightFormat::F32).expect("loads on wgpu");
        check_logits(&m, &r, &r.logits_f32, 1e-3, &format!("{arch} wgpu"));
        check_incremental(&m, &r, &r.logits_f32, 1e-3, &format!("{arch} wgpu"));
    }
}
