//! Flags several commands share, spelled the same everywhere: the model
//! (positional, or `-m` as llama.cpp users type it), `--backend` and the
//! sampling flags.

use std::path::{Path, PathBuf};

use anyhow::Context;

use apr_engine::backend::BackendKind;
use apr_engine::generate::SamplingParams;

use super::values;
use super::UsageError;

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ModelArg {
    /// Model file: GGUF, SafeTensors or APR (or a Hugging Face model folder).
    #[arg(value_name = "MODEL")]
    model: Option<PathBuf>,
    /// The model, given as a flag (llama.cpp's spelling).
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model_flag: Option<PathBuf>,
}

impl ModelArg {
    pub fn path(&self) -> &PathBuf {
        // clap's required group guarantees exactly one of them.
        self.model.as_ref().or(self.model_flag.as_ref()).expect("clap requires MODEL or --model")
    }
}

#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy (argmax).
    #[arg(long, default_value_t = 0.0, value_parser = values::temperature, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample among the K most likely tokens only (needs --temperature > 0) [default: 0 = no cut].
    #[arg(long, value_name = "K")]
    top_k: Option<usize>,
    /// Sample from the smallest set of tokens holding this much probability (needs --temperature > 0) [default: 1 = no cut].
    #[arg(long, value_name = "P", value_parser = values::top_p, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Seed of the sampler (needs --temperature > 0) [default: 42].
    #[arg(long)]
    seed: Option<u64>,
}

impl SamplingArgs {
    /// The sampler's parameters; a sampling flag given for greedy decoding,
    /// where it would change nothing, is a usage error.
    pub fn params(&self) -> Result<SamplingParams, UsageError> {
        let defaults = SamplingParams::default();
        let sampling_flags =
            [(self.top_k.is_some(), "--top-k"), (self.top_p.is_some(), "--top-p"), (self.seed.is_some(), "--seed")];
        if self.temperature == 0.0 {
            if let Some((_, flag)) = sampling_flags.iter().find(|(given, _)| *given) {
                return Err(UsageError(format!(
                    "{flag} has no effect with --temperature 0 (greedy decoding); give --temperature > 0 to sample"
                )));
            }
        }
        Ok(SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            seed: self.seed.unwrap_or(defaults.seed),
        })
    }
}

/// `result` of opening `path`; when `path` is a folder, the error says it was
/// read as a Hugging Face model folder (otherwise a missing `model.safetensors`
/// inside it is a puzzle).
pub fn opened<T>(path: &Path, result: apr_engine::Result<T>) -> anyhow::Result<T> {
    let result = result.map_err(anyhow::Error::from);
    if !path.is_dir() {
        return result; // the error already names the file
    }
    result.with_context(|| {
        format!(
            "{}: read as a Hugging Face model folder (model.safetensors, config.json, tokenizer.json)",
            path.display()
        )
    })
}

/// `--backend`: where a command's model runs.
#[derive(clap::Args, Debug)]
pub struct BackendArg {
    /// Where the model runs: cpu (SIMD kernels over the quantized blocks), cpu-reference
    /// (weights dequantized, dot products in f64: slow, the exact reference) or cuda.
    #[arg(long, default_value = "cpu", value_parser = backend_kind)]
    pub backend: BackendKind,
}

/// A backend name as `--backend` and its relatives take it.
pub fn backend_kind(name: &str) -> Result<BackendKind, String> {
    name.parse()
}
