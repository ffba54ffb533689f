//! Model hyper-parameters from GGUF-keyed metadata (every container maps its
//! configuration onto these keys) and the tensor table.

use serde::Serialize;

use crate::container::{Metadata, TensorInfo};
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
    /// Reads the configuration; a missing required key is an error naming it.
    pub fn from_metadata(meta: &Metadata, tensors: &[TensorInfo]) -> Result<ModelConfig> {
        let arch = meta.architecture().ok_or_else(|| missing("general.architecture"))?.to_string();
        let get = |suffix: &str| -> Result<usize> {
            meta.arch_u64(suffix).map(|v| v as usize).ok_or_else(|| missing(&format!("{arch}.{suffix}")))
        };
        let hidden = get("embedding_length")?;
        let heads = get("attention.head_count")?;
        if heads == 0 || hidden % heads != 0 {
            return Err(Error::Invalid(format!("{arch}.attention.head_count {heads} does not divide hidden {hidden}")));
        }
        let kv_heads = meta.arch_u64("attention.head_count_kv").map(|v| v as usize).unwrap_or(heads);
        let embedding = tensors.iter().find(|t| t.name == "token_embd.weight");
        // The embedding's rows are the vocabulary the weights were trained
        // for (tokenizers may list fewer tokens than a padded table).
        let vocab = embedding
            .map(|t| t.shape[0] as usize)
            .or_else(|| meta.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(<[_]>::len))
            .or_else(|| meta.arch_u64("vocab_size").map(|v| v as usize))
            .ok_or_else(|| missing("tokenizer.ggml.tokens (or token_embd.weight)"))?;
        Ok(ModelConfig {
            layers: get("block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim: meta.arch_u64("attention.key_length").map(|v| v as usize).unwrap_or(hidden / heads),
            ffn: get("feed_forward_length")?,
            vocab,
            context_length: get("context_length")?,
            rope_base: meta.arch_f64("rope.freq_base").unwrap_or(10_000.0) as f32,
            rms_eps: meta.arch_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-6) as f32,
            tied_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
            architecture: arch,
        })
    }

    /// The architecture, if the engine can run it.
    pub fn known_architecture(&self) -> Option<Architecture> {
        Architecture::from_name(&self.architecture)
    }
}

fn missing(key: &str) -> Error {
    Error::Invalid(format!("metadata key {key} is missing"))
}
