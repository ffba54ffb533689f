//! `cargo apr check MODEL`: staged smoke test, one line a stage.

use serde_json::json;

use super::color::status;
use super::common_args::{BackendArg, ModelArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// Print the stages as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let stages = apr_engine::check::check(args.model.path(), args.backend.backend);
    let passed = stages.iter().all(|s| s.passed);
    if args.json {
        let report =
            json!({ "schema": "apr.check.v1", "model": args.model.path(), "passed": passed, "stages": stages });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &stages {
            println!("{} {:<11} {}", status(if s.passed { "PASS" } else { "FAIL" }), s.name, s.detail);
        }
        // The verdict names the file: in a CI log of many models, a FAIL line alone says not which.
        let failed = stages.iter().find(|s| !s.passed).map(|s| s.name);
        println!(
            "{}: {}",
            args.model.path().display(),
            failed.map_or(status("PASS"), |stage| format!("{} at {stage}", status("FAIL")))
        );
    }
    Ok(if passed { crate::exit::PASS } else { crate::exit::FAILURE })
}
