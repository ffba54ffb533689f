//! Reading an APR v2 file from its bytes. Nothing is trusted: both checksums
//! are verified, every offset and length is checked against the bytes that
//! exist, and the layout must account for every byte (sections in order,
//! tensors 64-aligned, padding zero, nothing unexplained).

use super::header::{Flags, Header, HEADER_LEN};
use super::meta::{self, VOCAB_KEY};
use super::{align_up, ALIGNMENT};
use crate::container::cursor::Cursor;
use crate::container::{names, Format, Parsed, TensorInfo};
use crate::dtype::DType;
use crate::error::ParseError;

const FOOTER_LEN: u64 = 4;
/// Smallest index entry: name length, one name byte, dtype, rank, offset, size.
const MIN_ENTRY_LEN: u64 = 2 + 1 + 1 + 1 + 8 + 8;
/// aprender writes at most eight dimensions; a larger rank is corruption.
const MAX_RANK: u8 = 8;

/// Parses an APR v2 file.
pub fn parse(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let header = Header::parse(bytes)?;
    let body_end = verify_footer(bytes)?;
    let metadata_end = check_sections(&header, body_end)?;
    check_zero(bytes, metadata_end, header.index_offset, "metadata padding")?;
    let meta_bytes = &bytes[header.metadata_offset as usize..metadata_end as usize];
    let decoded = meta::from_json(meta_bytes, header.metadata_offset)?;
    check_vocab_flag(&header, decoded.has_vocab)?;
    let (entries, index_end) = read_index(bytes, &header)?;
    if align_up(index_end) != Some(header.data_offset) {
        return Err(ParseError::new(
            "header.data_offset",
            32,
            format!("data section starts at {} but the index ends at {index_end}", header.data_offset),
        ));
    }
    check_zero(bytes, index_end, header.data_offset, "index padding")?;
    let tensors = place_tensors(bytes, &header, body_end, entries)?;
    Ok(Parsed {
        format: Format::Apr { major: header.major, minor: header.minor },
        metadata: decoded.metadata,
        tensors,
        qk_row_order: decoded.qk_row_order,
        facts: facts(&header, bytes, decoded.typed),
    })
}

/// Checks the footer CRC32; returns where the body (everything before it) ends.
fn verify_footer(bytes: &[u8]) -> Result<u64, ParseError> {
    let len = bytes.len() as u64;
    if len < HEADER_LEN as u64 + FOOTER_LEN {
        return Err(ParseError::new("footer.checksum", len, "file ends before the 4-byte footer checksum"));
    }
    let body_end = len - FOOTER_LEN;
    let stored = Cursor::at(bytes, body_end as usize).u32("footer.checksum")?;
    let computed = crc32fast::hash(&bytes[..body_end as usize]);
    if stored != computed {
        return Err(ParseError::new(
            "footer.checksum",
            body_end,
            format!(
                "footer checksum mismatch: expected 0x{stored:08x} (stored), found 0x{computed:08x} (CRC32 of bytes 0..{body_end})"
            ),
        ));
    }
    Ok(body_end)
}

/// The sections must follow each other in order inside the body, 64-aligned:
/// metadata right after the header, the index right after the padded metadata.
/// Returns where the metadata JSON ends.
fn check_sections(h: &Header, body_end: u64) -> Result<u64, ParseError> {
    if h.metadata_offset != HEADER_LEN as u64 {
        let reason = format!("metadata must start right after the header at 64, not {}", h.metadata_offset);
        return Err(ParseError::new("header.metadata_offset", 12, reason));
    }
    let metadata_end = h.metadata_offset + u64::from(h.metadata_len);
    if metadata_end > body_end {
        let reason = format!("{} bytes of metadata run past the body end {body_end}", h.metadata_len);
        return Err(ParseError::new("header.metadata_length", 20, reason));
    }
    if align_up(metadata_end) != Some(h.index_offset) {
        let reason = format!(
            "index must start at {} (after the padded metadata), not {}",
            align_up(metadata_end).unwrap_or(0),
            h.index_offset
        );
        return Err(ParseError::new("header.index_offset", 24, reason));
    }
    if h.data_offset < h.index_offset || h.data_offset > body_end || !h.data_offset.is_multiple_of(ALIGNMENT) {
        let reason = format!(
            "data section offset {} must be 64-aligned, at or after the index ({}) and inside the body (ends at {body_end})",
            h.data_offset, h.index_offset
        );
        return Err(ParseError::new("header.data_offset", 32, reason));
    }
    Ok(metadata_end)
}

/// Padding between sections must be zero bytes.
fn check_zero(bytes: &[u8], from: u64, to: u64, what: &str) -> Result<(), ParseError> {
    let slice = bytes.get(from as usize..to as usize).unwrap_or_default();
    match slice.iter().position(|&b| b != 0) {
        Some(at) => {
            Err(ParseError::new(what, from + at as u64, format!("padding byte is 0x{:02x}, not zero", slice[at])))
        }
        None => Ok(()),
    }
}

fn check_vocab_flag(h: &Header, has_vocab: bool) -> Result<(), ParseError> {
    let flagged = h.flags.contains(Flags::HAS_VOCAB);
    if flagged == has_vocab {
        return Ok(());
    }
    let reason = if flagged {
        format!("flag HAS_VOCAB is set but the metadata has no {VOCAB_KEY}")
    } else {
        format!("the metadata embeds a tokenizer ({VOCAB_KEY}) but flag HAS_VOCAB is not set")
    };
    Err(ParseError::new("header.flags", 6, reason))
}

/// One index entry as stored.
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    offset: u64,
    size: u64,
    /// Where the entry starts in the file, for error messages.
    at: u64,
}

/// Reads the index between `index_offset` and `data_offset`; returns the
/// entries and where the last one ends.
fn read_index(bytes: &[u8], h: &Header) -> Result<(Vec<Entry>, u64), ParseError> {
    let room = h.data_offset - h.index_offset;
    let count = u64::from(h.tensor_count);
    if count > room / MIN_ENTRY_LEN {
        let reason = format!("{count} tensors cannot fit in a {room}-byte index (at least {MIN_ENTRY_LEN} bytes each)");
        return Err(ParseError::new("header.tensor_count", 8, reason));
    }
    let mut cur = Cursor::at(&bytes[..h.data_offset as usize], h.index_offset as usize);
    let mut entries: Vec<Entry> = Vec::with_capacity(count as usize);
    for i in 0..count {
        let entry = read_entry(&mut cur, i)?;
        if let Some(prev) = entries.last() {
            if entry.name <= prev.name {
                let order = if entry.name == prev.name { "duplicate" } else { "out of order" };
                let reason = format!("index must be sorted by name; '{}' after '{}' is {order}", entry.name, prev.name);
                return Err(ParseError::new(format!("tensor[{i}].name"), entry.at, reason));
            }
        }
        entries.push(entry);
    }
    Ok((entries, cur.pos()))
}

fn read_entry(cur: &mut Cursor, i: u64) -> Result<Entry, ParseError> {
    let at = cur.pos();
    let name_len = cur.u16(&format!("tensor[{i}].name_length"))?;
    if name_len == 0 {
        return Err(ParseError::new(format!("tensor[{i}].name_length"), at, "empty tensor name"));
    }
    let name = cur.str(name_len.into(), &format!("tensor[{i}].name"))?.to_string();
    let dtype_at = cur.pos();
    let id = cur.u8(&format!("tensor '{name}' dtype"))?;
    let dtype = DType::from_id(id.into()).map_err(|e| {
        let hint = if matches!(id, 128 | 129) { " (aprender's own Q4/Q8 block format, not a GGML type)" } else { "" };
        ParseError::new(format!("tensor '{name}' dtype"), dtype_at, format!("{e}{hint}"))
    })?;
    let rank_at = cur.pos();
    let rank = cur.u8(&format!("tensor '{name}' rank"))?;
    if rank > MAX_RANK {
        return Err(ParseError::new(
            format!("tensor '{name}' rank"),
            rank_at,
            format!("rank {rank} exceeds {MAX_RANK}"),
        ));
    }
    let shape = (0..rank).map(|d| cur.u64(&format!("tensor '{name}' dims[{d}]"))).collect::<Result<Vec<_>, _>>()?;
    let offset = cur.u64(&format!("tensor '{name}' offset"))?;
    let size_at = cur.pos();
    let size = cur.u64(&format!("tensor '{name}' size"))?;
    let expected = dtype
        .byte_size(&shape)
        .map_err(|e| ParseError::new(format!("tensor '{name}' shape"), rank_at, e.to_string()))?;
    if size != expected {
        let reason = format!("size {size} but {dtype} {shape:?} takes {expected} bytes");
        return Err(ParseError::new(format!("tensor '{name}' size"), size_at, reason));
    }
    Ok(Entry { name, dtype, shape, offset, size, at })
}

/// Places tensors in the data section: each at the 64-aligned end of the one
/// before it (in offset order), padding zero, the section ending with the last.
fn place_tensors(bytes: &[u8], h: &Header, body_end: u64, entries: Vec<Entry>) -> Result<Vec<TensorInfo>, ParseError> {
    let data_len = body_end - h.data_offset;
    let mut by_offset: Vec<&Entry> = entries.iter().collect();
    by_offset.sort_by_key(|e| (e.offset, e.size));
    let mut expected_start = 0u64;
    for e in by_offset {
        let field = format!("tensor '{}' offset", e.name);
        let entry_offset_at = e.at + 2 + e.name.len() as u64 + 2 + 8 * e.shape.len() as u64;
        if e.offset != expected_start {
            let reason = format!(
                "data offset {} should be {expected_start} (64-aligned, right after the previous tensor); tensors overlap or leave a gap",
                e.offset
            );
            return Err(ParseError::new(field, entry_offset_at, reason));
        }
        let end = e.offset.checked_add(e.size).filter(|&end| end <= data_len).ok_or_else(|| {
            let reason = format!("{} bytes at {} run past the data section ({data_len} bytes)", e.size, e.offset);
            ParseError::new(field.clone(), entry_offset_at, reason)
        })?;
        // `end` fits in the data section, so aligning it cannot overflow.
        let padded = align_up(end).unwrap_or(u64::MAX);
        if padded > data_len {
            // Found by fuzzing: reported later as a "data section" error, its offset was past the file.
            let reason = format!(
                "tensor ends at {end} but the data section ({data_len} bytes) ends before its zero padding to {padded}"
            );
            return Err(ParseError::new(format!("tensor '{}' padding", e.name), h.data_offset + end, reason));
        }
        check_zero(bytes, h.data_offset + end, h.data_offset + padded, "tensor padding")?;
        expected_start = padded;
    }
    if expected_start != data_len {
        let reason = format!("data section holds {data_len} bytes but its tensors account for {expected_start}");
        return Err(ParseError::new("data section", h.data_offset + expected_start, reason));
    }
    to_infos(h, entries)
}

fn to_infos(h: &Header, entries: Vec<Entry>) -> Result<Vec<TensorInfo>, ParseError> {
    let mut infos: Vec<TensorInfo> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashMap::with_capacity(entries.len());
    for e in entries {
        let name = names::to_canonical(&e.name);
        if let Some(other) = seen.insert(name.clone(), e.name.clone()) {
            let reason = format!("'{}' and '{other}' are the same tensor ({name})", e.name);
            return Err(ParseError::new(format!("tensor '{}' name", e.name), e.at, reason));
        }
        let offset = h.data_offset + e.offset;
        infos.push(TensorInfo { name, stored_name: e.name, dtype: e.dtype, shape: e.shape, offset, size: e.size });
    }
    Ok(infos)
}

fn facts(h: &Header, bytes: &[u8], typed: bool) -> Vec<(String, String)> {
    let footer = &bytes[bytes.len() - FOOTER_LEN as usize..];
    vec![
        ("flags".into(), format!("0x{:04x} ({})", h.flags.0, h.flags.describe())),
        ("header checksum".into(), format!("0x{:08x}", u32::from_le_bytes(bytes[40..44].try_into().expect("4 bytes")))),
        ("footer checksum".into(), format!("0x{:08x}", u32::from_le_bytes(footer.try_into().expect("4 bytes")))),
        ("metadata bytes".into(), h.metadata_len.to_string()),
        ("index offset".into(), h.index_offset.to_string()),
        ("data offset".into(), h.data_offset.to_string()),
        ("alignment".into(), ALIGNMENT.to_string()),
        ("typed GGUF metadata".into(), if typed { "yes" } else { "no (built from aprender fields)" }.into()),
    ]
}
