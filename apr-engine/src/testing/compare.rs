//! Format equivalence and trace diff: both models driven in lockstep on each
//! prompt (`tracediff`), the verdict held against the expectation and every
//! declared tolerance.

use std::path::Path;

use super::golden;
use super::report::{Check, PromptOutcome, Report, Status};
use super::spec::{Expect, Kind, TestSpec, ToleranceSpec};
use crate::error::Result;
use crate::model::Logits;
use crate::tracediff::{trace_diff, trace_diff_paths, Side, Tolerance, TraceDiffOptions, TraceDiffReport, Verdict};

pub const DEFAULT_PROMPTS: &[&str] = &["What is 2+2?"];
pub const DEFAULT_MAX_TOKENS: usize = 8;

pub fn run(
    spec: &TestSpec,
    report: &mut Report,
    reference: &Path,
    candidate: &Path,
    manifest_dir: &Path,
) -> Result<()> {
    let prompts = if spec.prompts.is_empty() { DEFAULT_PROMPTS } else { spec.prompts };
    let tolerances = declared_tolerances(spec);
    let options = |prompt: &str| {
        let mut o = TraceDiffOptions::new(prompt);
        o.max_tokens = spec.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        // Every boundary, for both kinds: a failure must name the layer and tensor, not "logits".
        o.trace_tensors = true;
        o.tolerance = trace_tolerance(&tolerances);
        (o.reference_backend, o.candidate_backend) = (spec.backend, spec.backend);
        o
    };
    // Both sides on the backend the attribute named; the report says which backend actually ran.
    let reference_side = Side::open_on(reference, spec.backend)?;
    let candidate_side = Side::open_on(candidate, spec.backend);
    if let Ok(side) = &candidate_side {
        report.backend = side.model.backend_name().to_string();
    }
    for prompt in prompts {
        let trace = match &candidate_side {
            Ok(side) => trace_diff(&reference_side, side, &options(prompt))?,
            // An unloadable candidate is a finding with its own classification.
            Err(_) => trace_diff_paths(reference, candidate, &options(prompt))?,
        };
        let max_kld = match (&candidate_side, tolerances.iter().any(|t| matches!(t, ToleranceSpec::Kld(_)))) {
            (Ok(side), true) => Some(max_kld(&reference_side, side, &trace)?),
            _ => None,
        };
        let checks = checks(spec.expect, &tolerances, &trace, max_kld);
        report.prompts.push(PromptOutcome { prompt: prompt.to_string(), trace, max_kld, checks });
    }
    report.key_figure = key_figure(spec.kind, report);
    let all_passed = report.prompts.iter().all(|p| p.checks.iter().all(|c| c.passed));
    if !all_passed {
        report.status = Status::Fail;
        let failed: Vec<&str> =
            report.prompts.iter().flat_map(|p| &p.checks).filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        report.reason = Some(format!("failed: {}", failed.join(", ")));
        return Ok(());
    }
    if let (Some(golden_path), Ok(side)) = (spec.golden, &candidate_side) {
        let outcome = golden::check(spec, &manifest_dir.join(golden_path), side, &reference_side, prompts)?;
        if !outcome.passed {
            report.status = Status::Fail;
            report.reason = Some(format!("golden: {}", outcome.detail));
        }
        report.golden = Some(outcome);
    }
    Ok(())
}

/// The `tolerance = ...` list, plus those inside `expect = equivalent(...)`.
fn declared_tolerances(spec: &TestSpec) -> Vec<ToleranceSpec> {
    let mut all = spec.tolerance.to_vec();
    if let Some(Expect::Equivalent(inner)) = spec.expect {
        all.extend_from_slice(inner);
    }
    all
}

/// The trace diff's own thresholds: the declared ones, the defaults elsewhere.
fn trace_tolerance(tolerances: &[ToleranceSpec]) -> Tolerance {
    let mut t = Tolerance::default();
    for spec in tolerances {
        match *spec {
            ToleranceSpec::LogitsMaxAbs(v) => t.logits_max_abs = v,
            ToleranceSpec::Nmse(v) => t.nmse = v,
            ToleranceSpec::Cosine(v) => t.cosine = v,
            ToleranceSpec::Kld(_) | ToleranceSpec::Top1 => {}
        }
    }
    t
}

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
    Check { name: name.into(), passed, detail: detail.into() }
}

fn checks(expect: Option<Expect>, tolerances: &[ToleranceSpec], t: &TraceDiffReport, kld: Option<f64>) -> Vec<Check> {
    let verdict = t.verdict.to_string();
    let mut out = vec![match expect {
        Some(Expect::Identical) => check("expect identical", t.verdict == Verdict::Identical, verdict),
        Some(Expect::Diverged(class)) => {
            let passed = match (&t.verdict, class) {
                (Verdict::Diverged { classification, .. }, Some(expected)) => *classification == expected,
                (Verdict::Diverged { .. }, None) => true,
                _ => false,
            };
            let name = match class {
                Some(c) => format!("expect diverged({c})"),
                None => "expect diverged".into(),
            };
            // A divergence was expected: the tolerances only set where it is found.
            return vec![check(name, passed, verdict)];
        }
        Some(Expect::Equivalent(_)) | None => check("expect equivalent", t.verdict.passed(), verdict),
    }];
    let max_nmse = t.positions.iter().map(|p| p.logits.nmse).fold(0.0, f64::max);
    let min_cosine = t.positions.iter().map(|p| p.logits.cosine).fold(1.0, f64::min);
    for tol in tolerances {
        out.push(match *tol {
            ToleranceSpec::LogitsMaxAbs(v) => check(
                format!("logits(max_abs = {v:e})"),
                t.max_logit_diff <= v,
                format!("largest |dlogit| {:.3e}", t.max_logit_diff),
            ),
            ToleranceSpec::Nmse(v) => {
                check(format!("nmse({v:e})"), max_nmse <= v, format!("largest logits nmse {max_nmse:.3e}"))
            }
            ToleranceSpec::Cosine(v) => {
                check(format!("cosine({v})"), min_cosine >= v, format!("smallest logits cosine {min_cosine:.6}"))
            }
            ToleranceSpec::Kld(v) => {
                let k = kld.unwrap_or(f64::INFINITY);
                check(format!("kld({v:e})"), k <= v, format!("largest KL divergence {k:.3e}"))
            }
            ToleranceSpec::Top1 => {
                let differ = t.positions.iter().filter(|p| p.reference_top1 != p.candidate_top1).count();
                check(
                    "top1",
                    differ == 0 && !t.positions.is_empty(),
                    format!("{differ} of {} positions pick another top token", t.positions.len()),
                )
            }
        });
    }
    out
}

fn key_figure(kind: Kind, report: &Report) -> String {
    let first = report.prompts.first().map(|p| &p.trace);
    match (kind, first) {
        (Kind::TraceDiff, Some(t)) => t.verdict.to_string(),
        _ => {
            let max = report.prompts.iter().map(|p| p.trace.max_logit_diff).fold(0.0, f64::max);
            let tokens: usize = report.prompts.iter().map(|p| p.trace.tokens.len()).sum();
            let agree: usize = report.prompts.iter().map(|p| p.trace.tokens.iter().filter(|r| r.matches).count()).sum();
            format!("max|dlogit| {max:.2e}, tokens {agree}/{tokens}")
        }
    }
}

/// Largest KL(reference || candidate) of the next-token distributions over
/// the prompt and the reference's generated tokens (both sides fed the same ids).
fn max_kld(reference: &Side, candidate: &Side, t: &TraceDiffReport) -> Result<f64> {
    let mut tokens = t.prompt_tokens.clone();
    tokens.extend(t.tokens.iter().map(|r| r.reference));
    let run = |side: &Side| {
        let mut cache = side.model.new_cache(tokens.len() + 1);
        side.model.forward(&tokens, &mut cache, Logits::All)
    };
    let (r, c) = (run(reference)?, run(candidate)?);
    let vocab = reference.model.config.vocab;
    Ok(r.chunks_exact(vocab).zip(c.chunks_exact(vocab)).map(|(p, q)| kl_divergence(p, q)).fold(0.0, f64::max))
}

/// KL(softmax(p) || softmax(q)), in nats.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_softmax = |l: &[f32]| {
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let log_sum = l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
        l.iter().map(move |&x| x as f64 - log_sum).collect::<Vec<f64>>()
    };
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_divergence_is_zero_for_equal_and_positive_for_different() {
        assert_eq!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        // Shifting all logits leaves the distribution unchanged.
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]) < 1e-12);
        // p = (0.5, 0.5), q = (0.8808, 0.1192): KL = 0.5 ln(0.5/0.8808) + 0.5 ln(0.5/0.1192) = 0.4338.
        let k = kl_divergence(&[0.0, 0.0], &[2.0, 0.0]);
        assert!((k - 0.4338).abs() < 1e-3, "{k}");
    }
}
