//! The fault-injection suite: corrupted copies of the real 0.5B model, written
//! through the project's own writers, each recognised by trace-diff with the
//! right classification. The uncorrupted conversion must come out Identical.

use std::path::{Path, PathBuf};

use apr_engine::container::{MetaValue, ModelFile};
use apr_engine::dtype::DType;
use apr_engine::model::{Boundary, KvFault};
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::testing::models::QWEN_0_5B;
use apr_engine::tracediff::{trace_diff_paths, Classification, Tolerance, TraceDiffOptions, TraceDiffReport, Verdict};

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

/// Writes the reference with `faults` applied to a temporary APR file and trace-diffs it.
fn diff_with(faults: &[Fault], options: &TraceDiffOptions) -> TraceDiffReport {
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.apr");
    let model = ModelFile::open(reference()).unwrap();
    write_faulty_copy(&model, &candidate, faults, false).unwrap();
    run(&candidate, options)
}

fn run(candidate: &Path, options: &TraceDiffOptions) -> TraceDiffReport {
    let report = trace_diff_paths(&reference(), candidate, options).unwrap();
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
