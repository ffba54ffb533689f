//! The engine against llama.cpp's outputs on the real models
//! (`reference/`): greedy tokens, and top-20 logits at every position, for
//! Qwen2 (the 0.5B and the 1.5B) and Llama (SmolLM2-135M), on prompts rendered
//! with the model's chat template and on raw prompts.
//!
//! Greedy tokens must equal llama.cpp's, or leave them only at a near-tie
//! (checked under teacher forcing: at the step where they part, our margin for
//! our token over llama.cpp's, and llama.cpp's margin the other way where the
//! reference records its top-5, must both be within `NEAR_TIE`). Metric and
//! bound for logits: at each position, the max abs difference between our
//! logits and llama.cpp's over llama.cpp's top-20 ids must stay within
//! `TOP20_MAX_ABS` (llama.cpp's own logits move up to ~1.0 between batchings
//! and KV cache types; see reference/README.md), and the top-1 id must
//! be equal wherever llama.cpp's top-1 leads its top-2 by more than
//! `NEAR_TIE` (else ours must be one of the near-tied leaders). NMSE over the
//! top-20 is reported beside it.

use apr_engine::backend::BackendKind;
use apr_engine::container::ModelFile;
use apr_engine::generate::{argmax, generate, GenerateOptions, SamplingParams};
use apr_engine::model::{Logits, Model};
use apr_engine::pipeline::Pipeline;
use apr_engine::testing::models::{ReferenceModel, QWEN_0_5B, QWEN_1_5B, SMOLLM2};
use serde_json::Value;

const TOP20_MAX_ABS: f32 = 1.0;
/// SmolLM2 (135M, Q4_1) amplifies rounding far more: llama.cpp's own top-20
/// logits move by up to 1.67 on it between flash attention on and off
/// (reference/README.md), and at apr's worst position (1.69 from llama.cpp)
/// exact f64 math lies between the two engines, 0.90 from apr and 0.88 from
/// llama.cpp. The bound is llama.cpp's own spread on this model, rounded up.
const SMOLLM2_TOP20_MAX_ABS: f32 = 2.0;
/// Below this margin between llama.cpp's first and second logit, the top-1 may
/// legitimately flip (llama.cpp's flash-attention path flips 1 of 35 such rows).
const NEAR_TIE: f32 = 0.5;

fn load_json(model: &ReferenceModel, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(model.reference_file(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn greedy_matches_llama_cpp(model: ReferenceModel, backend: BackendKind) {
    if let Some(why) = backend.unavailable() {
        // Where the backend cannot run, opening on it must say why (CI has no GPU).
        let err = Pipeline::open_on(model.require(), backend).err().expect("unavailable, yet it opened").to_string();
        assert!(err.contains(&why), "{err}");
        eprintln!("SKIP {} on {backend}: {why}", model.file);
        return;
    }
    let pipeline = Pipeline::open_on(model.require(), backend).unwrap();
    let reference = load_json(&model, "greedy.json");
    for case in reference["results"].as_array().unwrap() {
        let question = case["question"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let templated = case["chat_template_applied"].as_bool().expect("chat_template_applied");
        let system = case["system"].as_str();
        assert_eq!(
            pipeline.prompt_tokens(question, system, !templated).unwrap(),
            prompt,
            "prompt tokens for {question:?} (template applied: {templated})"
        );
        let expected = ids(&case["generated_ids"]);
        let mut cache = pipeline.model.new_cache(prompt.len() + 32);
        let options = GenerateOptions { max_tokens: 32, sampling: SamplingParams::default(), logits_top_k: None };
        let got =
            generate(&pipeline.model, &mut cache, &prompt, &options, |t| pipeline.tokenizer.is_eog(t), |_| {}).unwrap();
        let text = pipeline.tokenizer.decode(&got.tokens);
        println!("{question:?} -> {text:?} ({:.1} tok/s decode)", got.timings.decode_tok_s);
        if got.tokens != expected {
            println!("  differs from llama.cpp's {:?}: checking under teacher forcing", case["text"]);
            assert_follows_under_teacher_forcing(&pipeline, &prompt, &expected, question, &case["steps_top5"]);
        }
    }
}

/// Our greedy run may leave llama.cpp's only at a near-tie (llama.cpp flips
/// those between its own batchings), after which the two texts differ. So feed
/// llama.cpp's tokens and require our top-1 to be its next token at every
/// step, or within `NEAR_TIE` of it; at least one step must be such a tie.
/// Where the reference has llama.cpp's top-5 per step (`steps_top5`), its own
/// margin for its token over ours must be within `NEAR_TIE` too.
fn assert_follows_under_teacher_forcing(
    pipeline: &Pipeline,
    prompt: &[u32],
    expected: &[u32],
    question: &str,
    steps_top5: &Value,
) {
    let vocab = pipeline.model.config.vocab;
    let mut cache = pipeline.model.new_cache(prompt.len() + expected.len());
    let mut rows: Vec<Vec<f32>> =
        pipeline.model.forward(prompt, &mut cache, Logits::All).unwrap().chunks(vocab).map(<[f32]>::to_vec).collect();
    for &token in &expected[..expected.len() - 1] {
        rows.push(pipeline.model.forward(&[token], &mut cache, Logits::Last).unwrap());
    }
    let predictions = &rows[prompt.len() - 1..];
    let mut ties = 0;
    for (step, (row, &want)) in predictions.iter().zip(expected).enumerate() {
        let ours = argmax(row) as usize;
        let margin = row[ours] - row[want as usize];
        assert!(
            margin <= NEAR_TIE,
            "{question:?} step {step}: ours {ours} leads llama.cpp's {want} by {margin:.3} (> near-tie {NEAR_TIE})"
        );
        if ours != want as usize {
            let theirs = llama_cpp_margin(&steps_top5[step], ours);
            println!("  step {step}: near-tie, ours {ours} leads llama.cpp's {want} by {margin:.3}; {theirs}");
            match theirs {
                LlamaMargin::Known(theirs) => assert!(
                    theirs <= NEAR_TIE,
                    "{question:?} step {step}: llama.cpp's {want} leads our {ours} by {theirs:.3} (> near-tie {NEAR_TIE})"
                ),
                LlamaMargin::AtLeast(_) => panic!("{question:?} step {step}: not a verified near-tie: {theirs}"),
                LlamaMargin::NotRecorded => {}
            }
            ties += 1;
        }
    }
    assert!(ties > 0, "{question:?}: the greedy texts differ, yet no step differs under teacher forcing");
}

/// llama.cpp's lead of its top-1 over token `ours` at one step, from its top-5.
#[derive(Debug)]
enum LlamaMargin {
    Known(f32),
    /// `ours` is not in llama.cpp's top-5: the lead is at least the top-1 minus the 5th.
    AtLeast(f32),
    /// The reference has no per-step top-5 (the Qwen files).
    NotRecorded,
}

impl std::fmt::Display for LlamaMargin {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            LlamaMargin::Known(m) => write!(f, "llama.cpp's margin the other way {m:.3}"),
            LlamaMargin::AtLeast(m) => write!(f, "llama.cpp's margin the other way > {m:.3} (ours not in its top-5)"),
            LlamaMargin::NotRecorded => write!(f, "llama.cpp's margin not recorded"),
        }
    }
}

fn llama_cpp_margin(top5: &Value, ours: usize) -> LlamaMargin {
    let Some(entries) = top5.as_array() else { return LlamaMargin::NotRecorded };
    let pairs: Vec<(usize, f32)> =
        entries.iter().map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap() as f32)).collect();
    let top = pairs[0].1;
    match pairs.iter().find(|&&(id, _)| id == ours) {
        Some(&(_, logit)) => LlamaMargin::Known(top - logit),
        None => LlamaMargin::AtLeast(top - pairs[pairs.len() - 1].1),
    }
}

fn logits_match_llama_cpp(model: ReferenceModel, bound: f32) {
    let pipeline = Pipeline::open(model.require()).unwrap();
    let reference = load_json(&model, "logits_top20.json");
    let results = reference["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for case in results {
        println!("{:?} (template applied: {}):", case["question"], case["chat_template_applied"]);
        logits_case_matches(&pipeline, case, bound);
    }
}

fn logits_case_matches(pipeline: &Pipeline, case: &Value, bound: f32) {
    let question = &case["question"];
    let (prompt, generated) = (ids(&case["prompt_ids"]), ids(&case["generated_ids"]));
    let rows = rows_as_llama_cpp_ran(&pipeline.model, &prompt, &generated);
    let positions = case["positions"].as_array().unwrap();
    assert_eq!(rows.len(), positions.len());
    let mut worst = (0.0f32, 0);
    for (pos, (row, reference)) in rows.iter().zip(positions).enumerate() {
        let top20: Vec<(usize, f32)> = reference["top20"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap() as f32))
            .collect();
        let max_abs = top20.iter().map(|&(id, l)| (row[id] - l).abs()).fold(0.0, f32::max);
        let err: f32 = top20.iter().map(|&(id, l)| (row[id] - l).powi(2)).sum();
        let nmse = err / top20.iter().map(|&(_, l)| l * l).sum::<f32>();
        println!(
            "pos {pos:>2}: top-1 ours {} ref {}, top-20 max abs diff {max_abs:.3}, NMSE {nmse:.2e}",
            argmax(row),
            top20[0].0
        );
        let ours = argmax(row) as usize;
        if top20[0].1 - top20[1].1 > NEAR_TIE {
            assert_eq!(ours, top20[0].0, "{question}: top-1 at position {pos}");
        } else {
            // A near-tie: llama.cpp itself flips these between its own code paths.
            let reference_logit_of_ours = top20.iter().find(|&&(id, _)| id == ours).map(|&(_, l)| l);
            assert!(
                reference_logit_of_ours.is_some_and(|l| top20[0].1 - l <= NEAR_TIE),
                "{question}: top-1 at position {pos}: ours {ours} is not among llama.cpp's near-tied leaders {:?}",
                &top20[..3]
            );
        }
        if max_abs > worst.0 {
            worst = (max_abs, pos);
        }
    }
    println!("worst top-20 max abs diff {:.3} at position {} (bound {bound})", worst.0, worst.1);
    if worst.0 > bound {
        third_opinion(pipeline, &prompt, &generated, &positions[worst.1]["top20"], &rows[worst.1], worst.1);
    }
    assert!(worst.0 <= bound, "{question}: top-20 logits differ by {:.3} at position {}", worst.0, worst.1);
}

/// Logits rows as llama.cpp ran it: the prompt in one batch, then one token
/// per step, every generated token included (its row is the reference's last
/// position).
fn rows_as_llama_cpp_ran(model: &Model, prompt: &[u32], generated: &[u32]) -> Vec<Vec<f32>> {
    let vocab = model.config.vocab;
    let mut cache = model.new_cache(prompt.len() + generated.len());
    let mut rows: Vec<Vec<f32>> =
        model.forward(prompt, &mut cache, Logits::All).unwrap().chunks(vocab).map(<[f32]>::to_vec).collect();
    for &token in generated {
        rows.push(model.forward(&[token], &mut cache, Logits::Last).unwrap());
    }
    rows
}

/// Before failing on the logits bound, prints how far each engine is from
/// exact math (the f64 `cpu-reference` backend) at the worst position, over
/// llama.cpp's top-20 ids: which side is off.
fn third_opinion(pipeline: &Pipeline, prompt: &[u32], generated: &[u32], top20: &Value, ours: &[f32], pos: usize) {
    let file = ModelFile::open(&pipeline.model.file.path).unwrap();
    let exact_model = Model::load(file, BackendKind::CpuReference).unwrap();
    let exact = &rows_as_llama_cpp_ran(&exact_model, prompt, generated)[pos];
    let pairs: Vec<(usize, f32)> = top20
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as usize, p[1].as_f64().unwrap() as f32))
        .collect();
    let max_abs = |f: &dyn Fn(usize, f32) -> f32| pairs.iter().map(|&(id, l)| f(id, l).abs()).fold(0.0, f32::max);
    println!(
        "position {pos}, over llama.cpp's top-20: |apr - llama.cpp| {:.3}, |exact - llama.cpp| {:.3}, |apr - exact| {:.3}",
        max_abs(&|id, l| ours[id] - l),
        max_abs(&|id, l| exact[id] - l),
        max_abs(&|id, _| ours[id] - exact[id]),
    );
}

#[test]
fn qwen_0_5b_greedy_matches_llama_cpp() {
    greedy_matches_llama_cpp(QWEN_0_5B, BackendKind::Cpu);
}

#[test]
fn qwen_0_5b_greedy_matches_llama_cpp_on_cuda() {
    greedy_matches_llama_cpp(QWEN_0_5B, BackendKind::Cuda);
}

#[test]
fn qwen_0_5b_logits_match_llama_cpp() {
    logits_match_llama_cpp(QWEN_0_5B, TOP20_MAX_ABS);
}

#[test]
fn qwen_1_5b_greedy_matches_llama_cpp() {
    greedy_matches_llama_cpp(QWEN_1_5B, BackendKind::Cpu);
}

#[test]
fn qwen_1_5b_greedy_matches_llama_cpp_on_cuda() {
    greedy_matches_llama_cpp(QWEN_1_5B, BackendKind::Cuda);
}

#[test]
fn qwen_1_5b_logits_match_llama_cpp() {
    logits_match_llama_cpp(QWEN_1_5B, TOP20_MAX_ABS);
}

#[test]
fn smollm2_greedy_matches_llama_cpp() {
    greedy_matches_llama_cpp(SMOLLM2, BackendKind::Cpu);
}

#[test]
fn smollm2_greedy_matches_llama_cpp_on_cuda() {
    greedy_matches_llama_cpp(SMOLLM2, BackendKind::Cuda);
}

#[test]
fn smollm2_logits_match_llama_cpp() {
    logits_match_llama_cpp(SMOLLM2, SMOLLM2_TOP20_MAX_ABS);
}
