//! `cargo apr`: model tests and model-file tools on the command line.
//!
//! Cargo runs `cargo-apr apr ARGS` for `cargo apr ARGS`; the binary also works
//! when called directly as `cargo-apr ARGS`.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes (DESIGN.md decision 5).
pub mod exit {
    pub const PASS: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const MISMATCH: u8 = 5;
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("apr") {
        args.remove(1);
    }
    let cli = match cmd::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::PASS };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
