//! A legitimate numerical difference, accepted knowingly: the model's weight
//! matrices requantized to Q8_0 are not the same numbers as its Q4_K/Q5_0/Q6_K
//! blocks, so the logits move a little. The test states how little.

use apr_engine::model_test;
use apr_engine::testing::Report;

// ANCHOR: equivalent
/// Requantized to Q8_0 (norms stay F32): the same top token at every position,
/// logits close to the original's by every measure (measured on "What is 2+2?":
/// largest NMSE 1.3e-2, smallest cosine 0.9942, largest KL divergence 1.2e-2,
/// largest |dlogit| 0.66). Each bound is a named check in the report.
#[model_test(
    format_equivalence,
    reference = "qwen2.5-coder-0.5b-instruct",
    candidate = convert(apr, dtype = q8_0),
    prompts = ["What is 2+2?"],
    max_tokens = 4,
    expect = equivalent([nmse(3e-2), cosine(0.99)]),
    tolerance = [kld(3e-2), top1],
)]
fn q8_0_requantization_stays_close(report: &Report) {
    let checks = &report.prompts[0].checks;
    // `expect equivalent`, then kld, top1, nmse and cosine: all passed, or the body would not run.
    assert_eq!(checks.len(), 5);
    assert!(report.prompts[0].max_kld.is_some_and(|kld| kld > 0.0), "requantized logits differ a little");
}
// ANCHOR_END: equivalent
