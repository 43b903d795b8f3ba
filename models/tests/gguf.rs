//! GGUF reader and dequantisation against the Python `gguf` package's
//! reference (fixtures written by `tests/fixtures/gen_quant.py`), plus
//! malformed files that must be clear errors, never panics.

use seer_models::ModelError;
use seer_models::gguf::{GgmlType, GgufFile, Value};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn reads_every_metadata_type() {
    let g = GgufFile::open(fixture("quant.gguf")).expect("fixture opens");
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 64);
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("{k} missing")).clone();
    assert_eq!(get("test.u8"), Value::U8(200));
    assert_eq!(get("test.i8"), Value::I8(-100));
    assert_eq!(get("test.u16"), Value::U16(60000));
    assert_eq!(get("test.i16"), Value::I16(-30000));
    assert_eq!(get("test.u32"), Value::U32(4_000_000_000));
    assert_eq!(get("test.i32"), Value::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), Value::F32(1.5));
    assert_eq!(get("test.bool"), Value::Bool(true));
    assert_eq!(get("test.string"), Value::String("héllo wörld ✓".into()));
    assert_eq!(get("test.u64"), Value::U64(10_000_000_000_000));
    assert_eq!(get("test.i64"), Value::I64(-10_000_000_000_000));
    assert_eq!(get("test.f64"), Value::F64(2.25));
    assert_eq!(
        get("test.array_i32"),
        Value::Array(vec![Value::I32(1), Value::I32(-2), Value::I32(3)])
    );
    assert_eq!(
        get("test.array_str"),
        Value::Array(vec![
            Value::String("a".into()),
            Value::String("bc".into()),
            Value::String("".into())
        ])
    );
    assert_eq!(
        get("test.array_nested"),
        Value::Array(vec![
            Value::Array(vec![Value::I32(1), Value::I32(2)]),
            Value::Array(vec![Value::I32(3)]),
        ])
    );
}

#[test]
fn dequantizes_every_type_like_gguf_py() {
    let g = GgufFile::open(fixture("quant.gguf")).expect("fixture opens");
    let types = [
        ("f32", GgmlType::F32),
        ("f16", GgmlType::F16),
        ("bf16", GgmlType::Bf16),
        ("q4_0", GgmlType::Q4_0),
        ("q4_1", GgmlType::Q4_1),
        ("q5_0", GgmlType::Q5_0),
        ("q8_0", GgmlType::Q8_0),
        ("q4_k", GgmlType::Q4K),
        ("q5_k", GgmlType::Q5K),
        ("q6_k", GgmlType::Q6K),
    ];
    for (name, ty) in types {
        let info = g
            .tensor(name)
            .unwrap_or_else(|| panic!("tensor {name} missing"));
        assert_eq!(info.ty, ty, "{name}");
        assert_eq!(info.shape(), vec![4, 256], "{name}");
        assert_eq!(info.offset % 64, 0, "{name} is aligned");
        let got = g.dequantize(name).expect("dequantizes");
        let reference = if name == "f32" {
            got.clone()
        } else {
            g.dequantize(&format!("{name}.ref")).expect("reference")
        };
        assert_eq!(got.len(), 1024);
        for (i, (a, b)) in got.iter().zip(&reference).enumerate() {
            assert!(a.is_finite(), "{name}[{i}] = {a}");
            // gguf-py computes in f32 with the same operation order.
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}[{i}]: {a} vs reference {b}"
            );
        }
    }
}

#[test]
fn alignment_padding_between_tensors() {
    let g = GgufFile::open(fixture("quant_odd.gguf")).expect("fixture opens");
    assert_eq!(g.alignment(), 32);
    let odd = g.dequantize("odd").expect("odd");
    let want: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
    assert_eq!(odd, want);
    assert_eq!(g.tensor("odd").map(|t| t.shape()), Some(vec![3, 5]));
    assert_eq!(g.dequantize("after").expect("after"), vec![7.0, 8.0]);
}

/// Writes a minimal GGUF: one f32 tensor `t` of `n` values, with the given
/// version and tensor type id.
fn tiny_gguf(version: u32, type_id: u32, n: u64, data_offset: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // kv
    let key = b"general.name";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&8u32.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(b"tiny");
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(b"t");
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&n.to_le_bytes());
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&data_offset.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    for i in 0..n {
        b.extend_from_slice(&(i as f32).to_le_bytes());
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

fn gguf_error(path: &Path) -> String {
    match GgufFile::open(path) {
        Ok(_) => panic!("{} should not open", path.display()),
        Err(e @ ModelError::Gguf { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

#[test]
fn version_2_and_3_read_alike() {
    let dir = tempfile::tempdir().expect("tempdir");
    for v in [2, 3] {
        let p = write(dir.path(), &format!("v{v}.gguf"), &tiny_gguf(v, 0, 4, 0));
        let g = GgufFile::open(&p).expect("opens");
        assert_eq!(g.version(), v);
        assert_eq!(g.get("general.name"), Some(&Value::String("tiny".into())));
        assert_eq!(g.dequantize("t").expect("reads"), vec![0.0, 1.0, 2.0, 3.0]);
    }
}

#[test]
fn malformed_files_are_named_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = tiny_gguf(3, 0, 8, 0);

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    let p = write(dir.path(), "magic.gguf", &bad_magic);
    let e = gguf_error(&p);
    assert!(e.contains("magic.gguf") && e.contains("bad magic"), "{e}");

    let p = write(dir.path(), "version.gguf", &tiny_gguf(7, 0, 8, 0));
    let e = gguf_error(&p);
    assert!(e.contains("unsupported GGUF version 7"), "{e}");

    let p = write(dir.path(), "type.gguf", &tiny_gguf(3, 99, 8, 0));
    let e = gguf_error(&p);
    assert!(
        e.contains("unknown tensor type id 99") && e.contains("`t`"),
        "{e}"
    );

    let p = write(dir.path(), "offset.gguf", &tiny_gguf(3, 0, 8, 1 << 40));
    let e = gguf_error(&p);
    assert!(e.contains("beyond the end of the file"), "{e}");

    let p = write(dir.path(), "unaligned.gguf", &tiny_gguf(3, 0, 8, 4));
    let e = gguf_error(&p);
    assert!(e.contains("not aligned"), "{e}");

    // Every truncation point: header, metadata, tensor infos, data.
    for cut in [0, 3, 7, 20, 30, 45, 60, 70, good.len() - 1] {
        let p = write(dir.path(), &format!("cut{cut}.gguf"), &good[..cut]);
        let e = gguf_error(&p);
        assert!(e.contains(&format!("cut{cut}.gguf")), "{e}");
        assert!(
            e.contains("truncated") || e.contains("beyond the end"),
            "cut at {cut}: {e}"
        );
    }

    let p = dir.path().join("missing.gguf");
    let e = GgufFile::open(&p).expect_err("missing file").to_string();
    assert!(e.contains("missing.gguf"), "{e}");
}

#[test]
fn unsupported_type_is_named_on_dequantize() {
    let dir = tempfile::tempdir().expect("tempdir");
    // IQ2_XXS (16): known to ggml, sized correctly, but not dequantised by Seer.
    let mut bytes = tiny_gguf(3, 16, 256, 0);
    bytes.resize(bytes.len() + 66, 0);
    let p = write(dir.path(), "iq.gguf", &bytes);
    let g = GgufFile::open(&p).expect("opens");
    let e = g.dequantize("t").expect_err("unsupported").to_string();
    assert!(e.contains("IQ2_XXS") && e.contains("iq.gguf"), "{e}");
}
