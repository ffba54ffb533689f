//! The fault-injection suite: corrupted copies of the real 0.5B model (and of
//! SmolLM2 for the Llama-only cases), written through the project's own
//! writers, each recognised by trace-diff with the right classification. The
//! uncorrupted conversions must come out Identical.

use std::path::{Path, PathBuf};

use apr_engine::backend::cpu::Cpu;
use apr_engine::container::FormatKind;
use apr_engine::container::{MetaValue, ModelFile};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::dtype::DType;
use apr_engine::model::Model;
use apr_engine::model::{Boundary, KvFault};
use apr_engine::testing::broken_backend::{BrokenOp, OpFault};
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::testing::models::{ReferenceModel, QWEN_0_5B, SMOLLM2};
use apr_engine::tracediff::{
    trace_diff, trace_diff_paths, Classification, Mode, Side, Tolerance, TraceDiffOptions, TraceDiffReport, Verdict,
};

const PROMPT: &str = "What is 2+2?";

/// Exact comparison: the candidates are byte copies except for the fault.
fn strict() -> TraceDiffOptions {
    TraceDiffOptions {
        max_tokens: 6,
        trace_tensors: true,
        tolerance: Tolerance { logits_max_abs: 1e-4, nmse: 1e-9, cosine: 0.999_999 },
        ..TraceDiffOptions::new(PROMPT)
    }
}

fn reference() -> PathBuf {
    QWEN_0_5B.require()
}

/// Writes the 0.5B with `faults` applied to a temporary APR file and trace-diffs it.
fn diff_with(faults: &[Fault], options: &TraceDiffOptions) -> TraceDiffReport {
    diff_model_with(QWEN_0_5B, faults, options)
}

/// Writes `model` with `faults` applied to a temporary APR file and trace-diffs it.
fn diff_model_with(model: ReferenceModel, faults: &[Fault], options: &TraceDiffOptions) -> TraceDiffReport {
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.apr");
    let file = ModelFile::open(model.require()).unwrap();
    write_faulty_copy(&file, &candidate, faults, false).unwrap();
    run_against(&model.require(), &candidate, options)
}

fn run(candidate: &Path, options: &TraceDiffOptions) -> TraceDiffReport {
    run_against(&reference(), candidate, options)
}

fn run_against(reference: &Path, candidate: &Path, options: &TraceDiffOptions) -> TraceDiffReport {
    let report = trace_diff_paths(reference, candidate, options).unwrap();
    eprintln!("{}: {}", candidate.display(), report.verdict);
    for e in &report.evidence {
        eprintln!("  evidence: {e}");
    }
    report
}

fn classification(report: &TraceDiffReport) -> (Classification, Option<usize>, Option<Boundary>) {
    match &report.verdict {
        Verdict::Diverged { classification, layer, boundary, .. } => (*classification, *layer, *boundary),
        other => panic!("expected a divergence, got {other}"),
    }
}

#[test]
fn uncorrupted_conversion_is_identical() {
    let report = diff_with(&[], &strict());
    assert_eq!(report.verdict, Verdict::Identical);
    assert!(report.tokens.len() >= 4 && report.tokens.iter().all(|t| t.matches));
}

#[test]
fn zeroed_embedding_is_an_embedding_failure() {
    let report = diff_with(&[Fault::ZeroTensor("token_embd.weight".into())], &strict());
    let (class, _, boundary) = classification(&report);
    assert_eq!(class, Classification::EmbeddingFailure);
    assert_eq!(boundary, Some(Boundary::Embedding));
}

#[test]
fn scaled_ffn_down_corrupts_its_layer() {
    let fault = Fault::ScaleTensor { name: "blk.5.ffn_down.weight".into(), factor: 1.5 };
    let report = diff_with(&[fault], &strict());
    assert_eq!(classification(&report).0, Classification::LayerCorrupted(5));
}

#[test]
fn slightly_scaled_ffn_down_is_found_while_tokens_still_agree() {
    let fault = Fault::ScaleTensor { name: "blk.20.ffn_down.weight".into(), factor: 1.01 };
    let report = diff_with(&[fault], &strict());
    assert!(report.tokens.iter().all(|t| t.matches), "the greedy tokens should be unchanged: {:?}", report.tokens);
    assert_eq!(classification(&report), (Classification::LayerCorrupted(20), Some(20), Some(Boundary::FfnOutput)));
}

#[test]
fn noise_in_ffn_down_corrupts_its_layer() {
    let fault = Fault::NoiseTensor { name: "blk.12.ffn_down.weight".into(), seed: 7 };
    let report = diff_with(&[fault], &strict());
    assert_eq!(classification(&report).0, Classification::LayerCorrupted(12));
}

#[test]
fn swapped_ffn_down_corrupts_the_first_swapped_layer() {
    let fault = Fault::SwapTensors("blk.3.ffn_down.weight".into(), "blk.7.ffn_down.weight".into());
    let report = diff_with(&[fault], &strict());
    assert_eq!(classification(&report).0, Classification::LayerCorrupted(3));
    assert!(report.evidence.iter().any(|e| e.contains("blk.7.ffn_down.weight")), "{:?}", report.evidence);
}

#[test]
fn nan_in_an_attention_weight_is_an_attention_overflow() {
    let report = diff_with(&[Fault::NanInTensor("blk.4.attn_q.weight".into())], &strict());
    let (class, layer, _) = classification(&report);
    assert_eq!((class, layer), (Classification::AttentionOverflow, Some(4)));
}

#[test]
fn wrong_dtype_byte_is_a_dtype_mismatch() {
    let fault =
        Fault::RelabelDType { name: "blk.2.attn_norm.weight".into(), written_as: DType::F16, labelled: DType::BF16 };
    let report = diff_with(&[fault], &strict());
    assert_eq!(classification(&report).0, Classification::DTypeMismatch);
}

#[test]
fn transposed_tensor_is_a_layout_mismatch() {
    let report = diff_with(&[Fault::TransposeTensor("blk.6.attn_output.weight".into())], &strict());
    let (class, layer, _) = classification(&report);
    assert_eq!((class, layer), (Classification::LayoutMismatch, Some(6)));
}

#[test]
fn stripped_tokenizer_is_a_tokenizer_mismatch() {
    let report = diff_with(&[Fault::StripTokenizer], &strict());
    assert_eq!(classification(&report).0, Classification::TokenizerMismatch);
}

#[test]
fn non_atomic_special_tokens_are_a_tokenizer_mismatch() {
    let report = diff_with(&[Fault::SpecialTokensNotAtomic], &strict());
    assert_eq!(classification(&report).0, Classification::TokenizerMismatch);
    let candidate = report.candidate_prompt_tokens.as_ref().expect("the candidate still has a tokenizer");
    assert!(candidate.len() > report.prompt_tokens.len(), "<|im_start|> should split into pieces");
}

#[test]
fn kv_cache_fault_is_a_kv_cache_init_bug() {
    let options = TraceDiffOptions { candidate_kv_fault: Some(KvFault::ForgetEarlierPositions), ..strict() };
    let report = run(&reference(), &options);
    let first = report.first_divergence.as_ref().expect("a divergence");
    assert!(first.position >= report.prompt_tokens.len(), "prefill positions agree");
    assert_eq!(classification(&report).0, Classification::KvCacheInitBug);
}

#[test]
fn short_context_is_a_context_overflow() {
    // 30-odd prompt tokens, then room for three generated positions only.
    let prompt_len = trace_diff_paths(&reference(), &reference(), &TraceDiffOptions { max_tokens: 0, ..strict() })
        .unwrap()
        .prompt_tokens
        .len();
    let context = MetaValue::U32(prompt_len as u32 + 3);
    let report = diff_with(&[Fault::SetMetadata("qwen2.context_length".into(), context)], &strict());
    assert_eq!(classification(&report).0, Classification::ContextOverflow);
}

#[test]
fn zeroed_output_norm_is_a_weight_load_failure() {
    let report = diff_with(&[Fault::ZeroTensor("output_norm.weight".into())], &strict());
    assert_eq!(classification(&report).0, Classification::WeightLoadFailure);
    assert!(report.tokens.iter().all(|t| t.candidate == report.tokens[0].candidate));
}

#[test]
fn llama_uncorrupted_conversion_is_identical() {
    let report = diff_model_with(SMOLLM2, &[], &strict());
    assert_eq!(report.verdict, Verdict::Identical);
}

/// A Llama GGUF against its SafeTensors export (Q/K rows in the other order):
/// every boundary is compared, the candidate's Q/K brought into the
/// reference's order first, so the pair is equivalent rather than "diverged at Q".
#[test]
fn llama_files_in_two_row_orders_compare_boundary_by_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let model = ModelFile::open(SMOLLM2.require()).unwrap();
    let f32 = |to| ConvertOptions { to, dtype: DTypeChoice::To(DType::F32), force: false };
    let (gguf, st) = (dir.path().join("f32.gguf"), dir.path().join("st"));
    convert(&model, &gguf, f32(FormatKind::Gguf), &mut |_| {}).unwrap();
    convert(&model, &st, f32(FormatKind::SafeTensors), &mut |_| {}).unwrap();
    let options = TraceDiffOptions {
        tolerance: Tolerance { logits_max_abs: 1e-2, nmse: 1e-6, cosine: 0.9999 },
        ..TraceDiffOptions::new("What is the capital of France?")
    };
    let report = run_against(&gguf, &st, &options);
    assert!(report.trace_tensors, "boundaries are compared by default");
    assert!(matches!(report.verdict, Verdict::NumericallyEquivalent { .. }), "{}", report.verdict);
}

fn assert_rotary_permutation_named(report: &TraceDiffReport) {
    let (class, layer, boundary) = classification(report);
    assert_eq!((class, layer, boundary), (Classification::LayoutMismatch, Some(0), Some(Boundary::Q)));
    let named = report.evidence.iter().find(|e| e.starts_with("blk.0.attn_q.weight"));
    let named = named.unwrap_or_else(|| panic!("evidence names blk.0.attn_q.weight: {:?}", report.evidence));
    assert!(named.contains("interleaved into pairs"), "{named}");
}

#[test]
fn llama_qk_rows_permuted_are_a_layout_mismatch_naming_the_tensor_and_order() {
    assert_rotary_permutation_named(&diff_model_with(SMOLLM2, &[Fault::PermuteQkRows], &strict()));
}

#[test]
fn qwen_qk_rows_permuted_are_a_layout_mismatch_naming_the_tensor_and_order() {
    assert_rotary_permutation_named(&diff_with(&[Fault::PermuteQkRows], &strict()));
}

/// A wrong RoPE base leaves position 0 untouched (its angles are all zero) and
/// turns later positions wrong: a position bug, with the position named.
#[test]
fn wrong_rope_base_is_a_position_bug_named_at_its_first_position() {
    let fault = Fault::SetMetadata("qwen2.rope.freq_base".into(), MetaValue::F32(10_000.0));
    let report = diff_with(&[fault], &strict());
    let Verdict::Diverged { position, classification, .. } = &report.verdict else { panic!("{}", report.verdict) };
    assert_eq!(*classification, Classification::ContextOverflow);
    assert!(*position > 0, "position 0 agrees");
    assert!(report.evidence.iter().any(|e| e.contains("qwen2.rope.freq_base")), "{:?}", report.evidence);
    assert!(
        report.evidence.iter().any(|e| e.contains(&format!("from position {position} on"))),
        "{:?}",
        report.evidence
    );
}

// ---------------------------------------------------------------- broken backends

/// The 0.5B on the CPU backend against itself on a CPU backend with one wrong
/// operation: isolated by default (one file, two backends).
fn diff_broken(fault: OpFault) -> TraceDiffReport {
    let path = reference();
    let reference = Side::open(&path).unwrap();
    let broken = Model::load_on(ModelFile::open(&path).unwrap(), BrokenOp::new(Cpu, fault)).unwrap();
    let options = TraceDiffOptions { max_tokens: 4, ..TraceDiffOptions::new(PROMPT) };
    let report = trace_diff(&reference, &Side::of(broken), &options).unwrap();
    eprintln!("{fault:?}: {}", report.verdict);
    for e in &report.evidence {
        eprintln!("  evidence: {e}");
    }
    assert_eq!(report.mode, Mode::Isolated);
    report
}

#[test]
fn a_backend_that_skips_one_layers_rope_is_named_by_layer_and_operation() {
    let report = diff_broken(OpFault::SkipRope { layer: 9 });
    // Position 0 rotates by nothing: the first positions agree, later ones do not.
    let (class, layer, boundary) = classification(&report);
    assert_eq!((class, layer, boundary), (Classification::ContextOverflow, Some(9), Some(Boundary::AttnOutput)));
    assert!(report.evidence[0].contains("layer 9, RoPE + attention + output projection"), "{:?}", report.evidence);
}

#[test]
fn a_backend_that_offsets_one_layers_attention_is_named() {
    let report = diff_broken(OpFault::OffsetAttention { layer: 5, offset: 5e-2 });
    let (class, layer, boundary) = classification(&report);
    assert_eq!((class, layer, boundary), (Classification::LayerCorrupted(5), Some(5), Some(Boundary::AttnOutput)));
}

#[test]
fn a_backend_with_the_wrong_rms_epsilon_fails_at_the_first_norm() {
    let report = diff_broken(OpFault::RmsEps(1e-2));
    let (_, layer, boundary) = classification(&report);
    assert_eq!((layer, boundary), (Some(0), Some(Boundary::AttnNorm)));
    assert!(report.evidence[0].contains("layer 0, the attention norm"), "{:?}", report.evidence);
}
