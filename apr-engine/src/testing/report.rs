//! The result of one model test, as data: written as JSON under
//! `target/apr/reports/<test>.json` for `cargo apr test`, handed to the
//! test's body, and rendered as a table when the test fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tracediff::TraceDiffReport;

pub const SCHEMA: &str = "apr.model-test.v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        })
    }
}

/// One check the test made, with what it saw.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// One prompt of a format-equivalence or trace-diff test.
#[derive(Debug, Clone, Serialize)]
pub struct PromptOutcome {
    pub prompt: String,
    pub trace: TraceDiffReport,
    /// Largest KL divergence over positions, when a `kld` tolerance asked for it.
    pub max_kld: Option<f64>,
    pub checks: Vec<Check>,
}

/// One (container, dtype) cell of a round trip.
#[derive(Debug, Clone, Serialize)]
pub struct RoundtripCell {
    pub container: String,
    pub dtype: String,
    pub passed: bool,
    /// `written`, or `refused` when the container cannot hold the dtype and the converter said so.
    pub outcome: String,
    pub tensors: usize,
    /// Tensors whose dtype was kept and whose bytes came back unchanged.
    pub byte_exact: usize,
    /// Tensors re-encoded and within their dtype's bound.
    pub within_bound: usize,
    /// The largest NMSE among re-encoded tensors, and its tensor.
    pub worst_nmse: f64,
    pub worst_tensor: Option<String>,
    pub stored_dtypes: Vec<String>,
    pub failures: Vec<String>,
    pub file: Option<PathBuf>,
}

/// How a golden snapshot compared.
#[derive(Debug, Clone, Serialize)]
pub struct GoldenOutcome {
    pub path: PathBuf,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// `module::path::function_backend`.
    pub test: String,
    /// The gate: `format_equivalence`, `dtype_roundtrip` or `trace_diff`.
    pub kind: String,
    pub reference: String,
    pub candidate: String,
    /// `gguf -> apr`-style: the containers compared.
    pub formats: String,
    pub backend: String,
    pub status: Status,
    /// Why the test failed or was skipped.
    pub reason: Option<String>,
    pub duration_s: f64,
    /// The one figure that sums the test up (largest logit difference, worst NMSE, verdict).
    pub key_figure: String,
    pub prompts: Vec<PromptOutcome>,
    pub roundtrip: Vec<RoundtripCell>,
    pub golden: Option<GoldenOutcome>,
}

/// The fields of a report that `cargo apr test` reads back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportSummary {
    pub schema: String,
    pub test: String,
    pub kind: String,
    pub reference: String,
    pub candidate: String,
    pub formats: String,
    pub backend: String,
    pub status: Status,
    pub reason: Option<String>,
    pub duration_s: f64,
    pub key_figure: String,
}

impl Report {
    /// The report's file: the test path with `::` made file-name safe.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        let name: String = self
            .test
            .replace("::", ".")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '-' })
            .collect();
        dir.join(format!("{name}.json"))
    }

    /// Writes the report (temporary file + rename, so a reader never sees half of one).
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = self.path_in(dir);
        let temporary = path.with_extension(format!("json.tmp{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&temporary, json)?;
        std::fs::rename(&temporary, &path)?;
        Ok(path)
    }

    /// The failure message: what was compared, every check, and per prompt the
    /// trace-diff table and verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "model test {} [{}] {}", self.test, self.kind, self.status);
        let _ = writeln!(out, "  reference: {}", self.reference);
        let _ = writeln!(out, "  candidate: {}", self.candidate);
        let _ =
            writeln!(out, "  formats: {}   backend: {}   key figure: {}", self.formats, self.backend, self.key_figure);
        if let Some(reason) = &self.reason {
            let _ = writeln!(out, "  reason: {reason}");
        }
        for prompt in &self.prompts {
            render_prompt(&mut out, prompt);
        }
        if !self.roundtrip.is_empty() {
            render_roundtrip(&mut out, &self.roundtrip);
        }
        if let Some(golden) = &self.golden {
            let mark = if golden.passed { "ok" } else { "FAILED" };
            let _ = writeln!(out, "  golden {}: {mark}: {}", golden.path.display(), golden.detail);
        }
        out
    }
}

fn render_prompt(out: &mut String, p: &PromptOutcome) {
    let t = &p.trace;
    let _ = writeln!(out, "\n  prompt {:?} ({} prompt tokens)", p.prompt, t.prompt_tokens.len());
    let _ = writeln!(
        out,
        "  {:>5}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  ok",
        "pos", "ref top1", "cand top1", "max|dlogit|", "nmse", "cosine"
    );
    for pos in &t.positions {
        let _ = writeln!(
            out,
            "  {:>5}  {:>10}  {:>10}  {:>10.3e}  {:>10.3e}  {:>8.5}  {}",
            pos.position,
            pos.reference_top1,
            pos.candidate_top1,
            pos.logits.max_abs_diff,
            pos.logits.nmse,
            pos.logits.cosine,
            if pos.within_tolerance { "yes" } else { "NO" }
        );
    }
    let ref_text: String = t.tokens.iter().map(|r| r.reference_text.as_str()).collect();
    let cand_text: String = t.tokens.iter().map(|r| r.candidate_text.as_str()).collect();
    let _ = writeln!(out, "  reference generates: {ref_text:?}");
    let _ = writeln!(out, "  candidate would say: {cand_text:?}");
    if let Some(first) = &t.first_divergence {
        let layer = first.layer.map(|l| format!("layer {l} ")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  first divergence: position {} {layer}{:?}: nmse {:.3e}, cosine {:.5}, max|d| {:.3e}",
            first.position, first.boundary, first.metrics.nmse, first.metrics.cosine, first.metrics.max_abs_diff
        );
    }
    let _ = writeln!(out, "  verdict: {}", t.verdict);
    for line in &t.evidence {
        let _ = writeln!(out, "    evidence: {line}");
    }
    if let Some(kld) = p.max_kld {
        let _ = writeln!(out, "  max KL divergence: {kld:.3e}");
    }
    for check in &p.checks {
        let _ = writeln!(out, "  [{}] {}: {}", if check.passed { "ok" } else { "FAILED" }, check.name, check.detail);
    }
}

fn render_roundtrip(out: &mut String, cells: &[RoundtripCell]) {
    let _ = writeln!(
        out,
        "\n  {:<12} {:<6} {:<8} {:>7} {:>10} {:>12} {:>11}  stored",
        "container", "dtype", "outcome", "tensors", "byte-exact", "within bound", "worst nmse"
    );
    for c in cells {
        let _ = writeln!(
            out,
            "  {:<12} {:<6} {:<8} {:>7} {:>10} {:>12} {:>11.3e}  {}{}",
            c.container,
            c.dtype,
            if c.passed { c.outcome.clone() } else { format!("{} FAIL", c.outcome) },
            c.tensors,
            c.byte_exact,
            c.within_bound,
            c.worst_nmse,
            c.stored_dtypes.join(","),
            c.worst_tensor.as_ref().map(|t| format!(" (worst: {t})")).unwrap_or_default()
        );
        for failure in c.failures.iter().take(5) {
            let _ = writeln!(out, "      {failure}");
        }
        if c.failures.len() > 5 {
            let _ = writeln!(out, "      ... and {} more", c.failures.len() - 5);
        }
    }
}
