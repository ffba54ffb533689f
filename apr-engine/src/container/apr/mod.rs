//! APR v2: aprender's model container, read and written byte for byte.
//!
//! ```text
//! offset 0    header, 64 bytes (magic, version, flags, counts, section offsets, CRC32)
//! 64          JSON metadata, zero-padded to a multiple of 64
//! ...         tensor index, sorted by name, zero-padded to a multiple of 64
//! ...         tensor data, each tensor 64-aligned and zero-padded
//! len - 4     CRC32 of every byte before it
//! ```
//!
//! Tensors are stored with Hugging Face names, outermost-first shapes and
//! Hugging Face Q/K row order; dtype bytes are GGML type ids, so quantized
//! blocks travel unchanged. The metadata JSON carries aprender's model fields,
//! the tokenizer and every GGUF key with its type, so that GGUF -> APR -> GGUF
//! gives back the same metadata. `book/src/apr-format.md` describes the layout.

mod header;
mod meta;
mod reader;
mod writer;

pub use header::{Flags, Header};
pub use reader::parse;
pub use writer::write;

/// Every section, and every tensor, starts at a multiple of this.
pub const ALIGNMENT: u64 = 64;

/// Rounds `n` up to the next multiple of [`ALIGNMENT`]; `None` on overflow.
pub(crate) fn align_up(n: u64) -> Option<u64> {
    Some(n.checked_add(ALIGNMENT - 1)? / ALIGNMENT * ALIGNMENT)
}
