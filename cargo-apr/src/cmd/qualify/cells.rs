//! Class A and class B cells: a model file on a backend answers every prompt
//! greedily; its tokens are held against the ground truth (a flip allowed only
//! at a near-tie verified under teacher forcing) and trace-diff compares it
//! with the A1 cell (or B1) boundary by boundary.

use std::path::Path;
use std::time::Instant;

use apr_engine::backend::BackendKind;
use apr_engine::generate::{argmax, generate, GenerateOptions, SamplingParams};
use apr_engine::model::Logits;
use apr_engine::pipeline::Pipeline;
use apr_engine::tracediff::{trace_diff, Side, Tolerance, TraceDiffOptions, Verdict};

use super::prompts::{Prompt, StepsTop5};
use super::report::Cell;

/// Below this margin between the leading logit and the expected token's, a
/// greedy flip is a near-tie, as in `apr-engine/tests/engine_reference.rs`
/// (llama.cpp itself flips such rows between its own code paths).
pub const NEAR_TIE: f32 = 0.5;

/// Trace-diff tolerance between a full-precision (class B) model and the
/// quantized A1: the weights are the same values (B1 is A1 dequantized), but
/// A1's kernels round activations to 8-bit blocks, so activations may differ
/// by that rounding's noise, growing layer after layer in lockstep. Measured on
/// the 0.5B: the worst row is layer 16's V at the first position (a small row,
/// l2 0.42) with NMSE 3.7e-2 and cosine 0.981, logits within 0.65; the bounds
/// are those, roughly doubled. A wrong or swapped tensor is far beyond them
/// (NMSE near 1 or more).
pub const QUANTIZATION_TOLERANCE: Tolerance = Tolerance { logits_max_abs: 2.0, nmse: 1e-1, cosine: 0.95 };

/// One cell to run: which file, where, what to compare with.
pub struct CellPlan<'a> {
    pub cell: Cell,
    pub file: &'a Path,
    pub backend: BackendKind,
    /// Expected greedy tokens per prompt, and what they are called in the report.
    pub truth: Option<Truth<'a>>,
    /// Trace-diff against this side, under this tolerance, named so.
    pub trace_against: Option<(&'a Side, Tolerance, &'a str)>,
}

pub struct Truth<'a> {
    pub name: &'a str,
    pub tokens: &'a [Vec<u32>],
    /// The reference's top-5 per step, per prompt (llama.cpp's margin check).
    pub steps_top5: Vec<Option<&'a StepsTop5>>,
}

/// What a model said to every prompt.
pub struct Answers {
    pub prompt_tokens: Vec<Vec<u32>>,
    pub tokens: Vec<Vec<u32>>,
    /// The answers' text, end-of-generation tokens left out.
    pub texts: Vec<String>,
    pub decode_tok_s: f64,
}

/// Loads `file` on `backend`, or the error as the cell's failure.
pub fn open(file: &Path, backend: BackendKind) -> Result<Pipeline, String> {
    if let Some(why) = backend.unavailable() {
        return Err(why);
    }
    Pipeline::open_on(file, backend).map_err(|e| format!("does not load: {e}"))
}

/// Greedy answers to every prompt, `max_tokens` at most each.
pub fn answer(pipeline: &Pipeline, prompts: &[Prompt], max_tokens: usize) -> Result<Answers, String> {
    let mut answers = Answers { prompt_tokens: Vec::new(), tokens: Vec::new(), texts: Vec::new(), decode_tok_s: 0.0 };
    let (mut decoded, mut decode_s) = (0usize, 0.0f64);
    for prompt in prompts {
        let ids = pipeline
            .prompt_tokens(&prompt.question, prompt.system.as_deref(), prompt.raw)
            .map_err(|e| format!("{:?}: cannot tokenize: {e}", prompt.question))?;
        let mut cache = pipeline.model.new_cache(ids.len() + max_tokens);
        let options = GenerateOptions { max_tokens, sampling: SamplingParams::default(), logits_top_k: None };
        let tokenizer = &pipeline.tokenizer;
        let got = generate(&pipeline.model, &mut cache, &ids, &options, |t| tokenizer.is_eog(t), |_| {})
            .map_err(|e| format!("{:?}: generation failed: {e}", prompt.question))?;
        if got.tokens.is_empty() {
            return Err(format!("{:?}: no answer", prompt.question));
        }
        decoded += got.tokens.len().saturating_sub(1);
        decode_s += got.timings.decode_s;
        let text_ids: Vec<u32> = got.tokens.iter().copied().filter(|&t| !tokenizer.is_eog(t)).collect();
        answers.texts.push(tokenizer.decode(&text_ids));
        answers.prompt_tokens.push(ids);
        answers.tokens.push(got.tokens);
    }
    answers.decode_tok_s = if decode_s > 0.0 { decoded as f64 / decode_s } else { 0.0 };
    Ok(answers)
}

/// How a prompt's greedy tokens relate to the expected ones.
#[derive(Debug)]
pub enum TokenCheck {
    Equal,
    /// Parted only at near-ties (each step's lead within `NEAR_TIE`).
    NearTie {
        steps: usize,
    },
    Differs(String),
}

/// Compares one prompt's answer with the expected tokens (the
/// caller cuts them to the tokens asked for); on a difference, feeds the expected tokens (teacher
/// forcing) and requires every step's top-1 to be the expected token or
/// within `NEAR_TIE` of it, with llama.cpp's own margin checked where recorded.
pub fn check_tokens(
    pipeline: &Pipeline,
    prompt: &[u32],
    got: &[u32],
    expected: &[u32],
    steps_top5: Option<&StepsTop5>,
) -> TokenCheck {
    if got == expected {
        return TokenCheck::Equal;
    }
    match teacher_forced_margins(pipeline, prompt, expected) {
        Err(e) => TokenCheck::Differs(format!("teacher forcing failed: {e}")),
        Ok(rows) => judge_margins(&rows, expected, steps_top5),
    }
}

/// Per step: (our top-1, our lead of it over the expected token).
fn teacher_forced_margins(
    pipeline: &Pipeline,
    prompt: &[u32],
    expected: &[u32],
) -> apr_engine::Result<Vec<(u32, f32)>> {
    let model = &pipeline.model;
    let mut cache = model.new_cache(prompt.len() + expected.len());
    let mut row = model.forward(prompt, &mut cache, Logits::Last)?;
    let mut steps = Vec::new();
    for (i, &want) in expected.iter().enumerate() {
        let ours = argmax(&row);
        steps.push((ours, row[ours as usize] - row[want as usize]));
        if i + 1 < expected.len() {
            row = model.forward(&[want], &mut cache, Logits::Last)?;
        }
    }
    Ok(steps)
}

fn judge_margins(steps: &[(u32, f32)], expected: &[u32], steps_top5: Option<&StepsTop5>) -> TokenCheck {
    let mut ties = 0;
    for (step, (&(ours, lead), &want)) in steps.iter().zip(expected).enumerate() {
        if ours == want {
            continue;
        }
        if lead > NEAR_TIE {
            return TokenCheck::Differs(format!(
                "step {step}: token {ours} leads the expected {want} by {lead:.3} (near-tie bound {NEAR_TIE})"
            ));
        }
        // The reference's own lead of its token over ours, where it recorded its top-5.
        if let Some(top5) = steps_top5.and_then(|s| s.get(step)).filter(|t| !t.is_empty()) {
            let Some(&(_, theirs)) = top5.iter().find(|&&(id, _)| id == ours) else {
                return TokenCheck::Differs(format!("step {step}: token {ours} is not in the reference's top-5"));
            };
            let their_lead = top5[0].1 - theirs;
            if their_lead > NEAR_TIE {
                return TokenCheck::Differs(format!(
                    "step {step}: the reference's {want} leads {ours} by {their_lead:.3} (near-tie bound {NEAR_TIE})"
                ));
            }
        }
        ties += 1;
    }
    if ties == 0 {
        return TokenCheck::Differs("greedy tokens differ, yet every teacher-forced step agrees".into());
    }
    TokenCheck::NearTie { steps: ties }
}

/// Runs a planned cell; returns it with its result, and the answers when it
/// ran (class B and parity reuse them).
pub fn run_cell(plan: CellPlan, prompts: &[Prompt], max_tokens: usize) -> (Cell, Option<(Pipeline, Answers)>) {
    let started = Instant::now();
    let cell = plan.cell.clone();
    let pipeline = match open(plan.file, plan.backend) {
        Ok(p) => p,
        Err(why) => return (cell.fail(String::new(), why).timed(started), None),
    };
    let answers = match answer(&pipeline, prompts, max_tokens) {
        Ok(a) => a,
        Err(why) => return (cell.fail(String::new(), why).timed(started), None),
    };
    let mut failures = tokenization_failures(prompts, &answers);
    let token_figure = match &plan.truth {
        Some(truth) => tokens_against_truth(&pipeline, &answers, truth, &mut failures),
        None => format!("{} answers (the ground truth)", answers.tokens.len()),
    };
    let mut figure = format!("{token_figure}; {:.1} tok/s", answers.decode_tok_s);
    let Some((reference, tolerance, name)) = plan.trace_against else {
        return (finish(cell, figure, failures, started), Some((pipeline, answers)));
    };
    // trace-diff drives a `Side`; the pipeline is lent as one and taken back.
    let candidate = Side { model: pipeline.model, tokenizer: Ok(pipeline.tokenizer) };
    let verdict = trace_diff_all(reference, &candidate, prompts, max_tokens, plan.backend, tolerance);
    figure = format!("{figure}; trace-diff vs {name}: {}", verdict_label(&verdict));
    if let Err(why) = &verdict {
        failures.push(format!("trace-diff vs {name}: {why}"));
    }
    let Side { model, tokenizer } = candidate;
    let pipeline = Pipeline { model, tokenizer: tokenizer.expect("set above"), load_time: Default::default() };
    (finish(cell, figure, failures, started), Some((pipeline, answers)))
}

/// Prompts whose tokens differ from llama.cpp's: the tokenizer or the template is wrong.
fn tokenization_failures(prompts: &[Prompt], answers: &Answers) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, (prompt, ours)) in prompts.iter().zip(&answers.prompt_tokens).enumerate() {
        if prompt.reference.as_ref().is_some_and(|r| r.prompt_ids != *ours) {
            failures.push(format!("prompt {}: tokenized differently from the reference", i + 1));
        }
    }
    failures
}

fn finish(cell: Cell, figure: String, failures: Vec<String>, started: Instant) -> Cell {
    if failures.is_empty() {
        cell.pass(figure).timed(started)
    } else {
        cell.fail(figure, failures.join("; ")).timed(started)
    }
}

/// "4/4 = llama.cpp (1 near-tie)", failures pushed with the prompt named.
fn tokens_against_truth(pipeline: &Pipeline, answers: &Answers, truth: &Truth, failures: &mut Vec<String>) -> String {
    let (mut equal, mut near) = (0, 0);
    for (i, (got, expected)) in answers.tokens.iter().zip(truth.tokens).enumerate() {
        let top5 = truth.steps_top5.get(i).copied().flatten();
        match check_tokens(pipeline, &answers.prompt_tokens[i], got, expected, top5) {
            TokenCheck::Equal => equal += 1,
            TokenCheck::NearTie { steps } => near += steps,
            TokenCheck::Differs(why) => {
                failures.push(format!("prompt {} tokens differ from {}: {why}", i + 1, truth.name))
            }
        }
    }
    let n = answers.tokens.len();
    format!(
        "{}/{n} = {}{}",
        equal + near,
        truth.name,
        if near > 0 { format!(" ({near} near-tie step(s))") } else { String::new() }
    )
}

/// The worst trace-diff verdict over the prompts: `Ok` unless one diverged.
fn trace_diff_all(
    reference: &Side,
    candidate: &Side,
    prompts: &[Prompt],
    max_tokens: usize,
    backend: BackendKind,
    tolerance: Tolerance,
) -> Result<Verdict, String> {
    let mut worst = Verdict::Identical;
    for (i, prompt) in prompts.iter().enumerate() {
        let mut options = TraceDiffOptions::new(prompt.question.clone());
        options.system = prompt.system.clone();
        options.raw = prompt.raw;
        options.max_tokens = max_tokens;
        options.tolerance = tolerance;
        options.candidate_backend = backend;
        let report = trace_diff(reference, candidate, &options).map_err(|e| format!("prompt {}: {e}", i + 1))?;
        match report.verdict {
            Verdict::Diverged { position, layer, boundary, classification } => {
                let at = match (layer, boundary) {
                    (Some(l), Some(b)) => format!("layer {l} ({b:?})"),
                    (Some(l), None) => format!("layer {l}"),
                    (None, Some(b)) => format!("{b:?}"),
                    (None, None) => "the logits".into(),
                };
                return Err(format!("prompt {} diverged at {at}, position {position}: {classification}", i + 1));
            }
            Verdict::NumericallyEquivalent { max_diff } => {
                let previous = match worst {
                    Verdict::NumericallyEquivalent { max_diff } => max_diff,
                    _ => 0.0,
                };
                worst = Verdict::NumericallyEquivalent { max_diff: max_diff.max(previous) };
            }
            Verdict::Identical => {}
        }
    }
    Ok(worst)
}

fn verdict_label(verdict: &Result<Verdict, String>) -> String {
    match verdict {
        Ok(Verdict::Identical) => "identical".into(),
        Ok(Verdict::NumericallyEquivalent { max_diff }) => format!("equivalent (max logit diff {max_diff:.3})"),
        Ok(diverged) => diverged.to_string(),
        Err(_) => "DIVERGED".into(),
    }
}
