//! `cargo apr validate MODEL [--json]`: exit 1 if any check fails.

use std::path::PathBuf;

use apr_engine::validate::{validate, Status};
use apr_engine::ModelFile;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let model = match ModelFile::open(&args.model) {
        Ok(m) => m,
        Err(e) => {
            println!("FAIL structure: {e}");
            return Ok(crate::exit::FAILURE);
        }
    };
    let report = validate(&model)?;
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
            println!("{status} {}:{tensor} {}", f.check, f.detail);
        }
    }
    Ok(if report.failed() { crate::exit::FAILURE } else { crate::exit::PASS })
}
