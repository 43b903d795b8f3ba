//! Tokenizers and chat templates.
//!
//! [`TextTokenizer`] wraps a Hugging Face `tokenizers::Tokenizer`, built either
//! from a `tokenizer.json` or from GGUF metadata the way llama.cpp reads it:
//! `tokenizer.ggml.model = "gpt2"` is byte-level BPE with a pre-tokenizer
//! chosen by `tokenizer.ggml.pre`; `"llama"` is SentencePiece-style BPE with
//! byte fallback, its merges derived from the token scores. Control and
//! user-defined tokens become special added tokens so `<|im_start|>` in a
//! rendered chat prompt is one token, as in llama.cpp and transformers.
//!
//! [`ChatTemplate`] renders the model's own Jinja chat template with
//! `minijinja`, configured like transformers' `apply_chat_template`
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).

use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, Value};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// GPT-4/Llama-3 style split pattern (`tokenizer.ggml.pre = "llama-bpe"`).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern: as Llama 3 but single digits.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer plus the special-token facts generation needs.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    stop_ids: Vec<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

fn tk_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

/// Token names that end a turn in the chat formats Seer supports; llama.cpp
/// treats the same names as end-of-generation.
const END_OF_TURN_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<end_of_turn>",
    "</s>",
    // SmolVLM ends a turn with this, not with its tokenizer's eos.
    "<end_of_utterance>",
];

impl TextTokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.require_str("tokenizer.ggml.model")?;
        let tokens_v = g.require("tokenizer.ggml.tokens")?;
        let tokens: Vec<&str> = tokens_v
            .as_array()
            .ok_or_else(|| g.meta_err("tokenizer.ggml.tokens", "expected an array of strings"))?
            .iter()
            .map(|v| v.as_str())
            .collect::<Option<_>>()
            .ok_or_else(|| g.meta_err("tokenizer.ggml.tokens", "expected an array of strings"))?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| ((*t).to_owned(), i as u32))
            .collect();

        let mut tok = match model {
            "gpt2" => {
                let merges = string_array(g, "tokenizer.ggml.merges")?
                    .iter()
                    .map(|m| {
                        m.split_once(' ')
                            .map(|(a, b)| (a.to_owned(), b.to_owned()))
                            .ok_or_else(|| {
                                g.meta_err(
                                    "tokenizer.ggml.merges",
                                    &format!("merge `{m}` has no space"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let pre = g
                    .get("tokenizer.ggml.pre")
                    .and_then(|v| v.as_str())
                    .unwrap_or("default");
                let bpe = BPE::builder()
                    .vocab_and_merges(
                        vocab
                            .clone()
                            .into_iter()
                            .collect::<tokenizers::models::bpe::Vocab>(),
                        merges,
                    )
                    .ignore_merges(pre == "llama-bpe")
                    .build()
                    .map_err(tk_err)?;
                let mut t = Tokenizer::new(bpe);
                let byte_level = ByteLevel::new(false, true, true);
                let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
                    Ok(Split::new(
                        SplitPattern::Regex(pattern.into()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(tk_err)?
                    .into())
                };
                let pre_tok: PreTokenizerWrapper = match pre {
                    "default" | "gpt-2" | "gpt2" => byte_level.into(),
                    "smollm" | "starcoder" | "refact" | "codeshell" => {
                        PreSequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
                    }
                    "llama-bpe" | "llama3" | "smaug-bpe" => PreSequence::new(vec![
                        split(LLAMA3_PATTERN)?,
                        ByteLevel::new(false, true, false).into(),
                    ])
                    .into(),
                    "qwen2" | "deepseek-r1-qwen" => PreSequence::new(vec![
                        split(QWEN2_PATTERN)?,
                        ByteLevel::new(false, true, false).into(),
                    ])
                    .into(),
                    other => {
                        return Err(g.meta_err(
                            "tokenizer.ggml.pre",
                            &format!("pre-tokenizer `{other}` is not supported (default, smollm, llama-bpe, qwen2)"),
                        ));
                    }
                };
                t.with_pre_tokenizer(Some(pre_tok));
                t.with_decoder(Some(ByteLevelDecoder::default()));
                t
            }
            "llama" => {
                let scores: Vec<f64> = match g.get("tokenizer.ggml.scores") {
                    Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
                    _ => {
                        return Err(g.meta_err(
                            "tokenizer.ggml.scores",
                            "missing; SentencePiece models need scores",
                        ));
                    }
                };
                let merges = spm_merges(&tokens, &scores, &vocab);
                let unk = g
                    .get("tokenizer.ggml.unknown_token_id")
                    .and_then(Value::as_u64)
                    .and_then(|i| tokens.get(i as usize))
                    .map(|s| (*s).to_owned())
                    .unwrap_or_else(|| "<unk>".into());
                let bpe = BPE::builder()
                    .vocab_and_merges(
                        vocab
                            .clone()
                            .into_iter()
                            .collect::<tokenizers::models::bpe::Vocab>(),
                        merges,
                    )
                    .unk_token(unk)
                    .fuse_unk(true)
                    .byte_fallback(true)
                    .build()
                    .map_err(tk_err)?;
                let mut t = Tokenizer::new(bpe);
                t.with_normalizer(Some(NormalizerSequence::new(vec![
                    Prepend::new("▁".into()).into(),
                    Replace::new(" ", "▁").map_err(tk_err)?.into(),
                ])));
                let decoders: Vec<DecoderWrapper> = vec![
                    Replace::new("▁", " ").map_err(tk_err)?.into(),
                    ByteFallback::new().into(),
                    Fuse::new().into(),
                    Strip::new(' ', 1, 0).into(),
                ];
                t.with_decoder(Some(DecoderSequence::new(decoders)));
                t
            }
            other => {
                return Err(g.meta_err(
                    "tokenizer.ggml.model",
                    &format!("tokenizer model `{other}` is not supported (gpt2, llama)"),
                ));
            }
        };

        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, ty)| **ty == TOKEN_TYPE_CONTROL || **ty == TOKEN_TYPE_USER_DEFINED)
            .map(|(t, _)| AddedToken::from((*t).to_owned(), true))
            .collect();
        tok.add_special_tokens(&specials);

        let id = |key: &str| g.get(key).and_then(Value::as_u64).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(model == "llama");
        let mut stop_ids: Vec<u32> = eos
            .into_iter()
            .chain(id("tokenizer.ggml.eot_token_id"))
            .collect();
        for name in END_OF_TURN_NAMES {
            if let Some(i) = tok.token_to_id(name) {
                stop_ids.push(i);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let chat_template = g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(Self {
            inner: tok,
            bos,
            eos,
            stop_ids,
            add_bos,
            chat_template,
        })
    }

    /// Loads `tokenizer.json` (and, when present beside it,
    /// `tokenizer_config.json` for BOS/EOS and the chat template).
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let mut me = Self {
            inner,
            bos: None,
            eos: None,
            stop_ids: Vec::new(),
            add_bos: false,
            chat_template: None,
        };
        let cfg_path = path.with_file_name("tokenizer_config.json");
        if let Ok(text) = std::fs::read_to_string(&cfg_path) {
            let cfg: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", cfg_path.display())))?;
            let tok_id = |k: &str| {
                let v = cfg.get(k)?;
                let s = v
                    .as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
                me.inner.token_to_id(s)
            };
            me.bos = tok_id("bos_token");
            me.eos = tok_id("eos_token");
            me.add_bos = cfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            me.chat_template = cfg
                .get("chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
        }
        // Processors (SmolVLM) keep the template in its own file.
        if me.chat_template.is_none() {
            let tmpl_path = path.with_file_name("chat_template.json");
            if let Ok(text) = std::fs::read_to_string(&tmpl_path) {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tmpl_path.display())))?;
                me.chat_template = v
                    .get("chat_template")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
            }
        }
        me.stop_ids = me.eos.into_iter().collect();
        for name in END_OF_TURN_NAMES {
            if let Some(i) = me.inner.token_to_id(name) {
                me.stop_ids.push(i);
            }
        }
        me.stop_ids.sort_unstable();
        me.stop_ids.dedup();
        Ok(me)
    }

    /// Token ids for `text`. Special tokens written in the text (`<|im_start|>`)
    /// are recognised; BOS is prepended when `add_bos` and the model wants it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tk_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos
            && self.add_bos
            && let Some(b) = self.bos
        {
            ids.push(b);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text for `ids`, leaving out special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tk_err)
    }

    /// Whether generating `id` ends the answer.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.binary_search(&id).is_ok()
    }

    /// The string form of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Beginning-of-sequence token id.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token id.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The model's own chat template, if it ships one.
    pub fn chat_template(&self) -> Option<ChatTemplate> {
        let src = self.chat_template.clone()?;
        let name = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        Some(ChatTemplate {
            source: src,
            bos_token: name(self.bos),
            eos_token: name(self.eos),
        })
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

fn string_array<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    g.require(key)?
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_str()).collect::<Option<Vec<_>>>())
        .ok_or_else(|| g.meta_err(key, "expected an array of strings"))
}

/// Merges for a SentencePiece BPE vocabulary, ranked as transformers'
/// `SentencePieceExtractor` ranks them: every split of a token into two
/// tokens that both exist, ordered by the merged token's score.
fn spm_merges(
    tokens: &[&str],
    scores: &[f64],
    vocab: &HashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut merges: Vec<(f64, u32, String, String)> = Vec::new();
    for (id, tok) in tokens.iter().enumerate() {
        let score = scores.get(id).copied().unwrap_or(0.0);
        for (i, _) in tok.char_indices().skip(1) {
            let (a, b) = tok.split_at(i);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                merges.push((score, id as u32, a.to_owned(), b.to_owned()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    merges.into_iter().map(|(_, _, a, b)| (a, b)).collect()
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A model's Jinja chat template.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from source text, with the special tokens it may refer to.
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Self {
        Self {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        }
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages` as transformers' `apply_chat_template` would.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_any(messages, add_generation_prompt)
    }

    /// Renders messages of any shape the template expects, such as the
    /// multimodal `{"role", "content": [{"type": "image"}, {"type": "text", "text"}]}`
    /// lists vision-language templates iterate over.
    pub fn render_any<M: serde::Serialize + ?Sized>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_function("strftime_now", |fmt: String| strftime_utc(&fmt));
        env.add_template_owned("chat", self.source.clone())
            .map_err(|e| ModelError::Template(format!("cannot parse: {e}")))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| ModelError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| ModelError::Template(format!("cannot render: {e}")))
    }
}

/// The subset of `strftime` chat templates use for "today's date" (Llama 3.x):
/// `%Y %m %d %b %B %%`, in UTC.
fn strftime_utc(fmt: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Howard Hinnant's civil_from_days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}
