//! Helpers shared by the CLI's test files (each test file is its own crate and
//! uses only some of them).
#![allow(dead_code)]

use apr_engine::testing::models::QWEN_0_5B;
use assert_cmd::Command;

/// `cargo-apr apr ARGS...`, as cargo runs the plugin.
pub fn apr(args: &[&str]) -> Command {
    let mut command = Command::cargo_bin("cargo-apr").unwrap();
    command.arg("apr").args(args);
    command
}

/// The real 0.5B's path, or a panic saying how to fetch it.
pub fn model() -> String {
    QWEN_0_5B.require().display().to_string()
}

/// Runs `command`, checks its exit code, returns stdout and stderr.
pub fn outputs(command: &mut Command, code: i32) -> (String, String) {
    let output = command.assert().code(code).get_output().clone();
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}
