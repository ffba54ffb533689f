//! One module per subcommand; each has an `Args` struct and a `run`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo-apr", bin_name = "cargo apr", version, about = "Test, inspect, convert and diff LLM model files")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {}
}
