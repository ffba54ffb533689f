//! Differential tracing: two models (or one model on two backends) driven in
//! lockstep on the reference's tokens, compared at every position and, with
//! `trace_tensors`, at every boundary, until the first divergence is found and
//! classified with the evidence that led to it.
//!
//! Teacher forcing keeps positions comparable after a divergence: both sides
//! always consume the reference's tokens; the candidate's own greedy choice is
//! only reported.

mod capture;
mod classify;
pub mod compare_inference;
pub mod isolation;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use capture::{BoundaryDiff, Tolerance};
pub use classify::Classification;

use crate::backend::BackendKind;
use crate::backend::{HostMatrix, RopeStyle};
use crate::container::{ModelFile, QkRowOrder};
use crate::diff::stats::DiffMetrics;
use crate::error::{Error, Result};
use crate::generate::argmax;
use crate::model::{Boundary, KvCache, KvFault, Logits, Model};
use crate::pipeline;
use crate::stats::stats_of;
use crate::tokenizer::Tokenizer;
use capture::{compare_captures, Capture};

/// One side of a comparison: a model and, if it has one, its tokenizer.
pub struct Side {
    pub model: Model,
    pub tokenizer: std::result::Result<Tokenizer, String>,
}

impl Side {
    /// Opens a model on the default (SIMD CPU) backend.
    pub fn open(path: &Path) -> Result<Side> {
        Side::open_on(path, BackendKind::Cpu)
    }

    /// Opens a model on `backend`: the same file on two backends is a comparison too.
    pub fn open_on(path: &Path, backend: BackendKind) -> Result<Side> {
        let file = ModelFile::open(path)?;
        Ok(Side::of(Model::load(file, backend).map_err(|e| e.about_file(path))?))
    }

    /// A model already loaded (on any backend value), with its tokenizer.
    pub fn of(model: Model) -> Side {
        let tokenizer = Tokenizer::from_metadata(model.file.metadata()).map_err(|e| e.to_string());
        Side { model, tokenizer }
    }

    fn text(&self, token: u32) -> String {
        match &self.tokenizer {
            Ok(t) => t.decode(&[token]),
            Err(_) => format!("<{token}>"),
        }
    }
}

/// What to run and how strictly to compare.
#[derive(Debug, Clone)]
pub struct TraceDiffOptions {
    pub prompt: String,
    pub system: Option<String>,
    /// Feed the prompt without the chat template.
    pub raw: bool,
    pub max_tokens: usize,
    /// Compare every boundary's activations, not only the logits (the default:
    /// it is what names the layer; turn it off only for speed).
    pub trace_tensors: bool,
    pub tolerance: Tolerance,
    pub reference_backend: BackendKind,
    pub candidate_backend: BackendKind,
    /// Whether each candidate operation is fed the reference's input.
    pub mode: Mode,
    /// Test-only engine hook: a fault injected into the candidate's KV cache.
    #[doc(hidden)]
    pub candidate_kv_fault: Option<KvFault>,
}

impl TraceDiffOptions {
    pub fn new(prompt: impl Into<String>) -> Self {
        TraceDiffOptions {
            prompt: prompt.into(),
            system: None,
            raw: false,
            max_tokens: 16,
            trace_tensors: true,
            tolerance: Tolerance::default(),
            reference_backend: BackendKind::Cpu,
            candidate_backend: BackendKind::Cpu,
            mode: Mode::Auto,
            candidate_kv_fault: None,
        }
    }
}

/// How the candidate is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Isolated for one file on two backends, lockstep otherwise.
    Auto,
    /// Every candidate operation fed the reference's input; errors are local
    /// and judged per operation ([`isolation`]).
    Isolated,
    /// Both models run on their own, side by side: errors accumulate (what a
    /// file-against-file comparison needs).
    Lockstep,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Mode, String> {
        match name {
            "auto" => Ok(Mode::Auto),
            "isolated" => Ok(Mode::Isolated),
            "lockstep" => Ok(Mode::Lockstep),
            _ => Err(format!("unknown mode `{name}` (auto, isolated or lockstep)")),
        }
    }
}

/// One generated position: what each side would choose.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub position: usize,
    pub reference: u32,
    pub reference_text: String,
    pub candidate: u32,
    pub candidate_text: String,
    pub matches: bool,
}

/// The logits of one position, compared.
#[derive(Debug, Clone, Serialize)]
pub struct PositionSummary {
    pub position: usize,
    pub logits: DiffMetrics,
    pub reference_top1: u32,
    pub candidate_top1: u32,
    /// Every compared boundary at this position is within tolerance.
    pub within_tolerance: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    /// Every compared value is bit-identical and the tokens agree.
    Identical,
    /// Within tolerance everywhere; tokens agree.
    NumericallyEquivalent {
        max_diff: f64,
    },
    Diverged {
        position: usize,
        layer: Option<usize>,
        boundary: Option<Boundary>,
        classification: Classification,
    },
}

impl Verdict {
    pub fn passed(&self) -> bool {
        !matches!(self, Verdict::Diverged { .. })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Identical => f.write_str("Identical"),
            Verdict::NumericallyEquivalent { max_diff } => {
                write!(f, "NumericallyEquivalent {{ max_diff: {max_diff:.3e} }}")
            }
            Verdict::Diverged { position, layer, boundary, classification } => {
                write!(f, "Diverged {{ position: {position}")?;
                if let Some(layer) = layer {
                    write!(f, ", layer: {layer}")?;
                }
                if let Some(boundary) = boundary {
                    write!(f, ", boundary: {boundary:?}")?;
                }
                write!(f, ", classification: {classification} }}")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceDiffReport {
    pub schema: &'static str,
    pub reference: PathBuf,
    pub candidate: PathBuf,
    pub reference_backend: String,
    pub candidate_backend: String,
    /// `isolated` or `lockstep`: how the candidate was driven.
    pub mode: Mode,
    pub tolerance: Tolerance,
    pub trace_tensors: bool,
    pub prompt_tokens: Vec<u32>,
    /// The candidate's own tokenization of the prompt, when it has a tokenizer.
    pub candidate_prompt_tokens: Option<Vec<u32>>,
    pub tokens: Vec<TokenRow>,
    pub positions: Vec<PositionSummary>,
    /// The first boundary beyond tolerance, with both sides' statistics.
    pub first_divergence: Option<BoundaryDiff>,
    /// Largest logit difference seen.
    pub max_logit_diff: f64,
    pub verdict: Verdict,
    pub evidence: Vec<String>,
}

/// Opens both models and runs [`trace_diff`]. A candidate that cannot be
/// loaded is itself a finding (diverged at position 0), not an error.
pub fn trace_diff_paths(reference: &Path, candidate: &Path, options: &TraceDiffOptions) -> Result<TraceDiffReport> {
    let reference_side = Side::open_on(reference, options.reference_backend)?;
    options.candidate_backend.check_available()?; // an absent backend is an error, never a finding
    match Side::open_on(candidate, options.candidate_backend) {
        Ok(candidate_side) => trace_diff(&reference_side, &candidate_side, options),
        // A file that cannot be read is a wrong command line, not a finding about a model.
        Err(io_error @ Error::Io { .. }) => Err(io_error),
        Err(load_error) => Ok(unloadable_candidate(&reference_side, candidate, load_error, options)),
    }
}

fn unloadable_candidate(
    reference: &Side,
    candidate: &Path,
    load_error: Error,
    o: &TraceDiffOptions,
) -> TraceDiffReport {
    let candidate_file = ModelFile::open(candidate).ok();
    let (classification, evidence) =
        classify::unloadable(&reference.model.file, candidate_file.as_ref(), &load_error.to_string());
    TraceDiffReport {
        schema: SCHEMA,
        reference: reference.model.file.path.clone(),
        candidate: candidate.to_path_buf(),
        reference_backend: reference.model.backend_name().to_string(),
        candidate_backend: o.candidate_backend.name().to_string(),
        mode: Mode::Lockstep,
        tolerance: o.tolerance,
        trace_tensors: o.trace_tensors,
        prompt_tokens: Vec::new(),
        candidate_prompt_tokens: None,
        tokens: Vec::new(),
        positions: Vec::new(),
        first_divergence: None,
        max_logit_diff: f64::INFINITY,
        verdict: Verdict::Diverged { position: 0, layer: None, boundary: None, classification },
        evidence,
    }
}

const SCHEMA: &str = "apr.trace-diff.v1";

/// Where and how the candidate failed to run.
#[derive(Debug)]
pub(crate) struct CandidateError {
    pub position: usize,
    /// The candidate's KV cache ran out of positions ([`Error::ContextFull`]).
    pub context_full: bool,
    pub message: String,
}

/// What the lockstep run found, before classification.
#[derive(Default)]
pub(crate) struct Findings {
    pub prompt_len: usize,
    pub first: Option<BoundaryDiff>,
    pub diverged_positions: Vec<usize>,
    pub all_exact: bool,
    pub max_logit_diff: f64,
    /// Positions where the candidate's logits carry no information (constant or non-finite).
    pub dead_logit_positions: usize,
    pub positions_compared: usize,
    /// Where and how the candidate failed.
    pub candidate_error: Option<CandidateError>,
    pub tokenizer_evidence: Option<String>,
}

/// Drives both sides on the reference's greedy tokens and compares them.
pub fn trace_diff(reference: &Side, candidate: &Side, options: &TraceDiffOptions) -> Result<TraceDiffReport> {
    let ref_tokenizer = reference.tokenizer.as_ref().map_err(|e| {
        Error::Invalid(format!("{}: the reference needs a tokenizer: {e}", reference.model.file.path.display()))
    })?;
    let prompt_of = |side: &Side, tokenizer: &Tokenizer| {
        pipeline::prompt_tokens(
            tokenizer,
            side.model.file.metadata(),
            &options.prompt,
            options.system.as_deref(),
            options.raw,
        )
    };
    let prompt = prompt_of(reference, ref_tokenizer)?;
    let candidate_prompt = match &candidate.tokenizer {
        Ok(t) => Some(prompt_of(candidate, t)?),
        Err(_) => None,
    };
    let mut findings = Findings { prompt_len: prompt.len(), all_exact: true, ..Default::default() };
    findings.tokenizer_evidence = tokenizer_evidence(candidate, &prompt, candidate_prompt.as_deref());

    let mut run = Lockstep::new(reference, candidate, options, prompt.len())?;
    let mut tokens = Vec::new();
    let mut positions = Vec::new();
    let mut input = prompt.clone();
    for step in 0..=options.max_tokens {
        let outcome = match run.step(&input, &mut findings, &mut positions) {
            Some(outcome) => outcome,
            None => break,
        };
        if step == options.max_tokens {
            break;
        }
        let position = run.reference_cache.len();
        tokens.push(TokenRow {
            position,
            reference: outcome.0,
            reference_text: reference.text(outcome.0),
            candidate: outcome.1,
            candidate_text: candidate.text(outcome.1),
            matches: outcome.0 == outcome.1,
        });
        if ref_tokenizer.is_eog(outcome.0) {
            break;
        }
        input = vec![outcome.0];
    }
    let tokens_match = tokens.iter().all(|t| t.matches);
    let diverged = findings.tokenizer_evidence.is_some()
        || findings.first.is_some()
        || findings.candidate_error.is_some()
        || !tokens_match;
    let mode = if run.isolated { Mode::Isolated } else { Mode::Lockstep };
    let outcome = if diverged {
        let (classification, mut evidence) = classify::classify(reference, candidate, &findings);
        if let (Mode::Isolated, Some(first)) = (mode, &findings.first) {
            evidence.insert(0, isolation::evidence(first));
        }
        let (position, layer, boundary) = divergence_point(&findings, &tokens);
        (Verdict::Diverged { position, layer, boundary, classification }, evidence)
    } else if findings.all_exact {
        (Verdict::Identical, Vec::new())
    } else {
        (Verdict::NumericallyEquivalent { max_diff: findings.max_logit_diff }, Vec::new())
    };
    let run = Run { mode, prompt, candidate_prompt, tokens, positions, findings };
    Ok(report(reference, candidate, options, run, outcome))
}

/// What one trace-diff run produced, before it is written up.
struct Run {
    mode: Mode,
    prompt: Vec<u32>,
    candidate_prompt: Option<Vec<u32>>,
    tokens: Vec<TokenRow>,
    positions: Vec<PositionSummary>,
    findings: Findings,
}

fn report(
    reference: &Side,
    candidate: &Side,
    options: &TraceDiffOptions,
    Run { mode, prompt, candidate_prompt, tokens, positions, findings }: Run,
    (verdict, evidence): (Verdict, Vec<String>),
) -> TraceDiffReport {
    TraceDiffReport {
        schema: SCHEMA,
        reference: reference.model.file.path.clone(),
        candidate: candidate.model.file.path.clone(),
        reference_backend: reference.model.backend_name().to_string(),
        candidate_backend: candidate.model.backend_name().to_string(),
        mode,
        tolerance: options.tolerance,
        trace_tensors: options.trace_tensors,
        prompt_tokens: prompt,
        candidate_prompt_tokens: candidate_prompt,
        tokens,
        positions,
        first_divergence: findings.first,
        max_logit_diff: findings.max_logit_diff,
        verdict,
        evidence,
    }
}

/// Where the divergence is reported: the first boundary beyond tolerance,
/// else the candidate's failure, else the first prompt token that differs,
/// else the first generated token that differs.
fn divergence_point(f: &Findings, tokens: &[TokenRow]) -> (usize, Option<usize>, Option<Boundary>) {
    if let Some(first) = &f.first {
        return (first.position, first.layer, Some(first.boundary));
    }
    if let Some(CandidateError { position, .. }) = &f.candidate_error {
        return (*position, None, None);
    }
    let token_position = tokens.iter().find(|t| !t.matches).map_or(0, |t| t.position);
    (if f.tokenizer_evidence.is_some() { 0 } else { token_position }, None, None)
}

fn tokenizer_evidence(candidate: &Side, prompt: &[u32], candidate_prompt: Option<&[u32]>) -> Option<String> {
    let Some(candidate_prompt) = candidate_prompt else {
        let why = candidate.tokenizer.as_ref().err().cloned().unwrap_or_default();
        return Some(format!("the candidate has no usable tokenizer ({why}); the reference's token ids drove both"));
    };
    if candidate_prompt == prompt {
        return None;
    }
    let at = prompt
        .iter()
        .zip(candidate_prompt)
        .position(|(a, b)| a != b)
        .unwrap_or(prompt.len().min(candidate_prompt.len()));
    Some(format!(
        "the prompt tokenizes differently: {} reference tokens vs {} candidate tokens, first difference at index {at} (reference {:?}, candidate {:?})",
        prompt.len(),
        candidate_prompt.len(),
        prompt.get(at),
        candidate_prompt.get(at)
    ))
}

/// The two models' caches and captures, advanced together.
struct Lockstep<'a> {
    reference: &'a Side,
    candidate: &'a Side,
    options: &'a TraceDiffOptions,
    reference_cache: KvCache,
    candidate_cache: KvCache,
    reference_capture: Capture,
    candidate_capture: Capture,
    /// The candidate's Q/K row order, when it differs from the reference's.
    candidate_qk_order: Option<(QkRowOrder, QkRowOrder)>,
    /// Each candidate operation is fed the reference's input.
    isolated: bool,
    failed: bool,
}

impl<'a> Lockstep<'a> {
    fn new(reference: &'a Side, candidate: &'a Side, options: &'a TraceDiffOptions, prompt_len: usize) -> Result<Self> {
        let needed = prompt_len + options.max_tokens + 1;
        // Each side gets the context it declares, so a context overflow shows.
        let cache = |side: &Side| side.model.new_cache(needed.min(side.model.config.context_length.max(1)));
        let mut candidate_cache = cache(candidate);
        candidate_cache.fault = options.candidate_kv_fault;
        let candidate_qk_order = differing_qk_orders(reference, candidate);
        let isolated = isolates(reference, candidate, options, candidate_qk_order.is_some())?;
        let keep = options.trace_tensors || isolated;
        Ok(Lockstep {
            reference,
            candidate,
            options,
            reference_cache: cache(reference),
            candidate_cache,
            reference_capture: Capture::new(keep),
            candidate_capture: Capture::new(keep),
            candidate_qk_order,
            isolated,
            failed: false,
        })
    }

    /// Whether a boundary passes: by the user's tolerance in lockstep; in
    /// isolation by its operation's bound, a projection by the 8-bit rounding
    /// noise of its own input (`logits_row`: the reference's logits at the position).
    fn boundary_ok(&self, d: &BoundaryDiff, logits_row: Option<&[f32]>) -> bool {
        if !self.isolated {
            return d.within(&self.options.tolerance);
        }
        if !d.within(&isolation::tolerance(d.boundary, &self.options.tolerance)) {
            return false;
        }
        match isolation::OpKind::of(d.boundary) {
            isolation::OpKind::Projection | isolation::OpKind::LmHead => {
                match self.projection_operands(d, logits_row) {
                    Some((weight, input, output)) => {
                        isolation::projection_within(d.metrics.nmse, &weight, input, output)
                    }
                    None => d.metrics.nmse <= isolation::OpKind::Projection.nmse_bound(),
                }
            }
            _ => true,
        }
    }

    /// A projection's weight, the reference's input row and output row at `d`'s position.
    fn projection_operands<'r>(
        &'r self,
        d: &BoundaryDiff,
        logits_row: Option<&'r [f32]>,
    ) -> Option<(HostMatrix, &'r [f32], &'r [f32])> {
        let model = &self.reference.model;
        let capture = &self.reference_capture;
        let row = d.position.checked_sub(capture.start)?;
        let record = |layer: Option<usize>, boundary: Boundary| {
            let width = boundary_widths(model)(boundary);
            let r = capture.records.iter().find(|r| r.layer == layer && r.boundary == boundary)?;
            r.values.get(row * width..(row + 1) * width)
        };
        let (index, input, output) = match (d.layer, d.boundary) {
            (Some(l), Boundary::Q) => {
                (model.weights.layers[l].q, record(d.layer, Boundary::AttnNorm)?, record(d.layer, Boundary::Q)?)
            }
            (Some(l), Boundary::K) => {
                (model.weights.layers[l].k, record(d.layer, Boundary::AttnNorm)?, record(d.layer, Boundary::K)?)
            }
            (Some(l), Boundary::V) => {
                (model.weights.layers[l].v, record(d.layer, Boundary::AttnNorm)?, record(d.layer, Boundary::V)?)
            }
            (None, Boundary::Logits) => (model.weights.output, record(None, Boundary::FinalNorm)?, logits_row?),
            _ => return None,
        };
        Some((HostMatrix::new(&model.file, index).ok()?, input, output))
    }

    /// Runs `input` through both sides and compares; returns both greedy
    /// choices for the next position, or `None` once either side cannot go on.
    fn step(&mut self, input: &[u32], f: &mut Findings, positions: &mut Vec<PositionSummary>) -> Option<(u32, u32)> {
        if self.failed {
            return None;
        }
        let start = self.reference_cache.len();
        let ref_logits = match self.reference.model.forward_observed(
            input,
            &mut self.reference_cache,
            Logits::All,
            &mut self.reference_capture,
        ) {
            Ok(l) => l,
            Err(_) => return None, // the reference's own context is full: stop comparing
        };
        if self.isolated {
            self.candidate_capture.feed = Some(std::mem::take(&mut self.reference_capture.records));
        }
        let cand_logits = self.candidate.model.forward_observed(
            input,
            &mut self.candidate_cache,
            Logits::All,
            &mut self.candidate_capture,
        );
        if let Some(fed) = self.candidate_capture.feed.take() {
            self.reference_capture.records = fed;
        }
        let cand_logits = match cand_logits {
            Ok(l) => l,
            Err(e) => {
                let context_full = matches!(e, Error::ContextFull { .. });
                f.candidate_error = Some(CandidateError { position: start, context_full, message: e.to_string() });
                self.failed = true;
                return None;
            }
        };
        let vocab = self.reference.model.config.vocab;
        let widths = boundary_widths(&self.reference.model);
        let boundary_diffs = if self.reference_capture.keep {
            if let Some((from, to)) = self.candidate_qk_order {
                self.candidate_capture.reorder_qk(self.candidate.model.config.head_dim, from, to);
            }
            compare_captures(&self.reference_capture, &self.candidate_capture, widths)
        } else {
            Vec::new()
        };
        let mut choices = (0, 0);
        for (i, ref_row) in ref_logits.chunks_exact(vocab).enumerate() {
            let position = start + i;
            let cand_row = cand_logits.get(i * vocab..(i + 1) * vocab).unwrap_or(&[]);
            let logits = BoundaryDiff::compare(position, None, Boundary::Logits, ref_row, cand_row);
            let (r1, c1) = (argmax(ref_row), if cand_row.is_empty() { u32::MAX } else { argmax(cand_row) });
            let cand_stats = stats_of(cand_row);
            if cand_stats.std == 0.0 || cand_stats.nan + cand_stats.inf == cand_stats.count {
                f.dead_logit_positions += 1;
            }
            f.positions_compared += 1;
            f.max_logit_diff = f.max_logit_diff.max(logits.metrics.max_abs_diff);
            // A different top-1 counts unless the two leaders are tied within
            // the logits tolerance in the reference itself (near-ties flip).
            let top1_ok = r1 == c1
                || ref_row
                    .get(c1 as usize)
                    .is_some_and(|&l| ref_row[r1 as usize] - l <= self.options.tolerance.logits_max_abs as f32);
            let mut within = self.boundary_ok(&logits, Some(ref_row)) && top1_ok;
            let at_position = boundary_diffs.iter().filter(|d| d.position == position).chain(std::iter::once(&logits));
            for d in at_position {
                f.all_exact &= d.is_exact();
                let ok = self.boundary_ok(d, Some(ref_row)) && (d.boundary != Boundary::Logits || top1_ok);
                within &= ok;
                if !ok && f.first.is_none() {
                    f.first = Some(d.clone());
                }
            }
            if !within {
                f.diverged_positions.push(position);
            }
            positions.push(PositionSummary {
                position,
                logits: logits.metrics,
                reference_top1: r1,
                candidate_top1: c1,
                within_tolerance: within,
            });
            choices = (r1, c1);
        }
        Some(choices)
    }
}

/// Whether to isolate: as asked, or by default for one file on two backends
/// (two files are compared whole, in lockstep). Isolation feeds the
/// reference's values as they are, so both sides must order Q/K rows alike.
fn isolates(reference: &Side, candidate: &Side, options: &TraceDiffOptions, qk_orders_differ: bool) -> Result<bool> {
    let same_file = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    match options.mode {
        Mode::Lockstep => Ok(false),
        Mode::Isolated if qk_orders_differ => Err(Error::Invalid(
            "isolation feeds the reference's activations to the candidate, but the two store Q/K rows in \
             different orders: compare them in lockstep"
                .into(),
        )),
        Mode::Isolated => Ok(true),
        Mode::Auto => Ok(reference.model.backend_name() != candidate.model.backend_name()
            && same_file(&reference.model.file.path, &candidate.model.file.path)),
    }
}

/// Files whose Q/K rows are stored in two orders (a Llama GGUF against its
/// Hugging Face export) produce the same Q and K values permuted within each
/// head; the candidate's are brought into the reference's order before
/// comparing, so only a real difference counts.
fn differing_qk_orders(reference: &Side, candidate: &Side) -> Option<(QkRowOrder, QkRowOrder)> {
    let order = |side: &Side| match side.model.weights.rope {
        RopeStyle::Interleaved => QkRowOrder::Gguf,
        RopeStyle::Halves => QkRowOrder::HuggingFace,
    };
    let (r, c) = (order(reference), order(candidate));
    (r != c).then_some((c, r))
}

fn boundary_widths(model: &Model) -> impl Fn(Boundary) -> usize {
    let c = model.config.clone();
    move |b| match b {
        Boundary::Q => c.heads * c.head_dim,
        Boundary::K | Boundary::V => c.kv_heads * c.head_dim,
        Boundary::Logits => c.vocab,
        _ => c.hidden,
    }
}
