//! `cargo apr check MODEL`: staged smoke test, one line a stage.

use serde_json::json;

use super::common_args::ModelArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Print the stages as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let stages = apr_engine::check::check(args.model.path());
    if args.json {
        let passed = stages.iter().all(|s| s.passed);
        let report =
            json!({ "schema": "apr.check.v1", "model": args.model.path(), "passed": passed, "stages": stages });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for s in &stages {
            println!("{} {:<11} {}", if s.passed { "PASS" } else { "FAIL" }, s.name, s.detail);
        }
    }
    Ok(if stages.iter().all(|s| s.passed) { crate::exit::PASS } else { crate::exit::FAILURE })
}
