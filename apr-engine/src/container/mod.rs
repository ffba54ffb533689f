//! Containers: bytes on disk to tensors, and back.
//!
//! Each format has a parser over `&[u8]` (so the fuzzers can drive it without
//! files) and a writer that streams tensors from a [`TensorSource`]. A
//! [`ModelFile`] is a memory map plus what the parser found in it; tensor bytes
//! are borrowed from the map, never copied.

pub mod apr;
pub mod gguf;
mod metadata;
pub mod names;
pub mod qk_order;
pub mod safetensors;
mod source;
mod write;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Serialize;

use crate::dtype::DType;
use crate::error::{Error, ParseError, Result};
pub use metadata::{MetaArray, MetaType, MetaValue, Metadata};
pub use source::{FileSource, MemorySource};
pub use write::{
    remove_stale_temp_files, remove_unfinished_outputs, write_atomically, write_model_atomically, WriteOptions,
};

/// Called with the byte count of each tensor as a writer finishes it.
pub type Progress<'a> = &'a mut dyn FnMut(u64);

/// Which container a file is, with its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum Format {
    Gguf { version: u32 },
    SafeTensors,
    Apr { major: u8, minor: u8 },
}

impl Format {
    pub fn name(&self) -> &'static str {
        match self {
            Format::Gguf { .. } => "gguf",
            Format::SafeTensors => "safetensors",
            Format::Apr { .. } => "apr",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Format::Gguf { version } => write!(f, "GGUF v{version}"),
            Format::SafeTensors => f.write_str("SafeTensors"),
            Format::Apr { major, minor } => write!(f, "APR v{major}.{minor}"),
        }
    }
}

/// Which parser a file's first bytes call for.
pub fn detect_format(head: &[u8]) -> Option<FormatKind> {
    match head {
        [b'G', b'G', b'U', b'F', ..] => Some(FormatKind::Gguf),
        [b'A', b'P', b'R', 0, ..] => Some(FormatKind::Apr),
        // SafeTensors: u64 header length, then a JSON object.
        [_, _, _, _, _, _, _, _, b'{', ..] => Some(FormatKind::SafeTensors),
        _ => None,
    }
}

/// Parses a whole file's bytes with the parser its magic calls for.
pub fn parse_bytes(bytes: &[u8]) -> Result<Parsed, ParseError> {
    match detect_format(bytes) {
        Some(FormatKind::Gguf) => gguf::parse(bytes),
        Some(FormatKind::Apr) => apr::parse(bytes),
        Some(FormatKind::SafeTensors) => safetensors::parse(bytes),
        None => Err(ParseError::new(
            "magic",
            0,
            format!("not a GGUF, APR or SafeTensors file (first bytes {:02x?})", &bytes[..bytes.len().min(8)]),
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    Gguf,
    SafeTensors,
    Apr,
}

/// Where a tensor's row order for Q and K projections comes from. GGUF
/// converters permute Llama's Q/K rows so that llama.cpp can rotate adjacent
/// pairs; Hugging Face keeps the original order and rotates halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QkRowOrder {
    /// GGUF order: RoPE on interleaved pairs (llama) or as the arch says (qwen2 uses halves).
    Gguf,
    /// Hugging Face order: RoPE on halves.
    HuggingFace,
}

/// One tensor as the container describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TensorInfo {
    /// Canonical (GGUF-style) name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// The name as stored in the file.
    pub stored_name: String,
    pub dtype: DType,
    /// Dimensions, outermost first (`[out, in]` for a weight matrix).
    pub shape: Vec<u64>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data; equals `dtype.byte_size(shape)`.
    pub size: u64,
}

/// What a parser finds in a file's bytes.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub format: Format,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    /// Row order of Q/K projection weights in this file.
    pub qk_row_order: QkRowOrder,
    /// Format-specific facts for `inspect` (APR flags, GGUF alignment, ...).
    pub facts: Vec<(String, String)>,
}

/// A borrowed tensor: its description and its bytes in the memory map.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub info: &'a TensorInfo,
    pub bytes: &'a [u8],
}

impl TensorView<'_> {
    pub fn name(&self) -> &str {
        &self.info.name
    }
    pub fn dtype(&self) -> DType {
        self.info.dtype
    }
    pub fn shape(&self) -> &[u64] {
        &self.info.shape
    }
}

/// An opened model file: memory map plus parsed layout.
pub struct ModelFile {
    pub path: PathBuf,
    pub parsed: Parsed,
    map: Mmap,
}

impl ModelFile {
    /// Opens a GGUF, SafeTensors or APR file, or a Hugging Face model
    /// directory holding `model.safetensors`, detecting the format by magic.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFile> {
        let path = path.as_ref();
        refuse_sharded(path)?;
        let file_path = if path.is_dir() { path.join("model.safetensors") } else { path.to_path_buf() };
        let file = std::fs::File::open(&file_path).map_err(|e| Error::io(&file_path, e))?;
        // SAFETY: the map is read-only; a file changed underneath us by another
        // process is outside what any reader can defend against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&file_path, e))?;
        let parsed = parse_bytes(&map).map_err(|e| e.in_file(&file_path))?;
        let mut model = ModelFile { path: file_path, parsed, map };
        if model.parsed.format == Format::SafeTensors {
            safetensors::hf::read_companions(&mut model)?;
        }
        Ok(model)
    }

    /// A model file from bytes already in memory (the fuzzers' way in): the
    /// bytes are copied into an anonymous map and parsed as [`ModelFile::open`]
    /// parses a file. `label` stands in for the path in error messages. No
    /// Hugging Face companion files are read, so a SafeTensors buffer carries
    /// only what its own header holds.
    pub fn from_bytes(label: impl Into<PathBuf>, bytes: &[u8]) -> Result<ModelFile> {
        let label = label.into();
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).map_err(|e| Error::io(&label, e))?;
        map.copy_from_slice(bytes);
        let map = map.make_read_only().map_err(|e| Error::io(&label, e))?;
        let parsed = parse_bytes(&map).map_err(|e| e.in_file(&label))?;
        Ok(ModelFile { path: label, parsed, map })
    }

    pub fn format(&self) -> Format {
        self.parsed.format
    }
    pub fn metadata(&self) -> &Metadata {
        &self.parsed.metadata
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.parsed.tensors
    }
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }
    /// The whole file, as mapped.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Finds a tensor by canonical or stored name.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = self.parsed.tensors.iter().find(|t| t.name == name || t.stored_name == name)?;
        Some(self.view(info))
    }

    /// The bytes of a tensor the parser described (offsets were bounds-checked then).
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = info.offset as usize;
        TensorView { info, bytes: &self.map[start..start + info.size as usize] }
    }

    pub fn views(&self) -> impl Iterator<Item = TensorView<'_>> {
        self.parsed.tensors.iter().map(|t| self.view(t))
    }
}

impl AsRef<[u8]> for ModelFile {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A sharded Hugging Face checkpoint (`model.safetensors.index.json` naming
/// several `model-0000N-of-0000M.safetensors`) is refused with a message that
/// says so, instead of a missing-file error or a model missing most of its
/// tensors: a [`ModelFile`] is one memory-mapped file.
fn refuse_sharded(path: &Path) -> Result<()> {
    const INDEX: &str = "model.safetensors.index.json";
    let index = if path.is_dir() { path.join(INDEX) } else { path.to_path_buf() };
    let is_index = index.file_name().is_some_and(|n| n == INDEX);
    if !is_index || !index.is_file() || (path.is_dir() && path.join("model.safetensors").is_file()) {
        return Ok(());
    }
    let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
    let shards: std::collections::BTreeSet<String> = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("weight_map")?.as_object().map(|m| m.values().filter_map(|f| f.as_str()).map(String::from).collect())
        })
        .unwrap_or_default();
    Err(Error::Unsupported(format!(
        "{}: a sharded checkpoint ({} shards); apr reads one file: merge the shards into model.safetensors first \
         (for example with the safetensors Python package: load each shard and save_file the union)",
        index.display(),
        shards.len()
    )))
}

/// A tensor that a writer is asked to store: canonical name, dtype and
/// outermost-first shape. Its bytes come later from [`TensorSource::data`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<u64>,
}

/// What writers consume: metadata, tensor specs up front (so offsets can be
/// laid out), then each tensor's bytes on demand, one at a time, so that a
/// conversion holds at most one converted tensor in memory.
pub trait TensorSource {
    fn metadata(&self) -> &Metadata;
    fn specs(&self) -> &[TensorSpec];
    /// Bytes of tensor `index`; must be `dtype.byte_size(shape)` long.
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>>;
    /// Row order of the Q/K weights that `data` returns.
    fn qk_row_order(&self) -> QkRowOrder {
        QkRowOrder::Gguf
    }
}

/// A bounds-checked little-endian cursor for the parsers.
#[allow(dead_code)] // the GGUF and APR readers landing from their branches use it
pub(crate) mod cursor;
