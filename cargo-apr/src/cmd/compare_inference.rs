//! `cargo apr compare-inference A B --prompt P`: both generate freely; tokens
//! and text are compared and a mismatch is diagnosed (exit 5).

use std::path::PathBuf;

use apr_engine::tracediff::compare_inference::compare_inference;
use apr_engine::tracediff::Side;

use super::common_args::BackendArg;
use super::prompt_args::PromptArgs;
use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Model A, the reference.
    a: PathBuf,
    /// Model B, the candidate.
    b: PathBuf,
    #[command(flatten)]
    backend: BackendArg,
    #[command(flatten)]
    prompt: PromptArgs,
    /// Tokens each model generates at most.
    #[arg(long, short = 'n', default_value_t = 32)]
    max_tokens: usize,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let options = args.prompt.options(args.max_tokens)?;
    let a = Side::open_on(&args.a, args.backend.backend)?;
    let b = match Side::open_on(&args.b, args.backend.backend) {
        Ok(b) => b,
        Err(e) => {
            let diagnosis = format!("model B cannot be loaded: {e}: weight load failure");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "schema": "apr.compare-inference.v1", "tokens_match": false, "diagnosis": diagnosis })
                );
            } else {
                println!("diagnosis: {diagnosis}");
            }
            return Ok(exit::MISMATCH);
        }
    };
    let c = compare_inference(&a, &b, &options)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!("A: {} ({} tokens)\n   {:?}", c.reference.path.display(), c.reference.tokens.len(), c.reference.text);
        println!("B: {} ({} tokens)\n   {:?}", c.candidate.path.display(), c.candidate.tokens.len(), c.candidate.text);
        println!(
            "tokens {}, text {}",
            if c.tokens_match { "match" } else { "differ" },
            if c.text_match { "matches" } else { "differs" }
        );
        if let Some(at) = c.first_mismatch {
            println!("first differing token: index {at}");
        }
        println!("diagnosis: {}", c.diagnosis);
    }
    Ok(if c.tokens_match { exit::PASS } else { exit::MISMATCH })
}
