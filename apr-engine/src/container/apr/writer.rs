//! Writing an APR v2 file, one tensor at a time.
//!
//! Every offset follows from the tensor specs, so the header, metadata and
//! index are written first and the data streams after them; the footer CRC32
//! is accumulated as bytes go out. Output depends only on the source: tensors
//! are ordered by stored name and the JSON by fixed rules.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use super::header::{Flags, Header, HEADER_LEN, VERSION};
use super::meta::{self, TensorSummary};
use super::{align_up, ALIGNMENT};
use crate::container::{names, write_model_atomically, Progress, TensorSource, WriteOptions};
use crate::dtype::{element_count, DType};
use crate::error::{Error, Result};

const MAX_RANK: usize = 8;

/// Writes `source` to `path` as APR v2 (atomically and read back; see [`write_model_atomically`]).
pub fn write(path: &Path, source: &dyn TensorSource, options: WriteOptions, progress: Progress) -> Result<()> {
    let layout = Layout::plan(source)?;
    write_model_atomically(path, options, |out| {
        let mut out = Checksummed { inner: out, hasher: crc32fast::Hasher::new() };
        let io = |e| Error::io(path, e);
        out.put(&layout.header.to_bytes()).map_err(io)?;
        out.put_padded(&layout.metadata).map_err(io)?;
        out.put_padded(&layout.index).map_err(io)?;
        for tensor in &layout.tensors {
            let bytes = tensor.bytes(source)?;
            out.put_padded(&bytes).map_err(io)?;
            progress(tensor.size);
        }
        let footer = out.hasher.finalize();
        out.inner.write_all(&footer.to_le_bytes()).map_err(io)
    })
}

/// A writer that keeps the CRC32 of everything written through it.
struct Checksummed<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Checksummed<W> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }

    /// Writes `bytes` and zeros up to the next multiple of 64.
    fn put_padded(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.put(bytes)?;
        let pad = (ALIGNMENT - bytes.len() as u64 % ALIGNMENT) % ALIGNMENT;
        self.put(&[0u8; ALIGNMENT as usize][..pad as usize])
    }
}

/// One tensor's place in the file.
struct Placed {
    source_index: usize,
    stored_name: String,
    dtype: DType,
    shape: Vec<u64>,
    /// Relative to the data section.
    offset: u64,
    size: u64,
}

impl Placed {
    /// The tensor's bytes as APR stores them: exactly the source's. Q/K rows keep the
    /// source's order, which the metadata records (`rope_type`), so a GGUF's blocks
    /// are carried byte for byte and the APR computes exactly what the GGUF does.
    fn bytes<'s>(&self, source: &'s dyn TensorSource) -> Result<Cow<'s, [u8]>> {
        let data = source.data(self.source_index)?;
        if data.len() as u64 != self.size {
            return Err(Error::Invalid(format!(
                "{}: source gave {} bytes, {} {:?} needs {}",
                self.stored_name,
                data.len(),
                self.dtype,
                self.shape,
                self.size
            )));
        }
        Ok(data)
    }
}

/// Everything about the file except the tensor bytes.
struct Layout {
    header: Header,
    metadata: Vec<u8>,
    index: Vec<u8>,
    tensors: Vec<Placed>,
}

impl Layout {
    fn plan(source: &dyn TensorSource) -> Result<Layout> {
        let mut tensors = place(source)?;
        tensors.sort_by(|a, b| a.stored_name.cmp(&b.stored_name));
        if let Some(pair) = tensors.windows(2).find(|w| w[0].stored_name == w[1].stored_name) {
            return Err(Error::Invalid(format!("two tensors would both be stored as '{}'", pair[0].stored_name)));
        }
        let mut next = 0u64;
        for t in &mut tensors {
            t.offset = next;
            next = t.offset.checked_add(t.size).and_then(align_up).ok_or_else(|| too_big("data section"))?;
        }
        let (metadata, has_vocab) = meta::to_json(source.metadata(), &summary(&tensors), source.qk_row_order())?;
        let index = index_bytes(&tensors);
        let metadata_len = u32::try_from(metadata.len()).map_err(|_| too_big("metadata JSON"))?;
        let index_offset = align_up(HEADER_LEN as u64 + u64::from(metadata_len)).ok_or_else(|| too_big("metadata"))?;
        let header = Header {
            major: VERSION.0,
            minor: VERSION.1,
            flags: flags(&tensors, has_vocab),
            tensor_count: u32::try_from(tensors.len()).map_err(|_| too_big("tensor count"))?,
            metadata_offset: HEADER_LEN as u64,
            metadata_len,
            index_offset,
            data_offset: align_up(index_offset + index.len() as u64).ok_or_else(|| too_big("index"))?,
        };
        Ok(Layout { header, metadata, index, tensors })
    }
}

fn too_big(what: &str) -> Error {
    Error::Invalid(format!("APR: {what} exceeds what the format can address"))
}

/// Checks each spec and decides its stored name, size and row reordering.
fn place(source: &dyn TensorSource) -> Result<Vec<Placed>> {
    let mut placed = Vec::with_capacity(source.specs().len());
    for (source_index, spec) in source.specs().iter().enumerate() {
        let canonical = names::to_canonical(&spec.name);
        let stored_name = names::to_hf(&canonical);
        let invalid = |reason: String| Error::Invalid(format!("{}: {reason}", spec.name));
        if stored_name.is_empty() || stored_name.len() > usize::from(u16::MAX) {
            return Err(invalid(format!("name of {} bytes (APR holds 1 to 65535)", stored_name.len())));
        }
        if spec.shape.len() > MAX_RANK {
            return Err(invalid(format!("rank {} exceeds {MAX_RANK}", spec.shape.len())));
        }
        let size = spec.dtype.byte_size(&spec.shape).map_err(|e| invalid(e.to_string()))?;
        let (dtype, shape) = (spec.dtype, spec.shape.clone());
        placed.push(Placed { source_index, stored_name, dtype, shape, offset: 0, size });
    }
    Ok(placed)
}

fn summary(tensors: &[Placed]) -> TensorSummary {
    let embedding = tensors.iter().find(|t| names::to_canonical(&t.stored_name) == "token_embd.weight");
    TensorSummary {
        param_count: tensors.iter().map(|t| element_count(&t.shape).unwrap_or(0)).sum(),
        total_size: tensors.iter().map(|t| t.size).sum(),
        embedding_rows: embedding.and_then(|t| t.shape.first().copied()),
    }
}

fn flags(tensors: &[Placed], has_vocab: bool) -> Flags {
    let mut bits = Flags::LAYOUT_ROW_MAJOR;
    if has_vocab {
        bits |= Flags::HAS_VOCAB;
    }
    if tensors.iter().any(|t| t.dtype.is_quantized()) {
        bits |= Flags::QUANTIZED;
    }
    Flags(bits)
}

/// Index entries: u16 name length, name, dtype byte, u8 rank, u64 dims, u64 offset, u64 size.
fn index_bytes(tensors: &[Placed]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in tensors {
        out.extend_from_slice(&(t.stored_name.len() as u16).to_le_bytes());
        out.extend_from_slice(t.stored_name.as_bytes());
        out.push(u8::try_from(t.dtype.id()).expect("GGML type ids fit a byte"));
        out.push(t.shape.len() as u8);
        for dim in &t.shape {
            out.extend_from_slice(&dim.to_le_bytes());
        }
        out.extend_from_slice(&t.offset.to_le_bytes());
        out.extend_from_slice(&t.size.to_le_bytes());
    }
    out
}
