//! `cargo apr review` on a package with two pending golden snapshots: a
//! filter picks one, `--check` and `CI` fail while any is pending, and the
//! diff is plain text when stdout is not a terminal.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// A package whose `tests/golden/` holds `NAME.json` and a `NAME.new.json` with one logit moved by 0.25.
fn package_with_pending(dir: &Path, names: &[&str]) -> Vec<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join("tests/golden")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"goldens\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tests/golden/clean_conversion.json");
    let pinned_text = std::fs::read_to_string(examples).unwrap();
    names
        .iter()
        .map(|name| {
            let mut pending: serde_json::Value = serde_json::from_str(&pinned_text).unwrap();
            pending["test"] = serde_json::json!(format!("suite::{name}"));
            let logit = &mut pending["prompts"][0]["top_logits"][1][0][1];
            *logit = serde_json::json!(logit.as_f64().unwrap() + 0.25);
            let pinned = dir.join(format!("tests/golden/{name}.json"));
            let new = dir.join(format!("tests/golden/{name}.new.json"));
            std::fs::write(&pinned, &pinned_text).unwrap();
            std::fs::write(&new, serde_json::to_string_pretty(&pending).unwrap()).unwrap();
            (pinned, new)
        })
        .collect()
}

fn review(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::cargo_bin("cargo-apr").unwrap();
    command.current_dir(dir).env_remove("CI").arg("apr").arg("review").args(args);
    command
}

fn stdout_of(command: &mut Command, code: i32) -> String {
    String::from_utf8_lossy(&command.assert().code(code).get_output().stdout).into_owned()
}

#[test]
fn a_filter_accepts_one_snapshot_and_leaves_the_other_pending() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = package_with_pending(dir.path(), &["alpha", "beta"]);
    let pending_alpha = std::fs::read(&snapshots[0].1).unwrap();
    let out = stdout_of(&mut review(dir.path(), &["--accept", "alpha"]), 0);
    assert!(out.contains("accepted") && !out.contains("beta"), "{out}");
    assert_eq!(std::fs::read(&snapshots[0].0).unwrap(), pending_alpha, "alpha is pinned");
    assert!(!snapshots[0].1.exists());
    assert!(snapshots[1].1.exists(), "beta stays pending");
    // A filter on the test name works too.
    stdout_of(&mut review(dir.path(), &["--reject", "suite::beta"]), 0);
    assert!(!snapshots[1].1.exists());
}

#[test]
fn check_and_ci_fail_while_snapshots_are_pending() {
    let dir = tempfile::tempdir().unwrap();
    let snapshots = package_with_pending(dir.path(), &["alpha"]);
    let out = stdout_of(&mut review(dir.path(), &[]), 0);
    assert!(out.contains("1 pending"), "{out}");
    stdout_of(&mut review(dir.path(), &["--check"]), 1);
    stdout_of(review(dir.path(), &[]).env("CI", "true"), 1);
    assert!(snapshots[0].1.exists(), "checking changes nothing");
    stdout_of(&mut review(dir.path(), &["--reject"]), 0);
    stdout_of(&mut review(dir.path(), &["--check"]), 0);
}

#[test]
fn the_diff_is_plain_when_piped() {
    let dir = tempfile::tempdir().unwrap();
    package_with_pending(dir.path(), &["alpha"]);
    let out = stdout_of(&mut review(dir.path(), &[]), 0);
    assert!(!out.contains('\x1b'), "no colour codes in a pipe: {out}");
    let removed = out.lines().find(|l| l.starts_with("  -   position 1: ")).unwrap_or_else(|| panic!("{out}"));
    let added = out.lines().find(|l| l.starts_with("  +   position 1: ")).unwrap_or_else(|| panic!("{out}"));
    assert_ne!(removed[5..], added[5..]);
}
