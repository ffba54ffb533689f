//! One module per subcommand; each has an `Args` struct and a `run` that
//! returns the exit code.

mod bench;
mod chat;
mod check;
mod color;
mod common_args;
mod compare_inference;
mod convert;
mod diff_tensors;
mod fetch;
mod inspect;
mod kld;
mod profile;
mod prompt_args;
mod qualify;
mod review;
mod run;
mod serve;
mod stream;
mod synth;
mod test;
mod threads;
mod trace_args;
mod trace_diff;
mod validate;
mod values;
mod workspace;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo-apr",
    bin_name = "cargo apr",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("APR_GIT_COMMIT"), ")"),
    about = "Test, inspect, convert and diff LLM model files"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prefill and decode throughput, llama-bench style.
    Bench(bench::Args),
    /// Interactive multi-turn chat (stdin may be a pipe; /exit or Ctrl-D ends it).
    Chat(chat::Args),
    /// Staged smoke test of a model, stopping at the first failing stage.
    Check(check::Args),
    /// Generate with two models and compare their tokens and text (exit 5 on mismatch).
    CompareInference(compare_inference::Args),
    /// Convert between GGUF, APR and SafeTensors, optionally changing dtype.
    Convert(convert::Args),
    /// Show a model file's format, architecture, dtypes and tokenizer.
    Inspect(inspect::Args),
    /// Compare two model files tensor by tensor (exit 5 on any mismatch).
    DiffTensors(diff_tensors::Args),
    /// Fetch and verify the models declared in [package.metadata.apr.models].
    Fetch(fetch::Args),
    /// Distance to exact math over a text (KL, top-1 agreement), beside llama.cpp's.
    Kld(kld::Args),
    /// Per-token decode latency percentiles and throughput, with CI assertions.
    Profile(profile::Args),
    /// Show pending golden snapshots against the pinned ones; --accept or --reject them.
    Review(review::Args),
    /// Generate text from a prompt (chat template applied unless --raw).
    Run(run::Args),
    /// OpenAI-compatible HTTP server with continuous batching and per-request tracing.
    Serve(serve::Args),
    /// Write a model with another's exact header (or header-only prefix) and random weights.
    Synth(synth::Args),
    /// Qualify a model: class A/B cells, the tracing matrix and parity, as points out of 145 (exit 5 if not qualified).
    Qualify(qualify::Args),
    /// Run the #[model_test] suites and print the matrix, summary and qualification score.
    Test(test::Args),
    /// Drive two models in lockstep and name the first divergent layer (exit 5 when diverged).
    TraceDiff(trace_diff::Args),
    /// Check a model file's structure and values (exit 1 on any failure).
    Validate(validate::Args),
}

/// A command line that parses but asks for something meaningless (a flag
/// that would have no effect); `main` prints it and exits 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Check(args) => check::run(args),
        Command::CompareInference(args) => compare_inference::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::DiffTensors(args) => diff_tensors::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Kld(args) => kld::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Review(args) => review::run(args),
        Command::Qualify(args) => qualify::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Test(args) => test::run(args),
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::TraceDiff(args) => trace_diff::run(args),
        Command::Validate(args) => validate::run(args),
    }
}

/// `1.04 GiB`-style sizes for humans.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `(subcommand, argument)` of every argument without help text.
    fn arguments_without_help() -> Vec<(String, String)> {
        let cli = super::Cli::command();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let builtin = ["help", "version"].contains(&arg.get_id().as_str());
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push((sub.get_name().to_string(), arg.get_id().to_string()));
                }
            }
        }
        missing
    }

    #[test]
    fn every_argument_has_help_text() {
        assert_eq!(arguments_without_help(), Vec::<(String, String)>::new());
    }
}
