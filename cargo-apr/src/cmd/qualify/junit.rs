//! The JUnit version of the report (quick-junit, as `cargo apr test`): one
//! test case per cell, SKIP as skipped, and the parity check as its own case.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::report::{Cell, Outcome, QualifyReport};

pub const REPORT_NAME: &str = "cargo apr qualify";

pub fn of(report: &QualifyReport) -> Report {
    let mut suite = TestSuite::new(format!("qualify {}", report.model));
    suite.add_test_cases(report.cells.iter().map(case_of));
    if let Some(parity) = &report.parity {
        let status = if parity.holds {
            TestCaseStatus::success()
        } else {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(format!(
                "{}/{} prompts equal, speed ratio {:?}",
                parity.prompts_equal, parity.prompts, parity.speed_ratio
            ));
            status
        };
        suite.add_test_case(TestCase::new(format!("parity {}", parity.url), status));
    }
    suite.add_property(Property::new("points", format!("{}/{}", report.points, report.max_points)));
    suite.add_property(Property::new("verdict", report.verdict.as_str()));
    let mut junit = Report::new(REPORT_NAME);
    junit.add_test_suite(suite);
    junit
}

fn case_of(cell: &Cell) -> TestCase {
    let status = match cell.result {
        Outcome::Pass => TestCaseStatus::success(),
        Outcome::Fail => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(cell.reason.as_str());
            status
        }
        Outcome::Skip => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(cell.reason.as_str());
            status
        }
    };
    let mut case = TestCase::new(format!("{} {}", cell.id, cell.name), status);
    case.set_classname(format!("{} {}", cell.backend, cell.format));
    case.set_time(Duration::from_secs_f64(cell.duration_s));
    case.add_property(Property::new("points", format!("{}/{}", cell.points, cell.max_points)));
    case.add_property(Property::new("key_figure", cell.key_figure.as_str()));
    case
}
