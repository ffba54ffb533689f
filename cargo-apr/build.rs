//! Records the commit the binary is built from, for `cargo apr --version`:
//! `git rev-parse`, or "unknown" outside a git checkout (a crates.io
//! download) or without git.

use std::process::Command;

fn main() {
    println!(
        "cargo:rustc-env=APR_GIT_COMMIT={}",
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or("unknown".into())
    );
    // Rebuild when HEAD moves: a checkout rewrites HEAD, a commit appends to its log.
    println!("cargo:rerun-if-changed=build.rs");
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
