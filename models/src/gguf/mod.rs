//! A GGUF reader: header, metadata, tensor infos, memory-mapped tensor data.
//!
//! [`GgufFile::open`] maps the file and parses everything but the tensor data,
//! checking each length and offset against the file size as it goes, so a
//! truncated or corrupted file is a [`ModelError::Gguf`] naming the file and the
//! offset, never a panic or an out-of-bounds read. Tensor bytes stay in the map
//! until [`GgufFile::dequantize`] turns them into `f32`.
//!
//! Versions 2 and 3 are read (they share a layout; version 1 used 32-bit counts
//! and is long obsolete). Big-endian files are recognised and refused by name.

mod quant;

pub use quant::GgmlType;
pub(crate) use quant::dequantize as dequantize_into;

use crate::error::{ModelError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Sanity bounds: a count above these is a corrupted file, not a real model, and
/// must not make us allocate gigabytes before noticing.
const MAX_STRING: u64 = 1 << 30;
const MAX_DIMS: u32 = 8;

/// One metadata value. Arrays keep their element type so an empty array still
/// says what it would have held.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer type as `u64`, if it is non-negative. Writers disagree on
    /// whether counts are u32 or u64, so readers should not care.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric type as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor lives in the file and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) length.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Shape in row-major (numpy/burn) order: the reverse of ggml's `ne`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    version: u32,
    alignment: u64,
    metadata: BTreeMap<String, Value>,
    tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata.len())
            .finish()
    }
}

/// Bounds-checked little-endian cursor over the mapped bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Gguf {
            path: self.path.to_owned(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len() as u64);
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            None => Err(self.err(format!(
                "file truncated: {what} needs {n} bytes at offset {}, but the file is {} bytes",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > MAX_STRING {
            return Err(self.err(format!("{what} at offset {at} claims {len} bytes")));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err(format!("{what} at offset {at} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.array(what)?)),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(self.err(format!("{what}: arrays nested deeper than 4 levels")));
                }
                let elem_ty = self.u32(what)?;
                let at = self.pos;
                let count = self.u64(what)?;
                // Every element takes at least one byte: a count larger than
                // the rest of the file is corruption, caught before allocating.
                let remaining = (self.bytes.len() - self.pos) as u64;
                if count > remaining {
                    return Err(self.err(format!(
                        "{what}: array at offset {at} claims {count} elements but only {remaining} bytes remain"
                    )));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(self.err(format!(
                    "{what}: unknown metadata value type {other} at offset {}",
                    self.pos - 4
                )));
            }
        })
    }
}

impl GgufFile {
    /// Opens and parses `path`. The tensor data is mapped, not read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let io = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: the map is read-only. Seer never writes model files while it
        // runs; a file truncated underneath us by another process would SIGBUS,
        // the same contract every mmap-based model loader (llama.cpp included) has.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, map)
    }

    fn parse(path: PathBuf, map: memmap2::Mmap) -> Result<Self> {
        let mut c = Cursor {
            bytes: &map,
            pos: 0,
            path: &path,
        };
        let magic = c.array::<4>("magic")?;
        if &magic != MAGIC {
            return Err(c.err(format!(
                "bad magic {:?} (expected \"GGUF\"); this is not a GGUF file",
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = c.u32("version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(c.err("big-endian GGUF files are not supported"));
        }
        if version != 2 && version != 3 {
            return Err(c.err(format!(
                "unsupported GGUF version {version} (Seer reads versions 2 and 3)"
            )));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        let rest = map.len() as u64;
        if n_tensors > rest || n_kv > rest {
            return Err(c.err(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file could hold"
            )));
        }

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&format!("type of metadata `{key}`"))?;
            let value = c.value(ty, &format!("metadata `{key}`"), 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(c.err(format!(
                        "general.alignment is {v:?}; it must be a power of two"
                    )));
                }
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut index = BTreeMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor #{i}"))?;
            let what = format!("tensor `{name}`");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!("{what} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)?);
            }
            let ty_id = c.u32(&what)?;
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| c.err(format!("{what} has unknown tensor type id {ty_id}")))?;
            let rel = c.u64(&what)?;
            let elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| c.err(format!("{what}: dimensions {dims:?} overflow")))?;
            let (be, bb) = ty.block_layout();
            if dims[0] % be as u64 != 0 {
                return Err(c.err(format!(
                    "{what}: row length {} is not a multiple of the {ty} block size {be}",
                    dims[0]
                )));
            }
            let size = (elements / be as u64)
                .checked_mul(bb as u64)
                .ok_or_else(|| c.err(format!("{what}: dimensions {dims:?} overflow")))?;
            if rel % alignment != 0 {
                return Err(c.err(format!(
                    "{what}: data offset {rel} is not aligned to {alignment}"
                )));
            }
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.err(format!("{what} appears twice")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset: rel,
                size,
            });
        }

        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        for t in &mut tensors {
            let start = data_start.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.size));
            match (start, end) {
                (Some(s), Some(e)) if e <= file_len => t.offset = s,
                _ => {
                    return Err(ModelError::Gguf {
                        path: path.clone(),
                        reason: format!(
                            "tensor `{}` ({} bytes at data offset {}) lies beyond the end of the file ({file_len} bytes); the file is truncated or corrupt",
                            t.name, t.size, t.offset
                        ),
                    });
                }
            }
        }

        Ok(Self {
            path,
            map,
            version,
            alignment,
            metadata,
            tensors,
            index,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Data alignment in bytes (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, Value> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// One tensor's info.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    fn tensor_or_err(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| ModelError::Tensor {
            path: self.path.clone(),
            name: name.to_owned(),
            reason: "not in the file".into(),
        })
    }

    /// Drops the file's pages from this process's memory. Loaders copy
    /// (or convert) every tensor out of the mapping; without this, the
    /// pages they read stay mapped until the file is closed, and peak RSS
    /// counts the model twice. Later reads fault the pages back in from the
    /// page cache, unchanged.
    pub fn release_pages(&self) {
        release_pages(&self.map, &self.path);
    }

    /// The raw (possibly quantised) bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.tensor_or_err(name)?;
        Ok(&self.map[t.offset as usize..(t.offset + t.size) as usize])
    }

    /// A tensor's values as `f32`, in row-major order of [`TensorInfo::shape`].
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensor_or_err(name)?;
        if !t.ty.can_dequantize() {
            return Err(ModelError::Tensor {
                path: self.path.clone(),
                name: name.to_owned(),
                reason: format!("tensor type {} is not supported by Seer", t.ty),
            });
        }
        let mut out = vec![0f32; t.elements() as usize];
        quant::dequantize(t.ty, self.tensor_bytes(name)?, &mut out);
        Ok(out)
    }

    /// Metadata value that must exist.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// A required non-negative integer.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            self.meta_err(
                key,
                &format!("expected an unsigned integer, found {}", v.type_name()),
            )
        })
    }

    /// A required number.
    pub fn require_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| {
            self.meta_err(key, &format!("expected a number, found {}", v.type_name()))
        })
    }

    /// A required string.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| {
            self.meta_err(key, &format!("expected a string, found {}", v.type_name()))
        })
    }

    /// An error about metadata key `key` in this file.
    pub fn meta_err(&self, key: &str, reason: &str) -> ModelError {
        ModelError::Metadata {
            path: self.path.clone(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// Unmaps a read-only file mapping's pages from this process (they stay in
/// the page cache); the next read faults them back in, unchanged.
pub(crate) fn release_pages(map: &memmap2::Mmap, path: &Path) {
    // SAFETY: `Mmap` is a read-only shared mapping: MADV_DONTNEED only drops
    // its pages, and reading them again returns the file's bytes. (The
    // unchecked form exists for private writable mappings, whose changes it
    // would discard.)
    if let Err(e) = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) } {
        tracing::debug!(path = %path.display(), "madvise(DONTNEED): {e}");
    }
}
