//! Model hyper-parameters from GGUF-keyed metadata (every container maps its
//! configuration onto these keys) and the tensor table.

use serde::Serialize;

use crate::container::{MetaArray, MetaValue, Metadata, TensorInfo};
use crate::error::{Error, Result};

/// Decoder architectures the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Qwen2,
    Llama,
}

impl Architecture {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "qwen2" => Some(Architecture::Qwen2),
            "llama" => Some(Architecture::Llama),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    /// `general.architecture` as written in the file.
    pub architecture: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// No separate `output.weight`: the output head is the token embedding.
    pub tied_embeddings: bool,
}

impl ModelConfig {
    /// Reads the configuration and checks it: a missing required key is an
    /// error naming it, a value of the wrong type or outside what a decoder
    /// can compute with (zero sizes, a NaN epsilon, a negative RoPE base) is an
    /// error naming the key and the value.
    pub fn from_metadata(meta: &Metadata, tensors: &[TensorInfo]) -> Result<ModelConfig> {
        let arch = meta.architecture().ok_or_else(|| missing("general.architecture"))?.to_string();
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let size = |suffix: &str| required_size(meta, &key(suffix));
        let hidden = size("embedding_length")?;
        let heads = size("attention.head_count")?;
        if hidden % heads != 0 {
            return Err(Error::Invalid(format!("{arch}.attention.head_count {heads} does not divide hidden {hidden}")));
        }
        let kv_heads = optional_size(meta, &key("attention.head_count_kv"))?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(Error::Invalid(format!(
                "{arch}.attention.head_count_kv {kv_heads} does not divide head_count {heads}"
            )));
        }
        let config = ModelConfig {
            layers: size("block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim: optional_size(meta, &key("attention.key_length"))?.unwrap_or(hidden / heads),
            ffn: size("feed_forward_length")?,
            vocab: vocab_size(meta, tensors)?,
            context_length: size("context_length")?,
            rope_base: rope_base(meta, &key("rope.freq_base"))?,
            rms_eps: rms_eps(meta, &key("attention.layer_norm_rms_epsilon"))?,
            tied_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
            architecture: arch,
        };
        Ok(config)
    }

    /// The architecture, if the engine can run it.
    pub fn known_architecture(&self) -> Option<Architecture> {
        Architecture::from_name(&self.architecture)
    }
}

fn missing(key: &str) -> Error {
    Error::Invalid(format!("metadata key {key} is missing"))
}

fn invalid(key: &str, reason: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("metadata key {key}: {reason}"))
}

/// A positive integer that sizes something (a dimension, a count); 0 is refused.
fn optional_size(meta: &Metadata, key: &str) -> Result<Option<usize>> {
    let Some(value) = meta.get(key) else { return Ok(None) };
    let number = value
        .as_u64()
        .ok_or_else(|| invalid(key, format!("expected a non-negative integer, found {}", describe(value))))?;
    match usize::try_from(number) {
        Ok(0) => Err(invalid(key, "is 0")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(invalid(key, format!("{number} does not fit this machine's usize"))),
    }
}

/// A value for an error message: scalars as they are, arrays by type and
/// length (an array may hold millions of elements).
fn describe(value: &MetaValue) -> String {
    match value.as_array() {
        Some(items) => format!("an array of {} elements", items.len()),
        None => format!("{value:?}"),
    }
}

fn required_size(meta: &Metadata, key: &str) -> Result<usize> {
    optional_size(meta, key)?.ok_or_else(|| missing(key))
}

fn optional_float(meta: &Metadata, key: &str) -> Result<Option<f64>> {
    let Some(value) = meta.get(key) else { return Ok(None) };
    value.as_f64().map(Some).ok_or_else(|| invalid(key, format!("expected a number, found {}", describe(value))))
}

/// RMSNorm's epsilon. It is added to the mean square of activations whose
/// scale is about 1, so it must be a small positive number: published models
/// use 1e-5 or 1e-6. NaN, infinity, 0, negatives and values from 1 up (which
/// would drown the activations) are refused; so is a value that rounds to 0
/// or infinity as f32, the precision the engine computes in.
fn rms_eps(meta: &Metadata, key: &str) -> Result<f32> {
    let Some(eps) = optional_float(meta, key)? else { return Ok(1e-6) };
    let as_f32 = eps as f32;
    if !(as_f32.is_finite() && as_f32 > 0.0 && eps < 1.0) {
        return Err(invalid(key, format!("{eps:?} is not a usable RMSNorm epsilon (it must be > 0 and < 1)")));
    }
    Ok(as_f32)
}

/// RoPE's frequency base: a positive finite number (10000 for Llama 2,
/// 1000000 for Qwen2.5); 0, negatives, NaN and infinity give no rotation or
/// NaN angles.
fn rope_base(meta: &Metadata, key: &str) -> Result<f32> {
    let Some(base) = optional_float(meta, key)? else { return Ok(10_000.0) };
    let as_f32 = base as f32;
    if !(as_f32.is_finite() && as_f32 > 0.0) {
        return Err(invalid(key, format!("{base:?} is not a usable RoPE frequency base (it must be finite and > 0)")));
    }
    Ok(as_f32)
}

/// The vocabulary: the embedding's rows (the tokens the weights were trained
/// for). A tokenizer in the same file must list exactly that many tokens, as
/// llama.cpp requires (Hugging Face vocabularies shorter than the table are
/// padded with `[PAD<id>]` when read): with fewer, ids past its end are
/// produced by the model but cannot be decoded; with more, it produces ids the
/// embedding has no row for.
fn vocab_size(meta: &Metadata, tensors: &[TensorInfo]) -> Result<usize> {
    const TOKENS: &str = "tokenizer.ggml.tokens";
    let listed = meta.get(TOKENS).and_then(MetaValue::as_array).map(MetaArray::len);
    let embedding = tensors.iter().find(|t| t.name == "token_embd.weight");
    let Some(embedding) = embedding else {
        let declared = || meta.arch_u64("vocab_size").and_then(|v| usize::try_from(v).ok());
        return listed.or_else(declared).ok_or_else(|| missing("tokenizer.ggml.tokens (or token_embd.weight)"));
    };
    let rows = embedding.shape.first().copied().unwrap_or(0);
    let rows = usize::try_from(rows).map_err(|_| Error::Invalid(format!("token_embd.weight has {rows} rows")))?;
    match listed {
        Some(count) if count != rows => Err(invalid(
            TOKENS,
            format!("{count} tokens, but token_embd.weight has {rows} rows (one per token): they must be equal"),
        )),
        _ => Ok(rows),
    }
}
