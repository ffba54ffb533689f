//! Backends are candidates too: the same file on the SIMD CPU backend (8-bit
//! activations, integer dots) and on the reference backend (F32
//! dequantize-and-dot in f64) is compared with trace-diff. By default that is
//! an isolated comparison (each candidate operation fed the reference's
//! input, judged per operation); two correct backends must pass it on both
//! reference models. (Broken backends: `fault_injection.rs`.)

use apr_engine::backend::cuda::Cuda;
use apr_engine::backend::BackendKind;
use apr_engine::container::ModelFile;
use apr_engine::model::{Boundary, Model};
use apr_engine::testing::broken_backend::{BrokenOp, OpFault};
use apr_engine::testing::models::{QWEN_0_5B, SMOLLM2};
use apr_engine::tracediff::{trace_diff, trace_diff_paths, Mode, Side, Tolerance, TraceDiffOptions, Verdict};

const PROMPTS: [&str; 3] =
    ["What is 2+2?", "Write a Python function that reverses a string.", "Name three primary colors."];

#[test]
fn cpu_and_cpu_reference_pass_isolated_on_both_models_and_several_prompts() {
    for model in [QWEN_0_5B, SMOLLM2] {
        let path = model.require();
        for prompt in PROMPTS {
            let options = TraceDiffOptions {
                max_tokens: 4,
                candidate_backend: BackendKind::CpuReference,
                ..TraceDiffOptions::new(prompt)
            };
            let report = trace_diff_paths(&path, &path, &options).unwrap();
            assert_eq!(report.mode, Mode::Isolated, "one file on two backends is isolated by default");
            assert_eq!(
                (report.reference_backend.as_str(), report.candidate_backend.as_str()),
                ("cpu", "cpu-reference")
            );
            assert!(
                matches!(report.verdict, Verdict::Identical | Verdict::NumericallyEquivalent { .. }),
                "{} {prompt:?}: {} {:?}",
                path.display(),
                report.verdict,
                report.evidence
            );
        }
    }
}

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
    let report =
        trace_diff_paths(&model, &model, &TraceDiffOptions { mode: Mode::Lockstep, ..options(strict) }).unwrap();
    assert_eq!(report.mode, Mode::Lockstep);
    assert!(!report.verdict.passed());
    assert!(
        report.evidence.iter().any(|e| e.contains("no tensor of layer")),
        "same file on both sides: the evidence must clear the weights: {:?}",
        report.evidence
    );
}

/// CUDA against the exact backend, isolated, on both reference models: where
/// CUDA is absent, asking for it is an error that says why (never a pass).
#[test]
fn cuda_passes_isolated_against_the_exact_backend_or_is_an_error_naming_why() {
    for model in [QWEN_0_5B, SMOLLM2] {
        let path = model.require();
        let options = TraceDiffOptions {
            max_tokens: 4,
            reference_backend: BackendKind::CpuReference,
            candidate_backend: BackendKind::Cuda,
            ..TraceDiffOptions::new(PROMPTS[0])
        };
        let outcome = trace_diff_paths(&path, &path, &options);
        match BackendKind::Cuda.unavailable() {
            Some(why) => {
                let err = outcome.unwrap_err().to_string();
                assert!(err.contains("backend cuda") && err.contains(&why), "{err}");
            }
            None => {
                let report = outcome.unwrap();
                assert_eq!((report.mode, report.candidate_backend.as_str()), (Mode::Isolated, "cuda"));
                // Every operation within its bound. The prompt's products run on
                // tensor cores with weights and inputs rounded to bf16 (measured:
                // the 0.5B's logits move by at most 0.07); decode steps are f32
                // dots. Far inside the CPU's own fast path's distance from llama.cpp (0.36).
                assert!(
                    matches!(report.verdict, Verdict::NumericallyEquivalent { max_diff } if max_diff < 0.25),
                    "{} {:?}",
                    report.verdict,
                    report.evidence
                );
                // A CUDA backend with RoPE skipped in layer 9 is caught there.
                let reference = Side::open_on(&path, BackendKind::CpuReference).unwrap();
                let file = ModelFile::open(&path).unwrap();
                let broken = Model::load_on(file, BrokenOp::new(Cuda::new().unwrap(), OpFault::SkipRope { layer: 9 }));
                let report = trace_diff(&reference, &Side::of(broken.unwrap()), &options).unwrap();
                let Verdict::Diverged { layer, boundary, .. } = report.verdict else { panic!("{}", report.verdict) };
                assert_eq!((layer, boundary), (Some(9), Some(Boundary::AttnOutput)));
            }
        }
    }
}
