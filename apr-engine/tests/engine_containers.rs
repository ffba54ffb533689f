//! The same model from every container, proven by inference, for both
//! architectures (SmolLM2 is Llama, whose Q/K rows GGUF stores permuted; the
//! 0.5B is Qwen2): the GGUF, its APR with the blocks kept, its APR F32, its
//! SafeTensors F32 export, and that export imported back to GGUF and to APR.
//!
//! - Files whose tensor bytes are identical give bit-identical logits at every
//!   position and the same tokens (GGUF = APR kept; APR F32 = the re-imported
//!   GGUF; SafeTensors = its APR).
//! - The F32 files in the two Q/K row orders (GGUF pairs vs Hugging Face
//!   halves) hold the same values permuted: the same tokens, logits within
//!   float rounding.
//! - Quantized against F32 the values differ by quantization: the same tokens,
//!   or a first difference at a near-tie that both sides confirm.

use std::path::{Path, PathBuf};

use apr_engine::container::{FormatKind, ModelFile};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::generate::{generate, GenerateOptions};
use apr_engine::model::Logits;
use apr_engine::pipeline::Pipeline;
use apr_engine::testing::models::{ReferenceModel, QWEN_0_5B, QWEN_1_5B, SMOLLM2};
use apr_engine::DType;

/// A top-2 margin below which the two sides of a quantized/F32 pair may pick
/// different tokens (the quantization moves SmolLM2's logits by up to ~1.8).
const NEAR_TIE: f32 = 0.5;
/// Float rounding between the two Q/K row orders (attention sums in another order).
const ROW_ORDER_ROUNDING: f32 = 1e-3;

/// A prompt, and whether it goes through the chat template.
struct Prompt {
    text: &'static str,
    templated: bool,
}

const PROMPTS: &[Prompt] = &[
    Prompt { text: "What is the capital of France?", templated: true },
    Prompt { text: "What is 2+2?", templated: true },
    Prompt { text: "The capital of France is", templated: false },
    Prompt { text: "def fibonacci(n):", templated: false },
];

/// One run of a file on every prompt: its greedy tokens and, teacher-forced over
/// prompt + generation, the logits of every position.
struct Run {
    name: &'static str,
    /// Per prompt: generated tokens, every position's logits, prompt length.
    outputs: Vec<(Vec<u32>, Vec<f32>, usize)>,
    prompts: Vec<&'static str>,
    vocab: usize,
}

fn run(name: &'static str, path: &Path, prompts: &[Prompt], max_tokens: usize) -> Run {
    let pipeline = Pipeline::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let outputs = prompts
        .iter()
        .map(|p| {
            let prompt = pipeline.prompt_tokens(p.text, None, !p.templated).unwrap();
            let mut cache = pipeline.model.new_cache(prompt.len() + max_tokens);
            let options = GenerateOptions { max_tokens, sampling: Default::default(), logits_top_k: None };
            let g = generate(&pipeline.model, &mut cache, &prompt, &options, |t| pipeline.tokenizer.is_eog(t), |_| {})
                .unwrap();
            println!("{name:>20} {:?} -> {:?}", p.text, pipeline.tokenizer.decode(&g.tokens));
            let mut all = prompt.clone();
            all.extend(&g.tokens);
            let mut cache = pipeline.model.new_cache(all.len());
            (g.tokens, pipeline.model.forward(&all, &mut cache, Logits::All).unwrap(), prompt.len())
        })
        .collect();
    Run { name, outputs, prompts: prompts.iter().map(|p| p.text).collect(), vocab: pipeline.model.config.vocab }
}

fn assert_bit_identical(a: &Run, b: &Run) {
    for ((ta, la, _), ((tb, lb, _), p)) in a.outputs.iter().zip(b.outputs.iter().zip(&a.prompts)) {
        assert_eq!(ta, tb, "{} vs {} on {:?}: tokens", a.name, b.name, p);
        assert!(la == lb, "{} vs {} on {:?}: the bytes are identical but the logits are not", a.name, b.name, p);
    }
}

fn assert_within_rounding(a: &Run, b: &Run) {
    for ((ta, la, _), ((tb, lb, _), p)) in a.outputs.iter().zip(b.outputs.iter().zip(&a.prompts)) {
        assert_eq!(ta, tb, "{} vs {} on {:?}: tokens", a.name, b.name, p);
        let max = la.iter().zip(lb).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(max <= ROW_ORDER_ROUNDING, "{} vs {} on {:?}: logits differ by {max}", a.name, b.name, p);
    }
}

/// Same tokens, or the first different token is a near-tie on both sides (the
/// prefixes are equal up to there, so both rows saw the same context).
fn assert_same_tokens_or_near_tie(a: &Run, b: &Run) {
    for ((ta, la, pa), ((tb, lb, _), p)) in a.outputs.iter().zip(b.outputs.iter().zip(&a.prompts)) {
        let Some(step) = ta.iter().zip(tb).position(|(x, y)| x != y) else { continue };
        let row = |logits: &[f32]| logits[(pa + step - 1) * a.vocab..(pa + step) * a.vocab].to_vec();
        let (row_a, row_b) = (row(la), row(lb));
        let (x, y) = (ta[step] as usize, tb[step] as usize);
        let (margin_a, margin_b) = (row_a[x] - row_a[y], row_b[y] - row_b[x]);
        println!("  {:?} step {step}: {} picks {x} by {margin_a:.3}, {} picks {y} by {margin_b:.3}", p, a.name, b.name);
        assert!(
            margin_a <= NEAR_TIE && margin_b <= NEAR_TIE,
            "{} vs {} on {:?}: tokens differ at step {step} ({x} vs {y}) by margins {margin_a:.3} / {margin_b:.3}, \
             more than a near-tie ({NEAR_TIE})",
            a.name,
            b.name,
            p
        );
    }
}

fn convert_to(input: &Path, output: PathBuf, to: FormatKind, dtype: DTypeChoice) -> PathBuf {
    let file = ModelFile::open(input).unwrap();
    convert(&file, &output, ConvertOptions { to, dtype, force: false }, &mut |_| {}).unwrap();
    output
}

/// Every container of `model`, each run on `prompts`, checked pair by pair.
fn every_container_agrees(model: ReferenceModel, prompts: &[Prompt], max_tokens: usize) {
    let dir = tempfile::tempdir().unwrap();
    let gguf = model.require();
    let keep = DTypeChoice::Keep;
    let f32 = DTypeChoice::To(DType::F32);
    let apr_kept = convert_to(&gguf, dir.path().join("kept.apr"), FormatKind::Apr, keep);
    let apr_f32 = convert_to(&gguf, dir.path().join("f32.apr"), FormatKind::Apr, f32);
    let st = convert_to(&gguf, dir.path().join("st"), FormatKind::SafeTensors, f32);
    let st_gguf = convert_to(&st, dir.path().join("st.gguf"), FormatKind::Gguf, keep);
    let st_apr = convert_to(&st, dir.path().join("st.apr"), FormatKind::Apr, keep);

    let runs = [
        run("GGUF", &gguf, prompts, max_tokens),
        run("APR (blocks kept)", &apr_kept, prompts, max_tokens),
        run("APR F32", &apr_f32, prompts, max_tokens),
        run("SafeTensors F32", &st, prompts, max_tokens),
        run("SafeTensors->GGUF", &st_gguf, prompts, max_tokens),
        run("SafeTensors->APR", &st_apr, prompts, max_tokens),
    ];
    let [gguf, apr_kept, apr_f32, st, st_gguf, st_apr] = &runs;
    assert_bit_identical(gguf, apr_kept);
    assert_bit_identical(apr_f32, st_gguf);
    assert_bit_identical(st, st_apr);
    assert_within_rounding(apr_f32, st);
    assert_same_tokens_or_near_tie(gguf, apr_f32);
}

#[test]
fn llama_every_container_gives_the_same_answers() {
    every_container_agrees(SMOLLM2, PROMPTS, 16);
}

#[test]
fn qwen_every_container_gives_the_same_answers() {
    every_container_agrees(QWEN_0_5B, &PROMPTS[1..3], 12);
}

/// The canonical model of the protocol: its APR (blocks kept) is the GGUF, bit for bit.
#[test]
fn qwen_1_5b_apr_equals_gguf_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = QWEN_1_5B.require();
    let apr = convert_to(&gguf, dir.path().join("kept.apr"), FormatKind::Apr, DTypeChoice::Keep);
    let prompts = &PROMPTS[1..2];
    assert_bit_identical(&run("GGUF", &gguf, prompts, 8), &run("APR (blocks kept)", &apr, prompts, 8));
}
