//! `trace-diff` and `compare-inference` on the real 0.5B model: exit 0 and
//! "Identical" for a lossless conversion, exit 5 with the right diagnosis for
//! a corrupted copy, and `--json` as data.

use std::path::{Path, PathBuf};

use apr_engine::container::ModelFile;
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::testing::models::QWEN_0_5B;
use assert_cmd::Command;

fn apr() -> Command {
    Command::cargo_bin("cargo-apr").unwrap()
}

fn faulty_copy(dir: &Path, name: &str, faults: &[Fault]) -> PathBuf {
    let path = dir.join(name);
    write_faulty_copy(&ModelFile::open(QWEN_0_5B.require()).unwrap(), &path, faults, false).unwrap();
    path
}

#[test]
fn trace_diff_names_the_corrupted_layer_and_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let reference = QWEN_0_5B.require();
    let clean = faulty_copy(dir.path(), "clean.apr", &[]);
    let out = apr()
        .args(["apr", "trace-diff"])
        .args([&reference, &clean])
        .args(["--prompt", "What is 2+2?", "--max-tokens", "3", "--trace-tensors"])
        .assert()
        .code(0);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("result: Identical"), "{stdout}");

    let scaled = Fault::ScaleTensor { name: "blk.9.ffn_down.weight".into(), factor: 2.0 };
    let corrupted = faulty_copy(dir.path(), "bad.apr", &[scaled]);
    let out = apr()
        .args(["trace-diff"])
        .args([&reference, &corrupted])
        .args(["--prompt", "What is 2+2?", "--max-tokens", "3", "--trace-tensors", "--json"])
        .assert()
        .code(5);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["verdict"]["result"], "diverged", "{report}");
    assert_eq!(report["verdict"]["classification"]["LayerCorrupted"], 9, "{report}");
    assert_eq!(report["first_divergence"]["layer"], 9);
}

#[test]
fn compare_inference_diagnoses_a_model_that_produces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reference = QWEN_0_5B.require();
    let same = apr()
        .args(["compare-inference"])
        .args([&reference, &reference])
        .args(["--prompt", "What is 2+2?", "--max-tokens", "8"])
        .assert()
        .code(0);
    assert!(String::from_utf8_lossy(&same.get_output().stdout).contains("tokens match"));

    let broken = faulty_copy(dir.path(), "dead.apr", &[Fault::ZeroTensor("output_norm.weight".into())]);
    let out = apr()
        .args(["compare-inference"])
        .args([&reference, &broken])
        .args(["--prompt", "What is 2+2?", "--max-tokens", "8", "--json"])
        .assert()
        .code(5);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["tokens_match"], false);
    let diagnosis = report["diagnosis"].as_str().unwrap();
    assert!(diagnosis.contains("model B"), "{diagnosis}");
}

#[test]
fn trace_diff_on_a_missing_candidate_is_an_error_naming_it_not_a_finding() {
    let out = apr()
        .args(["apr", "trace-diff"])
        .arg(QWEN_0_5B.require())
        .args(["/no/such/candidate.apr", "--prompt", "hi"])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/no/such/candidate.apr"), "{stderr}");
}
