//! `cargo apr test` end to end, as a user runs it: a fresh downstream crate
//! (path dependency on apr-engine, the 0.5B model declared by path) with
//! `#[model_test]` suites; the matrix, the report folder, the JUnit file and
//! the exit code are checked once with passing tests and once with a failing
//! candidate and an ordinary failing `#[test]`, under `cargo test`, and once
//! more under `cargo nextest run`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The target dir the workspace builds into, so that the downstream crate reuses its artifacts.
fn shared_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

const PASSING: &str = r#"
use apr_engine::model_test;

#[model_test(
    format_equivalence,
    reference = "qwen",
    candidate = convert(apr),
    prompts = ["Hi"],
    max_tokens = 2,
    expect = identical,
    backends = [cpu, cuda],
)]
fn apr_matches_gguf(report: &apr_engine::testing::Report) {
    assert_eq!(report.prompts.len(), 1);
}
"#;

const FAILING: &str = r#"
use apr_engine::model_test;

#[model_test(
    trace_diff,
    reference = "qwen",
    candidate = convert(apr, fault = scale("blk.5.ffn_down.weight", 1.5)),
    prompts = ["Hi"],
    max_tokens = 1,
    expect = identical,
)]
fn corrupted_candidate_is_caught() {}
"#;

/// Ordinary tests beside the model tests: they count in the JUnit report too.
const PLAIN: &str = r#"
#[test]
fn one_is_one() {
    assert_eq!(1, 1);
}

#[test]
fn two_is_three() {
    assert_eq!(2, 3, "an ordinary test failing");
}
"#;

fn downstream_crate(dir: &Path) {
    let model = apr_engine::testing::models::QWEN_0_5B.require();
    let manifest = format!(
        r#"[package]
name = "downstream"
version = "0.1.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
apr-engine = {{ path = "{engine}" }}

[package.metadata.apr.models]
qwen = {{ path = "{model}", sha256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32" }}

# The workspace's profiles, so that its compiled artifacts are reused.
[profile.test]
opt-level = 3
debug = 1

[profile.dev.package."*"]
opt-level = 3
"#,
        engine = workspace_root().join("apr-engine").display(),
        model = model.display()
    );
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    std::fs::write(dir.join("tests/passing.rs"), PASSING).unwrap();
    // The workspace's lock file pins the same dependency versions.
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
}

/// The matrix row of `test` in the human output.
/// The matrix row of `test`: searched below the matrix header only, since the
/// test runner's own output (echoed on stdout) names the tests too.
fn matrix_row<'a>(stdout: &'a str, test: &str) -> &'a str {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("gate "))
        .find(|l| l.contains(test))
        .unwrap_or_else(|| panic!("no row for {test} in:\n{stdout}"))
}

fn cargo_apr_test(dir: &Path, out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    Command::cargo_bin("cargo-apr")
        .unwrap()
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", shared_target())
        .args(["apr", "test", "--report-dir"])
        .arg(out)
        .args(extra)
        .timeout(std::time::Duration::from_secs(1200))
        .assert()
}

/// The path the human output names after `label: ` (up to the next `, `).
fn printed_path(stdout: &str, label: &str) -> PathBuf {
    let line =
        stdout.lines().find(|l| l.starts_with("reports: ")).unwrap_or_else(|| panic!("no reports line:\n{stdout}"));
    let start = line.find(&format!("{label}: ")).unwrap() + label.len() + 2;
    PathBuf::from(line[start..].split(", ").next().unwrap())
}

#[test]
fn cargo_apr_test_prints_the_matrix_and_fails_on_a_bad_candidate() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("downstream");
    let out = dir.path().join("ci-out");
    downstream_crate(&crate_dir);
    // The user's own files in the report folder: apr must leave them alone.
    std::fs::create_dir_all(out.join("reports")).unwrap();
    std::fs::write(out.join("package.json"), r#"{"name": "mine"}"#).unwrap();
    std::fs::write(out.join("reports/notes.json"), r#"{"mine": true}"#).unwrap();

    let passing = cargo_apr_test(&crate_dir, &out, &[]).success();
    let stdout = String::from_utf8_lossy(&passing.get_output().stdout).into_owned();
    let row = matrix_row(&stdout, "passing::apr_matches_gguf_cpu");
    for column in ["format_equivalence", "gguf -> apr", "cpu", "PASS", "max|dlogit| 0.00e0"] {
        assert!(row.contains(column), "{column} missing from: {row}");
    }
    let skipped = matrix_row(&stdout, "passing::apr_matches_gguf_cuda");
    match apr_engine::backend::BackendKind::Cuda.unavailable() {
        Some(why) => {
            assert!(skipped.contains("SKIP") && skipped.contains(&why), "{skipped}");
            assert!(
                stdout.contains("qualification score: 100.0% (1 passed / 1 run; skipped tests are excluded)"),
                "{stdout}"
            );
            assert!(stdout.contains("1 passed, 0 failed, 1 skipped"), "{stdout}");
        }
        None => assert!(skipped.contains("PASS") && stdout.contains("2 passed, 0 failed, 0 skipped"), "{stdout}"),
    }
    // Everything lands where asked, and the printed paths exist.
    assert_eq!(printed_path(&stdout, "reports"), out.join("reports"));
    assert_eq!(printed_path(&stdout, "junit"), out.join("junit.xml"));
    assert!(out.join("reports/passing.apr_matches_gguf_cpu.json").is_file());
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"tests="2" skipped="1" failures="0" errors="0""#), "{junit}");
    assert!(!dir.path().join("junit.xml").exists() && !dir.path().join("summary.json").exists());

    std::fs::write(crate_dir.join("tests/failing.rs"), FAILING).unwrap();
    std::fs::write(crate_dir.join("tests/plain.rs"), PLAIN).unwrap();
    let failing = cargo_apr_test(&crate_dir, &out, &["--format", "junit"]).code(1);
    let xml = String::from_utf8_lossy(&failing.get_output().stdout).into_owned();
    assert!(xml.starts_with("<?xml"), "stdout holds only the JUnit document: {xml}");
    // Every test that ran: 3 model tests (one failed, one skipped) and 2 ordinary ones (one failed).
    assert!(xml.contains(r#"tests="5" skipped="1" failures="2" errors="0""#), "{xml}");
    assert!(xml.contains(r#"name="corrupted_candidate_is_caught_cpu""#), "{xml}");
    assert!(xml.contains(r#"<failure message="failed: expect identical""#), "{xml}");
    assert!(xml.contains(r#"<testcase name="two_is_three" classname="plain">"#), "{xml}");
    assert!(xml.contains("an ordinary test failing"), "the failure's output is in the report: {xml}");
    assert!(xml.contains("verdict: Diverged"), "the model test's rendered report too: {xml}");
    assert_eq!(std::fs::read_to_string(out.join("junit.xml")).unwrap(), xml);
    // The test's own output (on stderr here) carries the rendered trace-diff table and verdict.
    let stderr = String::from_utf8_lossy(&failing.get_output().stderr).into_owned();
    assert!(stderr.contains("first divergence: position"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["schema"], "apr.test.v1");
    assert_eq!(summary["summary"]["qualification"], 0.5);
    assert_eq!(summary["all_tests"]["failures"], 2);
    assert_eq!(std::fs::read_to_string(out.join("package.json")).unwrap(), r#"{"name": "mine"}"#);
    assert_eq!(std::fs::read_to_string(out.join("reports/notes.json")).unwrap(), r#"{"mine": true}"#);
}

#[test]
fn cargo_apr_test_refuses_to_replace_a_junit_file_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    downstream_crate(&dir.path().join("downstream"));
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/junit.xml"), "<testsuites name=\"mine\"/>").unwrap();
    let run = cargo_apr_test(&dir.path().join("downstream"), &dir.path().join("out"), &["--no-fetch"]).code(1);
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    assert!(stderr.contains("junit.xml exists and was not written by `cargo apr test`"), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.path().join("out/junit.xml")).unwrap(), "<testsuites name=\"mine\"/>");
}

/// A `cargo` that records its arguments in `args.txt` beside it and
/// succeeds; `cargo metadata` goes to the real one.
fn recording_cargo(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let script = dir.join("cargo");
    let body = format!(
        "#!/bin/sh\nif [ \"$1\" = metadata ]; then exec '{real}' \"$@\"; fi\nprintf '%s\\n' \"$@\" > '{}'\n",
        dir.join("args.txt").display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn cargo_apr_test_builds_the_engine_optimized_in_the_users_test_profile() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("downstream");
    downstream_crate(&crate_dir);
    let cargo = recording_cargo(dir.path());
    Command::cargo_bin("cargo-apr")
        .unwrap()
        .current_dir(&crate_dir)
        .env("CARGO", &cargo)
        .args(["apr", "test", "--no-fetch", "--report-dir"])
        .arg(dir.path().join("out"))
        .args(["--", "--test", "passing"])
        .assert()
        .success();
    let args: Vec<String> =
        std::fs::read_to_string(dir.path().join("args.txt")).unwrap().lines().map(String::from).collect();
    assert_eq!(args[..2], ["test", "--no-fail-fast"], "{args:?}");
    let overrides: Vec<&str> = args.windows(2).filter(|w| w[0] == "--config").map(|w| w[1].as_str()).collect();
    for package in ["apr-engine", "half", "rayon", "sha2"] {
        let wanted = format!("profile.test.package.{package}.opt-level=3");
        assert!(overrides.contains(&wanted.as_str()), "{wanted} not passed to cargo: {args:?}");
    }
    // The user's own arguments still come last.
    assert_eq!(args[args.len() - 2..], ["--test", "passing"], "{args:?}");
}

/// `cargo nextest --version` through the cargo that runs these tests; a missing
/// nextest fails the test that needs it with the way to install it.
fn require_nextest() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let version = std::process::Command::new(cargo).args(["nextest", "--version"]).output().unwrap();
    assert!(
        version.status.success(),
        "cargo-nextest is needed by `cargo apr test --nextest` and is not installed: \
         install it with `cargo install cargo-nextest --locked` (or `cargo binstall cargo-nextest`)\n{}",
        String::from_utf8_lossy(&version.stderr)
    );
}

#[test]
fn cargo_apr_test_runs_the_suites_under_nextest() {
    require_nextest();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("downstream");
    let out = dir.path().join("apr");
    downstream_crate(&crate_dir);
    std::fs::write(crate_dir.join("tests/failing.rs"), FAILING).unwrap();

    let run = cargo_apr_test(&crate_dir, &out, &["--nextest"]).code(1);
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    // nextest ran the tests (its summary line), one process per test. Its
    // reporter writes to stderr up to 0.9.14x and to stdout in later versions.
    let nextest_said = format!("{stdout}{stderr}");
    assert!(
        nextest_said.contains("Summary [") && nextest_said.contains("3 tests run: 2 passed, 1 failed"),
        "{nextest_said}"
    );
    let passed = matrix_row(&stdout, "passing::apr_matches_gguf_cpu");
    for column in ["format_equivalence", "gguf -> apr", "PASS", "max|dlogit| 0.00e0"] {
        assert!(passed.contains(column), "{column} missing from: {passed}");
    }
    let failed = matrix_row(&stdout, "failing::corrupted_candidate_is_caught_cpu");
    assert!(failed.contains("trace_diff") && failed.contains("FAIL"), "{failed}");
    assert!(failed.contains("failed: expect identical"), "{failed}");
    assert!(matrix_row(&stdout, "passing::apr_matches_gguf_cuda").contains("SKIP"), "{stdout}");
    assert!(stdout.contains("qualification score: 50.0% (1 passed / 2 run; skipped tests are excluded)"), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed, 1 skipped"), "{stdout}");
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"tests="3" skipped="1" failures="1" errors="0""#), "{junit}");
    assert!(junit.contains(r#"name="corrupted_candidate_is_caught_cpu""#), "{junit}");
    // The failing test's own output carries the trace-diff verdict, as under cargo test.
    assert!(nextest_said.contains("verdict: Diverged"), "{nextest_said}");
}

#[test]
fn cargo_apr_fetch_names_an_undeclared_model() {
    let dir = tempfile::tempdir().unwrap();
    downstream_crate(dir.path());
    let out = Command::cargo_bin("cargo-apr")
        .unwrap()
        .current_dir(dir.path())
        .args(["apr", "fetch", "nope"])
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("no model `nope` is declared (declared: qwen)"), "{stderr}");
    // A declared model given by path is verified, not fetched.
    let out =
        Command::cargo_bin("cargo-apr").unwrap().current_dir(dir.path()).args(["apr", "fetch"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("qwen: ") && stdout.contains("(present, sha256 ok)"), "{stdout}");
}

/// The model tests of a summary.json without their durations, and its counts.
fn comparable(summary_path: &Path) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(summary_path).unwrap()).unwrap();
    for test in summary["tests"].as_array_mut().unwrap() {
        test.as_object_mut().unwrap().remove("duration_s");
    }
    (summary["tests"].clone(), summary["summary"].clone(), summary["all_tests"].clone())
}

/// Two shards (each test binary in one of them, chosen with cargo's `--test`)
/// merged with `--merge` give the matrix, score and JUnit counts of one
/// unsharded run.
#[test]
fn merged_shards_give_the_matrix_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = downstream_with_failures(dir.path());
    let shard = |name: &str| dir.path().join(name);

    let whole = cargo_apr_test(&crate_dir, &shard("whole"), &[]).code(1);
    let one = cargo_apr_test(&crate_dir, &shard("one"), &["--json", "--", "--test", "passing"]).success();
    let printed: serde_json::Value = serde_json::from_slice(&one.get_output().stdout).expect("--json prints JSON only");
    assert_eq!(printed["schema"], "apr.test.v1", "{printed}");
    cargo_apr_test(&crate_dir, &shard("two"), &["--", "--test", "failing", "--test", "plain"]).code(1);
    let merged = merge(&crate_dir, [&shard("one"), &shard("two")], &shard("merged"));
    assert_merged_run_is_the_whole_run(&shard("whole"), &shard("merged"));
    let score = |out: &assert_cmd::assert::Assert| {
        let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        stdout.lines().find(|l| l.starts_with("qualification score")).unwrap().to_string()
    };
    assert_eq!(score(&merged), score(&whole));
    assert!(shard("merged/reports/failing.corrupted_candidate_is_caught_cpu.json").is_file());
}

/// The same with nextest's own sharding: two `--partition hash:K/2` runs,
/// merged, give the matrix, score and JUnit counts of one unpartitioned
/// nextest run.
#[test]
fn nextest_partitions_merged_give_the_matrix_of_one_run() {
    require_nextest();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = downstream_with_failures(dir.path());
    let shard = |name: &str| dir.path().join(name);

    cargo_apr_test(&crate_dir, &shard("whole"), &["--nextest"]).code(1);
    for k in 1..=2 {
        let partition = format!("hash:{k}/2");
        let run = cargo_apr_test(&crate_dir, &shard(&format!("part{k}")), &["--nextest", "--partition", &partition]);
        let code = run.get_output().status.code();
        assert!(matches!(code, Some(0 | 1)), "{partition}: exit {code:?}");
    }
    merge(&crate_dir, [&shard("part1"), &shard("part2")], &shard("merged"));
    assert_merged_run_is_the_whole_run(&shard("whole"), &shard("merged"));
}

/// The downstream crate in `dir` with a failing model test and two ordinary
/// tests (one failing) beside the passing ones: five tests in all.
fn downstream_with_failures(dir: &Path) -> PathBuf {
    let crate_dir = dir.join("downstream");
    downstream_crate(&crate_dir);
    std::fs::write(crate_dir.join("tests/failing.rs"), FAILING).unwrap();
    std::fs::write(crate_dir.join("tests/plain.rs"), PLAIN).unwrap();
    crate_dir
}

/// `cargo apr test --merge` of two shards' report folders into `out` (exit 1: a test failed).
fn merge(crate_dir: &Path, shards: [&Path; 2], out: &Path) -> assert_cmd::assert::Assert {
    Command::cargo_bin("cargo-apr")
        .unwrap()
        .current_dir(crate_dir)
        .args(["apr", "test", "--merge"])
        .args(shards)
        .arg("--report-dir")
        .arg(out)
        .assert()
        .code(1)
}

/// The merged folder holds the whole run's matrix, summary and test counts:
/// five tests, ordinary ones included, two of them failed.
fn assert_merged_run_is_the_whole_run(whole: &Path, merged: &Path) {
    let (whole_tests, whole_summary, whole_all) = comparable(&whole.join("summary.json"));
    let (merged_tests, merged_summary, merged_all) = comparable(&merged.join("summary.json"));
    assert_eq!(merged_tests, whole_tests);
    assert_eq!(merged_summary, whole_summary);
    assert_eq!(merged_all, whole_all);
    assert_eq!(whole_all["tests"], 5, "{whole_all}");
    let junit = std::fs::read_to_string(merged.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"tests="5" skipped="1" failures="2" errors="0""#), "{junit}");
}

#[test]
fn outside_a_cargo_package_the_error_is_one_line_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::cargo_bin("cargo-apr").unwrap().current_dir(dir.path()).args(["apr", "test"]).assert().code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not inside a cargo package: could not find `Cargo.toml`"), "{stderr}");
}
