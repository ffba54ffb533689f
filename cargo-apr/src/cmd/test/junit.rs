//! The JUnit report of a run: every test the harness ran (libtest's results
//! read from cargo's output, or nextest's own JUnit file), with the model
//! tests' details (gate, formats, backend, key figure, duration, SKIP)
//! attached to their test cases. Written with `quick-junit`, nextest's crate.

use std::collections::HashSet;
use std::time::Duration;

use apr_engine::testing::report::{ReportSummary, Status};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::libtest::{Outcome, SuiteRun};

/// The name of every report `cargo apr test` writes; how it recognises its own file.
pub const REPORT_NAME: &str = "cargo apr test";

/// The report of a `cargo test` run.
pub fn from_libtest(suites: &[SuiteRun], models: &[ReportSummary], cargo_ok: bool) -> Report {
    let mut report = Report::new(REPORT_NAME);
    for suite in suites {
        let mut cases: Vec<TestCase> = suite.cases.iter().map(|c| libtest_case(c, &suite.crate_name)).collect();
        if !suite.finished {
            cases.push(error_case(
                "(test binary)",
                "the test binary stopped before reporting all its results (a crash or abort): see cargo's output",
            ));
        }
        let mut junit_suite = TestSuite::new(suite.name.as_str());
        junit_suite.add_test_cases(cases);
        report.add_test_suite(junit_suite);
    }
    finish(report, models, cargo_ok)
}

/// nextest's report, given the run's name and the model tests' details.
pub fn from_nextest(nextest: Report, models: &[ReportSummary], cargo_ok: bool) -> Report {
    let mut report = Report::new(REPORT_NAME);
    report.add_test_suites(nextest.test_suites.into_iter().map(rebuilt));
    finish(report, models, cargo_ok)
}

/// Several runs' reports (shards) as one.
pub fn merge(reports: Vec<Report>) -> Report {
    let mut merged = Report::new(REPORT_NAME);
    merged.add_test_suites(reports.into_iter().flat_map(|r| r.test_suites).map(rebuilt));
    merged
}

/// Attaches the model tests' details, adds the model tests no harness line
/// named, and makes sure a failed run is never reported green.
fn finish(report: Report, models: &[ReportSummary], cargo_ok: bool) -> Report {
    let mut seen = HashSet::new();
    let mut out = Report::new(REPORT_NAME);
    for suite in report.test_suites {
        let mut fresh = shell_of(&suite);
        fresh.add_test_cases(suite.test_cases.into_iter().map(|mut case| {
            let key = model_key(&case);
            if let Some(model) = models.iter().find(|m| m.test == key) {
                seen.insert(model.test.clone());
                attach(&mut case, model);
            }
            case
        }));
        out.add_test_suite(fresh);
    }
    let unseen: Vec<TestCase> = models.iter().filter(|m| !seen.contains(&m.test)).map(model_only_case).collect();
    if !unseen.is_empty() {
        let mut suite = TestSuite::new("model tests (reports without a harness result)");
        suite.add_test_cases(unseen);
        out.add_test_suite(suite);
    }
    if !cargo_ok && out.failures + out.errors == 0 {
        let mut suite = TestSuite::new("cargo");
        suite.add_test_case(error_case(
            "cargo",
            "cargo exited with a failure outside any test (a build error?): see its output",
        ));
        out.add_test_suite(suite);
    }
    out
}

fn libtest_case(case: &super::libtest::CaseRun, crate_name: &str) -> TestCase {
    let status = match case.outcome {
        Outcome::Passed => TestCaseStatus::success(),
        Outcome::Ignored => TestCaseStatus::skipped(),
        Outcome::Failed => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message("test failed");
            status
        }
    };
    let mut junit_case = TestCase::new(case.name.as_str(), status);
    junit_case.set_classname(crate_name);
    if let Some(output) = &case.output {
        junit_case.set_system_out(output.as_str());
    }
    junit_case
}

fn error_case(name: &str, message: &str) -> TestCase {
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
    status.set_message(message);
    TestCase::new(name, status)
}

/// A suite with `suite`'s name, time and output and no cases, so that adding
/// the cases again counts them afresh.
fn shell_of(suite: &TestSuite) -> TestSuite {
    let mut shell = TestSuite::new(suite.name.clone());
    shell.time = suite.time;
    shell.timestamp = suite.timestamp;
    shell.properties = suite.properties.clone();
    shell.system_out = suite.system_out.clone();
    shell.system_err = suite.system_err.clone();
    shell
}

fn rebuilt(suite: TestSuite) -> TestSuite {
    let mut fresh = shell_of(&suite);
    fresh.add_test_cases(suite.test_cases);
    fresh
}

/// `crate::path::to::test`, as a model test's report names itself (`module_path!()`
/// of a test crate is its crate name). libtest cases carry the crate as their class;
/// nextest's carry the binary id (`crate`, `crate::name` or `crate::kind/name`).
fn model_key(case: &TestCase) -> String {
    let class = case.classname.as_ref().map(|c| c.as_str()).unwrap_or_default();
    let binary = class.rsplit("::").next().unwrap_or(class);
    let binary = binary.rsplit('/').next().unwrap_or(binary);
    format!("{}::{}", binary.replace('-', "_"), case.name.as_str())
}

fn attach(case: &mut TestCase, model: &ReportSummary) {
    case.add_properties(model_properties(model));
    case.set_time(Duration::from_secs_f64(model.duration_s.max(0.0)));
    let reason = model.reason.clone().unwrap_or_default();
    match (&mut case.status, model.status) {
        // libtest has no skipped state: a skipped model test shows as `ok` there.
        (TestCaseStatus::Success { .. }, Status::Skip) => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(reason);
            case.status = status;
        }
        (TestCaseStatus::Success { .. }, Status::Fail) => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(reason);
            case.status = status;
        }
        (TestCaseStatus::NonSuccess { message, .. }, Status::Fail) => *message = Some(reason.into()),
        _ => {}
    }
}

fn model_properties(model: &ReportSummary) -> Vec<Property> {
    vec![
        Property::new("kind", model.kind.as_str()),
        Property::new("formats", model.formats.as_str()),
        Property::new("backend", model.backend.as_str()),
        Property::new("key_figure", model.key_figure.as_str()),
    ]
}

fn model_only_case(model: &ReportSummary) -> TestCase {
    let status = match model.status {
        Status::Pass => TestCaseStatus::success(),
        Status::Skip => TestCaseStatus::skipped(),
        Status::Fail => TestCaseStatus::non_success(NonSuccessKind::Failure),
    };
    let (class, name) = model.test.rsplit_once("::").unwrap_or(("", &model.test));
    let mut case = TestCase::new(name, status);
    case.set_classname(class);
    attach(&mut case, model);
    case
}

#[cfg(test)]
mod tests {
    use super::super::libtest::CaseRun;
    use super::*;

    /// A model test's summary, as the parent module's tests build it.
    fn model(test: &str, status: Status) -> ReportSummary {
        super::super::tests::report(test, status)
    }

    fn case(name: &str, outcome: Outcome, output: Option<&str>) -> CaseRun {
        CaseRun { name: name.into(), outcome, output: output.map(String::from) }
    }

    fn suite(cases: Vec<CaseRun>, finished: bool) -> SuiteRun {
        SuiteRun { name: "tests/m.rs".into(), crate_name: "m".into(), cases, finished }
    }

    #[test]
    fn every_test_counts_and_model_skips_are_skips() {
        let suites = [suite(
            vec![
                case("plain_fails", Outcome::Failed, Some("panicked: 2 != 3")),
                case("plain_passes", Outcome::Passed, None),
                case("x_cuda", Outcome::Passed, None),
                case("x_cpu", Outcome::Failed, Some("model test m::x_cpu FAIL")),
            ],
            true,
        )];
        let models = [model("m::x_cpu", Status::Fail), model("m::x_cuda", Status::Skip)];
        let report = from_libtest(&suites, &models, false);
        assert_eq!((report.tests, report.failures, report.skipped, report.errors), (4, 2, 1, 0));
        let xml = report.to_string().unwrap();
        assert!(xml.contains("panicked: 2 != 3"), "{xml}");
        assert!(xml.contains(r#"<failure message="why &lt;&amp;&gt;""#), "{xml}");
        assert!(xml.contains(r#"<property name="key_figure" value="Identical"/>"#), "{xml}");
        // What it wrote reads back with the same counts.
        let back = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!((back.tests, back.failures, back.skipped), (4, 2, 1));
    }

    #[test]
    fn a_failed_run_is_never_green() {
        let report = from_libtest(&[], &[], false);
        assert_eq!((report.tests, report.errors), (1, 1));
        let crashed = from_libtest(&[suite(vec![case("a", Outcome::Passed, None)], false)], &[], false);
        assert_eq!((crashed.tests, crashed.errors), (2, 1));
        assert_eq!(from_libtest(&[], &[], true).tests, 0);
    }

    #[test]
    fn nextest_binary_ids_match_model_reports_and_shards_merge() {
        let mut nextest = Report::new("nextest-run");
        let mut binary = TestSuite::new("downstream::passing");
        let mut cuda = TestCase::new("x_cuda", TestCaseStatus::success());
        cuda.set_classname("downstream::passing");
        binary.add_test_case(cuda);
        nextest.add_test_suite(binary);
        let report = from_nextest(nextest, &[model("passing::x_cuda", Status::Skip)], true);
        assert_eq!((report.tests, report.skipped), (1, 1));
        let merged = merge(vec![report.clone(), report]);
        assert_eq!((merged.tests, merged.skipped, merged.test_suites.len()), (2, 2, 2));
    }
}
