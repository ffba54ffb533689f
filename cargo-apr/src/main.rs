//! `cargo apr`: model tests and model-file tools on the command line.
//!
//! Cargo runs `cargo-apr apr ARGS` for `cargo apr ARGS`; the binary also works
//! when called directly as `cargo-apr ARGS`.

mod cmd;
mod error_chain;

use std::ffi::OsString;
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
    end_quietly_on_a_closed_pipe();
    // OS strings, not `env::args()`: a path or prompt that is not UTF-8 must
    // reach clap (which names the argument) instead of panicking here.
    let mut args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "apr") {
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
        Err(e) if e.is::<cmd::UsageError>() => {
            eprintln!("error: {e}");
            ExitCode::from(exit::USAGE)
        }
        Err(e) => {
            eprintln!("error: {}", error_chain::render(&e));
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`cargo apr bench | head -3`)
/// panics; with the default action the process ends as any Unix filter does.
fn end_quietly_on_a_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
