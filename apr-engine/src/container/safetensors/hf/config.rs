//! `config.json`: the transformers model configuration, to and from the
//! architecture-scoped GGUF keys.

use serde_json::{json, Map, Value};

use super::{Doc, HfError};
use crate::container::{MetaValue, Metadata, TensorSpec};
use crate::dtype::DType;

/// transformers field, GGUF key suffix (after `<arch>.`), and whether it is an integer.
const FIELDS: &[(&str, &str, Kind)] = &[
    ("hidden_size", "embedding_length", Kind::Count),
    ("intermediate_size", "feed_forward_length", Kind::Count),
    ("num_hidden_layers", "block_count", Kind::Count),
    ("num_attention_heads", "attention.head_count", Kind::Count),
    ("num_key_value_heads", "attention.head_count_kv", Kind::Count),
    ("head_dim", "attention.key_length", Kind::Count),
    ("rms_norm_eps", "attention.layer_norm_rms_epsilon", Kind::Float),
    ("rope_theta", "rope.freq_base", Kind::Float),
    ("max_position_embeddings", "context_length", Kind::Count),
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// GGUF writes counts as u32.
    Count,
    /// GGUF writes these as f32.
    Float,
}

/// transformers class names of the architectures the engine runs.
const ARCHITECTURES: &[(&str, &str)] = &[("qwen2", "Qwen2ForCausalLM"), ("llama", "LlamaForCausalLM")];

/// `config.json` for `meta` (without `gguf_metadata`, which the caller adds).
pub fn export(meta: &Metadata, specs: &[TensorSpec]) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(arch) = meta.architecture() {
        let class =
            ARCHITECTURES.iter().find(|(a, _)| *a == arch).map_or_else(|| class_name(arch), |(_, c)| c.to_string());
        config.insert("architectures".into(), json!([class]));
        config.insert("model_type".into(), json!(arch));
        for &(field, suffix, kind) in FIELDS {
            let Some(value) = meta.get(&format!("{arch}.{suffix}")) else { continue };
            let json = match kind {
                Kind::Count => value.as_u64().map(Value::from),
                Kind::Float => value.as_f64().and_then(|v| shortest_float(value, v)),
            };
            if let Some(json) = json {
                config.insert(field.into(), json);
            }
        }
        // Both architectures use SiLU; transformers' default, written for readers that do not assume it.
        config.insert("hidden_act".into(), json!("silu"));
    }
    if let Some(vocab) = vocab_size(meta, specs) {
        config.insert("vocab_size".into(), json!(vocab));
    }
    let tied = !specs.iter().any(|s| s.name == "output.weight");
    config.insert("tie_word_embeddings".into(), json!(tied));
    for (field, key) in
        [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")]
    {
        if let Some(id) = meta.get_u64(key) {
            config.insert(field.into(), json!(id));
        }
    }
    if let Some(dtype) = torch_dtype(specs) {
        config.insert("torch_dtype".into(), json!(dtype));
    }
    config
}

/// `general.architecture` and the `<arch>.*` keys that `config.json` describes.
pub fn import(config: &Doc, meta: &mut Metadata) -> Result<(), HfError> {
    let Some(model_type) = config.value.get("model_type") else { return Ok(()) };
    let arch = model_type.as_str().ok_or_else(|| config.error("model_type", "is not a string"))?;
    meta.insert("general.architecture", MetaValue::String(arch.to_string()));
    for &(field, suffix, kind) in FIELDS {
        let Some(value) = config.value.get(field).filter(|v| !v.is_null()) else { continue };
        let meta_value = match kind {
            Kind::Count => value.as_u64().and_then(|v| u32::try_from(v).ok()).map(MetaValue::U32),
            Kind::Float => value.as_f64().map(|v| MetaValue::F32(v as f32)),
        }
        .ok_or_else(|| config.error(field, format!("{value} is not a valid {}", kind_name(kind))))?;
        meta.insert(format!("{arch}.{suffix}"), meta_value.clone());
        if suffix == "attention.key_length" {
            meta.insert(format!("{arch}.attention.value_length"), meta_value);
        }
    }
    // transformers defaults the KV head count to the head count; GGUF spells it out.
    let kv_key = format!("{arch}.attention.head_count_kv");
    if meta.get(&kv_key).is_none() {
        if let Some(heads) = meta.get(&format!("{arch}.attention.head_count")).cloned() {
            meta.insert(kv_key, heads);
        }
    }
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Count => "count (unsigned 32-bit integer)",
        Kind::Float => "number",
    }
}

/// An f32 metadata value as its shortest decimal (1e-6, not 9.99999997e-7).
fn shortest_float(value: &MetaValue, widened: f64) -> Option<Value> {
    let text = match value {
        MetaValue::F32(v) => v.to_string(),
        _ => widened.to_string(),
    };
    text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number)
}

/// `qwen3moe` -> `Qwen3moeForCausalLM`: a guess for architectures we do not know.
fn class_name(arch: &str) -> String {
    let mut chars = arch.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase().to_string()).unwrap_or_default();
    format!("{first}{}ForCausalLM", chars.as_str())
}

fn vocab_size(meta: &Metadata, specs: &[TensorSpec]) -> Option<u64> {
    meta.arch_u64("vocab_size")
        .or_else(|| meta.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map(|t| t.len() as u64))
        .or_else(|| specs.iter().find(|s| s.name == "token_embd.weight").and_then(|s| s.shape.first().copied()))
}

/// The dtype of the weight matrices, as torch names it.
fn torch_dtype(specs: &[TensorSpec]) -> Option<&'static str> {
    let matrix =
        specs.iter().find(|s| s.name == "token_embd.weight").or_else(|| specs.iter().find(|s| s.shape.len() == 2));
    let dtype = matrix.or_else(|| specs.first())?.dtype;
    Some(match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => return None,
    })
}
