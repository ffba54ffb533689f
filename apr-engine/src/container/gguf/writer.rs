//! The GGUF writer. The header (metadata and tensor infos, a few megabytes at
//! most for a large vocabulary) is laid out in memory first, since the tensor
//! offsets must be known before any data; the tensors then stream one at a
//! time. Padding follows llama.cpp and gguf-py: zeros up to the alignment
//! after the header and after every tensor, the last included, so that a file
//! read and written back is the same file byte for byte.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use super::{
    align_up, alignment_of, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, WRITE_VERSION,
};
use crate::container::{
    names, qk_order, write_model_atomically, MetaArray, MetaValue, Metadata, Progress, QkRowOrder, TensorSource,
    WriteOptions,
};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// llama.cpp keeps tensor names in a 64-byte buffer with a terminating zero.
const MAX_NAME_BYTES: usize = 63;

/// Where one tensor goes.
struct Placement {
    /// Canonical (GGUF) name.
    name: String,
    dtype: DType,
    /// Outermost first.
    shape: Vec<u64>,
    size: u64,
    /// From the start of the data section.
    relative_offset: u64,
}

/// Writes `source` as a GGUF v3 file at `path`, replacing an existing file only with `options.force`.
pub fn write(path: &Path, source: &dyn TensorSource, options: WriteOptions, progress: Progress) -> Result<()> {
    let metadata = source.metadata();
    let alignment = match metadata.get(ALIGNMENT_KEY) {
        Some(value) => alignment_of(value).map_err(|reason| Error::Invalid(format!("{ALIGNMENT_KEY}: {reason}")))?,
        None => DEFAULT_ALIGNMENT,
    };
    let placements = place_tensors(source, alignment)?;
    let header = encode_header(metadata, &placements, alignment)?;
    write_model_atomically(path, options, |out| {
        let io_error = |e| Error::io(path, e);
        out.write_all(&header).map_err(io_error)?;
        for (index, placement) in placements.iter().enumerate() {
            let data = tensor_data(source, index, placement)?;
            out.write_all(&data).map_err(io_error)?;
            write_padding(out, placement.size, alignment).map_err(io_error)?;
            progress(placement.size);
        }
        Ok(())
    })
}

/// Lays the tensors out back to back, each starting on an alignment boundary.
fn place_tensors(source: &dyn TensorSource, alignment: u64) -> Result<Vec<Placement>> {
    let mut placements = Vec::with_capacity(source.specs().len());
    let mut seen = HashSet::new();
    let mut next_offset = 0u64;
    for spec in source.specs() {
        let name = names::to_canonical(&spec.name);
        let invalid = |reason: String| Error::Invalid(format!("tensor '{name}': {reason}"));
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!("name is {} bytes; llama.cpp reads at most {MAX_NAME_BYTES}", name.len())));
        }
        if !seen.insert(name.clone()) {
            return Err(invalid("appears twice".to_string()));
        }
        if spec.shape.len() > MAX_DIMS as usize {
            return Err(invalid(format!("{} dimensions; GGML allows {MAX_DIMS}", spec.shape.len())));
        }
        let size = spec.dtype.byte_size(&spec.shape).map_err(|e| invalid(e.to_string()))?;
        let relative_offset = next_offset;
        next_offset = relative_offset
            .checked_add(size)
            .and_then(|end| align_up(end, alignment))
            .ok_or_else(|| invalid("data section size overflows u64".to_string()))?;
        placements.push(Placement { name, dtype: spec.dtype, shape: spec.shape.clone(), size, relative_offset });
    }
    Ok(placements)
}

/// Magic, version, counts, metadata and tensor infos, padded to the alignment.
fn encode_header(metadata: &Metadata, placements: &[Placement], alignment: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    buf.extend_from_slice(&(placements.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in &metadata.entries {
        put_string(&mut buf, key);
        buf.extend_from_slice(&(value.meta_type() as u32).to_le_bytes());
        put_value(&mut buf, value).map_err(|reason| Error::Invalid(format!("metadata '{key}': {reason}")))?;
    }
    for placement in placements {
        put_tensor_info(&mut buf, placement);
    }
    let padded = align_up(buf.len() as u64, alignment).expect("an in-memory header is far below u64::MAX");
    buf.resize(padded as usize, 0);
    Ok(buf)
}

fn put_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// A value without its type id (which the key-value pair or the array carries).
pub(super) fn put_value(buf: &mut Vec<u8>, value: &MetaValue) -> std::result::Result<(), String> {
    match value {
        MetaValue::U8(v) => buf.push(*v),
        MetaValue::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => buf.push(u8::from(*v)),
        MetaValue::String(s) => put_string(buf, s),
        MetaValue::Array(array) => put_array(buf, array, 0)?,
    }
    Ok(())
}

/// Element type, count, elements; `depth` counts the arrays it is nested in.
fn put_array(buf: &mut Vec<u8>, array: &MetaArray, depth: usize) -> std::result::Result<(), String> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"));
    }
    buf.extend_from_slice(&(array.elem_type() as u32).to_le_bytes());
    buf.extend_from_slice(&(array.len() as u64).to_le_bytes());
    match array {
        MetaArray::U8(values) => buf.extend_from_slice(values),
        MetaArray::I8(values) => put_numbers(buf, values, i8::to_le_bytes),
        MetaArray::U16(values) => put_numbers(buf, values, u16::to_le_bytes),
        MetaArray::I16(values) => put_numbers(buf, values, i16::to_le_bytes),
        MetaArray::U32(values) => put_numbers(buf, values, u32::to_le_bytes),
        MetaArray::I32(values) => put_numbers(buf, values, i32::to_le_bytes),
        MetaArray::F32(values) => put_numbers(buf, values, f32::to_le_bytes),
        MetaArray::U64(values) => put_numbers(buf, values, u64::to_le_bytes),
        MetaArray::I64(values) => put_numbers(buf, values, i64::to_le_bytes),
        MetaArray::F64(values) => put_numbers(buf, values, f64::to_le_bytes),
        MetaArray::Bool(values) => buf.extend(values.iter().map(|&v| u8::from(v))),
        MetaArray::String(values) => values.iter().for_each(|s| put_string(buf, s)),
        MetaArray::Array(arrays) => {
            for nested in arrays {
                put_array(buf, nested, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn put_numbers<T: Copy, const N: usize>(buf: &mut Vec<u8>, values: &[T], to_le_bytes: fn(T) -> [u8; N]) {
    buf.reserve(values.len() * N);
    for &value in values {
        buf.extend_from_slice(&to_le_bytes(value));
    }
}

/// Name, dimension count, dimensions innermost first, type id, relative offset.
fn put_tensor_info(buf: &mut Vec<u8>, placement: &Placement) {
    put_string(buf, &placement.name);
    buf.extend_from_slice(&(placement.shape.len() as u32).to_le_bytes());
    for dim in placement.shape.iter().rev() {
        buf.extend_from_slice(&dim.to_le_bytes());
    }
    buf.extend_from_slice(&placement.dtype.id().to_le_bytes());
    buf.extend_from_slice(&placement.relative_offset.to_le_bytes());
}

/// Tensor `index`'s bytes as GGUF stores them: checked for length, and with
/// Llama's Q/K rows put into GGUF order if the source holds them in Hugging Face order.
fn tensor_data<'a>(source: &'a dyn TensorSource, index: usize, placement: &Placement) -> Result<Cow<'a, [u8]>> {
    let data = source.data(index)?;
    if data.len() as u64 != placement.size {
        return Err(Error::Invalid(format!(
            "tensor '{}': source gave {} bytes, {} {:?} needs {}",
            placement.name,
            data.len(),
            placement.dtype,
            placement.shape,
            placement.size
        )));
    }
    let metadata = source.metadata();
    let permuted = source.qk_row_order() == QkRowOrder::HuggingFace
        && metadata.architecture().is_some_and(|arch| qk_order::is_permuted_tensor(arch, &placement.name));
    if !permuted {
        return Ok(data);
    }
    let (row_bytes, heads) = qk_geometry(metadata, placement)?;
    Ok(Cow::Owned(qk_order::reorder_rows(&data, row_bytes, heads, QkRowOrder::HuggingFace, QkRowOrder::Gguf)))
}

/// Row size and head count of a Q or K projection, checked so that the rows
/// split into heads of an even number of rows each (pairs are what RoPE rotates).
fn qk_geometry(metadata: &Metadata, placement: &Placement) -> Result<(usize, usize)> {
    let invalid = |reason: String| Error::Invalid(format!("tensor '{}': {reason}", placement.name));
    if metadata.arch_u64("attention.head_count").is_none() {
        return Err(invalid("reordering Q/K rows needs the architecture's attention.head_count".to_string()));
    }
    let heads = qk_order::heads_of(metadata, &placement.name);
    let rows = placement.shape.first().copied().unwrap_or(0);
    if heads == 0 || rows == 0 || !rows.is_multiple_of(2 * heads as u64) {
        return Err(invalid(format!("{rows} rows do not split into {heads} heads of an even number of rows")));
    }
    Ok(((placement.size / rows) as usize, heads))
}

/// Zeros from the end of `len` bytes of data up to the next alignment boundary.
fn write_padding(out: &mut impl Write, len: u64, alignment: u64) -> std::io::Result<()> {
    let padding = align_up(len, alignment).expect("placed tensors have aligned ends that fit u64") - len;
    std::io::copy(&mut std::io::repeat(0).take(padding), out)?;
    Ok(())
}
