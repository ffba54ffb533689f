//! `cargo apr test`: fetches the declared models, runs `cargo test` (or
//! nextest) with the reports directed to one folder, gathers the reports the
//! model tests wrote, and prints the matrix, a summary and a qualification
//! score; JSON and JUnit forms for CI. Exits 1 on any failure.

mod junit;
mod libtest;
mod nextest;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use apr_engine::backend::BackendKind;
use apr_engine::testing::report::{ReportSummary, Status};
use serde::Serialize;

use super::common_args::backend_kind;
use super::fetch;
use super::workspace::Workspace;
use crate::exit;

/// `--backend`: one backend's tests, or all of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BackendChoice(Option<BackendKind>);

impl BackendChoice {
    fn parse(name: &str) -> Result<BackendChoice, String> {
        match name {
            "all" => Ok(BackendChoice(None)),
            _ => backend_kind(name).map(|kind| BackendChoice(Some(kind))),
        }
    }

    /// `APR_BACKEND` as the generated tests read it.
    fn env_value(self) -> &'static str {
        self.0.map_or("all", BackendKind::name)
    }
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
    /// The backend to run (cpu, cpu-reference, cuda) or all; tests of the others are reported as skipped.
    #[arg(long, default_value = "all", value_parser = BackendChoice::parse)]
    backend: BackendChoice,
    /// What to print on stdout once the tests ran.
    #[arg(long, value_enum, default_value = "human")]
    format: OutputFormat,
    /// Print the summary as JSON (the same as `--format json`, spelled as every other command spells it).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Where junit.xml, summary.json and the model tests' reports (in reports/) go (default: <target>/apr).
    #[arg(long)]
    report_dir: Option<PathBuf>,
    /// Run the tests with `cargo nextest run` instead of `cargo test`.
    #[arg(long)]
    nextest: bool,
    /// Run one shard of the tests (nextest's `--partition`, e.g. `hash:1/4`); needs --nextest.
    #[arg(long, requires = "nextest", value_name = "SPEC")]
    partition: Option<String>,
    /// Run the tests of a nextest archive built elsewhere (`cargo nextest archive`); needs --nextest.
    #[arg(long, requires = "nextest", value_name = "FILE")]
    archive_file: Option<PathBuf>,
    /// Run nothing: combine the report folders of earlier runs (shards) into one matrix, score and JUnit file.
    #[arg(long, num_args = 1.., value_name = "DIR", conflicts_with_all = ["nextest", "cargo_args"])]
    merge: Vec<PathBuf>,
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
    if !args.merge.is_empty() {
        return merge(&args, &workspace);
    }
    if !args.no_fetch {
        for model in workspace.models()? {
            fetch::ensure(&model, true).with_context(|| format!("model `{}`", model.name))?;
        }
    }
    let out = report_dir(&args, &workspace);
    out.prepare()?;
    let harness = run_harness(&args, &workspace, &out)?;
    let models = gather(&out.model_reports())?;
    let summary = Summary::of(&models, harness.succeeded);
    let junit = match harness.results {
        HarnessResults::Libtest(suites) => junit::from_libtest(&suites, &models, harness.succeeded),
        HarnessResults::Nextest(report) => junit::from_nextest(report, &models, harness.succeeded),
    };
    write_outputs(&out, &junit, &summary, &models, args.output_format())?;
    Ok(if summary.failed > 0 || !harness.succeeded { exit::FAILURE } else { exit::PASS })
}

fn report_dir(args: &Args, workspace: &Workspace) -> ReportDir {
    ReportDir::new(args.report_dir.clone().unwrap_or_else(|| workspace.target_dir.join("apr")))
}

/// `--merge DIR...`: the shards' JUnit files and model-test reports as one
/// run, written to the report folder (the reports copied into its `reports/`).
fn merge(args: &Args, workspace: &Workspace) -> anyhow::Result<u8> {
    let mut junits = Vec::new();
    let mut models = Vec::new();
    let mut report_files = Vec::new();
    let mut all_succeeded = true;
    for dir in &args.merge {
        let shard = ReportDir::new(dir.clone());
        let xml = std::fs::read_to_string(shard.junit())
            .with_context(|| format!("{}: not a report folder of `cargo apr test`", dir.display()))?;
        junits.push(
            quick_junit::Report::deserialize_from_str(&xml)
                .with_context(|| format!("{}: not a JUnit report", shard.junit().display()))?,
        );
        all_succeeded &= shard_succeeded(&shard)?;
        models.extend(gather(&shard.model_reports())?);
        report_files.extend(model_report_files(&shard.model_reports())?);
    }
    models.sort_by(|a, b| a.test.cmp(&b.test));
    let out = report_dir(args, workspace);
    if args.merge.iter().any(|dir| same_dir(dir, &out.root)) {
        bail!(
            "--report-dir {} is one of the folders to merge: give the merged report a folder of its own",
            out.root.display()
        );
    }
    out.prepare()?;
    for file in report_files {
        let target = out.model_reports().join(file.file_name().unwrap_or_default());
        std::fs::copy(&file, &target).with_context(|| format!("copying {} to {}", file.display(), target.display()))?;
    }
    let summary = Summary::of(&models, all_succeeded);
    write_outputs(&out, &junit::merge(junits), &summary, &models, args.output_format())?;
    Ok(if summary.failed > 0 || !all_succeeded { exit::FAILURE } else { exit::PASS })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether a shard's harness succeeded, from its `summary.json`.
fn shard_succeeded(shard: &ReportDir) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(shard.summary()).with_context(|| format!("reading {}", shard.summary().display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", shard.summary().display()))?;
    if value.get("schema").and_then(|s| s.as_str()) != Some(SUMMARY_SCHEMA) {
        bail!("{}: not a summary of schema {SUMMARY_SCHEMA}", shard.summary().display());
    }
    Ok(value["summary"]["cargo_succeeded"].as_bool().unwrap_or(false))
}

/// The files of `dir` that are model-test reports.
fn model_report_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.flatten() {
        let path = entry.path();
        let is_report = path.extension().is_some_and(|e| e == "json")
            && std::fs::read_to_string(&path).ok().and_then(|t| schema_of(&t)).is_some_and(is_model_test_schema);
        if is_report {
            files.push(path);
        }
    }
    Ok(files)
}

impl Args {
    fn output_format(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            self.format
        }
    }
}

/// Writes `junit.xml` and `summary.json`, then prints the chosen form on stdout.
fn write_outputs(
    out: &ReportDir,
    junit: &quick_junit::Report,
    summary: &Summary,
    models: &[ReportSummary],
    format: OutputFormat,
) -> anyhow::Result<()> {
    let xml = junit.to_string().context("serializing the JUnit report")?;
    let json = serde_json::to_string_pretty(&JsonOut::new(summary, junit, models))?;
    std::fs::write(out.junit(), &xml).with_context(|| format!("writing {}", out.junit().display()))?;
    std::fs::write(out.summary(), &json).with_context(|| format!("writing {}", out.summary().display()))?;
    match format {
        OutputFormat::Human => print_human(models, summary, junit, out),
        OutputFormat::Json => println!("{json}"),
        OutputFormat::Junit => print!("{xml}"),
    }
    Ok(())
}

/// Where a run's outputs go: `junit.xml`, `summary.json`, and the model
/// tests' own reports in the `reports/` folder under it. Only files apr wrote
/// are ever replaced or removed there.
pub struct ReportDir {
    root: PathBuf,
}

/// The schema of `summary.json` (and of `--format json`).
pub const SUMMARY_SCHEMA: &str = "apr.test.v1";

impl ReportDir {
    pub fn new(root: PathBuf) -> ReportDir {
        ReportDir { root }
    }

    pub fn model_reports(&self) -> PathBuf {
        self.root.join("reports")
    }

    pub fn junit(&self) -> PathBuf {
        self.root.join("junit.xml")
    }

    pub fn summary(&self) -> PathBuf {
        self.root.join("summary.json")
    }

    /// The nextest tool config of a `--nextest` run.
    pub fn nextest_config(&self) -> PathBuf {
        self.root.join("nextest-tool-config.toml")
    }

    /// Where nextest writes its own JUnit report in a `--nextest` run.
    pub fn nextest_junit(&self) -> PathBuf {
        self.root.join("nextest-junit.xml")
    }

    /// Creates the folders, refuses to replace a `junit.xml` or `summary.json`
    /// apr did not write, and removes the model-test reports of an earlier run
    /// (they would be counted again); any other file stays.
    pub fn prepare(&self) -> anyhow::Result<()> {
        let reports = self.model_reports();
        std::fs::create_dir_all(&reports).with_context(|| format!("creating {}", reports.display()))?;
        self.refuse_foreign(&self.junit(), |text| {
            quick_junit::Report::deserialize_from_str(text)
                .is_ok_and(|r| r.name.as_ref().is_some_and(|n| n.as_str() == junit::REPORT_NAME))
        })?;
        self.refuse_foreign(&self.summary(), |text| schema_of(text).is_some_and(|s| s == SUMMARY_SCHEMA))?;
        for path in model_report_files(&reports)? {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    fn refuse_foreign(&self, path: &Path, written_by_apr: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Ok(text) if written_by_apr(&text) => Ok(()),
            _ => bail!(
                "{} exists and was not written by `cargo apr test`; it is left alone: choose another --report-dir",
                path.display()
            ),
        }
    }
}

/// The `schema` field of a JSON document, if it has one.
fn schema_of(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("schema")?.as_str().map(String::from)
}

/// Any version of the model-test report schema (`apr.model-test.v1`, ...).
fn is_model_test_schema(schema: String) -> bool {
    schema.starts_with("apr.model-test.")
}

/// What the test harness said about every test it ran.
enum HarnessResults {
    /// Read from `cargo test`'s output.
    Libtest(Vec<libtest::SuiteRun>),
    /// nextest's own JUnit report.
    Nextest(quick_junit::Report),
}

struct HarnessRun {
    succeeded: bool,
    results: HarnessResults,
}

/// Model tests run the engine's kernels; a test profile that builds them
/// unoptimized (cargo's default) makes a one-second test take minutes. These
/// packages are built at opt-level 3 in the user's test build, whatever
/// their profile says: the engine and what its hot loops call into.
pub const OPTIMIZED_PACKAGES: &[&str] =
    &["apr-engine", "half", "rayon", "rayon-core", "crossbeam-deque", "crossbeam-epoch", "crossbeam-utils", "sha2"];

/// The `--config` arguments that give `OPTIMIZED_PACKAGES` opt-level 3.
pub fn optimization_overrides() -> Vec<String> {
    OPTIMIZED_PACKAGES
        .iter()
        .flat_map(|p| ["--config".to_string(), format!("profile.test.package.{p}.opt-level=3")])
        .collect()
}

/// Runs the tests with every test's result read back.
fn run_harness(args: &Args, workspace: &Workspace, out: &ReportDir) -> anyhow::Result<HarnessRun> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    let nextest = if args.nextest { Some(nextest::Junit::prepare(out)?) } else { None };
    match &nextest {
        Some(junit) => {
            command.args(["nextest", "run", "--no-fail-fast"]).args(junit.arguments()).args(shard_arguments(args))
        }
        None => command.args(["test", "--no-fail-fast"]),
    };
    command.args(optimization_overrides());
    command.arg("--manifest-path").arg(&workspace.manifest_path);
    for package in &workspace.selected {
        command.arg("-p").arg(package);
    }
    command.env("APR_REPORT_DIR", out.model_reports()).env("APR_BACKEND", args.backend.env_value());
    let (cargo_side, test_side) = split_at_double_dash(&args.cargo_args);
    command.args(cargo_side);
    if !test_side.is_empty() {
        command.arg("--").args(test_side);
    }
    // Keep stdout for the JSON or JUnit document: the test output goes to stderr.
    let echo_to_stdout = args.output_format() == OutputFormat::Human;
    let (succeeded, suites) = run_and_read(command, echo_to_stdout)?;
    let results = match nextest {
        Some(junit) => HarnessResults::Nextest(junit.read()?),
        None => HarnessResults::Libtest(suites),
    };
    Ok(HarnessRun { succeeded, results })
}

/// `--partition` and `--archive-file`, handed to nextest as they are.
fn shard_arguments(args: &Args) -> Vec<std::ffi::OsString> {
    let mut out = Vec::new();
    if let Some(partition) = &args.partition {
        out.extend(["--partition".into(), partition.into()]);
    }
    if let Some(archive) = &args.archive_file {
        out.extend(["--archive-file".into(), archive.clone().into_os_string()]);
    }
    out
}

/// Runs `command` with its stdout and stderr on one pipe (so that cargo's
/// `Running` lines stay in order with the tests' lines), echoes every line,
/// and reads libtest's results from them; whether it exited 0.
fn run_and_read(mut command: Command, echo_to_stdout: bool) -> anyhow::Result<(bool, Vec<libtest::SuiteRun>)> {
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    command.stdout(writer.try_clone()?).stderr(writer);
    let mut child = command.spawn().context("running cargo")?;
    // The command holds the pipe's write end: drop it, or reading never ends.
    drop(command);
    let mut parser = libtest::Parser::default();
    let mut reader = std::io::BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).context("reading cargo's output")? == 0 {
            break;
        }
        echo(&line, echo_to_stdout);
        parser.line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
    }
    let status = child.wait().context("waiting for cargo")?;
    Ok((status.success(), parser.finish()))
}

fn echo(line: &[u8], to_stdout: bool) {
    // A closed stdout or stderr (a pipe whose reader left) must not stop the run.
    let _ = if to_stdout { std::io::stdout().write_all(line) } else { std::io::stderr().write_all(line) };
}

/// `[cargo args] -- [test binary args]`.
fn split_at_double_dash(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// The model-test reports in `dir` (other files are left out).
pub fn gather(dir: &Path) -> anyhow::Result<Vec<ReportSummary>> {
    let mut reports = Vec::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        match schema_of(&text) {
            Some(schema) if schema == apr_engine::testing::report::SCHEMA => {}
            Some(schema) if is_model_test_schema(schema.clone()) => {
                bail!(
                    "{}: a report of schema {schema}, not {}; rebuild the tests",
                    path.display(),
                    apr_engine::testing::report::SCHEMA
                )
            }
            _ => continue,
        }
        let report: ReportSummary =
            serde_json::from_str(&text).with_context(|| format!("{}: not a model-test report", path.display()))?;
        reports.push(report);
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

/// Every test the harness ran, model tests or not, as the JUnit report counts them.
#[derive(Debug, Serialize)]
pub struct AllTests {
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
}

impl AllTests {
    fn of(junit: &quick_junit::Report) -> AllTests {
        AllTests { tests: junit.tests, failures: junit.failures, errors: junit.errors, skipped: junit.skipped }
    }
}

#[derive(Serialize)]
struct JsonOut<'a> {
    schema: &'static str,
    summary: &'a Summary,
    all_tests: AllTests,
    tests: &'a [ReportSummary],
}

impl<'a> JsonOut<'a> {
    fn new(summary: &'a Summary, junit: &quick_junit::Report, tests: &'a [ReportSummary]) -> JsonOut<'a> {
        JsonOut { schema: SUMMARY_SCHEMA, summary, all_tests: AllTests::of(junit), tests }
    }
}

fn print_human(reports: &[ReportSummary], s: &Summary, junit: &quick_junit::Report, out: &ReportDir) {
    print_matrix(reports);
    match s.qualification {
        Some(q) => println!(
            "qualification score: {:.1}% ({} passed / {} run; skipped tests are excluded)",
            q * 100.0,
            s.passed,
            s.passed + s.failed
        ),
        None => println!("qualification score: n/a (no model test ran)"),
    }
    let all = AllTests::of(junit);
    let other_failures = (all.failures + all.errors).saturating_sub(s.failed);
    if other_failures > 0 {
        println!(
            "{other_failures} other test(s) or test binaries failed outside the model tests: see the output above"
        );
    } else if !s.cargo_succeeded && s.failed == 0 {
        println!("cargo failed outside the model tests (a build error?): see its output above");
    }
    println!(
        "reports: {}, junit: {}, summary: {}",
        out.model_reports().display(),
        out.junit().display(),
        out.summary().display()
    );
    println!("{} passed, {} failed, {} skipped", s.passed, s.failed, s.skipped);
}

fn print_matrix(reports: &[ReportSummary]) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model test's summary (also used by the tests of `junit`).
    pub(super) fn report(test: &str, status: Status) -> ReportSummary {
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
}
