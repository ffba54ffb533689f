//! `cargo apr check MODEL`: staged smoke test, one line a stage.

use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let stages = apr_engine::check::check(&args.model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stages)?);
    } else {
        for s in &stages {
            println!("{} {:<11} {}", if s.passed { "PASS" } else { "FAIL" }, s.name, s.detail);
        }
    }
    Ok(if stages.iter().all(|s| s.passed) { crate::exit::PASS } else { crate::exit::FAILURE })
}
