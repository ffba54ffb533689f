//! `cargo apr --version` names the commit the binary was built from.

use assert_cmd::Command;

#[test]
fn version_names_the_commit_it_was_built_from() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap().trim().to_string();
    assert_eq!(head.len(), 12, "this test runs in a git checkout");
    let out = Command::cargo_bin("cargo-apr").unwrap().args(["apr", "--version"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert_eq!(stdout.trim(), format!("cargo-apr {} (commit {head})", env!("CARGO_PKG_VERSION")));
}
