//! The same weights in GGUF, APR and SafeTensors must give the same tokens and logits.

use apr_engine::model_test;
use apr_engine::testing::Report;
use apr_engine::tracediff::Verdict;

// ANCHOR: identical
/// The GGUF file (Q4_K_M mix: Q4_K, Q5_0, Q6_K, Q8_0 blocks) against its APR
/// conversion: APR stores the same blocks, so tokens and logits are bit-identical.
#[model_test(
    format_equivalence,
    reference = "qwen2.5-coder-0.5b-instruct",
    candidate = convert(apr, dtype = keep),
    prompts = ["What is 2+2?", "fn main() {"],
    max_tokens = 4,
    expect = identical,
    tolerance = [logits(max_abs = 0.0), top1],
    backends = [cpu, cuda],
)]
fn gguf_and_apr_q4k_are_identical(report: &Report) {
    for prompt in &report.prompts {
        assert_eq!(prompt.trace.verdict, Verdict::Identical);
        assert!(prompt.trace.tokens.iter().all(|t| t.matches));
    }
}
// ANCHOR_END: identical

// ANCHOR: converted_reference
/// Both sides dequantized to F32, one written as SafeTensors (Hugging Face
/// names and layout), one as APR: the values are equal, so is every logit.
#[model_test(
    format_equivalence,
    model = "qwen2.5-coder-0.5b-instruct",
    reference = convert(safetensors, dtype = f32),
    candidate = convert(apr, dtype = f32),
    prompts = ["fn main() {"],
    max_tokens = 3,
    expect = identical,
    tolerance = logits(max_abs = 0.0),
)]
fn safetensors_f32_and_apr_f32_are_identical() {}
// ANCHOR_END: converted_reference
