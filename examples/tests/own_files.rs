//! A converter's output, kept in the crate's tree, against the GGUF it was
//! made from: the test a converter's CI runs on every change.

use apr_engine::model_test;
use apr_engine::testing::Report;

// ANCHOR: own_files
/// `my-conversion` is the APR file a converter wrote from the GGUF
/// (`[package.metadata.apr.models]` declares both). Same blocks, so the same
/// logits to the bit; a converter that drops a tensor, reorders rows or
/// relabels a dtype fails here, naming the first layer that differs.
#[model_test(
    format_equivalence,
    reference = "qwen2.5-coder-0.5b-instruct",
    candidate = "my-conversion",
    prompts = ["What is 2+2?", "fn main() {"],
    max_tokens = 4,
    expect = identical,
    tolerance = logits(max_abs = 0.0),
)]
fn my_conversion_matches_the_gguf(report: &Report) {
    assert_eq!(report.formats, "gguf -> apr");
}
// ANCHOR_END: own_files
