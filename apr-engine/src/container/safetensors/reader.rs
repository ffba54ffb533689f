//! Reading a SafeTensors file's header. Every offset in the header is checked
//! against the file before a tensor is described, so views never go out of
//! bounds.

use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{lookup_dtype, DTypeLookup, METADATA_KEY, METADATA_PREFIX};
use crate::container::cursor::Cursor;
use crate::container::{names, Format, MetaValue, Metadata, Parsed, QkRowOrder, TensorInfo};
use crate::dtype::DType;
use crate::error::ParseError;

/// The header starts after its 8-byte length.
const HEADER_START: usize = 8;

/// The reference implementation refuses headers above 100 MB; so do we, so
/// that a file it cannot open is not one we silently accept.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Parses a SafeTensors file held in `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let header = header_text(bytes)?;
    let data_start = HEADER_START + header.len();
    let data_len = (bytes.len() - data_start) as u64;
    let mut metadata = Metadata::default();
    let mut tensors = Vec::new();
    for (key, raw) in header_entries(header)? {
        let at = HEADER_START as u64 + offset_in(header, raw.get());
        if key == METADATA_KEY {
            read_string_map(raw, at, &mut metadata)?;
        } else {
            tensors.push(read_tensor(key, raw, at, data_start as u64, data_len)?);
        }
    }
    // Empty tensors first at a shared offset: they end where they begin.
    tensors.sort_by_key(|t| (t.offset, t.size));
    check_layout(&tensors, data_start as u64, data_len)?;
    let facts = vec![
        ("header_bytes".to_string(), header.len().to_string()),
        ("data_offset".to_string(), data_start.to_string()),
        ("data_bytes".to_string(), data_len.to_string()),
    ];
    Ok(Parsed { format: Format::SafeTensors, metadata, tensors, qk_row_order: QkRowOrder::HuggingFace, facts })
}

/// The JSON header, after checking its length against the file.
fn header_text(bytes: &[u8]) -> Result<&str, ParseError> {
    let mut cursor = Cursor::new(bytes);
    let len = cursor.u64("header_length")?;
    let available = cursor.remaining() as u64;
    if len > available {
        return Err(ParseError::new(
            "header_length",
            0,
            format!("header of {len} bytes does not fit in the {available} bytes after the length"),
        ));
    }
    if len > MAX_HEADER_BYTES {
        return Err(ParseError::new("header_length", 0, format!("header of {len} bytes exceeds {MAX_HEADER_BYTES}")));
    }
    let raw = cursor.take(len as usize, "header")?;
    let text = std::str::from_utf8(raw).map_err(|e| {
        ParseError::new("header", (HEADER_START + e.valid_up_to()) as u64, format!("header is not UTF-8: {e}"))
    })?;
    if !text.starts_with('{') {
        return Err(ParseError::new("header", HEADER_START as u64, "header must start with '{'"));
    }
    Ok(text)
}

/// The header's top-level entries in file order, each value left unparsed
/// so that errors inside it can point at its offset.
fn header_entries(header: &str) -> Result<Vec<(String, &RawValue)>, ParseError> {
    let entries: Entries<'_> =
        serde_json::from_str(header).map_err(|e| json_error("header", header, HEADER_START as u64, &e))?;
    Ok(entries.0)
}

/// A JSON object's entries; a repeated key is an error (the format forbids it
/// and a map would keep only one of them).
struct Entries<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(EntriesVisitor)
    }
}

struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("key {key:?} appears twice")));
            }
            let value: &RawValue = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Entries(entries))
    }
}

/// The header's `__metadata__`: a map of strings to strings.
fn read_string_map(raw: &RawValue, at: u64, metadata: &mut Metadata) -> Result<(), ParseError> {
    let field = format!("header.{METADATA_KEY}");
    let map: indexmap::IndexMap<String, String> =
        serde_json::from_str(raw.get()).map_err(|e| json_error(&field, raw.get(), at, &e))?;
    for (key, value) in map {
        metadata.insert(format!("{METADATA_PREFIX}{key}"), MetaValue::String(value));
    }
    Ok(())
}

/// One tensor entry as the header holds it.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

fn read_tensor(
    name: String,
    raw: &RawValue,
    at: u64,
    data_start: u64,
    data_len: u64,
) -> Result<TensorInfo, ParseError> {
    let field = format!("header.tensors[{name:?}]");
    let entry: Entry = serde_json::from_str(raw.get()).map_err(|e| json_error(&field, raw.get(), at, &e))?;
    let dtype = match lookup_dtype(&entry.dtype) {
        DTypeLookup::Supported(dtype) => dtype,
        DTypeLookup::Unsupported => {
            return Err(ParseError::new(
                format!("{field}.dtype"),
                at,
                format!("SafeTensors dtype {} has no engine dtype", entry.dtype),
            ))
        }
        DTypeLookup::Unknown => {
            return Err(ParseError::new(format!("{field}.dtype"), at, format!("unknown dtype {:?}", entry.dtype)))
        }
    };
    let size =
        checked_size(dtype, &entry.shape).map_err(|reason| ParseError::new(format!("{field}.shape"), at, reason))?;
    let [begin, end] = entry.data_offsets;
    let bad_offsets = |reason: String| ParseError::new(format!("{field}.data_offsets"), at, reason);
    if begin > end {
        return Err(bad_offsets(format!("begin {begin} is after end {end}")));
    }
    if end > data_len {
        return Err(bad_offsets(format!("end {end} is past the {data_len}-byte data section")));
    }
    if end - begin != size {
        return Err(bad_offsets(format!(
            "[{begin}, {end}) holds {} bytes but {dtype} {:?} needs {size}",
            end - begin,
            entry.shape
        )));
    }
    Ok(TensorInfo {
        name: names::to_canonical(&name),
        stored_name: name,
        dtype,
        shape: entry.shape,
        offset: data_start + begin,
        size,
    })
}

fn checked_size(dtype: DType, shape: &[u64]) -> Result<u64, String> {
    dtype.byte_size(shape).map_err(|e| e.to_string())
}

/// Tensors (sorted by offset) must cover the data section exactly, back to
/// back, as the reference implementation requires: no overlap, no gap between
/// two tensors, no bytes after the last one. No two may share a canonical name.
fn check_layout(tensors: &[TensorInfo], data_start: u64, data_len: u64) -> Result<(), ParseError> {
    let mut covered_to = data_start;
    let mut previous: Option<&TensorInfo> = None;
    for tensor in tensors {
        let field = || format!("header.tensors[{:?}].data_offsets", tensor.stored_name);
        let after = || match previous {
            Some(p) => format!("tensor {:?}, which ends at offset {covered_to}", p.stored_name),
            None => format!("the start of the data section (offset {data_start})"),
        };
        if tensor.offset < covered_to {
            return Err(ParseError::new(field(), tensor.offset, format!("overlaps {}", after())));
        }
        if tensor.offset > covered_to {
            let gap = tensor.offset - covered_to;
            return Err(ParseError::new(
                field(),
                tensor.offset,
                format!("leaves {gap} bytes unused after {}", after()),
            ));
        }
        covered_to = tensor.offset + tensor.size;
        previous = Some(tensor);
    }
    let data_end = data_start + data_len;
    if covered_to < data_end {
        let last = previous.map(|p| format!("the last tensor {:?}", p.stored_name)).unwrap_or("the header".into());
        return Err(ParseError::new(
            "data section",
            covered_to,
            format!("{} bytes after {last} belong to no tensor", data_end - covered_to),
        ));
    }
    let mut canonical = HashSet::new();
    for tensor in tensors {
        if !canonical.insert(tensor.name.as_str()) {
            return Err(ParseError::new(
                format!("header.tensors[{:?}]", tensor.stored_name),
                tensor.offset,
                format!("another tensor also maps to the canonical name {:?}", tensor.name),
            ));
        }
    }
    Ok(())
}

/// Byte offset of `inner`, a slice of `outer`, within `outer`.
fn offset_in(outer: &str, inner: &str) -> u64 {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize) as u64
}

/// A serde_json error inside `text` (which starts at file offset `at`), with
/// its line and column turned into a file offset.
fn json_error(field: &str, text: &str, at: u64, error: &serde_json::Error) -> ParseError {
    let offset = at + line_column_offset(text, error.line(), error.column());
    ParseError::new(field, offset, format!("invalid JSON: {error}"))
}

/// Byte offset of a 1-based line and column in `text`.
pub(super) fn line_column_offset(text: &str, line: usize, column: usize) -> u64 {
    let line_start: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(str::len).sum();
    (line_start + column.saturating_sub(1)).min(text.len()) as u64
}
