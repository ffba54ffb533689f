//! What a model file holds, as data (`cargo apr inspect` renders it).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::container::{Format, MetaArray, MetaValue, ModelFile, TensorInfo};
use crate::dtype::element_count;
use crate::model::ModelConfig;

#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub schema: &'static str,
    pub path: String,
    pub format: Format,
    pub file_size: u64,
    pub name: Option<String>,
    pub architecture: Option<String>,
    /// `None` with `config_error` set when the metadata does not describe a decoder.
    pub config: Option<ModelConfig>,
    pub config_error: Option<String>,
    pub file_type: Option<u64>,
    pub parameters: u64,
    pub tensor_count: usize,
    /// dtype name -> tensor count and bytes.
    pub dtypes: BTreeMap<String, DTypeCount>,
    pub tokenizer: Option<TokenizerSummary>,
    pub metadata_keys: usize,
    /// Format-specific facts (version, alignment, flags, checksums).
    pub facts: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorInfo>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DTypeCount {
    pub tensors: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenizerSummary {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub tokens: usize,
    pub merges: usize,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub chat_template: bool,
}

/// Builds the report; `with_tensors` adds the full tensor table.
pub fn inspect(model: &ModelFile, with_tensors: bool) -> InspectReport {
    let meta = model.metadata();
    let (config, config_error) = match ModelConfig::from_metadata(meta, model.tensors()) {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut dtypes: BTreeMap<String, DTypeCount> = BTreeMap::new();
    for t in model.tensors() {
        let entry = dtypes.entry(t.dtype.name().to_string()).or_default();
        entry.tensors += 1;
        entry.bytes += t.size;
    }
    InspectReport {
        schema: "apr.inspect.v1",
        path: model.path.display().to_string(),
        format: model.format(),
        file_size: model.file_size(),
        name: meta.get_str("general.name").map(str::to_string),
        architecture: meta.architecture().map(str::to_string),
        config,
        config_error,
        file_type: meta.get_u64("general.file_type"),
        parameters: model.tensors().iter().filter_map(|t| element_count(&t.shape)).sum(),
        tensor_count: model.tensors().len(),
        dtypes,
        tokenizer: tokenizer_summary(model),
        metadata_keys: meta.len(),
        facts: model.parsed.facts.clone(),
        tensors: with_tensors.then(|| model.tensors().to_vec()),
    }
}

fn tokenizer_summary(model: &ModelFile) -> Option<TokenizerSummary> {
    let meta = model.metadata();
    let tokens = meta.get("tokenizer.ggml.tokens")?.as_array()?.len();
    Some(TokenizerSummary {
        model: meta.get_str("tokenizer.ggml.model").map(str::to_string),
        pre: meta.get_str("tokenizer.ggml.pre").map(str::to_string),
        tokens,
        merges: meta.get("tokenizer.ggml.merges").and_then(MetaValue::as_array).map_or(0, MetaArray::len),
        bos: meta.get_u64("tokenizer.ggml.bos_token_id"),
        eos: meta.get_u64("tokenizer.ggml.eos_token_id"),
        chat_template: meta.get_str("tokenizer.chat_template").is_some(),
    })
}
