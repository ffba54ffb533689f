//! The qualification report: one row per cell (the model on a backend in a
//! format, or one tracing check), its points, and the verdict. Rendered as a
//! table for people and serialized as JSON (`apr.qualify.v1`) for machines.

use serde::Serialize;

/// The schema of `--json` and of `qualify.json` in `--report-dir`.
pub const SCHEMA: &str = "apr.qualify.v1";

/// What the points add up to when every cell runs and passes (60 + 40 + 45).
pub const MAX_POINTS: u32 = 145;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Outcome {
    Pass,
    Fail,
    /// Could not run here (no GPU, not selected): never counted as passed.
    Skip,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        }
    }
}

/// One row of the points table.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// `A1`..`A4`, `B1`..`B4`, `T1`..`T15`.
    pub id: String,
    /// What the cell checks, in a few words.
    pub name: String,
    pub backend: String,
    pub format: String,
    pub max_points: u32,
    pub points: u32,
    pub result: Outcome,
    /// The figure that decided the cell (tokens matched, trace-diff verdict, tok/s).
    pub key_figure: String,
    /// Why it failed or was skipped; empty on a pass.
    pub reason: String,
    pub duration_s: f64,
}

impl Cell {
    pub fn new(id: &str, name: &str, backend: &str, format: &str, max_points: u32) -> Cell {
        Cell {
            id: id.into(),
            name: name.into(),
            backend: backend.into(),
            format: format.into(),
            max_points,
            points: 0,
            result: Outcome::Skip,
            key_figure: String::new(),
            reason: String::new(),
            duration_s: 0.0,
        }
    }

    pub fn pass(mut self, key_figure: String) -> Cell {
        self.result = Outcome::Pass;
        self.points = self.max_points;
        self.key_figure = key_figure;
        self
    }

    pub fn fail(mut self, key_figure: String, reason: String) -> Cell {
        self.result = Outcome::Fail;
        self.points = 0;
        self.key_figure = key_figure;
        self.reason = reason;
        self
    }

    pub fn skip(mut self, reason: String) -> Cell {
        self.result = Outcome::Skip;
        self.points = 0;
        self.reason = reason;
        self
    }

    pub fn timed(mut self, started: std::time::Instant) -> Cell {
        self.duration_s = started.elapsed().as_secs_f64();
        self
    }
}

/// Parity with a running server (`--against`).
#[derive(Debug, Clone, Serialize)]
pub struct Parity {
    pub url: String,
    /// Prompts whose greedy answers are the same text on both sides.
    pub prompts_equal: usize,
    pub prompts: usize,
    /// Per prompt: apr's text and the server's, where they differ.
    pub differences: Vec<TextDifference>,
    /// apr decode tok/s over the server's (>= 0.5 to hold: within 2x).
    pub speed_ratio: Option<f64>,
    pub apr_decode_tok_s: f64,
    pub server_tok_s: Option<f64>,
    /// Where the server's figure comes from: its own `timings`, or the wall clock.
    pub server_speed_source: String,
    pub holds: bool,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TextDifference {
    pub prompt: String,
    pub apr: String,
    pub server: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct QualifyReport {
    pub schema: &'static str,
    pub model: String,
    pub backends: Vec<String>,
    /// Where the expected greedy tokens came from.
    pub ground_truth: String,
    pub notes: Vec<String>,
    pub cells: Vec<Cell>,
    pub parity: Option<Parity>,
    pub points: u32,
    pub max_points: u32,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub qualified: bool,
    pub verdict: String,
    pub duration_s: f64,
}

impl QualifyReport {
    /// Totals and the verdict: QUALIFIED only when no cell failed, every cell
    /// that could run did (a cell left out by `--only` could have), and
    /// parity, when asked for, holds.
    pub fn new(
        model: String,
        backends: Vec<String>,
        ground_truth: String,
        notes: Vec<String>,
        cells: Vec<Cell>,
        parity: Option<Parity>,
        started: std::time::Instant,
    ) -> QualifyReport {
        let count = |o: Outcome| cells.iter().filter(|c| c.result == o).count();
        let (passed, failed, skipped) = (count(Outcome::Pass), count(Outcome::Fail), count(Outcome::Skip));
        let points = cells.iter().map(|c| c.points).sum();
        let not_selected = cells.iter().filter(|c| c.reason.starts_with(NOT_SELECTED)).count();
        let parity_holds = parity.as_ref().is_none_or(|p| p.holds);
        let qualified = failed == 0 && not_selected == 0 && parity_holds && passed > 0;
        let verdict = if qualified {
            "QUALIFIED".to_string()
        } else {
            let mut why = Vec::new();
            if failed > 0 {
                why.push(format!("{failed} cell(s) failed"));
            }
            if not_selected > 0 {
                why.push(format!("{not_selected} runnable cell(s) not run (--only)"));
            }
            if !parity_holds {
                why.push("parity with the server does not hold".to_string());
            }
            if passed == 0 {
                why.push("no cell passed".to_string());
            }
            format!("NOT QUALIFIED ({})", why.join(", "))
        };
        QualifyReport {
            schema: SCHEMA,
            model,
            backends,
            ground_truth,
            notes,
            cells,
            parity,
            points,
            max_points: MAX_POINTS,
            passed,
            failed,
            skipped,
            qualified,
            verdict,
            duration_s: started.elapsed().as_secs_f64(),
        }
    }

    /// The points table, the parity figures and the verdict, for people.
    pub fn render(&self) -> String {
        let mut out = format!("qualify {}\nground truth: {}\n", self.model, self.ground_truth);
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out.push_str(&format!(
            "\n{:<4} {:<34} {:<7} {:<15} {:>6}  {:<6} key figure\n",
            "cell", "check", "backend", "format", "points", "result"
        ));
        for c in &self.cells {
            let points = format!("{}/{}", c.points, c.max_points);
            let figure = match (c.key_figure.is_empty(), c.reason.is_empty()) {
                (_, true) => c.key_figure.clone(),
                (true, false) => c.reason.clone(),
                (false, false) => format!("{}; {}", c.key_figure, c.reason),
            };
            out.push_str(&format!(
                "{:<4} {:<34} {:<7} {:<15} {:>6}  {:<6} {}\n",
                c.id,
                c.name,
                c.backend,
                c.format,
                points,
                c.result.label(),
                figure
            ));
        }
        out.push_str(&render_parity(self.parity.as_ref()));
        out.push_str(&format!(
            "\ntotal: {}/{} points ({} passed, {} failed, {} skipped) in {:.1} s\n{}\n",
            self.points, self.max_points, self.passed, self.failed, self.skipped, self.duration_s, self.verdict
        ));
        out
    }
}

/// The reason's prefix for a cell left out by `--only`.
pub const NOT_SELECTED: &str = "not selected";

fn render_parity(parity: Option<&Parity>) -> String {
    let Some(p) = parity else {
        return "\nparity: not checked (no --against server)\n".to_string();
    };
    let mut out =
        format!("\nparity with {}: {}/{} prompts give the same greedy text", p.url, p.prompts_equal, p.prompts);
    match (p.speed_ratio, p.server_tok_s) {
        (Some(ratio), Some(server)) => out.push_str(&format!(
            "; speed: apr {:.1} tok/s, server {:.1} tok/s ({}), ratio {ratio:.2} (must be >= 0.50)",
            p.apr_decode_tok_s, server, p.server_speed_source
        )),
        _ => out.push_str("; speed: no figure from the server"),
    }
    out.push_str(&format!("; {}\n", if p.holds { "holds" } else { "does NOT hold" }));
    for d in &p.differences {
        out.push_str(&format!("  {:?}: apr {:?} vs server {:?}\n", d.prompt, d.apr, d.server));
    }
    for note in &p.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}
