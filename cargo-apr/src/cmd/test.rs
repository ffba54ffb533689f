//! `cargo apr test`: fetches the declared models, runs `cargo test` (or
//! nextest) with the reports directed to one folder, gathers the reports the
//! model tests wrote, and prints the matrix, a summary and a qualification
//! score; JSON and JUnit forms for CI. Exits 1 on any failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use apr_engine::testing::report::{ReportSummary, Status};
use serde::Serialize;

use super::fetch;
use super::workspace::Workspace;
use crate::exit;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Cpu,
    Cuda,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
    Junit,
}

#[derive(clap::Args)]
pub struct Args {
    /// Package(s) to test (default: the workspace's default members).
    #[arg(short = 'p', long = "package")]
    packages: Vec<String>,
    /// Backends to run; tests of the others are reported as skipped.
    #[arg(long, value_enum, default_value = "all")]
    backend: BackendChoice,
    /// What to print on stdout once the tests ran.
    #[arg(long, value_enum, default_value = "human")]
    format: OutputFormat,
    /// Where the tests write their reports (default: <target>/apr/reports).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Run the tests with `cargo nextest run` instead of `cargo test`.
    #[arg(long)]
    nextest: bool,
    /// Do not fetch missing models (tests naming them fail with the fetch command).
    #[arg(long)]
    no_fetch: bool,
    /// Path to the Cargo.toml of the package or workspace (default: found from the current folder).
    #[arg(long)]
    manifest_path: Option<PathBuf>,
    /// Arguments for `cargo test` itself (test name filters, `--release`, ...).
    #[arg(last = true)]
    cargo_args: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let workspace = Workspace::load(args.manifest_path.as_deref(), &args.packages)?;
    if !args.no_fetch {
        for model in workspace.models()? {
            fetch::ensure(&model, true).with_context(|| format!("model `{}`", model.name))?;
        }
    }
    let report_dir = args.report_dir.clone().unwrap_or_else(|| workspace.target_dir.join("apr/reports"));
    clear_reports(&report_dir)?;
    let cargo_ok = run_cargo(&args, &workspace, &report_dir)?;
    let reports = gather(&report_dir)?;
    let summary = Summary::of(&reports, cargo_ok);
    let out_dir = report_dir.parent().unwrap_or(&report_dir).to_path_buf();
    std::fs::write(out_dir.join("junit.xml"), junit(&reports, &summary))
        .with_context(|| format!("writing {}", out_dir.join("junit.xml").display()))?;
    std::fs::write(
        out_dir.join("summary.json"),
        serde_json::to_vec_pretty(&JsonOut { summary: &summary, tests: &reports })?,
    )?;
    match args.format {
        OutputFormat::Human => print_human(&reports, &summary, &out_dir),
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&JsonOut { summary: &summary, tests: &reports })?)
        }
        OutputFormat::Junit => print!("{}", junit(&reports, &summary)),
    }
    Ok(if summary.failed > 0 || !cargo_ok { exit::FAILURE } else { exit::PASS })
}

/// Reports of an earlier run would be counted again: remove them first.
fn clear_reports(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Runs the tests; whether cargo exited 0.
fn run_cargo(args: &Args, workspace: &Workspace, report_dir: &Path) -> anyhow::Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    if args.nextest {
        command.args(["nextest", "run", "--no-fail-fast"]);
    } else {
        command.args(["test", "--no-fail-fast"]);
    }
    command.arg("--manifest-path").arg(&workspace.manifest_path);
    for package in &workspace.selected {
        command.arg("-p").arg(package);
    }
    let backend = match args.backend {
        BackendChoice::Cpu => "cpu",
        BackendChoice::Cuda => "cuda",
        BackendChoice::All => "all",
    };
    command.env("APR_REPORT_DIR", report_dir).env("APR_BACKEND", backend);
    if !args.cargo_args.is_empty() {
        let (cargo_side, test_side) = split_at_double_dash(&args.cargo_args);
        command.args(cargo_side);
        if !test_side.is_empty() {
            command.arg("--").args(test_side);
        }
    }
    if args.format != OutputFormat::Human {
        // Keep stdout for the JSON or JUnit document: the test output goes to stderr.
        command.stdout(Stdio::from(stderr_handle()?));
    }
    let status = command.status().context("running cargo")?;
    Ok(status.success())
}

/// `[cargo args] -- [test binary args]`.
fn split_at_double_dash(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

fn stderr_handle() -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(std::io::stderr().as_fd().try_clone_to_owned()?))
}

fn gather(dir: &Path) -> anyhow::Result<Vec<ReportSummary>> {
    let mut reports = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let report: ReportSummary =
            serde_json::from_str(&text).with_context(|| format!("{}: not a model-test report", path.display()))?;
        reports.push(report);
    }
    if reports.iter().any(|r| r.schema != apr_engine::testing::report::SCHEMA) {
        bail!("{}: reports of another schema version; rebuild the tests", dir.display());
    }
    reports.sort_by(|a, b| a.test.cmp(&b.test));
    Ok(reports)
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// passed / (passed + failed); skips are left out. `None` when nothing ran.
    pub qualification: Option<f64>,
    /// Whether `cargo test` itself succeeded (it fails on non-model tests and build errors too).
    pub cargo_succeeded: bool,
}

impl Summary {
    fn of(reports: &[ReportSummary], cargo_succeeded: bool) -> Summary {
        let count = |s: Status| reports.iter().filter(|r| r.status == s).count();
        let (passed, failed, skipped) = (count(Status::Pass), count(Status::Fail), count(Status::Skip));
        let ran = passed + failed;
        let qualification = (ran > 0).then(|| passed as f64 / ran as f64);
        Summary { passed, failed, skipped, qualification, cargo_succeeded }
    }
}

#[derive(Serialize)]
struct JsonOut<'a> {
    summary: &'a Summary,
    tests: &'a [ReportSummary],
}

fn print_human(reports: &[ReportSummary], s: &Summary, out_dir: &Path) {
    let rows: Vec<[String; 7]> = reports
        .iter()
        .map(|r| {
            let figure =
                if r.status == Status::Pass { r.key_figure.clone() } else { r.reason.clone().unwrap_or_default() };
            [
                r.kind.clone(),
                r.test.clone(),
                r.formats.clone(),
                r.backend.clone(),
                r.status.to_string(),
                format!("{:.1}s", r.duration_s),
                figure,
            ]
        })
        .collect();
    let header = ["gate", "test", "formats", "backend", "status", "time", "key figure"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    println!();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row.iter().zip(widths).take(6).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}  {}", cells.join("  "), row[6]);
    }
    println!();
    match s.qualification {
        Some(q) => println!(
            "qualification score: {:.1}% ({} passed / {} run; skipped tests are excluded)",
            q * 100.0,
            s.passed,
            s.passed + s.failed
        ),
        None => println!("qualification score: n/a (no model test ran)"),
    }
    if !s.cargo_succeeded && s.failed == 0 {
        println!("cargo test failed outside the model tests (a build error or another test): see its output above");
    }
    println!("reports: {}/reports, junit: {}/junit.xml", out_dir.display(), out_dir.display());
    println!("{} passed, {} failed, {} skipped", s.passed, s.failed, s.skipped);
}

fn junit(reports: &[ReportSummary], s: &Summary) -> String {
    let total_time: f64 = reports.iter().map(|r| r.duration_s).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"apr model tests\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total_time:.3}\">\n",
        reports.len(),
        s.failed,
        s.skipped
    ));
    xml.push_str(&format!(
        "  <testsuite name=\"apr\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total_time:.3}\">\n",
        reports.len(),
        s.failed,
        s.skipped
    ));
    for r in reports {
        let (class, name) = r.test.rsplit_once("::").unwrap_or(("", &r.test));
        xml.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">\n",
            escape(class),
            escape(name),
            r.duration_s
        ));
        xml.push_str(&format!(
            "      <properties><property name=\"kind\" value=\"{}\"/><property name=\"formats\" value=\"{}\"/><property name=\"backend\" value=\"{}\"/><property name=\"key_figure\" value=\"{}\"/></properties>\n",
            escape(&r.kind),
            escape(&r.formats),
            escape(&r.backend),
            escape(&r.key_figure)
        ));
        let reason = escape(r.reason.as_deref().unwrap_or(""));
        match r.status {
            Status::Fail => xml.push_str(&format!("      <failure message=\"{reason}\"/>\n")),
            Status::Skip => xml.push_str(&format!("      <skipped message=\"{reason}\"/>\n")),
            Status::Pass => {}
        }
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            c if c.is_control() => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(test: &str, status: Status) -> ReportSummary {
        ReportSummary {
            schema: apr_engine::testing::report::SCHEMA.into(),
            test: test.into(),
            kind: "trace_diff".into(),
            reference: "r".into(),
            candidate: "c".into(),
            formats: "gguf -> apr".into(),
            backend: "cpu".into(),
            status,
            reason: (status != Status::Pass).then(|| "why <&>".into()),
            duration_s: 1.5,
            key_figure: "Identical".into(),
        }
    }

    #[test]
    fn qualification_leaves_skips_out() {
        let reports = [report("a::x", Status::Pass), report("a::y", Status::Fail), report("a::z", Status::Skip)];
        let s = Summary::of(&reports, true);
        assert_eq!((s.passed, s.failed, s.skipped), (1, 1, 1));
        assert_eq!(s.qualification, Some(0.5));
        assert_eq!(Summary::of(&[report("a::z", Status::Skip)], true).qualification, None);
    }

    #[test]
    fn junit_marks_failures_and_skips_and_escapes() {
        let reports = [report("m::x_cpu", Status::Fail), report("m::x_cuda", Status::Skip)];
        let xml = junit(&reports, &Summary::of(&reports, false));
        assert!(xml.contains("failures=\"1\" skipped=\"1\""), "{xml}");
        assert!(xml.contains("<testcase classname=\"m\" name=\"x_cpu\""), "{xml}");
        assert!(xml.contains("<failure message=\"why &lt;&amp;&gt;\"/>"), "{xml}");
        assert!(xml.contains("<skipped message=\"why &lt;&amp;&gt;\"/>"), "{xml}");
    }
}
