//! The GPU path (wgpu; Mesa lavapipe in CI): quantised GGUF weights kept
//! quantised on the device, and matrices larger than one device buffer.
//!
//! lavapipe is a correctness target here, not a speed one: its figures are in
//! `scripts/bench-llm.sh --backend wgpu`.

use burn::tensor::Device;
use seer_models::device::{self, BackendKind};
use seer_models::gguf::GgufFile;
use seer_models::llama::{KvCache, Llama, WeightFormat, load_gguf};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<Vec<u32>>,
    logits_quant: Vec<Vec<Vec<f32>>>,
    quant_gguf: String,
}

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tiny")
        .join(arch)
}

fn wgpu() -> Device {
    device::open(BackendKind::Wgpu)
        .expect("wgpu device (install mesa-vulkan-drivers)")
        .device
}

fn logits(model: &Llama, tokens: &[u32], cache: &mut KvCache) -> Vec<Vec<f32>> {
    let l = model.forward(tokens, cache, true).expect("forward");
    let [_, v] = l.dims();
    let flat = l.into_data().try_into_vec::<f32>().expect("f32 logits");
    flat.chunks(v).map(<[f32]>::to_vec).collect()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "positions");
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> u32 {
    (0..v.len())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]))
        .expect("logits") as u32
}

/// Greedy continuation of `prompt` by `n` tokens, one token per step.
fn greedy(model: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n);
    let mut last = model.forward(prompt, &mut cache, false).expect("prefill");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let v = last.into_data().try_into_vec::<f32>().expect("f32");
        let next = argmax(&v);
        out.push(next);
        last = model.forward(&[next], &mut cache, false).expect("decode");
    }
    out
}

/// The tiny Q4/Q8 fixtures with native weights on wgpu: the logits of
/// transformers run on the dequantised weights, by prefill and token by
/// token, and the CPU native path's greedy tokens.
#[test]
fn native_weights_on_wgpu_match_transformers_and_the_cpu() {
    let gpu = wgpu();
    for arch in ["llama", "qwen2"] {
        let d = fixture(arch);
        let r: Reference = serde_json::from_str(
            &std::fs::read_to_string(d.join("reference.json")).expect("reference.json"),
        )
        .expect("reference parses");
        let g = GgufFile::open(d.join(&r.quant_gguf)).expect("quant gguf");
        let on_gpu = load_gguf(&g, &gpu, WeightFormat::Native).expect("native loads on wgpu");
        let on_cpu = load_gguf(&g, &Device::flex(), WeightFormat::Native).expect("native on cpu");
        for (p, prompt) in r.prompts.iter().enumerate() {
            let full = logits(&on_gpu, prompt, &mut on_gpu.new_cache(64));
            // Both paths quantise activations to 8 bits as ggml does, so
            // both sit as far from transformers' f32 logits as the CPU
            // native path's own bar (0.35 in parity.rs)...
            let err = max_abs_diff(&full, &r.logits_quant[p]);
            eprintln!("{arch} wgpu native vs transformers, prompt {p}: max abs logit error {err}");
            assert!(err <= 0.35, "{arch} wgpu native prompt {p}: {err}");
            // ...and close to each other: the same integers and scales,
            // multiplied in f32 on the GPU and as integer sums on the CPU.
            let cpu = logits(&on_cpu, prompt, &mut on_cpu.new_cache(64));
            let err = max_abs_diff(&full, &cpu);
            eprintln!("{arch} wgpu native vs cpu native, prompt {p}: max abs logit error {err}");
            assert!(err <= 2e-3, "{arch} wgpu vs cpu native prompt {p}: {err}");

            // Token by token after a 3-token prefill: the preallocated cache
            // written in place gives the same logits as one prefill.
            let split = prompt.len().min(3);
            let mut cache = on_gpu.new_cache(64);
            let mut steps = logits(&on_gpu, &prompt[..split], &mut cache);
            for &t in &prompt[split..] {
                steps.extend(logits(&on_gpu, &[t], &mut cache));
            }
            let err = max_abs_diff(&steps, &full);
            assert!(err <= 1e-3, "{arch} wgpu incremental prompt {p}: {err}");

            assert_eq!(
                greedy(&on_gpu, prompt, 12),
                greedy(&on_cpu, prompt, 12),
                "{arch} prompt {p}: wgpu and CPU native greedy tokens"
            );
        }
    }
}

/// A GGUF writer for the one generated model below.
mod write {
    pub(crate) enum Kv {
        U32(u32),
        F32(f32),
        Str(&'static str),
    }

    pub(crate) struct Tensor {
        pub(crate) name: &'static str,
        /// ggml order: the row length first.
        pub(crate) dims: Vec<u64>,
        pub(crate) type_id: u32,
        pub(crate) data: Vec<u8>,
    }

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn gguf(kvs: &[(&str, Kv)], tensors: &[Tensor]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            string(&mut b, k);
            match v {
                Kv::U32(x) => {
                    b.extend_from_slice(&4u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                Kv::F32(x) => {
                    b.extend_from_slice(&6u32.to_le_bytes());
                    b.extend_from_slice(&x.to_le_bytes());
                }
                Kv::Str(s) => {
                    b.extend_from_slice(&8u32.to_le_bytes());
                    string(&mut b, s);
                }
            }
        }
        let align = |n: usize| n.div_ceil(32) * 32;
        let mut offset = 0usize;
        for t in tensors {
            string(&mut b, t.name);
            b.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.type_id.to_le_bytes());
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = align(offset + t.data.len());
        }
        b.resize(align(b.len()), 0);
        for t in tensors {
            b.extend_from_slice(&t.data);
            b.resize(align(b.len()), 0);
        }
        b
    }
}

/// Random Q8_0 blocks for `n` values: scale `scale`, values from `next`.
fn q8_0(n: usize, scale: f32, next: &mut impl FnMut() -> u32) -> Vec<u8> {
    let d = half::f16::from_f32(scale).to_le_bytes();
    let mut out = Vec::with_capacity(n / 32 * 34);
    for _ in 0..n / 32 {
        out.extend_from_slice(&d);
        out.extend((0..32).map(|_| (next() >> 24) as u8));
    }
    out
}

/// A one-layer Llama with Qwen2.5's vocabulary width (151,936 tokens) and
/// a 512-wide embedding: the tied f32 table is 311 MB, over lavapipe's
/// 128 MiB per buffer; the Q8_0 one is 83 MB, over the 64 MiB pieces Seer
/// cuts (half the limit), so both formats are split.
fn wide_vocab_model(path: &Path) {
    use write::{Kv, Tensor};
    let (vocab, hid, ffn, heads, kv_heads) = (151_936u64, 512u64, 256u64, 8u64, 2u64);
    let hd = hid / heads;
    let mut seed = 0x2545_f491_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let ones = |n: u64| -> Vec<u8> { (0..n).flat_map(|_| 1f32.to_le_bytes()).collect() };
    let mut q = |name: &'static str, cols: u64, rows: u64, scale: f32| Tensor {
        name,
        dims: vec![cols, rows],
        type_id: 8, // Q8_0
        data: q8_0((cols * rows) as usize, scale, &mut next),
    };
    let tensors = vec![
        q("token_embd.weight", hid, vocab, 0.01),
        q("blk.0.attn_q.weight", hid, heads * hd, 0.002),
        q("blk.0.attn_k.weight", hid, kv_heads * hd, 0.002),
        q("blk.0.attn_v.weight", hid, kv_heads * hd, 0.002),
        q("blk.0.attn_output.weight", heads * hd, hid, 0.002),
        q("blk.0.ffn_gate.weight", hid, ffn, 0.002),
        q("blk.0.ffn_up.weight", hid, ffn, 0.002),
        q("blk.0.ffn_down.weight", ffn, hid, 0.002),
        Tensor {
            name: "blk.0.attn_norm.weight",
            dims: vec![hid],
            type_id: 0,
            data: ones(hid),
        },
        Tensor {
            name: "blk.0.ffn_norm.weight",
            dims: vec![hid],
            type_id: 0,
            data: ones(hid),
        },
        Tensor {
            name: "output_norm.weight",
            dims: vec![hid],
            type_id: 0,
            data: ones(hid),
        },
    ];
    let kvs = [
        ("general.architecture", Kv::Str("llama")),
        ("llama.block_count", Kv::U32(1)),
        ("llama.context_length", Kv::U32(256)),
        ("llama.embedding_length", Kv::U32(hid as u32)),
        ("llama.feed_forward_length", Kv::U32(ffn as u32)),
        ("llama.attention.head_count", Kv::U32(heads as u32)),
        ("llama.attention.head_count_kv", Kv::U32(kv_heads as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5)),
    ];
    std::fs::write(path, write::gguf(&kvs, &tensors)).expect("write the wide-vocabulary GGUF");
}

/// A model whose embedding and output head exceed one lavapipe buffer loads
/// on wgpu in both formats (the tables cut into pieces) and computes what
/// the CPU computes: token lookups from every piece, logits from every piece.
#[test]
fn a_vocabulary_larger_than_one_gpu_buffer_loads_and_matches_the_cpu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wide-vocab-q8_0.gguf");
    wide_vocab_model(&path);
    let g = GgufFile::open(&path).expect("generated gguf opens");
    let gpu = wgpu();
    let limit = device::max_tensor_bytes(&gpu).expect("wgpu reports a buffer limit");
    eprintln!("largest tensor on this adapter: {} MiB", limit >> 20);

    // Ids spread over the whole table, so every piece is looked up, in an
    // order that is not sorted by piece.
    let prompt = [151_900u32, 7, 90_000, 42, 151_935, 30_000, 120_000, 1];
    let cpu = load_gguf(&g, &Device::flex(), WeightFormat::F32).expect("f32 on cpu");
    let want = logits(&cpu, &prompt, &mut cpu.new_cache(64));

    let dense = load_gguf(&g, &gpu, WeightFormat::F32).expect("f32 (311 MB) loads on wgpu");
    let got = logits(&dense, &prompt, &mut dense.new_cache(64));
    let err = max_abs_diff(&got, &want);
    eprintln!("wide vocabulary, wgpu f32 pieces vs cpu: max abs logit error {err}");
    assert!(err <= 1e-3, "wgpu f32 pieces: {err}");
    assert_eq!(greedy(&dense, &prompt, 4), greedy(&cpu, &prompt, 4));
    drop(dense);

    let native = load_gguf(&g, &gpu, WeightFormat::Native).expect("Q8_0 (83 MB) loads on wgpu");
    let got = logits(&native, &prompt, &mut native.new_cache(64));
    drop(native);
    let cpu = load_gguf(&g, &Device::flex(), WeightFormat::Native).expect("native on cpu");
    let want = logits(&cpu, &prompt, &mut cpu.new_cache(64));
    let err = max_abs_diff(&got, &want);
    eprintln!("wide vocabulary, wgpu native pieces vs cpu native: max abs logit error {err}");
    // The same 8-bit products, but an activation whose f32 value differs in
    // its last bit between the two paths can round to the neighbouring
    // 8-bit step, moving a logit by about d_x·w (a few hundredths here,
    // where logits spread over about ±50); an order above that fails.
    assert!(err <= 0.1, "wgpu native pieces: {err}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(argmax(g), argmax(w), "wgpu native pieces: top token");
    }
}
