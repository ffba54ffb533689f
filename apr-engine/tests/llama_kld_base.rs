//! The reader of llama.cpp's KL-divergence base files
//! (`apr_engine::accuracy::llama_kld_base`).
//!
//! - A tiny file in the exact layout, written by this test's own encoder of
//!   llama.cpp's quantization, is committed (`tests/fixtures/llama_kld_base_synthetic.kld`):
//!   the encoder must still write it byte for byte, and the reader must decode
//!   it to the rows' log-softmax within half a quantization step.
//! - Damaged copies fail with the field and offset named.
//! - apr tokenizes the KLD text (`reference/kld/text.txt`) as llama.cpp did.
//! - On a real file made by `scripts/llama_kld_base.sh smollm2` (ignored by
//!   default: it needs llama.cpp), the tokens are apr's tokenization of the
//!   text, every distribution sums to 1, and the decoded values match
//!   llama.cpp's float logits recorded in `reference/kld/`.
//! - The measurement (`accuracy::kld`) on SmolLM2: a base file written from
//!   the exact backend's own logits is at the distance of its rounding only,
//!   so the records are read at the right positions; apr's fast backend is
//!   within a measured distance of exact math; a base file of other tokens is
//!   refused naming the token.

use std::path::{Path, PathBuf};

use apr_engine::accuracy::kld::{self, Chunks};
use apr_engine::accuracy::llama_kld_base::{self, LlamaKldBase};
use apr_engine::backend::BackendKind;
use apr_engine::container::ModelFile;
use apr_engine::model::{Logits, Model};
use apr_engine::testing::models::{reference_dir, SMOLLM2};
use apr_engine::tokenizer::Tokenizer;
use apr_engine::Error;
use serde_json::Value;

/// Where the log-probs bottom out below the row's maximum logit (llama.cpp's floor).
const FLOOR_NATS: f32 = 16.0;

/// One row quantized as llama.cpp's `--kl-divergence-base` does:
/// (scale, min_log_prob, codes).
fn encode_row(logits: &[f32]) -> (f32, f32, Vec<u16>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = logits.iter().copied().fold(f32::INFINITY, f32::min).max(max - FLOOR_NATS);
    let sum_exp: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    let log_sum_exp = sum_exp.ln() as f32;
    let min_log_prob = min - max - log_sum_exp;
    let scale = (max - min) / 65535.0;
    let codes = logits
        .iter()
        .map(|&l| if scale > 0.0 && l > min { ((l - min) * (1.0 / scale)).round_ties_even() as u16 } else { 0 })
        .collect();
    (scale, min_log_prob, codes)
}

/// A whole file: header, tokens, then one record per row (rows in file order).
fn encode_file(n_ctx: i32, n_vocab: usize, tokens: &[i32], rows: &[Vec<f32>]) -> Vec<u8> {
    let n_chunk = tokens.len() as i32 / n_ctx;
    let mut out = b"_logits_".to_vec();
    for value in [n_ctx, n_vocab as i32, n_chunk].iter().chain(tokens) {
        out.extend(value.to_le_bytes());
    }
    for row in rows {
        let (scale, min_log_prob, codes) = encode_row(row);
        out.extend(scale.to_le_bytes());
        out.extend(min_log_prob.to_le_bytes());
        codes.iter().for_each(|c| out.extend(c.to_le_bytes()));
        if n_vocab % 2 == 1 {
            out.extend([0, 0]); // llama.cpp rounds the row up to an even count of u16
        }
    }
    out
}

/// n_ctx 8 (positions 4, 5, 6 scored), odd vocabulary 5, two chunks: rows with
/// a clear leader, a near-tie, tokens below the 16-nat floor, and all equal.
fn synthetic_rows() -> Vec<Vec<f32>> {
    vec![
        vec![3.0, 1.0, -2.0, 0.5, 2.0],
        vec![10.0, 9.999, -30.0, -5.0, 0.0],
        vec![-1.0, -1.0, -1.0, -1.0, -1.0],
        vec![25.0, -40.0, 24.0, 8.9, 9.1],
        vec![0.0, 0.25, 0.5, 0.75, 1.0],
        vec![-3.5, 7.25, 7.0, -20.0, 1.0],
    ]
}

const SYNTHETIC_TOKENS: [i32; 16] = [0, 1, 2, 3, 4, 0, 1, 2, 4, 3, 2, 1, 0, 4, 3, 2];

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_kld_base_synthetic.kld")
}

fn synthetic_bytes() -> Vec<u8> {
    encode_file(8, 5, &SYNTHETIC_TOKENS, &synthetic_rows())
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&l| l as f64 - lse).collect()
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// `APR_WRITE_KLD_FIXTURE=1` (re)writes the committed fixture from the encoder.
#[test]
fn synthetic_file_is_still_written_byte_for_byte() {
    if std::env::var_os("APR_WRITE_KLD_FIXTURE").is_some() {
        std::fs::write(fixture_path(), synthetic_bytes()).unwrap();
    }
    let committed = std::fs::read(fixture_path()).unwrap();
    assert_eq!(committed.len(), 20 + 16 * 4 + 6 * (6 + 4) * 2, "header + tokens + 6 records of 10 u16");
    assert!(committed == synthetic_bytes(), "the encoder no longer writes the committed fixture");
}

#[test]
fn synthetic_file_decodes_to_the_rows_log_softmax() {
    let base = llama_kld_base::read(&fixture_path()).unwrap();
    assert_eq!((base.n_ctx(), base.n_vocab(), base.n_chunk()), (8, 5, 2));
    assert_eq!(base.tokens(), SYNTHETIC_TOKENS.map(|t| t as u32));
    assert_eq!((base.first_scored(), base.scored_per_chunk(), base.n_scored()), (4, 3, 6));
    let positions: Vec<(usize, usize, usize, u32)> =
        base.scored_positions().map(|p| (p.chunk, p.pos_in_chunk, p.token_index, p.target)).collect();
    assert_eq!(positions, [(0, 4, 4, 0), (0, 5, 5, 1), (0, 6, 6, 2), (1, 4, 12, 4), (1, 5, 13, 3), (1, 6, 14, 2)]);

    for (index, row) in synthetic_rows().iter().enumerate() {
        let decoded = base.log_probs(index);
        let exact = log_softmax(row);
        let step = base.quantization(index).scale;
        let floor = base.quantization(index).min_log_prob;
        for (token, (&got, &want)) in decoded.iter().zip(&exact).enumerate() {
            if want <= floor as f64 {
                assert_eq!(got, floor, "record {index} token {token}: below the floor reads as the floor");
            } else {
                let err = (got as f64 - want).abs();
                assert!(err <= step as f64 / 2.0 + 1e-5, "record {index} token {token}: {got} vs {want}");
            }
        }
        let equal_row = row.iter().all(|&l| l == row[0]);
        assert_eq!(step == 0.0, equal_row, "record {index}: a zero step only for a flat row");
        if !equal_row {
            assert_eq!(argmax(&decoded), argmax(row), "record {index}: argmax");
        }
    }
}

fn write_temp(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("damaged.kld");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Reads a damaged copy; returns (field, offset, message).
fn read_error(bytes: &[u8]) -> (String, u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), bytes);
    match llama_kld_base::read(&path) {
        Err(error @ Error::Format { .. }) => {
            let message = error.to_string();
            assert!(message.contains("damaged.kld"), "{message}: names the file");
            let Error::Format { source, .. } = error else { unreachable!() };
            (source.field, source.offset, message)
        }
        other => panic!("expected a format error, got {other:?}"),
    }
}

fn patched(at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut file = synthetic_bytes();
    file[at..at + bytes.len()].copy_from_slice(bytes);
    file
}

#[test]
fn damaged_files_name_field_and_offset() {
    let good = synthetic_bytes();
    let (field, offset, _) = read_error(&patched(0, b"_logitz_"));
    assert_eq!((field.as_str(), offset), ("magic", 0));

    let (field, offset, message) = read_error(&patched(8, &2i32.to_le_bytes()));
    assert_eq!((field.as_str(), offset), ("n_ctx", 8));
    assert!(message.contains("no position is scored"), "{message}");

    // llama-perplexity's output when the text is shorter than two chunks
    let (field, offset, message) = read_error(&good[..12]);
    assert_eq!((field.as_str(), offset), ("n_vocab", 12));
    assert!(message.contains("fewer than 2 * n_ctx tokens"), "{message}");

    let (field, offset, _) = read_error(&patched(12, &(-5i32).to_le_bytes()));
    assert_eq!((field.as_str(), offset), ("n_vocab", 12));

    let (field, offset, message) = read_error(&patched(20 + 4 * 9, &7i32.to_le_bytes()));
    assert_eq!((field.as_str(), offset), ("tokens[9]", 56));
    assert!(message.contains("outside the vocabulary of 5"), "{message}");

    // A chunk count far beyond the file fails on the bytes, before any allocation.
    let (field, offset, _) = read_error(&patched(16, &i32::MAX.to_le_bytes()));
    assert_eq!((field.as_str(), offset), ("tokens", 20));

    // A record and a half short: the fifth record (chunk 1, position 5) is incomplete.
    let (field, offset, message) = read_error(&good[..good.len() - 30]);
    assert_eq!((field.as_str(), offset), ("chunk 1 position 5 log-probs", 84 + 4 * 20));
    assert!(message.contains("after 4 of 6 records"), "{message}");

    let mut long = good.clone();
    long.extend([0, 0]);
    let (field, offset, _) = read_error(&long);
    assert_eq!((field.as_str(), offset), ("end of file", good.len() as u64));

    let (field, offset, _) = read_error(&patched(84 + 20, &f32::NAN.to_le_bytes()));
    assert_eq!((field.as_str(), offset), ("chunk 0 position 5 scale", 104));
    let (field, offset, _) = read_error(&patched(84 + 4, &0.5f32.to_le_bytes()));
    assert_eq!((field.as_str(), offset), ("chunk 0 position 4 min_log_prob", 88));
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let error = llama_kld_base::read(Path::new("/nonexistent/base.kld")).unwrap_err();
    assert!(matches!(error, Error::Io { .. }) && error.to_string().contains("/nonexistent/base.kld"), "{error}");
}

// ---------------------------------------------------------------- real file

const REAL_CTX: usize = 128;

fn real_base_path() -> PathBuf {
    let dir = std::env::var_os("APR_KLD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/apr/kld"));
    dir.join(format!("{}.c{REAL_CTX}.kld", SMOLLM2.file.trim_end_matches(".gguf")))
}

fn load_real() -> LlamaKldBase {
    let path = real_base_path();
    assert!(
        path.is_file(),
        "{} is missing: make it with scripts/build-llama-cpp.sh && scripts/llama_kld_base.sh smollm2",
        path.display()
    );
    llama_kld_base::read(&path).unwrap()
}

/// llama.cpp's float results for the same chunks (scripts/llama_reference.py --kld-summary).
fn real_summary() -> Value {
    let path = reference_dir().join(format!("kld/{}.c{REAL_CTX}.json", SMOLLM2.file.trim_end_matches(".gguf")));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The KLD text as llama-perplexity reads it with `-f` (one trailing newline
/// dropped), tokenized by apr as llama-perplexity does: add_special (no BOS for
/// SmolLM2), no special parsing.
fn apr_tokens_of_kld_text(tokenizer: &Tokenizer) -> Vec<u32> {
    let text = std::fs::read_to_string(reference_dir().join("kld/text.txt")).unwrap();
    tokenizer.encode_with_special(text.strip_suffix('\n').unwrap_or(&text), false)
}

fn smollm2_tokenizer() -> Tokenizer {
    Tokenizer::from_metadata(ModelFile::open(SMOLLM2.require()).unwrap().metadata()).unwrap()
}

/// Without llama.cpp: apr's tokens of the text agree with llama.cpp's recorded
/// count and with the target token of every scored position.
#[test]
fn smollm2_tokenizes_the_kld_text_as_llama_cpp() {
    let ours = apr_tokens_of_kld_text(&smollm2_tokenizer());
    let summary = real_summary();
    assert_eq!(ours.len() as u64, summary["n_tokens"].as_u64().unwrap(), "token count of text.txt");
    for position in summary["positions"].as_array().unwrap() {
        let index =
            (position["chunk"].as_u64().unwrap() as usize) * REAL_CTX + position["pos"].as_u64().unwrap() as usize;
        assert_eq!(u64::from(ours[index + 1]), position["target"].as_u64().unwrap(), "token {}", index + 1);
    }
}

#[test]
#[ignore = "needs llama.cpp's base file: scripts/build-llama-cpp.sh && scripts/llama_kld_base.sh smollm2"]
fn smollm2_base_file_is_llama_cpps_distribution_over_apr_tokens() {
    let base = load_real();
    let summary = real_summary();
    let tokenizer = smollm2_tokenizer();
    assert_eq!(base.n_vocab(), tokenizer.vocab_size());
    assert_eq!(base.n_ctx(), REAL_CTX);
    assert_eq!(base.n_chunk() as u64, summary["n_chunk"].as_u64().unwrap());
    let ours = apr_tokens_of_kld_text(&tokenizer);
    assert_eq!(base.tokens(), &ours[..base.tokens().len()], "llama.cpp's tokens are apr's");

    let reference = summary["positions"].as_array().unwrap();
    assert_eq!(reference.len(), base.n_scored());
    let mut worst_sum = 0.0f64;
    for (index, expected) in reference.iter().enumerate() {
        let position = base.scored(index);
        assert_eq!(position.chunk as u64, expected["chunk"].as_u64().unwrap());
        assert_eq!(position.pos_in_chunk as u64, expected["pos"].as_u64().unwrap());
        assert_eq!(position.target as u64, expected["target"].as_u64().unwrap());
        let log_probs = base.log_probs(index);
        worst_sum = worst_sum.max(check_distribution(&base, index, &log_probs, expected));
    }
    println!("{} scored positions; worst |sum p - 1| {worst_sum:.2e}", base.n_scored());
}

/// One record against llama.cpp's float figures; returns |sum of p - 1|.
fn check_distribution(base: &LlamaKldBase, index: usize, log_probs: &[f32], expected: &Value) -> f64 {
    let q = base.quantization(index);
    let half_step = q.scale as f64 / 2.0 + 1e-5;
    // Mass counted at the floor instead of below it, plus rounding of each code.
    let at_floor = log_probs.iter().filter(|&&lp| lp == q.min_log_prob).count() as f64;
    let sum: f64 = log_probs.iter().map(|&lp| (lp as f64).exp()).sum();
    let bound = at_floor * (q.min_log_prob as f64).exp() + half_step;
    assert!((sum - 1.0).abs() <= bound, "record {index}: probabilities sum to {sum} (bound {bound:.2e})");

    let f = |v: &Value| v.as_f64().unwrap();
    let (top1, top2) = (f(&expected["top2_logprob"][0]), f(&expected["top2_logprob"][1]));
    let target = f(&expected["target_logprob"]);
    let argmax = argmax(log_probs);
    let reference_argmax = expected["argmax"].as_u64().unwrap() as usize;
    if top1 - top2 > 2.0 * half_step {
        assert_eq!(argmax, reference_argmax, "record {index}: argmax");
    } else {
        assert!((log_probs[argmax] - log_probs[reference_argmax]).abs() as f64 <= 2.0 * half_step, "record {index}");
    }
    assert!((log_probs[reference_argmax] as f64 - top1).abs() <= half_step, "record {index}: top-1 log-prob");
    let decoded_target = log_probs[base.scored(index).target as usize] as f64;
    if target > q.min_log_prob as f64 {
        assert!((decoded_target - target).abs() <= half_step, "record {index}: target {decoded_target} vs {target}");
    }
    (sum - 1.0).abs()
}

// ---------------------------------------------------------------- measurement

const MEASURE_CTX: usize = 32;
const MEASURE_CHUNKS: usize = 2;

fn smollm2_on(backend: BackendKind) -> Model {
    Model::load(ModelFile::open(SMOLLM2.require()).unwrap(), backend).unwrap()
}

fn measured_chunks() -> Chunks {
    let text = std::fs::read_to_string(reference_dir().join("kld/text.txt")).unwrap();
    Chunks::of_text(&smollm2_tokenizer(), &text, MEASURE_CTX, Some(MEASURE_CHUNKS)).unwrap()
}

/// What llama-perplexity would write if its logits were `model`'s.
fn base_file_of(model: &Model, chunks: &Chunks) -> Vec<u8> {
    let vocab = model.config.vocab;
    let mut rows = Vec::new();
    for chunk in chunks.tokens.chunks(chunks.n_ctx) {
        let logits = model.forward(chunk, &mut model.new_cache(chunk.len()), Logits::All).unwrap();
        rows.extend(chunks.scored_in_chunk().map(|pos| logits[pos * vocab..(pos + 1) * vocab].to_vec()));
    }
    let tokens: Vec<i32> = chunks.tokens.iter().map(|&t| t as i32).collect();
    encode_file(chunks.n_ctx as i32, vocab, &tokens, &rows)
}

#[test]
fn exact_logits_in_llama_cpps_file_are_at_the_distance_of_their_rounding() {
    let (fast, exact) = (smollm2_on(BackendKind::Cpu), smollm2_on(BackendKind::CpuReference));
    let chunks = measured_chunks();
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), &base_file_of(&exact, &chunks));
    let base = llama_kld_base::read(&path).unwrap();
    let mut progress = Vec::new();
    let report = kld::measure(&fast, &exact, &chunks, Some(&base), |done, all| progress.push((done, all))).unwrap();

    assert_eq!(progress, [(1, 2), (2, 2)]);
    assert_eq!(report.positions.len(), MEASURE_CHUNKS * (MEASURE_CTX / 2 - 1));
    let llama = report.llama_cpp.as_ref().unwrap();
    // u16 codes over 16 nats: half a step is 1.2e-4 nats.
    assert!(llama.max_abs_dlogprob < 5e-4, "{llama:?}");
    // The floored tail is one outcome whose mass is what the rounded kept
    // tokens leave: measured at mean KL 3.2e-7, max 2.1e-6 on these chunks.
    assert!(llama.mean_kl < 1e-6 && llama.max_kl < 1e-5 && llama.top1_agreement == 1.0, "{llama:?}");
    assert_eq!(llama.max_abs_dlogit, None, "the file holds no logits");

    // apr's fast kernels (8-bit activations) against exact math: measured at
    // mean KL 3.2e-3, top-1 93% (28 of 30), max|dlogit| 1.2 on these chunks.
    let apr = &report.apr;
    assert!(apr.mean_kl > 0.0 && apr.mean_kl < 1e-2, "{apr:?}");
    assert!(apr.top1_agreement >= 0.9, "{apr:?}");
    assert!(apr.max_abs_dlogit.is_some_and(|d| d > 0.0 && d < 2.0), "{apr:?}");
    // Against a "llama.cpp" that is exact math, apr's whole KL is the difference.
    // (Both scored over the outcomes the file tells apart, which for apr loses
    // almost nothing: the merged tail is a lower bound of the full KL.)
    let on_llama_outcomes = report.apr_mean_kl_on_llama_outcomes.unwrap();
    assert!(on_llama_outcomes <= apr.mean_kl && on_llama_outcomes > 0.99 * apr.mean_kl, "{on_llama_outcomes} {apr:?}");
    let difference = report.apr_minus_llama_cpp.unwrap();
    assert!(
        (difference.mean - apr.mean_kl).abs() < 0.01 * apr.mean_kl && difference.is_significant(),
        "{difference:?}"
    );
    for p in &report.positions {
        assert_eq!(p.target, chunks.tokens[p.chunk * MEASURE_CTX + p.pos + 1]);
        assert!(p.apr.kl.is_finite() && p.apr.kl >= 0.0, "{p:?}");
    }
}

#[test]
fn a_base_file_of_other_tokens_is_refused_naming_the_token() {
    let (fast, exact) = (smollm2_on(BackendKind::Cpu), smollm2_on(BackendKind::CpuReference));
    let chunks = measured_chunks();
    let mut other = chunks.clone();
    other.tokens[5] += 1;
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), &base_file_of(&exact, &other));
    let base = llama_kld_base::read(&path).unwrap();
    let error = kld::measure(&fast, &exact, &chunks, Some(&base), |_, _| {}).unwrap_err().to_string();
    let expected = format!("token 5 is {} in llama.cpp's file but {}", other.tokens[5], chunks.tokens[5]);
    assert!(error.contains(&expected) && error.contains(&path.display().to_string()), "{error}");
}
