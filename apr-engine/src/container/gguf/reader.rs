//! The GGUF reader. Every count and length read from the file is checked
//! against the bytes that remain before anything is sized by it, and every
//! offset is computed with checked arithmetic.

use std::collections::HashMap;

use super::{align_up, alignment_of, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::container::cursor::Cursor;
use crate::container::{names, Format, MetaArray, MetaType, MetaValue, Metadata, Parsed, QkRowOrder, TensorInfo};
use crate::dtype::DType;
use crate::error::ParseError;

/// The smallest tensor info record: empty name, no dimensions, type id, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;
/// The smallest key-value pair: empty key, type id, a one-byte value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Vectors sized by a file's counts reserve at most this many entries up
/// front; a count that fits the file's bytes can still ask for far more
/// memory than the file holds, since a parsed entry is larger than its encoding.
const MAX_RESERVE: usize = 4096;

struct Header {
    version: u32,
    tensor_count: usize,
    kv_count: usize,
}

/// A tensor info record as read, before its data is located.
struct RawTensorInfo {
    /// Canonical name.
    name: String,
    stored_name: String,
    name_at: u64,
    dtype: DType,
    /// Outermost first.
    shape: Vec<u64>,
    size: u64,
    relative_offset: u64,
    offset_at: u64,
}

/// Whether the bytes must hold the tensor data or only the header before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataSection {
    /// Every tensor's data must lie wholly inside the bytes (a model file).
    Required,
    /// The bytes may end anywhere after the tensor table: a header-only
    /// prefix, which `synth` reads to make a file of the same layout.
    NotRequired,
}

/// Parses a GGUF file's bytes into metadata and tensor descriptions.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    parse_with(bytes, DataSection::Required).map(|header| header.parsed)
}

/// A GGUF header read without its tensor data.
#[derive(Debug, Clone)]
pub struct HeaderOnly {
    pub parsed: Parsed,
    /// Where the data section starts: the header's length with its padding.
    pub data_offset: u64,
}

/// Parses only a GGUF header: magic, counts, metadata and the whole tensor
/// table, every check of [`parse`] kept but the one that tensor data lies
/// inside the bytes. So `bytes` may be a prefix of a file cut anywhere after
/// its tensor table (or the whole file). Only for reading a layout (`synth`):
/// the offsets it returns may point past the end of `bytes`.
pub fn parse_header(bytes: &[u8]) -> Result<HeaderOnly, ParseError> {
    parse_with(bytes, DataSection::NotRequired)
}

fn parse_with(bytes: &[u8], data: DataSection) -> Result<HeaderOnly, ParseError> {
    let mut cur = Cursor::new(bytes);
    let header = read_header(&mut cur)?;
    let (metadata, alignment) = read_metadata(&mut cur, header.kv_count)?;
    let raw_infos = (0..header.tensor_count).map(|i| read_tensor_info(&mut cur, i)).collect::<Result<Vec<_>, _>>()?;
    check_unique_names(&raw_infos)?;
    let infos_end = cur.pos();
    let data_offset = align_up(infos_end, alignment)
        .ok_or_else(|| ParseError::new("data section", infos_end, "aligned start overflows u64"))?;
    let tensors = raw_infos
        .into_iter()
        .map(|raw| locate(raw, data_offset, alignment, data, bytes.len() as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let facts = vec![
        ("version".to_string(), header.version.to_string()),
        ("alignment".to_string(), alignment.to_string()),
        ("data offset".to_string(), data_offset.to_string()),
        ("kv count".to_string(), header.kv_count.to_string()),
        ("tensor count".to_string(), header.tensor_count.to_string()),
    ];
    let parsed = Parsed {
        format: Format::Gguf { version: header.version },
        metadata,
        tensors,
        qk_row_order: QkRowOrder::Gguf,
        facts,
    };
    Ok(HeaderOnly { parsed, data_offset })
}

fn read_header(cur: &mut Cursor) -> Result<Header, ParseError> {
    let magic = cur.array::<4>("header.magic")?;
    if &magic != MAGIC {
        return Err(ParseError::new("header.magic", 0, format!("expected \"GGUF\", found {magic:02x?}")));
    }
    let version_at = cur.pos();
    let version = cur.u32("header.version")?;
    if !(2..=3).contains(&version) {
        let hint = match version {
            1 => " (GGUF v1 used 32-bit counts and is obsolete)",
            v if matches!(v.swap_bytes(), 2 | 3) => " (this is a big-endian GGUF file)",
            _ => "",
        };
        return Err(ParseError::new(
            "header.version",
            version_at,
            format!("version {version} is not supported; versions 2 and 3 are{hint}"),
        ));
    }
    let tensor_count = read_count(cur, "header.tensor_count", MIN_TENSOR_INFO_BYTES)?;
    let kv_count = read_count(cur, "header.kv_count", MIN_KV_BYTES)?;
    Ok(Header { version, tensor_count, kv_count })
}

/// Reads a `u64` count of entries that take at least `min_bytes` each, and
/// refuses it unless that many entries fit in the bytes that remain.
fn read_count(cur: &mut Cursor, field: &str, min_bytes: u64) -> Result<usize, ParseError> {
    let at = cur.pos();
    let count = cur.u64(field)?;
    let remaining = cur.remaining() as u64;
    if count > remaining / min_bytes {
        return Err(ParseError::new(
            field,
            at,
            format!(
                "{count} entries of at least {min_bytes} bytes each cannot fit in the {remaining} bytes that remain"
            ),
        ));
    }
    // At most `remaining`, which is a usize.
    Ok(count as usize)
}

/// A string: `u64` length, then that many bytes of UTF-8.
fn read_string<'a>(cur: &mut Cursor<'a>, field: &str) -> Result<&'a str, ParseError> {
    let at = cur.pos();
    let len = cur.u64(field)?;
    if len > cur.remaining() as u64 {
        return Err(ParseError::new(
            field,
            at,
            format!("string length {len} exceeds the {} bytes that remain", cur.remaining()),
        ));
    }
    cur.str(len as usize, field)
}

/// Reads the key-value pairs, and the alignment they set.
fn read_metadata(cur: &mut Cursor, count: usize) -> Result<(Metadata, u64), ParseError> {
    let mut metadata = Metadata::default();
    metadata.entries.reserve(count.min(MAX_RESERVE));
    let mut alignment = DEFAULT_ALIGNMENT;
    for index in 0..count {
        let key_at = cur.pos();
        let key = read_string(cur, &format!("metadata[{index}].key"))?;
        if metadata.entries.contains_key(key) {
            return Err(ParseError::new(format!("metadata[{index}].key"), key_at, format!("duplicate key '{key}'")));
        }
        let type_field = format!("metadata '{key}' type");
        let type_at = cur.pos();
        let value_type = read_meta_type(cur, &type_field, type_at)?;
        let value = read_value(cur, value_type, &format!("metadata '{key}' value"))?;
        if key == ALIGNMENT_KEY {
            alignment = alignment_of(&value).map_err(|reason| ParseError::new(ALIGNMENT_KEY, key_at, reason))?;
        }
        metadata.insert(key, value);
    }
    Ok((metadata, alignment))
}

fn read_meta_type(cur: &mut Cursor, field: &str, at: u64) -> Result<MetaType, ParseError> {
    let id = cur.u32(field)?;
    MetaType::from_id(id).ok_or_else(|| ParseError::new(field, at, format!("unknown metadata value type {id}")))
}

/// One key's value, of a known type.
fn read_value(cur: &mut Cursor, value_type: MetaType, field: &str) -> Result<MetaValue, ParseError> {
    Ok(match value_type {
        MetaType::U8 => MetaValue::U8(cur.u8(field)?),
        MetaType::I8 => MetaValue::I8(cur.i8(field)?),
        MetaType::U16 => MetaValue::U16(cur.u16(field)?),
        MetaType::I16 => MetaValue::I16(cur.i16(field)?),
        MetaType::U32 => MetaValue::U32(cur.u32(field)?),
        MetaType::I32 => MetaValue::I32(cur.i32(field)?),
        MetaType::F32 => MetaValue::F32(cur.f32(field)?),
        MetaType::U64 => MetaValue::U64(cur.u64(field)?),
        MetaType::I64 => MetaValue::I64(cur.i64(field)?),
        MetaType::F64 => MetaValue::F64(cur.f64(field)?),
        MetaType::Bool => {
            let at = cur.pos();
            MetaValue::Bool(bool_of(cur.u8(field)?, field, at)?)
        }
        MetaType::String => MetaValue::String(read_string(cur, field)?.to_string()),
        MetaType::Array => MetaValue::Array(read_array(cur, field, 0)?),
    })
}

/// A bool is one byte, 0 or 1; anything else could not be written back as read.
fn bool_of(byte: u8, field: &str, at: u64) -> Result<bool, ParseError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(ParseError::new(field, at, format!("bool byte is {other}, not 0 or 1"))),
    }
}

/// An array: element type, `u64` count, elements (which may be arrays
/// themselves); `depth` counts the arrays it is nested in. Numbers and bools
/// are read in one piece into a vector of their own type.
fn read_array(cur: &mut Cursor, field: &str, depth: usize) -> Result<MetaArray, ParseError> {
    let at = cur.pos();
    if depth >= MAX_ARRAY_DEPTH {
        return Err(ParseError::new(field, at, format!("arrays nested more than {MAX_ARRAY_DEPTH} deep")));
    }
    let elem_type = read_meta_type(cur, field, at)?;
    let count = read_count(cur, field, encoded_size_at_least(elem_type))?;
    Ok(match elem_type {
        MetaType::U8 => MetaArray::U8(cur.take(count, field)?.to_vec()),
        MetaType::I8 => MetaArray::I8(read_numbers(cur, count, field, i8::from_le_bytes)?),
        MetaType::U16 => MetaArray::U16(read_numbers(cur, count, field, u16::from_le_bytes)?),
        MetaType::I16 => MetaArray::I16(read_numbers(cur, count, field, i16::from_le_bytes)?),
        MetaType::U32 => MetaArray::U32(read_numbers(cur, count, field, u32::from_le_bytes)?),
        MetaType::I32 => MetaArray::I32(read_numbers(cur, count, field, i32::from_le_bytes)?),
        MetaType::F32 => MetaArray::F32(read_numbers(cur, count, field, f32::from_le_bytes)?),
        MetaType::U64 => MetaArray::U64(read_numbers(cur, count, field, u64::from_le_bytes)?),
        MetaType::I64 => MetaArray::I64(read_numbers(cur, count, field, i64::from_le_bytes)?),
        MetaType::F64 => MetaArray::F64(read_numbers(cur, count, field, f64::from_le_bytes)?),
        MetaType::Bool => {
            let start = cur.pos();
            let bytes = cur.take(count, field)?;
            let bools = bytes.iter().zip(start..).map(|(&byte, at)| bool_of(byte, field, at));
            MetaArray::Bool(bools.collect::<Result<_, _>>()?)
        }
        // A string or an array is larger parsed than encoded, so these grow as
        // they are read rather than reserving what the count asks for.
        MetaType::String => {
            let mut strings = Vec::with_capacity(count.min(MAX_RESERVE));
            for _ in 0..count {
                strings.push(read_string(cur, field)?.to_string());
            }
            MetaArray::String(strings)
        }
        MetaType::Array => {
            let mut arrays = Vec::with_capacity(count.min(MAX_RESERVE));
            for _ in 0..count {
                arrays.push(read_array(cur, field, depth + 1)?);
            }
            MetaArray::Array(arrays)
        }
    })
}

/// `count` little-endian numbers of `N` bytes each. The count was checked
/// against the bytes that remain, so the vector is no larger than those bytes.
fn read_numbers<T, const N: usize>(
    cur: &mut Cursor,
    count: usize,
    field: &str,
    from_le_bytes: fn([u8; N]) -> T,
) -> Result<Vec<T>, ParseError> {
    // Saturating: were the count not checked, `take` would refuse it rather than wrap.
    let bytes = cur.take(count.saturating_mul(N), field)?;
    Ok(bytes.chunks_exact(N).map(|chunk| from_le_bytes(chunk.try_into().expect("chunks of N bytes"))).collect())
}

/// The fewest bytes one value of `t` takes in the file.
pub(super) fn encoded_size_at_least(t: MetaType) -> u64 {
    match t {
        MetaType::U8 | MetaType::I8 | MetaType::Bool => 1,
        MetaType::U16 | MetaType::I16 => 2,
        MetaType::U32 | MetaType::I32 | MetaType::F32 => 4,
        MetaType::U64 | MetaType::I64 | MetaType::F64 | MetaType::String => 8,
        MetaType::Array => 4 + 8,
    }
}

/// One tensor info record: name, `u32` dimension count, dimensions innermost
/// first, `u32` GGML type id, `u64` offset relative to the data section.
fn read_tensor_info(cur: &mut Cursor, index: usize) -> Result<RawTensorInfo, ParseError> {
    let name_at = cur.pos();
    let stored_name = read_string(cur, &format!("tensor[{index}].name"))?.to_string();
    let field = |what: &str| format!("tensor '{stored_name}' {what}");
    let dims_at = cur.pos();
    let n_dims = cur.u32(&field("n_dims"))?;
    if n_dims > MAX_DIMS {
        return Err(ParseError::new(field("n_dims"), dims_at, format!("{n_dims} dimensions; GGML allows {MAX_DIMS}")));
    }
    let mut shape = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let dim_at = cur.pos();
        let dim = cur.u64(&field("dims"))?;
        if dim > i64::MAX as u64 {
            return Err(ParseError::new(field("dims"), dim_at, format!("dimension {dim} exceeds GGML's int64 range")));
        }
        shape.push(dim);
    }
    shape.reverse();
    let type_at = cur.pos();
    let type_id = cur.u32(&field("dtype"))?;
    let dtype = DType::from_id(type_id).map_err(|e| ParseError::new(field("dtype"), type_at, e.to_string()))?;
    let size = dtype.byte_size(&shape).map_err(|e| ParseError::new(field("dims"), dims_at, e.to_string()))?;
    let offset_at = cur.pos();
    let relative_offset = cur.u64(&field("offset"))?;
    Ok(RawTensorInfo {
        name: names::to_canonical(&stored_name),
        stored_name,
        name_at,
        dtype,
        shape,
        size,
        relative_offset,
        offset_at,
    })
}

/// Two records for one tensor would make lookups by name ambiguous; llama.cpp refuses them too.
fn check_unique_names(infos: &[RawTensorInfo]) -> Result<(), ParseError> {
    let mut seen = HashMap::with_capacity(infos.len());
    for (index, info) in infos.iter().enumerate() {
        if let Some(first) = seen.insert(info.name.as_str(), index) {
            return Err(ParseError::new(
                format!("tensor[{index}].name"),
                info.name_at,
                format!("'{}' names the same tensor as tensor[{first}]", info.stored_name),
            ));
        }
    }
    Ok(())
}

/// Places a tensor's data in the file: aligned, and wholly inside it.
fn locate(
    raw: RawTensorInfo,
    data_offset: u64,
    alignment: u64,
    data: DataSection,
    file_len: u64,
) -> Result<TensorInfo, ParseError> {
    let field = format!("tensor '{}' offset", raw.stored_name);
    if !raw.relative_offset.is_multiple_of(alignment) {
        return Err(ParseError::new(
            field,
            raw.offset_at,
            format!("relative offset {} is not a multiple of the alignment {alignment}", raw.relative_offset),
        ));
    }
    let start = data_offset.checked_add(raw.relative_offset);
    let end = start.and_then(|s| s.checked_add(raw.size));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(ParseError::new(field, raw.offset_at, "data offset plus size overflows u64"));
    };
    if data == DataSection::Required && end > file_len {
        return Err(ParseError::new(
            field,
            raw.offset_at,
            format!("data at {start}..{end} ({} bytes) runs past the end of the file ({file_len} bytes)", raw.size),
        ));
    }
    Ok(TensorInfo {
        name: raw.name,
        stored_name: raw.stored_name,
        dtype: raw.dtype,
        shape: raw.shape,
        offset: start,
        size: raw.size,
    })
}
