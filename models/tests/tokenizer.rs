//! Tokenizers built from GGUF metadata, against the reference tokenizers
//! (the SmolLM2 byte-level BPE is covered with the real model in
//! `smollm2.rs`).

use seer_models::gguf::GgufFile;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// SentencePiece (`tokenizer.ggml.model = "llama"`) vocabulary built from GGUF
/// metadata agrees with sentencepiece itself (fixture from `gen_spm.py`),
/// including byte fallback and leading spaces.
#[test]
fn sentencepiece_tokenizer_from_gguf_matches_sentencepiece() {
    use seer_models::tokenizer::TextTokenizer;

    #[derive(serde::Deserialize)]
    struct Case {
        text: String,
        ids: Vec<u32>,
        decoded: String,
    }
    #[derive(serde::Deserialize)]
    struct Reference {
        cases: Vec<Case>,
    }
    let g = GgufFile::open(fixture("spm/tokenizer.gguf")).expect("fixture opens");
    let tk = TextTokenizer::from_gguf(&g).expect("tokenizer builds");
    let text = std::fs::read_to_string(fixture("spm/reference.json")).expect("reference");
    let r: Reference = serde_json::from_str(&text).expect("reference parses");
    assert!(r.cases.len() >= 20);
    for c in &r.cases {
        assert_eq!(
            tk.encode(&c.text, false).expect("encode"),
            c.ids,
            "ids of {:?}",
            c.text
        );
        assert_eq!(
            tk.decode(&c.ids).expect("decode"),
            c.decoded,
            "decode of {:?}",
            c.text
        );
        let with_bos = tk.encode(&c.text, true).expect("encode");
        assert_eq!(
            with_bos.first(),
            Some(&1),
            "add_bos_token is true in the fixture"
        );
    }
}
