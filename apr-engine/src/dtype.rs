//! The one dtype table (DESIGN.md decision 1).
//!
//! A `DType`'s number is its GGML type id; APR stores the same number. Turning
//! a number into a `DType` is fallible: an unknown id is an error, never F32.

use serde::{Deserialize, Serialize};

macro_rules! dtypes {
    ($($variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal;)*) => {
        /// A tensor element type. The discriminant is the GGML type id.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[allow(non_camel_case_types)]
        #[repr(u32)]
        pub enum DType { $($variant = $id,)* }

        impl DType {
            /// Every dtype the engine knows, in id order.
            pub const ALL: &'static [DType] = &[$(DType::$variant,)*];

            /// The GGML type id (also the APR dtype byte).
            pub const fn id(self) -> u32 { self as u32 }

            /// The name GGML and gguf-py use (`Q4_K`, `F32`, ...).
            pub const fn name(self) -> &'static str {
                match self { $(DType::$variant => $name,)* }
            }

            /// Elements in one block (1 for plain types).
            pub const fn block_elems(self) -> usize {
                match self { $(DType::$variant => $block,)* }
            }

            /// Bytes of one block.
            pub const fn block_bytes(self) -> usize {
                match self { $(DType::$variant => $bytes,)* }
            }

            /// Looks up a GGML type id.
            pub fn from_id(id: u32) -> Result<DType, UnknownDType> {
                match id {
                    $($id => Ok(DType::$variant),)*
                    _ => Err(UnknownDType { id, known_name: ggml_name_of_unsupported(id) }),
                }
            }

            /// Looks up a dtype by its GGML name, case-insensitively.
            pub fn from_name(name: &str) -> Option<DType> {
                DType::ALL.iter().copied().find(|d| d.name().eq_ignore_ascii_case(name))
            }
        }
    };
}

dtypes! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q8_1 = 9, "Q8_1", 32, 36;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    BF16 = 30, "BF16", 1, 2;
}

/// GGML ids that exist upstream but that this engine does not read.
fn ggml_name_of_unsupported(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2 (removed from GGML)",
        5 => "Q4_3 (removed from GGML)",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// A dtype id that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype id {id}{}", .known_name.map(|n| format!(" (GGML {n}, not supported)")).unwrap_or_default())]
pub struct UnknownDType {
    pub id: u32,
    pub known_name: Option<&'static str>,
}

/// A shape whose element count is not a whole number of blocks, or overflows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("innermost dimension {inner} is not a multiple of the {dtype} block size {block}")]
    PartialBlock { dtype: &'static str, inner: u64, block: usize },
    #[error("element count of shape {shape:?} overflows u64")]
    Overflow { shape: Vec<u64> },
}

impl DType {
    /// True for block-quantized types (everything but plain scalars).
    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// True for the float types a SafeTensors file can hold without loss of meaning.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// Bytes taken by a tensor of `shape` (outermost first). Blocks run along
    /// the innermost dimension, so it must hold whole blocks.
    pub fn byte_size(self, shape: &[u64]) -> Result<u64, SizeError> {
        let overflow = || SizeError::Overflow { shape: shape.to_vec() };
        let inner = shape.last().copied().unwrap_or(1);
        let block = self.block_elems() as u64;
        if inner % block != 0 {
            return Err(SizeError::PartialBlock { dtype: self.name(), inner, block: self.block_elems() });
        }
        let elems = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
        (elems / block).checked_mul(self.block_bytes() as u64).ok_or_else(overflow)
    }
}

/// Number of elements in `shape`, or `None` on overflow.
pub fn element_count(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_round_trips() {
        for &d in DType::ALL {
            assert_eq!(DType::from_id(d.id()), Ok(d));
            assert_eq!(DType::from_name(d.name()), Some(d));
        }
    }

    #[test]
    fn unknown_id_is_an_error_not_f32() {
        let err = DType::from_id(99).unwrap_err();
        assert_eq!(err.id, 99);
        assert!(DType::from_id(16).unwrap_err().to_string().contains("IQ2_XXS"));
    }

    #[test]
    fn byte_size_counts_blocks() {
        assert_eq!(DType::Q4_K.byte_size(&[2, 512]).unwrap(), 2 * 2 * 144);
        assert_eq!(DType::F32.byte_size(&[3, 5]).unwrap(), 60);
        assert!(DType::Q8_0.byte_size(&[4, 33]).is_err());
        assert!(DType::F32.byte_size(&[u64::MAX, 2]).is_err());
    }
}
