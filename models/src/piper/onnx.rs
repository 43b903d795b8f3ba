//! Just enough of ONNX's protobuf to read a Piper voice's weights.
//!
//! A Piper `.onnx` is a PyTorch export: its initializers hold every weight as
//! raw little-endian data, and the graph's nodes say which module consumes
//! each one. We need nothing else from the graph (the network itself is
//! written by hand in [`super::vits`]), so instead of a protobuf code
//! generator this walks the wire format for the few fields that matter:
//!
//! - `ModelProto.graph` (7) → `GraphProto.node` (1), `.initializer` (5);
//! - `NodeProto.input` (1), `.name` (3), `.op_type` (4), `.attribute` (5) →
//!   `AttributeProto.name` (1), `.i` (3), `.ints` (8);
//! - `TensorProto.dims` (1), `.data_type` (2), `.float_data` (4),
//!   `.int64_data` (7), `.name` (8), `.raw_data` (9), `.data_location` (14).
//!
//! Every length is checked against the bytes that remain, so a truncated or
//! corrupt file is an error naming the offset, never a panic or a huge
//! allocation.

use crate::error::{ModelError, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// ONNX `TensorProto.DataType` values we can read.
const FLOAT: i64 = 1;

/// Where an initializer's values are.
#[derive(Debug, Clone)]
enum Data {
    /// `raw_data`: a byte range of the mapped file.
    Raw(std::ops::Range<usize>),
    /// `float_data`: decoded while parsing (rare in PyTorch exports).
    Floats(Vec<f32>),
}

/// One weight of the graph.
#[derive(Debug, Clone)]
pub struct Initializer {
    /// Its name in the graph (`enc_p.emb.weight`, `onnx::Conv_1234`, ...).
    pub name: String,
    /// Shape, outermost first.
    pub dims: Vec<usize>,
    data_type: i64,
    data: Data,
}

/// One node: only what identifies a weight's consumer.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node name, e.g. `/flow/flows.0/enc/in_layers.0/Conv`.
    pub name: String,
    /// Operator, e.g. `Conv`.
    pub op_type: String,
    /// Input value names, in order.
    pub inputs: Vec<String>,
    /// Integer and integer-list attributes (`strides`, `pads`, `dilations`,
    /// `group`, ...); the port takes each convolution's geometry from here
    /// rather than assuming the training config.
    pub ints: HashMap<String, Vec<i64>>,
}

/// A mapped `.onnx` file with its initializers and nodes indexed.
pub struct OnnxFile {
    path: PathBuf,
    map: Mmap,
    initializers: HashMap<String, Initializer>,
    nodes: Vec<Node>,
}

impl std::fmt::Debug for OnnxFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxFile")
            .field("path", &self.path)
            .field("initializers", &self.initializers.len())
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

/// A protobuf reader over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    /// Offset of `buf[0]` in the file, for error messages.
    base: usize,
    pos: usize,
}

/// A field's payload.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Fixed32(u32),
    /// Length-delimited bytes and their file offset.
    Bytes(&'a [u8], usize),
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, base, pos: 0 }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(format!(
                    "varint runs past the end at byte {}",
                    self.base + self.pos
                ));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "varint longer than 10 bytes at byte {}",
            self.base + self.pos
        ))
    }

    /// The next field, or `None` at the end of the message.
    fn field(&mut self) -> std::result::Result<Option<(u64, Value<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let (number, wire) = (key >> 3, key & 7);
        let at = self.base + self.pos;
        let take =
            |r: &mut Self, n: usize| -> std::result::Result<(&'a [u8], usize), String> {
                let end = r.pos.checked_add(n).filter(|&e| e <= r.buf.len()).ok_or_else(|| {
                format!(
                    "field {number} at byte {at} needs {n} bytes, {} remain (file truncated?)",
                    r.buf.len() - r.pos
                )
            })?;
                let off = r.base + r.pos;
                let s = &r.buf[r.pos..end];
                r.pos = end;
                Ok((s, off))
            };
        let value = match wire {
            0 => Value::Varint(self.varint()?),
            1 => {
                take(self, 8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?)
                    .map_err(|_| format!("length at byte {at} does not fit in memory"))?;
                let (s, off) = take(self, n)?;
                Value::Bytes(s, off)
            }
            5 => {
                let (s, _) = take(self, 4)?;
                Value::Fixed32(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            }
            w => {
                return Err(format!(
                    "unsupported wire type {w} for field {number} at byte {at}"
                ));
            }
        };
        Ok(Some((number, value)))
    }
}

fn utf8(b: &[u8], what: &str, at: usize) -> std::result::Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{what} at byte {at} is not UTF-8"))
}

fn parse_node(buf: &[u8], base: usize) -> std::result::Result<Node, String> {
    let mut r = Reader::new(buf, base);
    let mut node = Node {
        name: String::new(),
        op_type: String::new(),
        inputs: Vec::new(),
        ints: HashMap::new(),
    };
    while let Some((n, v)) = r.field()? {
        if let Value::Bytes(b, at) = v {
            match n {
                1 => node.inputs.push(utf8(b, "node input", at)?),
                3 => node.name = utf8(b, "node name", at)?,
                4 => node.op_type = utf8(b, "op type", at)?,
                5 => {
                    let (name, ints) = parse_attribute(b, at)?;
                    if !ints.is_empty() {
                        node.ints.insert(name, ints);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(node)
}

/// An attribute's name and its integer value(s); other kinds come back empty.
fn parse_attribute(buf: &[u8], base: usize) -> std::result::Result<(String, Vec<i64>), String> {
    let mut r = Reader::new(buf, base);
    let (mut name, mut ints) = (String::new(), Vec::new());
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Value::Bytes(b, at)) => name = utf8(b, "attribute name", at)?,
            (3 | 8, Value::Varint(i)) => ints.push(i as i64),
            (8, Value::Bytes(b, at)) => {
                let mut p = Reader::new(b, at);
                while p.pos < b.len() {
                    ints.push(p.varint()? as i64);
                }
            }
            _ => {}
        }
    }
    Ok((name, ints))
}

fn parse_tensor(buf: &[u8], base: usize) -> std::result::Result<Initializer, String> {
    let mut r = Reader::new(buf, base);
    let mut t = Initializer {
        name: String::new(),
        dims: Vec::new(),
        data_type: 0,
        data: Data::Floats(Vec::new()),
    };
    let mut external = false;
    let dim = |v: u64, at: usize| {
        usize::try_from(v).map_err(|_| format!("tensor dimension {v} at byte {at} is too large"))
    };
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Value::Varint(d)) => t.dims.push(dim(d, base)?),
            (1, Value::Bytes(b, at)) => {
                let mut p = Reader::new(b, at);
                while p.pos < b.len() {
                    t.dims.push(dim(p.varint()?, at)?);
                }
            }
            (2, Value::Varint(d)) => t.data_type = d as i64,
            (4, Value::Fixed32(f)) => {
                if let Data::Floats(v) = &mut t.data {
                    v.push(f32::from_bits(f));
                }
            }
            (4, Value::Bytes(b, _)) => {
                if let Data::Floats(v) = &mut t.data {
                    v.extend(
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                }
            }
            (8, Value::Bytes(b, at)) => t.name = utf8(b, "tensor name", at)?,
            (9, Value::Bytes(b, at)) => t.data = Data::Raw(at..at + b.len()),
            (14, Value::Varint(1)) => external = true,
            _ => {}
        }
    }
    if external {
        return Err(format!(
            "tensor `{}` keeps its data in an external file, which Seer does not read",
            t.name
        ));
    }
    Ok(t)
}

impl OnnxFile {
    /// Maps and indexes `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| ModelError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; a voice
        // file rewritten under a running daemon is outside what we defend.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let bad = |reason: String| ModelError::Onnx {
            path: path.to_owned(),
            reason,
        };
        let mut graph = None;
        let mut top = Reader::new(&map, 0);
        while let Some((n, v)) = top.field().map_err(bad)? {
            if let (7, Value::Bytes(b, at)) = (n, v) {
                graph = Some((b, at));
            }
        }
        let (g, g_at) =
            graph.ok_or_else(|| bad("no graph in the file (is it an ONNX model?)".into()))?;
        let mut initializers = HashMap::new();
        let mut nodes = Vec::new();
        let mut r = Reader::new(g, g_at);
        while let Some((n, v)) = r.field().map_err(bad)? {
            match (n, v) {
                (1, Value::Bytes(b, at)) => nodes.push(parse_node(b, at).map_err(bad)?),
                (5, Value::Bytes(b, at)) => {
                    let t = parse_tensor(b, at).map_err(bad)?;
                    initializers.insert(t.name.clone(), t);
                }
                _ => {}
            }
        }
        if initializers.is_empty() {
            return Err(bad("the graph has no initializers (no weights)".into()));
        }
        Ok(Self {
            path: path.to_owned(),
            map,
            initializers,
            nodes,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The graph's nodes, in file order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The initializer called `name`, if any.
    pub fn initializer(&self, name: &str) -> Option<&Initializer> {
        self.initializers.get(name)
    }

    /// The node called `name`: how the weights PyTorch left unnamed
    /// (`onnx::Conv_*`) are found, by the module that consumes them.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// `name`'s values as f32 with its shape checked against `shape`.
    pub fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let bad = |reason: String| ModelError::Tensor {
            path: self.path.clone(),
            name: name.to_owned(),
            reason,
        };
        let t = self
            .initializer(name)
            .ok_or_else(|| bad("missing from the voice file".into()))?;
        if t.dims != shape {
            return Err(bad(format!("shape {:?}, expected {shape:?}", t.dims)));
        }
        if t.data_type != FLOAT {
            return Err(bad(format!(
                "data type {} (only float32 voices are supported)",
                t.data_type
            )));
        }
        // Checked: a file's dims can multiply past usize (found by libFuzzer).
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|n| n.checked_mul(4).is_some())
            .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
        let v = match &t.data {
            Data::Raw(range) => {
                if range.len() != count * 4 {
                    return Err(bad(format!(
                        "{} bytes of data for {count} floats",
                        range.len()
                    )));
                }
                self.map[range.clone()]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            Data::Floats(v) if v.len() == count => v.clone(),
            Data::Floats(v) => return Err(bad(format!("{} floats, expected {count}", v.len()))),
        };
        Ok(v)
    }

    /// The shape of `name`, if present.
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.initializer(name).map(|t| t.dims.as_slice())
    }
}
