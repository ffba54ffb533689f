//! `cargo apr validate MODEL [--json]`: exit 1 if any check fails.

use std::path::Path;

use apr_engine::validate::{validate, Finding, Status, ValidationReport};
use apr_engine::ModelFile;

use super::color;
use super::common_args::ModelArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let path = args.model.path();
    let report = match ModelFile::open(path) {
        Ok(model) => validate(&model)?,
        Err(e) => unreadable(path, &e),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            let status = match f.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let tensor = f.tensor.as_deref().map(|t| format!(" {t}:")).unwrap_or_default();
            println!("{} {}:{tensor} {}", color::status(status), f.check, f.detail);
        }
        let count = |s: Status| report.findings.iter().filter(|f| f.status == s).count();
        let verdict = if report.failed() { "FAIL" } else { "PASS" };
        println!(
            "{}: {} ({} failed, {} warnings)",
            path.display(),
            color::status(verdict),
            count(Status::Fail),
            count(Status::Warn)
        );
    }
    Ok(if report.failed() { crate::exit::FAILURE } else { crate::exit::PASS })
}

/// The report of a file the reader refuses: one failed structure check.
fn unreadable(path: &Path, error: &apr_engine::Error) -> ValidationReport {
    let finding = Finding { check: "structure", status: Status::Fail, tensor: None, detail: error.to_string() };
    ValidationReport { schema: "apr.validate.v1", path: path.display().to_string(), findings: vec![finding] }
}
