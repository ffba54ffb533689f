//! Backends are candidates too: the same 0.5B file on the SIMD CPU backend
//! (8-bit activations, integer dots) and on the reference backend (F32
//! dequantize-and-dot in f64) is compared with trace-diff like two files.

use apr_engine::backend::BackendKind;
use apr_engine::testing::models::QWEN_0_5B;
use apr_engine::tracediff::{trace_diff_paths, Tolerance, TraceDiffOptions, Verdict};

fn options(tolerance: Tolerance) -> TraceDiffOptions {
    TraceDiffOptions {
        max_tokens: 4,
        trace_tensors: true,
        tolerance,
        candidate_backend: BackendKind::CpuReference,
        ..TraceDiffOptions::new("What is 2+2?")
    }
}

#[test]
fn simd_and_reference_backends_agree_within_activation_quantization() {
    let model = QWEN_0_5B.require();
    // 8-bit activations cost up to a few percent NMSE on small vectors (V of a
    // single token); the tokens must not change.
    let loose = Tolerance { logits_max_abs: 1.5, nmse: 0.1, cosine: 0.95 };
    let report = trace_diff_paths(&model, &model, &options(loose)).unwrap();
    assert_eq!(report.candidate_backend, "cpu-reference");
    assert!(matches!(report.verdict, Verdict::NumericallyEquivalent { .. }), "{}", report.verdict);
    assert!(report.tokens.iter().all(|t| t.matches));
}

#[test]
fn a_strict_backend_diff_points_at_the_computation_not_the_weights() {
    let model = QWEN_0_5B.require();
    let strict = Tolerance { logits_max_abs: 1e-3, nmse: 1e-6, cosine: 0.999_999 };
    let report = trace_diff_paths(&model, &model, &options(strict)).unwrap();
    assert!(!report.verdict.passed());
    assert!(
        report.evidence.iter().any(|e| e.contains("no tensor of layer")),
        "same file on both sides: the evidence must clear the weights: {:?}",
        report.evidence
    );
}

#[test]
fn an_absent_backend_is_an_error_not_a_pass() {
    let model = QWEN_0_5B.require();
    let options = TraceDiffOptions { candidate_backend: BackendKind::Cuda, ..TraceDiffOptions::new("Hi") };
    let err = trace_diff_paths(&model, &model, &options).unwrap_err();
    assert!(err.to_string().contains("CUDA"), "{err}");
}
