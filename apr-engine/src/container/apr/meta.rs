//! The metadata JSON: GGUF-typed [`Metadata`] to APR's JSON object and back.
//!
//! The object holds three layers:
//! - aprender's model fields (`architecture`, `hidden_size`, `num_layers`, ...),
//!   which aprender and realizar read;
//! - the embedded tokenizer under aprender's flat `tokenizer.*` keys
//!   (`tokenizer.vocabulary`, `tokenizer.merges`, ...);
//! - `gguf_metadata`: every GGUF key in order with its type. Tokenizer keys
//!   point at the `tokenizer.*` field that holds their value (`value_at`) rather
//!   than storing the vocabulary twice.
//!
//! A file without `gguf_metadata` (written by aprender) gets GGUF keys built
//! from the first two layers, so the engine always sees GGUF-style metadata.

use serde_json::{Map, Value as Json};

use crate::container::{qk_order, MetaArray, MetaType, MetaValue, Metadata, QkRowOrder};
use crate::error::{Error, ParseError};

/// Top-level key of the typed GGUF entries.
pub const GGUF_KEY: &str = "gguf_metadata";
/// Top-level key whose presence means "this file embeds a tokenizer" (flag HAS_VOCAB).
pub const VOCAB_KEY: &str = "tokenizer.vocabulary";

/// aprender's model fields: JSON key, GGUF key suffix after `<arch>.`, GGUF type.
const MODEL_FIELDS: &[(&str, &str, MetaType)] = &[
    ("hidden_size", "embedding_length", MetaType::U32),
    ("num_layers", "block_count", MetaType::U32),
    ("num_heads", "attention.head_count", MetaType::U32),
    ("num_kv_heads", "attention.head_count_kv", MetaType::U32),
    ("vocab_size", "vocab_size", MetaType::U32),
    ("intermediate_size", "feed_forward_length", MetaType::U32),
    ("max_position_embeddings", "context_length", MetaType::U32),
    ("head_dim", "attention.key_length", MetaType::U32),
    ("rope_theta", "rope.freq_base", MetaType::F32),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon", MetaType::F32),
];

/// Tokenizer fields: GGUF key, aprender's JSON key, the GGUF type used when a
/// file carries only the JSON key. Element types are those llama.cpp writes.
const TOKENIZER_FIELDS: &[(&str, &str, MetaType, Option<MetaType>)] = &[
    ("tokenizer.ggml.model", "tokenizer.model", MetaType::String, None),
    ("tokenizer.ggml.pre", "tokenizer.pre_type", MetaType::String, None),
    ("tokenizer.ggml.tokens", VOCAB_KEY, MetaType::Array, Some(MetaType::String)),
    ("tokenizer.ggml.token_type", "tokenizer.token_type", MetaType::Array, Some(MetaType::I32)),
    ("tokenizer.ggml.scores", "tokenizer.scores", MetaType::Array, Some(MetaType::F32)),
    ("tokenizer.ggml.merges", "tokenizer.merges", MetaType::Array, Some(MetaType::String)),
    ("tokenizer.ggml.bos_token_id", "tokenizer.bos_token_id", MetaType::U32, None),
    ("tokenizer.ggml.eos_token_id", "tokenizer.eos_token_id", MetaType::U32, None),
    ("tokenizer.ggml.unknown_token_id", "tokenizer.unknown_token_id", MetaType::U32, None),
    ("tokenizer.ggml.padding_token_id", "tokenizer.padding_token_id", MetaType::U32, None),
    ("tokenizer.ggml.add_bos_token", "tokenizer.add_bos_token", MetaType::Bool, None),
    ("tokenizer.ggml.add_eos_token", "tokenizer.add_eos_token", MetaType::Bool, None),
    ("tokenizer.chat_template", "tokenizer.chat_template", MetaType::String, None),
];

/// Special tokens aprender names by string: its key, the GGUF id key.
const SPECIAL_TOKENS: &[(&str, &str)] = &[
    ("bos_token", "tokenizer.ggml.bos_token_id"),
    ("eos_token", "tokenizer.ggml.eos_token_id"),
    ("unk_token", "tokenizer.ggml.unknown_token_id"),
    ("pad_token", "tokenizer.ggml.padding_token_id"),
];

/// Architectures the engine runs: their Q/K rows rotate by halves (RoPE "NEOX",
/// aprender's `rope_type` 2) when stored in Hugging Face order; a llama file
/// whose rows are in GGUF order rotates adjacent pairs (`rope_type` 0, "NORM").
const KNOWN_ROPE_ARCHS: &[&str] = &["llama", "qwen2"];
const ROPE_TYPE_NEOX: u64 = 2;
const ROPE_TYPE_NORM: u64 = 0;

/// What the writer knows about the tensors, for aprender's summary fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorSummary {
    pub param_count: u64,
    pub total_size: u64,
    /// Rows of `token_embd.weight`, the vocabulary size when no key gives it.
    pub embedding_rows: Option<u64>,
}

/// The metadata JSON for `meta` whose Q/K rows are stored in `row_order`, and
/// whether it embeds a tokenizer.
pub fn to_json(meta: &Metadata, summary: &TensorSummary, row_order: QkRowOrder) -> Result<(Vec<u8>, bool), Error> {
    let mut top = Map::new();
    put_model_fields(meta, summary, row_order, &mut top);
    put_tokenizer_fields(meta, &mut top);
    top.insert(GGUF_KEY.into(), gguf_entries(meta));
    let has_vocab = top.contains_key(VOCAB_KEY);
    let bytes = serde_json::to_vec(&Json::Object(top)).map_err(|e| Error::Invalid(format!("metadata JSON: {e}")))?;
    Ok((bytes, has_vocab))
}

fn put_model_fields(meta: &Metadata, summary: &TensorSummary, row_order: QkRowOrder, top: &mut Map<String, Json>) {
    let arch = meta.architecture();
    if let Some(arch) = arch {
        top.insert("model_type".into(), arch.into());
    }
    if let Some(name) = meta.get_str("general.name") {
        top.insert("name".into(), name.into());
    }
    let Some(arch) = arch else { return };
    top.insert("architecture".into(), arch.into());
    for &(field, suffix, _) in MODEL_FIELDS {
        let value = meta.get(&format!("{arch}.{suffix}"));
        if let Some(number) = value.filter(|v| v.as_f64().is_some()) {
            top.insert(field.into(), encode(number));
        } else if field == "vocab_size" {
            let tokens = meta.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map(|t| t.len() as u64);
            if let Some(rows) = tokens.or(summary.embedding_rows) {
                top.insert(field.into(), rows.into());
            }
        }
    }
    if KNOWN_ROPE_ARCHS.contains(&arch) {
        top.insert("rope_type".into(), rope_type(arch, row_order).into());
    }
    top.insert("param_count".into(), summary.param_count.into());
    top.insert("total_size".into(), summary.total_size.into());
    if let Some(template) = meta.get_str("tokenizer.chat_template") {
        top.insert("chat_template".into(), template.into());
    }
    let specials = special_tokens(meta);
    if !specials.is_empty() {
        top.insert("special_tokens".into(), Json::Object(specials));
    }
}

/// aprender's `special_tokens`: the strings of the tokens the GGUF ids name.
fn special_tokens(meta: &Metadata) -> Map<String, Json> {
    let tokens = meta.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).and_then(MetaArray::as_strings);
    let tokens = tokens.unwrap_or_default();
    SPECIAL_TOKENS
        .iter()
        .filter_map(|&(name, id_key)| {
            let id = usize::try_from(meta.get_u64(id_key)?).ok()?;
            Some((name.to_string(), Json::from(tokens.get(id)?.as_str())))
        })
        .collect()
}

fn put_tokenizer_fields(meta: &Metadata, top: &mut Map<String, Json>) {
    for &(gguf_key, apr_key, ..) in TOKENIZER_FIELDS {
        if let Some(value) = meta.get(gguf_key) {
            top.insert(apr_key.into(), encode(value));
        }
    }
}

/// The APR key that holds a GGUF tokenizer key's value, if it is one.
fn tokenizer_home(gguf_key: &str) -> Option<&'static str> {
    TOKENIZER_FIELDS.iter().find(|(g, ..)| *g == gguf_key).map(|&(_, apr, ..)| apr)
}

fn gguf_entries(meta: &Metadata) -> Json {
    let mut entries = Vec::with_capacity(meta.len());
    for (key, value) in &meta.entries {
        let mut entry = Map::new();
        entry.insert("key".into(), key.as_str().into());
        entry.insert("type".into(), type_name(value.meta_type()).into());
        if let MetaValue::Array(array) = value {
            entry.insert("elem_type".into(), type_name(array.elem_type()).into());
        }
        match tokenizer_home(key) {
            Some(apr_key) => entry.insert("value_at".into(), apr_key.into()),
            None => entry.insert("value".into(), encode(value)),
        };
        entries.push(Json::Object(entry));
    }
    Json::Array(entries)
}

fn type_name(ty: MetaType) -> &'static str {
    match ty {
        MetaType::U8 => "u8",
        MetaType::I8 => "i8",
        MetaType::U16 => "u16",
        MetaType::I16 => "i16",
        MetaType::U32 => "u32",
        MetaType::I32 => "i32",
        MetaType::F32 => "f32",
        MetaType::Bool => "bool",
        MetaType::String => "string",
        MetaType::Array => "array",
        MetaType::U64 => "u64",
        MetaType::I64 => "i64",
        MetaType::F64 => "f64",
    }
}

fn parse_type(json: &Json) -> Result<MetaType, String> {
    let name = json.as_str().ok_or_else(|| format!("type must be a string, found {}", preview(json)))?;
    (0..=12)
        .filter_map(MetaType::from_id)
        .find(|t| type_name(*t) == name)
        .ok_or_else(|| format!("unknown type \"{name}\""))
}

/// A value as JSON. Arrays hold their elements; an element that is itself an
/// array carries its own element type: `{"elem_type": "u32", "value": [...]}`.
fn encode(value: &MetaValue) -> Json {
    match value {
        MetaValue::U8(v) => Json::from(*v),
        MetaValue::I8(v) => Json::from(*v),
        MetaValue::U16(v) => Json::from(*v),
        MetaValue::I16(v) => Json::from(*v),
        MetaValue::U32(v) => Json::from(*v),
        MetaValue::I32(v) => Json::from(*v),
        MetaValue::U64(v) => Json::from(*v),
        MetaValue::I64(v) => Json::from(*v),
        MetaValue::F32(v) => encode_f32(*v),
        MetaValue::F64(v) => encode_f64(*v),
        MetaValue::Bool(v) => Json::from(*v),
        MetaValue::String(v) => Json::from(v.as_str()),
        MetaValue::Array(array) => encode_array(array),
    }
}

fn encode_array(array: &MetaArray) -> Json {
    match array {
        MetaArray::Array(nested) => nested.iter().map(encode_nested).collect(),
        scalars => scalars.values().map(|v| encode(&v)).collect(),
    }
}

fn encode_nested(array: &MetaArray) -> Json {
    let mut nested = Map::new();
    nested.insert("elem_type".into(), type_name(array.elem_type()).into());
    nested.insert("value".into(), encode_array(array));
    Json::Object(nested)
}

/// An f32 as the shortest decimal that reads back to the same bits (as f64,
/// then narrowed), so `1e-6` stays `1e-6` and not `9.999999974752427e-7`.
fn encode_f32(v: f32) -> Json {
    if !v.is_finite() {
        return non_finite(v.into());
    }
    let short: f64 = v.to_string().parse().expect("an f32's Display parses as f64");
    let exact = if (short as f32).to_bits() == v.to_bits() { short } else { f64::from(v) };
    Json::from(exact)
}

fn encode_f64(v: f64) -> Json {
    if v.is_finite() {
        Json::from(v)
    } else {
        non_finite(v)
    }
}

/// JSON has no NaN or infinities; they are written as strings.
fn non_finite(v: f64) -> Json {
    let name = if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    };
    Json::from(name)
}

fn decode_float(json: &Json) -> Option<f64> {
    match json.as_str() {
        Some("NaN") => Some(f64::NAN),
        Some("inf") => Some(f64::INFINITY),
        Some("-inf") => Some(f64::NEG_INFINITY),
        Some(_) => None,
        None => json.as_f64(),
    }
}

/// Reads a JSON value as GGUF type `ty` (`elem` for arrays), checking ranges.
fn decode(ty: MetaType, elem: Option<MetaType>, json: &Json) -> Result<MetaValue, String> {
    let wrong = || format!("expected {}, found {}", type_name(ty), preview(json));
    let unsigned = || json.as_u64().ok_or_else(wrong);
    let signed = || json.as_i64().ok_or_else(wrong);
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(unsigned()?.try_into().map_err(|_| wrong())?),
        MetaType::U16 => MetaValue::U16(unsigned()?.try_into().map_err(|_| wrong())?),
        MetaType::U32 => MetaValue::U32(unsigned()?.try_into().map_err(|_| wrong())?),
        MetaType::U64 => MetaValue::U64(unsigned()?),
        MetaType::I8 => MetaValue::I8(signed()?.try_into().map_err(|_| wrong())?),
        MetaType::I16 => MetaValue::I16(signed()?.try_into().map_err(|_| wrong())?),
        MetaType::I32 => MetaValue::I32(signed()?.try_into().map_err(|_| wrong())?),
        MetaType::I64 => MetaValue::I64(signed()?),
        MetaType::F32 => MetaValue::F32(decode_float(json).ok_or_else(wrong)? as f32),
        MetaType::F64 => MetaValue::F64(decode_float(json).ok_or_else(wrong)?),
        MetaType::Bool => MetaValue::Bool(json.as_bool().ok_or_else(wrong)?),
        MetaType::String => MetaValue::String(json.as_str().ok_or_else(wrong)?.to_string()),
        MetaType::Array => {
            let elem_type = elem.ok_or("array without elem_type")?;
            let items = json.as_array().ok_or_else(wrong)?;
            let mut array = MetaArray::with_capacity(elem_type, items.len());
            for item in items {
                let value = decode_element(elem_type, item)?;
                array.push(value).expect("decode gives a value of the type it is asked for");
            }
            MetaValue::Array(array)
        }
    })
}

fn decode_element(elem_type: MetaType, item: &Json) -> Result<MetaValue, String> {
    if elem_type != MetaType::Array {
        return decode(elem_type, None, item);
    }
    let nested = item.as_object().ok_or_else(|| format!("nested array must be an object, found {}", preview(item)))?;
    let inner = parse_type(nested.get("elem_type").ok_or("nested array without elem_type")?)?;
    decode(MetaType::Array, Some(inner), nested.get("value").ok_or("nested array without value")?)
}

/// The first characters of a JSON value, for error messages.
fn preview(json: &Json) -> String {
    let text = json.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// What the reader takes from the metadata JSON.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub metadata: Metadata,
    pub has_vocab: bool,
    pub qk_row_order: QkRowOrder,
    /// True when the file carries `gguf_metadata` (written by this engine).
    pub typed: bool,
}

/// Parses the metadata section found at `offset`.
pub fn from_json(bytes: &[u8], offset: u64) -> Result<Decoded, ParseError> {
    let err = |reason: String| ParseError::new("metadata", offset, reason);
    let json: Json = serde_json::from_slice(bytes).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let top = json.as_object().ok_or_else(|| err(format!("expected a JSON object, found {}", preview(&json))))?;
    let from_fields = synthesize(top).map_err(err)?;
    let metadata = match top.get(GGUF_KEY) {
        Some(entries) => {
            let typed = decode_entries(entries, top).map_err(err)?;
            check_agreement(&typed, &from_fields).map_err(err)?;
            typed
        }
        None => from_fields,
    };
    Ok(Decoded {
        has_vocab: top.contains_key(VOCAB_KEY),
        qk_row_order: row_order(top, metadata.architecture()),
        typed: top.contains_key(GGUF_KEY),
        metadata,
    })
}

/// The `rope_type` that tells a reader how `arch`'s rows stored in `row_order` rotate.
fn rope_type(arch: &str, row_order: QkRowOrder) -> u64 {
    let permuted_family = qk_order::is_permuted_tensor(arch, "blk.0.attn_q.weight");
    if permuted_family && row_order == QkRowOrder::Gguf {
        ROPE_TYPE_NORM
    } else {
        ROPE_TYPE_NEOX
    }
}

/// aprender marks files whose Q/K rows rotate in adjacent pairs with
/// `rope_type` 0; for the permuted (llama) family that means GGUF row order.
fn row_order(top: &Map<String, Json>, arch: Option<&str>) -> QkRowOrder {
    let pairs = top.get("rope_type").and_then(Json::as_u64) == Some(ROPE_TYPE_NORM);
    let permuted_family = arch.is_some_and(|a| qk_order::is_permuted_tensor(a, "blk.0.attn_q.weight"));
    if pairs && permuted_family {
        QkRowOrder::Gguf
    } else {
        QkRowOrder::HuggingFace
    }
}

/// GGUF keys built from aprender's model and tokenizer fields.
fn synthesize(top: &Map<String, Json>) -> Result<Metadata, String> {
    let mut meta = Metadata::default();
    if let Some(arch) = top.get("architecture") {
        put(&mut meta, "general.architecture".into(), MetaType::String, None, arch)?;
        let arch = arch.as_str().expect("decoded as a string");
        for &(field, suffix, ty) in MODEL_FIELDS {
            if let Some(json) = top.get(field) {
                put(&mut meta, format!("{arch}.{suffix}"), ty, None, json).map_err(|e| format!("{field}: {e}"))?;
            }
        }
    }
    if let Some(name) = top.get("name").filter(|n| !n.is_null()) {
        put(&mut meta, "general.name".into(), MetaType::String, None, name)?;
    }
    for &(gguf_key, apr_key, ty, elem) in TOKENIZER_FIELDS {
        if let Some(json) = top.get(apr_key) {
            put(&mut meta, gguf_key.into(), ty, elem, json)?;
        }
    }
    if let (None, Some(template)) = (meta.get("tokenizer.chat_template"), top.get("chat_template")) {
        if !template.is_null() {
            put(&mut meta, "tokenizer.chat_template".into(), MetaType::String, None, template)?;
        }
    }
    Ok(meta)
}

/// Decodes an aprender field as GGUF type `ty` into `meta[key]`.
fn put(meta: &mut Metadata, key: String, ty: MetaType, elem: Option<MetaType>, json: &Json) -> Result<(), String> {
    let value = decode(ty, elem, json).map_err(|e| format!("field for '{key}': {e}"))?;
    meta.insert(key, value);
    Ok(())
}

/// Decodes `gguf_metadata`: `[{"key", "type", "elem_type"?, "value" | "value_at"}, ...]`.
fn decode_entries(entries: &Json, top: &Map<String, Json>) -> Result<Metadata, String> {
    let list = entries.as_array().ok_or_else(|| format!("{GGUF_KEY} must be an array, found {}", preview(entries)))?;
    let mut meta = Metadata::default();
    for (i, entry) in list.iter().enumerate() {
        let (key, value) = decode_entry(entry, top).map_err(|e| format!("{GGUF_KEY}[{i}]: {e}"))?;
        if meta.entries.contains_key(&key) {
            return Err(format!("{GGUF_KEY}[{i}]: duplicate key '{key}'"));
        }
        meta.insert(key, value);
    }
    Ok(meta)
}

fn decode_entry(entry: &Json, top: &Map<String, Json>) -> Result<(String, MetaValue), String> {
    let obj = entry.as_object().ok_or_else(|| format!("expected an object, found {}", preview(entry)))?;
    let key = obj.get("key").and_then(Json::as_str).ok_or("missing string 'key'")?;
    let ty = parse_type(obj.get("type").ok_or_else(|| format!("'{key}': missing 'type'"))?)?;
    let elem = match (ty, obj.get("elem_type")) {
        (MetaType::Array, Some(elem)) => Some(parse_type(elem)?),
        (MetaType::Array, None) => return Err(format!("'{key}': array without 'elem_type'")),
        (_, Some(_)) => return Err(format!("'{key}': 'elem_type' on a non-array")),
        (_, None) => None,
    };
    let json = match (obj.get("value"), obj.get("value_at")) {
        (Some(value), None) => value,
        (None, Some(at)) => {
            let at = at.as_str().ok_or_else(|| format!("'{key}': value_at must be a string"))?;
            if tokenizer_home(key) != Some(at) {
                return Err(format!("'{key}': value_at \"{at}\" is not the field that holds this key"));
            }
            top.get(at).ok_or_else(|| format!("'{key}': value_at names \"{at}\", which is missing"))?
        }
        _ => return Err(format!("'{key}': needs exactly one of 'value' and 'value_at'")),
    };
    let value = decode(ty, elem, json).map_err(|e| format!("'{key}': {e}"))?;
    Ok((key.to_string(), value))
}

/// aprender's fields and the typed GGUF keys must say the same thing; a file
/// where they differ would run differently in aprender and here.
fn check_agreement(typed: &Metadata, from_fields: &Metadata) -> Result<(), String> {
    for (key, field_value) in &from_fields.entries {
        let Some(typed_value) = typed.get(key) else { continue };
        if !same_value(typed_value, field_value) {
            return Err(format!(
                "aprender field for '{key}' says {} but {GGUF_KEY} says {}",
                preview(&encode(field_value)),
                preview(&encode(typed_value))
            ));
        }
    }
    Ok(())
}

/// Equal as values: numbers compare by value (an f32 field against its f32 key),
/// everything else by its JSON form.
fn same_value(a: &MetaValue, b: &MetaValue) -> bool {
    match (a.as_f64(), b.as_f64()) {
        // NaN equals NaN here: both sides saying NaN agree (a float `==` would not).
        (Some(x), Some(y)) => x == y || (x as f32) == (y as f32) || (x.is_nan() && y.is_nan()),
        _ => encode(a) == encode(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> Metadata {
        let mut meta = Metadata::default();
        meta.insert("general.architecture", MetaValue::String("llama".into()));
        meta.insert("u8", MetaValue::U8(255));
        meta.insert("i8", MetaValue::I8(-128));
        meta.insert("u16", MetaValue::U16(65535));
        meta.insert("i16", MetaValue::I16(-32768));
        meta.insert("u32", MetaValue::U32(u32::MAX));
        meta.insert("i32", MetaValue::I32(i32::MIN));
        meta.insert("u64", MetaValue::U64(u64::MAX));
        meta.insert("i64", MetaValue::I64(i64::MIN));
        meta.insert("f32", MetaValue::F32(1e-6));
        meta.insert("f32.tiny", MetaValue::F32(f32::from_bits(1)));
        meta.insert("f32.neg_zero", MetaValue::F32(-0.0));
        meta.insert("f32.inf", MetaValue::F32(f32::NEG_INFINITY));
        meta.insert("f64", MetaValue::F64(std::f64::consts::PI));
        meta.insert("bool", MetaValue::Bool(true));
        meta.insert("string", MetaValue::String("h\u{e9}llo \"w\"\n".into()));
        meta.insert("llama.block_count", MetaValue::U32(2));
        meta.insert("llama.rope.freq_base", MetaValue::F32(500000.0));
        meta.insert("tokenizer.ggml.tokens", MetaValue::string_array(["<s>".into(), "</s>".into(), "a".into()]));
        meta.insert("tokenizer.ggml.bos_token_id", MetaValue::U32(0));
        meta.insert("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(vec![-1.5; 3])));
        let nested = MetaArray::Array(vec![MetaArray::U8(vec![1, 2]), MetaArray::I64(vec![])]);
        meta.insert("nested", MetaValue::Array(nested));
        meta
    }

    fn round_trip(meta: &Metadata) -> Decoded {
        let (json, _) = to_json(meta, &TensorSummary::default(), QkRowOrder::HuggingFace).unwrap();
        from_json(&json, 64).unwrap()
    }

    #[test]
    fn every_type_round_trips_in_order() {
        let meta = every_type();
        let back = round_trip(&meta);
        assert_eq!(back.metadata.entries.keys().collect::<Vec<_>>(), meta.entries.keys().collect::<Vec<_>>());
        for (key, value) in &meta.entries {
            let got = back.metadata.get(key).unwrap();
            assert_eq!(encode(got), encode(value), "{key}");
            assert_eq!(got.meta_type(), value.meta_type(), "{key}");
        }
        assert_eq!(back.metadata.get("f32.neg_zero").map(|v| format!("{v:?}")), Some("F32(-0.0)".into()));
        assert!(back.has_vocab);
        assert_eq!(back.qk_row_order, QkRowOrder::HuggingFace);
    }

    #[test]
    fn aprender_fields_and_tokenizer_are_written_once() {
        let (json, _) = to_json(&every_type(), &TensorSummary::default(), QkRowOrder::HuggingFace).unwrap();
        let top: Json = serde_json::from_slice(&json).unwrap();
        assert_eq!(top["architecture"], "llama");
        assert_eq!(top["num_layers"], 2);
        assert_eq!(top["rope_theta"], 500000.0);
        assert_eq!(top["vocab_size"], 3);
        assert_eq!(top["rope_type"], 2);
        assert_eq!(top["tokenizer.vocabulary"], serde_json::json!(["<s>", "</s>", "a"]));
        assert_eq!(top["special_tokens"]["bos_token"], "<s>");
        let tokens = top[GGUF_KEY].as_array().unwrap().iter().find(|e| e["key"] == "tokenizer.ggml.tokens").unwrap();
        assert_eq!(tokens["value_at"], "tokenizer.vocabulary");
        assert!(tokens.get("value").is_none(), "the vocabulary is stored once");
        let eps = every_type_f32(1e-6);
        assert_eq!(eps, "1e-6", "shortest f32 form");
    }

    fn every_type_f32(v: f32) -> String {
        encode_f32(v).to_string()
    }

    #[test]
    fn aprender_only_files_get_gguf_keys() {
        let json = br#"{"model_type":"qwen2","architecture":"qwen2","hidden_size":896,"num_layers":24,
            "num_heads":14,"num_kv_heads":2,"rms_norm_eps":1e-6,"rope_theta":1000000.0,
            "tokenizer.vocabulary":["a","b"],"tokenizer.merges":["a b"],"tokenizer.bos_token_id":1,
            "chat_template":"{{ x }}","tensor_shapes":{}}"#;
        let decoded = from_json(json, 64).unwrap();
        let meta = &decoded.metadata;
        assert_eq!(meta.architecture(), Some("qwen2"));
        assert_eq!(meta.get("qwen2.embedding_length"), Some(&MetaValue::U32(896)));
        assert_eq!(meta.get("qwen2.attention.layer_norm_rms_epsilon"), Some(&MetaValue::F32(1e-6)));
        assert_eq!(meta.get("tokenizer.ggml.tokens"), Some(&MetaValue::string_array(["a".into(), "b".into()])));
        assert_eq!(meta.get("tokenizer.ggml.bos_token_id"), Some(&MetaValue::U32(1)));
        assert_eq!(meta.get_str("tokenizer.chat_template"), Some("{{ x }}"));
        assert!(decoded.has_vocab && !decoded.typed);
    }

    #[test]
    fn row_order_survives_the_json() {
        for order in [QkRowOrder::Gguf, QkRowOrder::HuggingFace] {
            let (json, _) = to_json(&every_type(), &TensorSummary::default(), order).unwrap();
            assert_eq!(from_json(&json, 64).unwrap().qk_row_order, order, "llama rows in {order:?}");
        }
    }

    #[test]
    fn llama_with_pair_rope_is_gguf_row_order() {
        let decoded = from_json(br#"{"architecture":"llama","rope_type":0}"#, 64).unwrap();
        assert_eq!(decoded.qk_row_order, QkRowOrder::Gguf);
        let decoded = from_json(br#"{"architecture":"qwen2","rope_type":0}"#, 64).unwrap();
        assert_eq!(decoded.qk_row_order, QkRowOrder::HuggingFace);
    }

    #[test]
    fn disagreeing_fields_and_bad_entries_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"architecture":"qwen2","hidden_size":8,"gguf_metadata":[{"key":"general.architecture","type":"string","value":"qwen2"},{"key":"qwen2.embedding_length","type":"u32","value":9}]}"#, "says"),
            (br#"{"gguf_metadata":[{"key":"a","type":"u8","value":256}]}"#, "expected u8"),
            (br#"{"gguf_metadata":[{"key":"a","type":"u9","value":1}]}"#, "unknown type"),
            (br#"{"gguf_metadata":[{"key":"a","type":"u8","value":1},{"key":"a","type":"u8","value":1}]}"#, "duplicate"),
            (br#"{"gguf_metadata":[{"key":"a","type":"array","value":[1]}]}"#, "elem_type"),
            (br#"{"gguf_metadata":[{"key":"a","type":"array","elem_type":"u8","value":[1,true]}]}"#, "expected u8"),
            (br#"{"gguf_metadata":[{"key":"tokenizer.ggml.tokens","type":"array","elem_type":"string","value_at":"tokenizer.vocabulary"}]}"#, "missing"),
            (br#"{"gguf_metadata":[{"key":"a","type":"string","value_at":"tokenizer.vocabulary"}]}"#, "not the field"),
            (br#"{"hidden_size":"big","architecture":"x"}"#, "hidden_size"),
            (br#"[1]"#, "object"),
            (br#"{"#, "invalid JSON"),
        ];
        for (json, needle) in cases {
            let err = from_json(json, 64).unwrap_err();
            assert_eq!(err.field, "metadata");
            assert!(err.reason.contains(needle), "{} -> {err}", String::from_utf8_lossy(json));
        }
    }
}
