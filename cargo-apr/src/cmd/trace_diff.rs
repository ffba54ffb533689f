//! `cargo apr trace-diff REF CAND --prompt P`: lockstep comparison of two
//! models; names the first divergent position, layer and boundary.

use std::path::PathBuf;

use apr_engine::backend::cpu::Cpu;
use apr_engine::backend::BackendKind;
use apr_engine::container::ModelFile;
use apr_engine::model::Model;
use apr_engine::testing::broken_backend::{BrokenOp, OpFault};
use apr_engine::tracediff::{
    trace_diff, trace_diff_paths, BoundaryDiff, Mode, Side, Tolerance, TraceDiffOptions, TraceDiffReport,
};

use super::common_args::backend_kind;
use super::prompt_args::PromptArgs;
use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// The reference model (the one believed right).
    reference: PathBuf,
    /// The candidate model, compared against the reference.
    candidate: PathBuf,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Tokens of the reference's greedy output to compare.
    #[arg(long, short = 'n', default_value_t = 16)]
    max_tokens: usize,
    /// Compare the activations at every boundary of every position (the default;
    /// kept so that scripts which name it go on working).
    #[arg(long, conflicts_with = "logits_only")]
    trace_tensors: bool,
    /// Compare only the logits: faster, but a divergence is found at the logits
    /// instead of in the layer that made it.
    #[arg(long)]
    logits_only: bool,
    /// Comma-separated limits, e.g. `logits=1.0,nmse=1e-2,cosine=0.99`.
    #[arg(long, value_parser = parse_tolerance, default_value = "logits=1.0,nmse=1e-2,cosine=0.99")]
    tolerance: Tolerance,
    /// Backend of the reference model: cpu, cpu-reference or cuda.
    #[arg(long, default_value = "cpu", value_parser = backend_kind)]
    reference_backend: BackendKind,
    /// Backend of the candidate (diff one file on two backends by naming it twice).
    #[arg(long, default_value = "cpu", value_parser = backend_kind)]
    candidate_backend: BackendKind,
    /// isolated: each candidate operation gets the reference's input, and is judged by the NMSE
    /// bound of its kind; lockstep: both run on their own and the tolerance applies; auto:
    /// isolated for one file on two backends, lockstep for two files.
    #[arg(long, default_value = "auto", value_parser = |s: &str| s.parse::<Mode>())]
    mode: Mode,
    /// Test and documentation hook: the candidate runs on the CPU backend with one operation
    /// broken (skip-rope:LAYER, offset-attention:LAYER:VALUE or rms-eps:VALUE).
    #[arg(long, hide = true, value_parser = |s: &str| s.parse::<OpFault>(), conflicts_with = "candidate_backend")]
    broken_op: Option<OpFault>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn parse_tolerance(text: &str) -> Result<Tolerance, String> {
    let mut tol = Tolerance::default();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("'{part}': expected KEY=VALUE"))?;
        let value: f64 = value.trim().parse().map_err(|_| format!("'{part}': {value} is not a number"))?;
        match key.trim() {
            "logits" | "max_abs" | "logits_max_abs" => tol.logits_max_abs = value,
            "nmse" => tol.nmse = value,
            "cosine" => tol.cosine = value,
            other => return Err(format!("unknown tolerance '{other}' (logits, nmse, cosine)")),
        }
    }
    Ok(tol)
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let options = TraceDiffOptions {
        mode: args.mode,
        trace_tensors: !args.logits_only,
        tolerance: args.tolerance,
        reference_backend: args.reference_backend,
        candidate_backend: args.candidate_backend,
        ..args.prompt.options(args.max_tokens)?
    };
    let report = match args.broken_op {
        None => trace_diff_paths(&args.reference, &args.candidate, &options)?,
        Some(fault) => {
            let reference = Side::open_on(&args.reference, args.reference_backend)?;
            let file = ModelFile::open(&args.candidate)?;
            let candidate = Side::of(Model::load_on(file, BrokenOp::new(Cpu, fault))?);
            trace_diff(&reference, &candidate, &options)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.verdict.passed() { exit::PASS } else { exit::MISMATCH })
}

/// The token table, the first divergence and the verdict with its evidence.
pub fn render(r: &TraceDiffReport) -> String {
    let mut out = format!(
        "reference: {} ({})\ncandidate: {} ({})\n",
        r.reference.display(),
        r.reference_backend,
        r.candidate.display(),
        r.candidate_backend
    );
    out += &match r.mode {
        Mode::Isolated => {
            "mode: isolated (each candidate operation fed the reference's input, judged per operation)\n".to_string()
        }
        _ => "mode: lockstep\n".to_string(),
    };
    out += &format!("prompt: {} tokens\n", r.prompt_tokens.len());
    out += &format!("{:>5}  {:<28} {:<28} {}\n", "pos", "reference", "candidate", "status");
    for t in &r.tokens {
        let cell = |id: u32, text: &str| format!("{id} {text:?}");
        out += &format!(
            "{:>5}  {:<28} {:<28} {}\n",
            t.position,
            cell(t.reference, &t.reference_text),
            cell(t.candidate, &t.candidate_text),
            if t.matches { "match" } else { "MISMATCH" }
        );
    }
    out += &format!("max logit diff: {:.4e}\n", r.max_logit_diff);
    if let Some(d) = &r.first_divergence {
        out += &first_divergence(d);
    }
    out += &format!("result: {}\n", r.verdict);
    for e in &r.evidence {
        out += &format!("  evidence: {e}\n");
    }
    out
}

fn first_divergence(d: &BoundaryDiff) -> String {
    let layer = d.layer.map_or("-".to_string(), |l| l.to_string());
    let side = |name: &str, s: &apr_engine::stats::ValueStats| {
        format!(
            "  {name:<9} mean {:.4e} std {:.4e} min {:.4e} max {:.4e} l2 {:.4e} nan {} inf {}\n",
            s.mean, s.std, s.min, s.max, s.l2, s.nan, s.inf
        )
    };
    format!(
        "first divergence: position {} layer {layer} boundary {:?}\n{}{}  max abs diff {:.4e}, NMSE {:.4e}, cosine {:.6}\n  would pass with: nmse <= {:.3e}, cosine >= {:.6}{}\n",
        d.position,
        d.boundary,
        side("reference", &d.reference),
        side("candidate", &d.candidate),
        d.metrics.max_abs_diff,
        d.metrics.nmse,
        d.metrics.cosine,
        d.smallest_passing.nmse,
        d.smallest_passing.cosine,
        if d.smallest_passing.logits_max_abs > 0.0 {
            format!(", logits <= {:.3e}", d.smallest_passing.logits_max_abs)
        } else {
            String::new()
        }
    )
}
