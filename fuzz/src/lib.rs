//! What the fuzz targets share: the invariants a successful parse must
//! satisfy, the APR checksum repair that lets mutations reach the
//! structural checks behind the CRCs, and the bodies of the `load` and
//! `chat_template` targets (here so that `seeds.rs` can check its seeds
//! with the very code the fuzzer runs).

pub mod chat;
pub mod load;

use std::collections::HashSet;

use apr_engine::container::Parsed;
use apr_engine::error::ParseError;

/// Which reader produced a result, to check that it reports its own format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Gguf,
    Apr,
    SafeTensors,
}

/// Parses `input` with `reader`; on success, panics if the result breaks an
/// invariant that every consumer of `Parsed` relies on. A parse error is a
/// correct answer to malformed input and passes.
pub fn parse_and_check(reader: Reader, input: &[u8]) {
    let result: Result<Parsed, ParseError> = match reader {
        Reader::Gguf => apr_engine::container::gguf::parse(input),
        Reader::Apr => apr_engine::container::apr::parse(input),
        Reader::SafeTensors => apr_engine::container::safetensors::parse(input),
    };
    match result {
        Ok(parsed) => check_invariants(reader, input, &parsed),
        Err(error) => check_error(input, &error),
    }
}

/// Every tensor lies wholly inside the input, its size is what its dtype and
/// shape take, and no two tensors share a canonical name.
pub fn check_invariants(reader: Reader, input: &[u8], parsed: &Parsed) {
    assert_eq!(parsed.format.name(), reader_name(reader), "reader reported another format");
    let mut names = HashSet::new();
    for t in &parsed.tensors {
        let end = t.offset.checked_add(t.size);
        assert!(
            end.is_some_and(|end| end <= input.len() as u64),
            "tensor {:?}: data {}+{} is outside the {}-byte input",
            t.stored_name,
            t.offset,
            t.size,
            input.len()
        );
        assert_eq!(
            t.dtype.byte_size(&t.shape).ok(),
            Some(t.size),
            "tensor {:?}: size does not match {} {:?}",
            t.stored_name,
            t.dtype,
            t.shape
        );
        assert!(names.insert(t.name.as_str()), "two tensors are named {:?}", t.name);
    }
}

/// An error must name a field and point inside the input (or at its end,
/// where a truncated field would have started).
fn check_error(input: &[u8], error: &ParseError) {
    assert!(!error.field.is_empty(), "error without a field: {error}");
    assert!(error.offset <= input.len() as u64, "error offset past the input ({} bytes): {error}", input.len());
}

fn reader_name(reader: Reader) -> &'static str {
    match reader {
        Reader::Gguf => "gguf",
        Reader::Apr => "apr",
        Reader::SafeTensors => "safetensors",
    }
}

/// APR header length, where its CRC32 sits, and the footer CRC32 length.
const APR_HEADER_LEN: usize = 64;
const APR_HEADER_CRC_AT: usize = 40;
const APR_FOOTER_LEN: usize = 4;

/// Recomputes an APR file's header and footer CRC32s in place. Random
/// mutations almost never keep both checksums valid, so without this the
/// fuzzer would test little beyond the checksum comparison.
pub fn reseal_apr(bytes: &mut [u8]) {
    if bytes.len() < APR_HEADER_LEN + APR_FOOTER_LEN {
        return;
    }
    let mut header = crc32fast::Hasher::new();
    header.update(&bytes[..APR_HEADER_CRC_AT]);
    header.update(&bytes[APR_HEADER_CRC_AT + 4..APR_HEADER_LEN]);
    bytes[APR_HEADER_CRC_AT..APR_HEADER_CRC_AT + 4].copy_from_slice(&header.finalize().to_le_bytes());
    let body_end = bytes.len() - APR_FOOTER_LEN;
    let footer = crc32fast::hash(&bytes[..body_end]);
    bytes[body_end..].copy_from_slice(&footer.to_le_bytes());
}
