//! GGUF, llama.cpp's container (versions 2 and 3, little-endian).
//!
//! Layout: magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata
//! count; the metadata key-value pairs; one info record per tensor (name,
//! dimensions innermost first, GGML type id, offset relative to the data
//! section); zero padding to the alignment; then the data section, where each
//! tensor starts on an alignment boundary. Strings are a `u64` byte length
//! followed by UTF-8 without a terminator.

mod reader;
mod writer;

use super::MetaValue;

pub use reader::{parse, parse_header, HeaderOnly};
pub use writer::write;

/// The first four bytes of every GGUF file.
const MAGIC: &[u8; 4] = b"GGUF";
/// The version the writer produces; the reader also accepts 2, which has the same layout.
const WRITE_VERSION: u32 = 3;
/// The alignment of tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
const ALIGNMENT_KEY: &str = "general.alignment";
/// Metadata arrays nest at most this deep: each level costs a file only 12
/// bytes, so an unbounded depth would let a small file exhaust the stack.
const MAX_ARRAY_DEPTH: usize = 16;
/// GGML tensors have at most four dimensions; llama.cpp rejects more.
const MAX_DIMS: u32 = 4;

/// `offset` rounded up to a multiple of `alignment` (a power of two), or `None` on overflow.
fn align_up(offset: u64, alignment: u64) -> Option<u64> {
    Some(offset.checked_add(alignment - 1)? & !(alignment - 1))
}

/// The alignment `general.alignment` asks for, or why it is unusable. The
/// specification makes it a `u32`; llama.cpp refuses any other type.
fn alignment_of(value: &MetaValue) -> Result<u64, String> {
    match *value {
        MetaValue::U32(a) if a.is_power_of_two() => Ok(a.into()),
        MetaValue::U32(a) => Err(format!("{a} is not a nonzero power of two")),
        ref other => Err(format!("must be a u32, found {:?}", other.meta_type())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_rounds_to_the_next_boundary() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(32, 32), Some(32));
        assert_eq!(align_up(33, 8), Some(40));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }

    #[test]
    fn alignment_must_be_a_power_of_two() {
        assert_eq!(alignment_of(&MetaValue::U32(32)), Ok(32));
        assert_eq!(alignment_of(&MetaValue::U32(1)), Ok(1));
        assert!(alignment_of(&MetaValue::U32(0)).is_err());
        assert!(alignment_of(&MetaValue::U32(48)).is_err());
        assert!(alignment_of(&MetaValue::U64(32)).unwrap_err().contains("U64"));
    }

    /// The reader bounds counts by the smallest encoding of each type; were it
    /// larger than the writer's, valid files with many small values would be refused.
    #[test]
    fn smallest_encodings_agree_between_reader_and_writer() {
        use crate::container::MetaArray;
        let smallest = [
            MetaValue::U8(0),
            MetaValue::I8(0),
            MetaValue::U16(0),
            MetaValue::I16(0),
            MetaValue::U32(0),
            MetaValue::I32(0),
            MetaValue::F32(0.0),
            MetaValue::Bool(false),
            MetaValue::String(String::new()),
            MetaValue::Array(MetaArray::U8(vec![])),
            MetaValue::U64(0),
            MetaValue::I64(0),
            MetaValue::F64(0.0),
        ];
        for value in smallest {
            let mut buf = Vec::new();
            writer::put_value(&mut buf, &value).unwrap();
            assert_eq!(buf.len() as u64, reader::encoded_size_at_least(value.meta_type()), "{value:?}");
        }
    }
}
