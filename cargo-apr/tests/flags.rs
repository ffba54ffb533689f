//! What the command line accepts and refuses: arguments that are not UTF-8,
//! prompts from a file or stdin, flag values outside their range, flags that
//! would be ignored, and errors that say each cause once. Models run here are
//! SmolLM2 (the fastest); most cases are refused before any model loads.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use apr_engine::testing::models::SMOLLM2;
use assert_cmd::Command;

mod common;
use common::outputs;

fn apr() -> Command {
    let mut command = Command::cargo_bin("cargo-apr").unwrap();
    command.arg("apr");
    command
}

fn smollm2() -> String {
    SMOLLM2.require().display().to_string()
}

/// Greedy tokens of `run --json` with extra arguments.
fn run_json(extra: &[&str], stdin: Option<&str>) -> serde_json::Value {
    let mut command = apr();
    command.args(["run", &smollm2(), "--raw", "-n", "4", "--json"]).args(extra);
    if let Some(input) = stdin {
        command.write_stdin(input);
    }
    let (out, err) = outputs(&mut command, 0);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

#[test]
fn a_prompt_that_is_not_utf8_is_a_usage_error_naming_the_flag_and_byte() {
    let (_, err) = outputs(apr().args(["run", &smollm2(), "-p"]).arg(OsStr::from_bytes(b"\xff\xfe hi")), 2);
    assert!(err.contains("--prompt") && err.contains("0xff at offset 0"), "{err}");
    let (_, err) = outputs(apr().args(["run", &smollm2(), "-p", "hi", "--system"]).arg(OsStr::from_bytes(b"a\xe9")), 2);
    assert!(err.contains("--system") && err.contains("0xe9 at offset 1"), "{err}");
}

#[test]
fn a_path_that_is_not_utf8_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join(OsStr::from_bytes(b"m\xe9.gguf"));
    std::os::unix::fs::symlink(SMOLLM2.require(), &link).unwrap();
    let (out, _) = outputs(apr().arg("inspect").arg(&link), 0);
    assert!(out.contains("llama"), "{out}");
    let missing = dir.path().join(OsStr::from_bytes(b"gone\xe9.gguf"));
    let (_, err) = outputs(apr().arg("inspect").arg(&missing), 1);
    assert!(err.contains("gone") && err.contains("No such file"), "{err}");
}

#[test]
fn the_prompt_comes_from_a_file_or_stdin_as_from_the_flag() {
    let prompt = "The capital of France is";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prompt.txt");
    std::fs::write(&file, prompt).unwrap();
    let from_flag = run_json(&["-p", prompt], None);
    let from_file = run_json(&["--prompt-file", file.to_str().unwrap()], None);
    let from_stdin = run_json(&["-p", "-"], Some(prompt));
    assert_eq!(from_flag["prompt_tokens"], from_file["prompt_tokens"]);
    assert_eq!(from_flag["prompt_tokens"], from_stdin["prompt_tokens"]);
    assert_eq!(from_flag["tokens"], from_stdin["tokens"]);
}

#[test]
fn a_bad_prompt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("latin1.txt");
    std::fs::write(&file, b"caf\xe9").unwrap();
    let (_, err) = outputs(apr().args(["run", &smollm2(), "--prompt-file", file.to_str().unwrap()]), 1);
    assert!(err.contains("latin1.txt") && err.contains("not valid UTF-8") && err.contains("offset 3"), "{err}");
    let (_, err) = outputs(apr().args(["run", &smollm2(), "--prompt-file", "/no/such/prompt.txt"]), 1);
    assert!(err.contains("/no/such/prompt.txt"), "{err}");
    // One source only, and one is needed.
    let (_, err) = outputs(apr().args(["run", &smollm2(), "-p", "hi", "--prompt-file", file.to_str().unwrap()]), 2);
    assert!(err.contains("--prompt-file"), "{err}");
    outputs(apr().args(["run", &smollm2()]), 2);
}

#[test]
fn sampling_values_outside_their_range_are_usage_errors() {
    let m = smollm2();
    for (flag, value, range) in [
        ("--temperature", "NaN", ">= 0"),
        ("--temperature", "inf", ">= 0"),
        ("--temperature", "-1", ">= 0"),
        ("--top-p", "2", "(0, 1]"),
        ("--top-p", "NaN", "(0, 1]"),
        ("--top-p", "-1", "(0, 1]"),
    ] {
        // --top-p is only meaningful when sampling, so it is tried with a temperature.
        let sampling: &[&str] = if flag == "--top-p" { &["--temperature", "0.5"] } else { &[] };
        let (_, err) = outputs(apr().args(["run", &m, "-p", "hi", flag, value]).args(sampling), 2);
        assert!(err.contains(flag) && err.contains(range), "{flag} {value}: {err}");
    }
}

#[test]
fn counts_of_zero_are_usage_errors() {
    let m = smollm2();
    for args in [
        &["bench", &m, "--reps", "0"][..],
        &["profile", &m, "--measure", "0"],
        &["run", &m, "-p", "hi", "--threads", "0"],
        &["chat", &m, "--context", "0"],
    ] {
        let (_, err) = outputs(apr().args(args), 2);
        assert!(err.contains("at least 1"), "{args:?}: {err}");
    }
}

#[test]
fn too_many_threads_are_capped_with_a_note() {
    let (_, err) = outputs(apr().args(["run", &smollm2(), "--raw", "-p", "Hi", "-n", "2", "--threads", "4000"]), 0);
    assert!(err.contains("--threads 4000 capped at"), "{err}");
}

#[test]
fn flags_that_would_be_ignored_are_usage_errors() {
    let m = smollm2();
    for (args, says) in [
        (&["profile", &m, "--assert-p50", "5"][..], "--ci"),
        (&["profile", &m, "--ci"], "--assert"),
        (&["run", &m, "-p", "hi", "--logits-top-k", "3"], "--json"),
        (&["run", &m, "-p", "hi", "--top-k", "3"], "--temperature"),
        (&["run", &m, "-p", "hi", "--seed", "7"], "--temperature"),
        (&["chat", &m, "--top-p", "0.9"], "--temperature"),
        (&["run", &m, "-p", "hi", "--raw", "--system", "s"], "--system"),
        (&["run", &m, "-p", "hi", "--trace-level", "none", "--trace-output", "t.json"], "none"),
    ] {
        let (_, err) = outputs(apr().args(args), 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn trace_level_none_traces_nothing() {
    let (_, err) = outputs(apr().args(["run", &smollm2(), "--raw", "-p", "Hi", "-n", "2", "--trace-level", "none"]), 0);
    assert!(!err.contains("[trace]") && !err.contains("kernel"), "{err}");
}

#[test]
fn a_parse_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(SMOLLM2.require()).unwrap();
    std::fs::write(&cut, &bytes[..3_000_000]).unwrap();
    let cut = cut.to_str().unwrap();
    for args in [&["inspect", cut][..], &["run", cut, "-p", "hi"], &["diff-tensors", cut, cut]] {
        let (_, err) = outputs(apr().args(args), 1);
        assert!(err.contains("cut.gguf") && err.contains("offset"), "{err}");
        assert_eq!(err.matches("runs past the end").count(), 1, "cause said more than once: {err}");
    }
    let (_, err) = outputs(apr().args(["inspect", "/no/such/model.gguf"]), 1);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn every_json_report_names_its_schema() {
    let m = smollm2();
    let reports: [(&str, &[&str]); 9] = [
        ("run", &["run", &m, "-p", "Hi", "-n", "2", "--json"]),
        ("check", &["check", &m, "--json"]),
        ("inspect", &["inspect", &m, "--json"]),
        ("validate", &["validate", &m, "--json"]),
        ("validate", &["validate", "/no/such/model.gguf", "--json"]),
        ("diff-tensors", &["diff-tensors", &m, &m, "--json"]),
        ("compare-inference", &["compare-inference", &m, &m, "-p", "Hi", "-n", "2", "--json"]),
        ("bench", &["bench", &m, "--prompt-tokens", "8", "--gen-tokens", "2", "--reps", "1", "--json"]),
        ("profile", &["profile", &m, "--warmup", "1", "--measure", "2", "--json"]),
    ];
    for (command, args) in reports {
        let output = apr().args(args).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&output.stdout)));
        assert_eq!(report["schema"], format!("apr.{command}.v1"), "{args:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.apr");
    let (json, _) = outputs(apr().args(["convert", &m, out.to_str().unwrap(), "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["schema"], "apr.convert.v1", "{report}");
    assert_eq!(report["tensors"], 272, "{report}");
    let trace_diff = apr().args(["trace-diff", &m, &m, "-p", "Hi", "-n", "2", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&trace_diff.stdout).unwrap();
    assert!(report["schema"].as_str().is_some_and(|s| s.starts_with("apr.trace-diff")), "{report:.200}");
}

#[test]
fn the_model_can_be_given_as_dash_m_and_counts_as_n_and_t() {
    let m = smollm2();
    let positional = run_json(&["-p", "Hi"], None);
    let (out, _) = outputs(apr().args(["run", "-m", &m, "--raw", "-p", "Hi", "-n", "4", "-t", "2", "--json"]), 0);
    let flagged: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(positional["tokens"], flagged["tokens"]);
    assert_eq!(flagged["tokens"].as_array().unwrap().len(), 4);
    let (_, err) = outputs(apr().args(["inspect", &m, "-m", &m]), 2);
    assert!(err.contains("--model"), "{err}");
}

#[test]
fn a_folder_is_said_to_be_read_as_a_hugging_face_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    for args in [&["inspect", folder][..], &["run", folder, "-p", "hi"], &["diff-tensors", folder, folder]] {
        let (_, err) = outputs(apr().args(args), 1);
        assert!(err.contains("read as a Hugging Face model folder") && err.contains("model.safetensors"), "{err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    }
}

/// `cargo-apr apr ARGS` under a pseudo-terminal (util-linux `script`), with `NO_COLOR` as given.
fn on_a_terminal(args: &str, no_color: Option<&str>) -> String {
    let binary = assert_cmd::cargo::cargo_bin("cargo-apr");
    let mut script = std::process::Command::new("script");
    script.args(["-qec", &format!("{} apr {args}", binary.display()), "/dev/null"]).env_remove("NO_COLOR");
    if let Some(value) = no_color {
        script.env("NO_COLOR", value);
    }
    String::from_utf8_lossy(&script.output().expect("util-linux script runs").stdout).into_owned()
}

#[test]
fn verdicts_are_coloured_on_a_terminal_only() {
    let args = format!("check {}", smollm2());
    let coloured = on_a_terminal(&args, None);
    assert!(coloured.contains("\x1b[1;32mPASS\x1b[0m open"), "{coloured:?}");
    let plain = on_a_terminal(&args, Some("1"));
    assert!(plain.contains("PASS open") && !plain.contains('\x1b'), "{plain:?}");
    let (piped, _) = outputs(apr().args(["check", &smollm2()]), 0);
    assert!(piped.contains("PASS open") && !piped.contains('\x1b'), "{piped:?}");
}

#[test]
fn a_diff_filter_that_selects_nothing_is_an_error_not_equal() {
    let m = smollm2();
    let (_, err) = outputs(apr().args(["diff-tensors", &m, &m, "--filter", "no_such_tensor"]), 1);
    assert!(err.contains("no_such_tensor") && err.contains("matches no tensor"), "{err}");
    let (out, _) = outputs(apr().args(["diff-tensors", &m, &m, "--filter", "output_norm"]), 0);
    assert!(out.contains("1 compared"), "{out}");
}

#[test]
fn a_chat_context_above_the_models_is_capped_with_a_note() {
    let (_, err) = outputs(apr().args(["chat", &smollm2(), "--context", "10000000", "-n", "2"]).write_stdin("Hi\n"), 0);
    assert!(err.contains("--context 10000000 capped at the model's context length 8192"), "{err}");
}

#[test]
fn the_largest_max_tokens_does_not_overflow() {
    let output = apr()
        .args(["run", &smollm2(), "-p", "Say hi", "-n", &usize::MAX.to_string(), "--json"])
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(matches!(output.status.code(), Some(0 | 1)) && !err.contains("overflow"), "{:?} {err}", output.status);
}
