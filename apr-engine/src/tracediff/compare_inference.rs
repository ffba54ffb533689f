//! `compare-inference`: both models generate freely (greedy) from the same
//! prompt; their tokens and text are compared and a mismatch is diagnosed.

use std::path::PathBuf;

use serde::Serialize;

use super::{Side, TraceDiffOptions};
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions, SamplingParams};
use crate::pipeline;

#[derive(Debug, Clone, Serialize)]
pub struct SideOutput {
    pub path: PathBuf,
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct InferenceComparison {
    pub schema: &'static str,
    pub reference: SideOutput,
    pub candidate: SideOutput,
    pub tokens_match: bool,
    pub text_match: bool,
    /// Index of the first generated token that differs.
    pub first_mismatch: Option<usize>,
    pub diagnosis: String,
}

pub fn compare_inference(
    reference: &Side,
    candidate: &Side,
    options: &TraceDiffOptions,
) -> Result<InferenceComparison> {
    let reference_out = run(reference, reference, options)?;
    // A candidate without a tokenizer is driven with the reference's.
    let candidate_out = run(candidate, if candidate.tokenizer.is_ok() { candidate } else { reference }, options)?;
    let first_mismatch = first_difference(&reference_out.tokens, &candidate_out.tokens);
    let tokens_match = first_mismatch.is_none();
    let text_match = reference_out.text == candidate_out.text;
    let diagnosis = diagnose(&reference_out, &candidate_out, first_mismatch, candidate);
    Ok(InferenceComparison {
        schema: "apr.compare-inference.v1",
        reference: reference_out,
        candidate: candidate_out,
        tokens_match,
        text_match,
        first_mismatch,
        diagnosis,
    })
}

fn run(side: &Side, tokenizer_side: &Side, o: &TraceDiffOptions) -> Result<SideOutput> {
    let tokenizer = tokenizer_side.tokenizer.as_ref().map_err(|e| Error::Invalid(format!("no tokenizer: {e}")))?;
    let metadata = tokenizer_side.model.file.metadata();
    let prompt = pipeline::prompt_tokens(tokenizer, metadata, &o.prompt, o.system.as_deref(), o.raw)?;
    let context = (prompt.len() + o.max_tokens).min(side.model.config.context_length.max(prompt.len() + 1));
    let mut cache = side.model.new_cache(context);
    let options = GenerateOptions { max_tokens: o.max_tokens, sampling: SamplingParams::default(), logits_top_k: None };
    let generation = generate(&side.model, &mut cache, &prompt, &options, |t| tokenizer.is_eog(t), |_| {})?;
    let shown: &[u32] = match generation.tokens.last() {
        Some(&t) if tokenizer.is_eog(t) => &generation.tokens[..generation.tokens.len() - 1],
        _ => &generation.tokens,
    };
    Ok(SideOutput {
        path: side.model.file.path.clone(),
        text: tokenizer.decode(shown),
        prompt_tokens: prompt,
        tokens: generation.tokens,
    })
}

fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    let common = a.iter().zip(b).position(|(x, y)| x != y);
    common.or(if a.len() != b.len() { Some(a.len().min(b.len())) } else { None })
}

fn diagnose(r: &SideOutput, c: &SideOutput, first: Option<usize>, candidate: &Side) -> String {
    let Some(at) = first else {
        return format!("identical: {} tokens", r.tokens.len());
    };
    if candidate.tokenizer.is_err() {
        return "the candidate has no tokenizer: it was driven with the reference's; a model file should carry its own"
            .into();
    }
    if r.prompt_tokens != c.prompt_tokens {
        return "the prompts tokenize differently: tokenizer mismatch (vocabulary, merges or special tokens)".into();
    }
    if c.text.trim().is_empty() {
        return "model B produced no output: inference bug (layout, kernel or load)".into();
    }
    if c.tokens.windows(2).all(|w| w[0] == w[1]) && c.tokens.len() > 2 {
        return format!("model B repeats token {} only: its weights did not load or a layer is broken", c.tokens[0]);
    }
    if at == 0 {
        return "the first generated token already differs: a numerical bug early in the model; run trace-diff --trace-tensors to find the layer".into();
    }
    format!(
        "the outputs agree for {at} tokens, then differ: small numerical drift or a late-position bug (KV cache, RoPE, context); run trace-diff --trace-tensors"
    )
}
