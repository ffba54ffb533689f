//! Typed key-value metadata, the common form of every container's metadata.
//!
//! The value types are GGUF's, so that a GGUF file's metadata survives any
//! conversion unchanged; SafeTensors and APR map their JSON onto these keys.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// GGUF metadata value type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u32)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    pub fn from_id(id: u32) -> Option<MetaType> {
        use MetaType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An array's elements, all of one type and stored as that type: a GGUF
/// array of 50 M u8 takes 50 MB, where a `Vec<MetaValue>` would take 1.6 GB.
/// Elements of a nested array are arrays that each have their own element type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaValue {
    pub fn meta_type(&self) -> MetaType {
        match self {
            MetaValue::U8(_) => MetaType::U8,
            MetaValue::I8(_) => MetaType::I8,
            MetaValue::U16(_) => MetaType::U16,
            MetaValue::I16(_) => MetaType::I16,
            MetaValue::U32(_) => MetaType::U32,
            MetaValue::I32(_) => MetaType::I32,
            MetaValue::F32(_) => MetaType::F32,
            MetaValue::Bool(_) => MetaType::Bool,
            MetaValue::String(_) => MetaType::String,
            MetaValue::Array(_) => MetaType::Array,
            MetaValue::U64(_) => MetaType::U64,
            MetaValue::I64(_) => MetaType::I64,
            MetaValue::F64(_) => MetaType::F64,
        }
    }

    /// Any integer type, widened; `None` for other types or negative values.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer or float type, as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer type as i64; `None` for other types or a u64 above `i64::MAX`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => i64::try_from(self.as_u64()?).ok(),
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(array) => Some(array),
            _ => None,
        }
    }

    pub fn string_array(values: impl IntoIterator<Item = String>) -> MetaValue {
        MetaValue::Array(MetaArray::String(values.into_iter().collect()))
    }
}

/// The methods that are the same for every element type but for the variant's
/// name, which `MetaType`, `MetaValue` and `MetaArray` share.
macro_rules! element_types {
    ($($variant:ident),* $(,)?) => {
        impl MetaArray {
            /// An empty array with room for `capacity` elements of `elem_type`.
            pub fn with_capacity(elem_type: MetaType, capacity: usize) -> MetaArray {
                match elem_type {
                    $(MetaType::$variant => MetaArray::$variant(Vec::with_capacity(capacity)),)*
                }
            }

            pub fn elem_type(&self) -> MetaType {
                match self {
                    $(MetaArray::$variant(_) => MetaType::$variant,)*
                }
            }

            pub fn len(&self) -> usize {
                match self {
                    $(MetaArray::$variant(values) => values.len(),)*
                }
            }

            pub fn truncate(&mut self, len: usize) {
                match self {
                    $(MetaArray::$variant(values) => values.truncate(len),)*
                }
            }

            /// Element `index` as a `MetaValue`: a copy, so a string or a nested
            /// array is cloned; typed access (`as_strings`, `integers`, matching
            /// the variant) avoids that.
            pub fn get(&self, index: usize) -> Option<MetaValue> {
                match self {
                    $(MetaArray::$variant(values) => values.get(index).cloned().map(MetaValue::$variant),)*
                }
            }

            /// Appends `value`, or refuses it (giving its type) if it is not of the element type.
            pub fn push(&mut self, value: MetaValue) -> Result<(), MetaType> {
                match (self, value) {
                    $((MetaArray::$variant(values), MetaValue::$variant(v)) => values.push(v),)*
                    (_, other) => return Err(other.meta_type()),
                }
                Ok(())
            }
        }
    };
}

element_types!(U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64);

impl MetaArray {
    /// An array of `elem_type` holding `values`; the type of the first value
    /// of another type is the error.
    pub fn from_values(
        elem_type: MetaType,
        values: impl IntoIterator<Item = MetaValue>,
    ) -> Result<MetaArray, MetaType> {
        let values = values.into_iter();
        let mut array = MetaArray::with_capacity(elem_type, values.size_hint().0);
        for value in values {
            array.push(value)?;
        }
        Ok(array)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as a `MetaValue`, for code that treats elements alike (see [`MetaArray::get`]).
    pub fn values(&self) -> impl Iterator<Item = MetaValue> + '_ {
        (0..self.len()).map(|index| self.get(index).expect("index below len"))
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            MetaArray::String(strings) => Some(strings),
            _ => None,
        }
    }

    /// The elements as i64, if they are integers that all fit (only a u64 may not).
    pub fn integers(&self) -> Option<impl Iterator<Item = i64> + '_> {
        let fits = match self {
            MetaArray::U8(_) | MetaArray::I8(_) | MetaArray::U16(_) | MetaArray::I16(_) => true,
            MetaArray::U32(_) | MetaArray::I32(_) | MetaArray::I64(_) => true,
            MetaArray::U64(values) => values.iter().all(|&v| i64::try_from(v).is_ok()),
            _ => false,
        };
        fits.then(|| self.values().map(|v| v.as_i64().expect("an integer that fits i64")))
    }
}

/// Ordered metadata: GGUF keys in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub entries: IndexMap<String, MetaValue>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.entries.get(key)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: MetaValue) {
        self.entries.insert(key.into(), value);
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(MetaValue::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(MetaValue::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(MetaValue::as_f64)
    }

    /// `general.architecture`, e.g. `qwen2` or `llama`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// An architecture-scoped key: `arch_u64("block_count")` reads `qwen2.block_count`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        self.get_u64(&format!("{}.{suffix}", self.architecture()?))
    }

    pub fn arch_f64(&self, suffix: &str) -> Option<f64> {
        self.get_f64(&format!("{}.{suffix}", self.architecture()?))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_keep_their_element_type() {
        let array = MetaArray::from_values(MetaType::I16, [MetaValue::I16(-2), MetaValue::I16(5)]).unwrap();
        assert_eq!(array, MetaArray::I16(vec![-2, 5]));
        assert_eq!((array.elem_type(), array.len()), (MetaType::I16, 2));
        assert_eq!(array.get(1), Some(MetaValue::I16(5)));
        assert_eq!(array.values().collect::<Vec<_>>(), [MetaValue::I16(-2), MetaValue::I16(5)]);
        let mixed = MetaArray::from_values(MetaType::U8, [MetaValue::U8(1), MetaValue::Bool(true)]);
        assert_eq!(mixed, Err(MetaType::Bool));
        let nested = MetaArray::from_values(MetaType::Array, [MetaValue::string_array(["a".into()])]).unwrap();
        assert_eq!(nested.get(0).and_then(|a| a.as_array()?.as_strings().map(<[_]>::to_vec)), Some(vec!["a".into()]));
    }

    #[test]
    fn integers_are_widened_when_they_all_fit() {
        let widened = |array: MetaArray| array.integers().map(Iterator::collect::<Vec<_>>);
        assert_eq!(widened(MetaArray::U8(vec![0, 255])), Some(vec![0, 255]));
        assert_eq!(widened(MetaArray::I32(vec![-3])), Some(vec![-3]));
        assert_eq!(widened(MetaArray::U64(vec![1 << 63])), None);
        assert_eq!(widened(MetaArray::F32(vec![1.0])), None);
        assert_eq!(widened(MetaArray::String(vec![])), None);
    }
}
