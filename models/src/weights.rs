//! Named weights, whatever file they are in: the [`Source`] trait, keyed by
//! GGUF tensor names, over a GGUF file and over an HF safetensors
//! checkpoint ([`HfSource`], which maps GGUF names to transformers' ones,
//! decoder and vision tower alike), and [`want_tensor`], the shape-checked
//! read every loader uses.
//!
//! It sits below both the decoder (`llama`) and the vision tower
//! (`vision`), so neither has to import the other to read its weights.

use crate::error::{ModelError, Result};
use crate::gguf::{GgmlType, GgufFile};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A weight as read from a file: row-major values and shape.
pub(crate) struct Raw {
    pub(crate) data: Vec<f32>,
    pub(crate) shape: Vec<usize>,
}

/// A store of named weights, keyed by GGUF tensor names.
pub(crate) trait Source {
    fn path(&self) -> &Path;
    fn get(&self, gguf_name: &str) -> Result<Option<Raw>>;
    /// The 2-D tensor's ggml blocks as stored (quantised or not), for a
    /// loader that multiplies blocks directly; `None` where the file has no
    /// ggml blocks.
    fn blocks(&self, _gguf_name: &str) -> Option<(GgmlType, &[u8])> {
        None
    }
    /// The tensor's shape (outermost first, as [`want_tensor`] checks it)
    /// without reading it; `None` where the file does not say cheaply.
    fn shape(&self, _gguf_name: &str) -> Option<Vec<usize>> {
        None
    }
    /// Whether this is a llama.cpp conversion: its converter stores the q/k
    /// rows of `llama`-architecture models in interleaved-pair order.
    fn is_llama_cpp(&self) -> bool;
    /// The loader has copied what it read so far: the file's pages may
    /// leave memory (see [`GgufFile::release_pages`]).
    fn release(&self) {}
}

impl Source for GgufFile {
    fn path(&self) -> &Path {
        GgufFile::path(self)
    }

    fn get(&self, name: &str) -> Result<Option<Raw>> {
        let Some(info) = self.tensor(name) else {
            return Ok(None);
        };
        let shape = info.shape();
        Ok(Some(Raw {
            data: self.dequantize(name)?,
            shape,
        }))
    }

    fn is_llama_cpp(&self) -> bool {
        true
    }

    fn release(&self) {
        self.release_pages();
    }

    fn blocks(&self, name: &str) -> Option<(GgmlType, &[u8])> {
        let info = self.tensor(name)?;
        if info.dims.len() != 2 {
            return None;
        }
        self.tensor_bytes(name).ok().map(|b| (info.ty, b))
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensor(name).map(|info| info.shape())
    }
}

/// An HF checkpoint: one `model.safetensors` or shards listed in
/// `model.safetensors.index.json`.
pub(crate) struct HfSource {
    dir: PathBuf,
    /// Where the decoder's parameters live: `model.` for a text model,
    /// `model.text_model.` inside an Idefics3 (SmolVLM) checkpoint.
    text_prefix: &'static str,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// tensor name → index into `files`.
    index: HashMap<String, usize>,
}

impl HfSource {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ModelError::Io { path, source }
        };
        let single = dir.join("model.safetensors");
        let names: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else {
            let idx = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&idx).map_err(io(&idx))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Metadata {
                    path: idx.clone(),
                    key: "(file)".into(),
                    reason: format!("not valid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Metadata {
                    path: idx.clone(),
                    key: "weight_map".into(),
                    reason: "missing or not an object".into(),
                })?;
            let mut files: Vec<PathBuf> = map
                .values()
                .filter_map(|f| f.as_str().map(|f| dir.join(f)))
                .collect();
            files.sort();
            files.dedup();
            files
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in names {
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            // SAFETY: read-only map of a weights file nobody writes while we run.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io(&path))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Tensor {
                path: path.clone(),
                name: "(header)".into(),
                reason: format!("not a valid safetensors file: {e}"),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push((path, map));
        }
        Ok(Self {
            dir: dir.to_owned(),
            text_prefix: "model.",
            files,
            index,
        })
    }

    /// Whether the checkpoint has a tensor of transformers name `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The same files, with the decoder read from `model.text_model.`.
    pub(crate) fn with_text_prefix(mut self, prefix: &'static str) -> Self {
        self.text_prefix = prefix;
        self
    }
}

/// GGUF tensor name → transformers parameter name; decoder names get
/// `text_prefix` (`model.` or `model.text_model.`).
fn hf_name(gguf: &str, text_prefix: &str) -> Option<String> {
    if let Some(v) = hf_vision_name(gguf) {
        return Some(v);
    }
    let fixed = match gguf {
        "token_embd.weight" => Some("embed_tokens.weight"),
        "output_norm.weight" => Some("norm.weight"),
        "output.weight" => return Some("lm_head.weight".to_owned()),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(format!("{text_prefix}{f}"));
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let module = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("{text_prefix}layers.{layer}.{module}.{kind}"))
}

impl Source for HfSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn get(&self, gguf_name: &str) -> Result<Option<Raw>> {
        let Some(name) = hf_name(gguf_name, self.text_prefix) else {
            return Ok(None);
        };
        let Some(&fi) = self.index.get(&name) else {
            return Ok(None);
        };
        let (path, map) = &self.files[fi];
        let terr = |reason: String| ModelError::Tensor {
            path: path.clone(),
            name: name.clone(),
            reason,
        };
        let st = SafeTensors::deserialize(map).map_err(|e| terr(e.to_string()))?;
        let view = st.tensor(&name).map_err(|e| terr(e.to_string()))?;
        let data = view_f32(&view).map_err(terr)?;
        Ok(Some(Raw {
            data,
            shape: view.shape().to_vec(),
        }))
    }

    fn is_llama_cpp(&self) -> bool {
        false
    }

    fn release(&self) {
        for (path, map) in &self.files {
            crate::gguf::release_pages(map, path);
        }
    }
}

/// A safetensors tensor's values as f32 (f32, f16 and bf16 files).
pub(crate) fn view_f32(
    view: &safetensors::tensor::TensorView<'_>,
) -> std::result::Result<Vec<f32>, String> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => return Err(format!("dtype {other:?} is not supported (f32, f16, bf16)")),
    })
}

/// Tensor `name` from `src` as f32, checked against the `shape` the
/// `what` config ("model", "vision") implies; errors name file and tensor.
pub(crate) fn want_tensor(
    src: &dyn Source,
    name: &str,
    shape: &[usize],
    what: &str,
) -> Result<Vec<f32>> {
    let raw = src.get(name)?.ok_or_else(|| ModelError::Tensor {
        path: src.path().to_owned(),
        name: name.to_owned(),
        reason: format!("missing from the {what} file"),
    })?;
    if raw.shape != shape {
        return Err(ModelError::Tensor {
            path: src.path().to_owned(),
            name: name.to_owned(),
            reason: format!(
                "shape {:?}, expected {:?} from the {what} config",
                raw.shape, shape
            ),
        });
    }
    Ok(raw.data)
}

/// GGUF `mmproj` tensor name → transformers parameter name (Idefics3).
fn hf_vision_name(gguf: &str) -> Option<String> {
    const VM: &str = "model.vision_model.";
    let fixed = match gguf {
        "v.patch_embd.weight" => "embeddings.patch_embedding.weight",
        "v.patch_embd.bias" => "embeddings.patch_embedding.bias",
        "v.position_embd.weight" => "embeddings.position_embedding.weight",
        "v.post_ln.weight" => "post_layernorm.weight",
        "v.post_ln.bias" => "post_layernorm.bias",
        "mm.model.fc.weight" => {
            return Some("model.connector.modality_projection.proj.weight".into());
        }
        _ => "",
    };
    if !fixed.is_empty() {
        return Some(format!("{VM}{fixed}"));
    }
    let rest = gguf.strip_prefix("v.blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let module = match part {
        "ln1" => "layer_norm1",
        "ln2" => "layer_norm2",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_out" => "self_attn.out_proj",
        "ffn_up" => "mlp.fc1",
        "ffn_down" => "mlp.fc2",
        _ => return None,
    };
    Some(format!("{VM}encoder.layers.{layer}.{module}.{kind}"))
}
