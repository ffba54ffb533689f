//! SafeTensors: an 8-byte little-endian header length, a JSON header naming
//! each tensor's dtype, shape and `[begin, end)` byte range within the data
//! section, then the data section. Hugging Face keeps the model's
//! configuration and tokenizer in JSON files beside it; [`hf`] maps those onto
//! GGUF-keyed metadata and back.

pub mod hf;
mod reader;
mod writer;

pub use reader::parse;
pub use writer::write;

use crate::dtype::DType;

/// The header key that holds free-form string metadata rather than a tensor.
const METADATA_KEY: &str = "__metadata__";

/// `__metadata__` entries become metadata keys under this prefix.
pub const METADATA_PREFIX: &str = "safetensors.";

/// The SafeTensors dtype name of an engine dtype, if the format can hold it.
fn dtype_name(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F64 => "F64",
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I8 => "I8",
        DType::I16 => "I16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        _ => return None,
    })
}

/// What a SafeTensors dtype name means to the engine.
enum DTypeLookup {
    Supported(DType),
    /// A dtype of the format with no engine counterpart (U8, BOOL, F8_E4M3, ...).
    Unsupported,
    Unknown,
}

fn lookup_dtype(name: &str) -> DTypeLookup {
    const FORMAT_ONLY: &[&str] =
        &["BOOL", "U8", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"];
    let supported = [DType::F64, DType::F32, DType::F16, DType::BF16, DType::I8, DType::I16, DType::I32, DType::I64];
    if let Some(&dtype) = supported.iter().find(|&&d| dtype_name(d) == Some(name)) {
        DTypeLookup::Supported(dtype)
    } else if FORMAT_ONLY.contains(&name) {
        DTypeLookup::Unsupported
    } else {
        DTypeLookup::Unknown
    }
}
