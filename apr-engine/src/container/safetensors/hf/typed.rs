//! GGUF metadata values as JSON that keeps their types, for the keys that
//! have no Hugging Face field: `{"type": "u32", "value": 7}`, and for arrays
//! `{"type": "array", "elem_type": "string", "value": [...]}` (elements of a
//! nested array are typed objects themselves).

use serde_json::{json, Value};

use crate::container::{MetaArray, MetaType, MetaValue};

pub fn encode(value: &MetaValue) -> Value {
    match value {
        MetaValue::Array(array) => encode_array(array),
        scalar => json!({ "type": type_name(scalar.meta_type()), "value": plain(scalar) }),
    }
}

fn encode_array(array: &MetaArray) -> Value {
    let items: Vec<Value> = match array {
        MetaArray::Array(nested) => nested.iter().map(encode_array).collect(),
        scalars => scalars.values().map(|v| plain(&v)).collect(),
    };
    json!({ "type": type_name(MetaType::Array), "elem_type": type_name(array.elem_type()), "value": items })
}

pub fn decode(value: &Value) -> Result<MetaValue, String> {
    let meta_type = value.get("type").ok_or_else(|| "missing \"type\"".to_string()).and_then(parse_type)?;
    let inner = value.get("value").ok_or("missing \"value\"")?;
    if meta_type != MetaType::Array {
        return scalar(meta_type, inner);
    }
    let elem_type =
        value.get("elem_type").ok_or_else(|| "array without \"elem_type\"".to_string()).and_then(parse_type)?;
    let items = inner.as_array().ok_or("array value is not a JSON array")?;
    let mut array = MetaArray::with_capacity(elem_type, items.len());
    for item in items {
        let value = if elem_type == MetaType::Array { decode(item)? } else { scalar(elem_type, item)? };
        // An element of an array of arrays names its own type, which may not be an array.
        array.push(value).map_err(|found| format!("an array of arrays holds a {found:?}"))?;
    }
    Ok(MetaValue::Array(array))
}

fn type_name(meta_type: MetaType) -> Value {
    serde_json::to_value(meta_type).expect("MetaType serializes as a string")
}

fn parse_type(value: &Value) -> Result<MetaType, String> {
    serde_json::from_value(value.clone()).map_err(|_| format!("unknown metadata type {value}"))
}

/// A scalar as plain JSON. Floats go through their shortest decimal form so
/// that an f32 reads back bit for bit; non-finite floats become strings.
fn plain(value: &MetaValue) -> Value {
    match value {
        MetaValue::U8(v) => json!(v),
        MetaValue::I8(v) => json!(v),
        MetaValue::U16(v) => json!(v),
        MetaValue::I16(v) => json!(v),
        MetaValue::U32(v) => json!(v),
        MetaValue::I32(v) => json!(v),
        MetaValue::U64(v) => json!(v),
        MetaValue::I64(v) => json!(v),
        MetaValue::F32(v) => float(f64::from(*v), v.to_string()),
        MetaValue::F64(v) => float(*v, v.to_string()),
        MetaValue::Bool(v) => json!(v),
        MetaValue::String(v) => json!(v),
        MetaValue::Array(array) => encode_array(array),
    }
}

/// `shortest` is the value's own shortest decimal form (an f32's differs from its f64's).
fn float(value: f64, shortest: String) -> Value {
    if !value.is_finite() {
        return Value::String(shortest);
    }
    shortest.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::String(shortest), Value::Number)
}

fn scalar(meta_type: MetaType, value: &Value) -> Result<MetaValue, String> {
    let wrong = || format!("{value} is not a {}", type_name(meta_type));
    let int = |v: &Value| v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
    macro_rules! integer {
        ($variant:ident) => {
            int(value).and_then(|v| v.try_into().ok()).map(MetaValue::$variant).ok_or_else(wrong)
        };
    }
    match meta_type {
        MetaType::U8 => integer!(U8),
        MetaType::I8 => integer!(I8),
        MetaType::U16 => integer!(U16),
        MetaType::I16 => integer!(I16),
        MetaType::U32 => integer!(U32),
        MetaType::I32 => integer!(I32),
        MetaType::U64 => integer!(U64),
        MetaType::I64 => integer!(I64),
        MetaType::F32 => float_of(value).map(|v| MetaValue::F32(v as f32)).ok_or_else(wrong),
        MetaType::F64 => float_of(value).map(MetaValue::F64).ok_or_else(wrong),
        MetaType::Bool => value.as_bool().map(MetaValue::Bool).ok_or_else(wrong),
        MetaType::String => value.as_str().map(|s| MetaValue::String(s.to_string())).ok_or_else(wrong),
        MetaType::Array => decode(value),
    }
}

/// A JSON number, or one of the strings `encode` writes for non-finite floats.
fn float_of(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| value.as_str().and_then(|s| s.parse::<f64>().ok()).filter(|v| !v.is_finite()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips() {
        let values = vec![
            MetaValue::U8(200),
            MetaValue::I8(-5),
            MetaValue::U16(60000),
            MetaValue::I16(-30000),
            MetaValue::U32(4_000_000_000),
            MetaValue::I32(-2_000_000_000),
            MetaValue::U64(u64::MAX),
            MetaValue::I64(i64::MIN),
            MetaValue::F32(1e-6),
            MetaValue::F32(0.1),
            MetaValue::F32(f32::INFINITY),
            MetaValue::F64(0.1),
            MetaValue::Bool(true),
            MetaValue::String("llama".into()),
            MetaValue::Array(MetaArray::I32(vec![1, -3])),
            MetaValue::Array(MetaArray::Array(vec![MetaArray::String(vec!["a".into(), "b".into()])])),
        ];
        for value in values {
            let text = encode(&value).to_string();
            let back = decode(&serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(back, value, "{text}");
        }
    }

    #[test]
    fn out_of_range_and_wrong_types_are_errors() {
        assert!(decode(&json!({"type": "u8", "value": 256})).is_err());
        assert!(decode(&json!({"type": "i32", "value": "7"})).is_err());
        assert!(decode(&json!({"type": "f32", "value": "1.5"})).is_err());
        assert!(decode(&json!({"type": "q4", "value": 1})).is_err());
        assert!(decode(&json!({"type": "array", "value": [1]})).is_err());
        let not_an_array = json!({"type": "array", "elem_type": "array", "value": [{"type": "u8", "value": 1}]});
        assert!(decode(&not_an_array).unwrap_err().contains("arrays holds a U8"));
    }
}
