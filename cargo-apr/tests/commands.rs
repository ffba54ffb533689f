//! Every `cargo apr` subcommand end to end on the real 0.5B model: what it
//! prints and its exit code (0 pass, 1 failure or error, 2 usage, 5 diverged),
//! for a good input and for a bad one. `trace-diff` and `compare-inference` are
//! in `cli_diff.rs`, `test` in `test_command.rs`, `fetch` in `fetch_sources.rs`.

use std::path::{Path, PathBuf};

use apr_engine::container::ModelFile;
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::testing::models::{reference_dir, QWEN_0_5B};

mod common;
use common::{apr, model, outputs};

fn faulty_copy(dir: &Path, name: &str, faults: &[Fault]) -> PathBuf {
    let path = dir.join(name);
    write_faulty_copy(&ModelFile::open(QWEN_0_5B.require()).unwrap(), &path, faults, false).unwrap();
    path
}

#[test]
fn run_answers_and_reports_json() {
    let m = model();
    let (text, _) = outputs(&mut apr(&["run", &m, "--prompt", "What is 2+2?", "--max-tokens", "8"]), 0);
    assert!(text.contains('4'), "{text}");
    let (json, _) = outputs(&mut apr(&["run", &m, "--prompt", "What is 2+2?", "--max-tokens", "8", "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["text"], "2 + 2 equals 4.", "{report}");
    assert_eq!(report["tokens"].as_array().unwrap().len(), 8);
    assert!(report["timings"]["decode_tok_s"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn run_on_a_missing_file_fails_naming_it() {
    let (_, err) = outputs(&mut apr(&["run", "/no/such/model.gguf", "--prompt", "hi"]), 1);
    assert!(err.contains("/no/such/model.gguf"), "{err}");
}

#[test]
fn unknown_flags_are_usage_errors() {
    let (_, err) = outputs(&mut apr(&["run", &model(), "--no-such-flag"]), 2);
    assert!(err.contains("--no-such-flag"), "{err}");
    let (_, err) = outputs(&mut apr(&["diff-tensors", &model()]), 2);
    assert!(err.contains("<B>"), "{err}");
}

#[test]
fn chat_answers_each_line_and_reuses_the_cache() {
    let (out, err) =
        outputs(apr(&["chat", &model(), "--max-tokens", "24"]).write_stdin("What is 2+2?\nAnd times three?\n"), 0);
    let all = format!("{out}{err}");
    assert!(out.contains("2 + 2 equals 4."), "{all}");
    // The second turn prefills only its new tokens: the first turn's are reused from the KV cache.
    let turn2 = all.lines().find(|l| l.contains("turn 2:")).unwrap_or_else(|| panic!("no second turn:\n{all}"));
    assert!(turn2.contains("reused") && !turn2.contains("(0 reused)"), "{turn2}");
}

#[test]
fn inspect_prints_the_architecture_and_rejects_a_non_model() {
    let (out, _) = outputs(&mut apr(&["inspect", &model()]), 0);
    for fact in ["GGUF v3", "qwen2", "24", "896", "151936"] {
        assert!(out.contains(fact), "{fact} missing from:\n{out}");
    }
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00 this is not a model").unwrap();
    let (_, err) = outputs(&mut apr(&["inspect", junk.to_str().unwrap()]), 1);
    assert!(err.contains("junk.gguf") && err.contains("offset"), "{err}");
}

#[test]
fn convert_writes_refuses_to_overwrite_and_forces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qwen.apr");
    let out_s = out.to_str().unwrap();
    outputs(&mut apr(&["convert", &model(), out_s]), 0);
    assert!(ModelFile::open(&out).unwrap().tensors().len() == 291);
    let before = std::fs::metadata(&out).unwrap().modified().unwrap();
    let (_, err) = outputs(&mut apr(&["convert", &model(), out_s]), 1);
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::metadata(&out).unwrap().modified().unwrap(), before, "refused convert touched the file");
    outputs(&mut apr(&["convert", &model(), out_s, "--force"]), 0);
}

#[test]
fn check_passes_every_stage() {
    let (out, _) = outputs(&mut apr(&["check", &model()]), 0);
    for stage in ["open", "metadata", "tokenizer", "embedding", "all layers", "logits", "template", "generation"] {
        assert!(out.lines().any(|l| l.starts_with("PASS") && l.contains(stage)), "{stage} not PASS:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn validate_catches_a_zeroed_norm() {
    let dir = tempfile::tempdir().unwrap();
    let bad = faulty_copy(dir.path(), "zeroed.apr", &[Fault::ZeroTensor("output_norm.weight".into())]);
    let (out, _) = outputs(&mut apr(&["validate", bad.to_str().unwrap()]), 1);
    assert!(out.contains("FAIL") && out.contains("output_norm.weight"), "{out}");
}

#[test]
fn validate_passes_the_real_model_and_fails_a_truncated_one() {
    let (out, _) = outputs(&mut apr(&["validate", &model()]), 0);
    assert!(out.contains("PASS structure") && out.contains("PASS values"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let bytes = std::fs::read(QWEN_0_5B.require()).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (out, err) = outputs(&mut apr(&["validate", cut.to_str().unwrap()]), 1);
    assert!(format!("{out}{err}").contains("cut.gguf"), "{out}{err}");
}

#[test]
fn diff_tensors_finds_nothing_in_a_lossless_copy_and_names_a_scaled_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let clean = faulty_copy(dir.path(), "clean.apr", &[]);
    outputs(&mut apr(&["diff-tensors", &model(), clean.to_str().unwrap()]), 0);
    let scaled = Fault::ScaleTensor { name: "blk.5.ffn_down.weight".into(), factor: 1.5 };
    let bad = faulty_copy(dir.path(), "scaled.apr", &[scaled]);
    let (out, _) = outputs(&mut apr(&["diff-tensors", &model(), bad.to_str().unwrap()]), 5);
    assert!(out.contains("blk.5.ffn_down.weight"), "{out}");
}

#[test]
fn profile_prints_percentiles_and_its_ci_assertions_decide_the_exit_code() {
    let m = model();
    let base = ["profile", &m, "--warmup", "2", "--measure", "8", "--ci"];
    // A bound no machine misses, then one no machine meets: the exit code follows the assertion.
    let (out, _) = outputs(&mut apr(&[&base[..], &["--assert-throughput", "0.001"]].concat()), 0);
    assert!(out.contains("p50") && out.contains("PASS throughput"), "{out}");
    let (out, _) = outputs(&mut apr(&[&base[..], &["--assert-throughput", "1000000"]].concat()), 1);
    assert!(out.contains("FAIL throughput"), "{out}");
    let (json, _) = outputs(&mut apr(&["profile", &m, "--warmup", "2", "--measure", "8", "--json"]), 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(report.to_string().contains("p99"), "{report}");
}

#[test]
fn bench_reports_prefill_and_decode_rates_as_json() {
    let args = ["bench", &model(), "--prompt-tokens", "16", "--gen-tokens", "4", "--reps", "1", "--json"];
    let (json, _) = outputs(&mut apr(&args), 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["schema"], "apr.bench.v1");
    let rows = report["results"].as_array().unwrap();
    let tests: Vec<_> = rows.iter().map(|r| r["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["pp16", "tg4"], "{report}");
    for row in rows {
        assert!(row["tok_s"].as_f64().is_some_and(|v| v > 0.0), "{row}");
        assert!(row["tok_s_std"].as_f64().is_some_and(|v| v >= 0.0), "{row}");
    }
}

#[test]
fn bench_runs_each_size_of_a_comma_list_and_prints_each_row() {
    let (out, _) = outputs(&mut apr(&["bench", &model(), "-p", "8,16", "-n", "2,4", "-r", "1"]), 0);
    let tests: Vec<_> = out.lines().filter_map(|l| l.split('|').nth(5).map(str::trim)).skip(2).collect();
    assert_eq!(tests, ["pp8", "pp16", "tg2", "tg4"], "{out}");
    let (_, err) = outputs(&mut apr(&["bench", &model(), "-p", "0", "-n", "0"]), 2);
    assert!(err.contains("no test"), "{err}");
}

/// A package with one pinned golden snapshot and a pending one beside it.
fn package_with_pending_golden(dir: &Path) -> (PathBuf, PathBuf) {
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
    let mut pending: serde_json::Value = serde_json::from_str(&pinned_text).unwrap();
    let logit = &mut pending["prompts"][0]["top_logits"][1][0][1];
    *logit = serde_json::json!(logit.as_f64().unwrap() + 0.25);
    let (pinned, new) = (dir.join("tests/golden/snap.json"), dir.join("tests/golden/snap.new.json"));
    std::fs::write(&pinned, pinned_text).unwrap();
    std::fs::write(&new, serde_json::to_string_pretty(&pending).unwrap()).unwrap();
    (pinned, new)
}

#[test]
fn review_shows_rejects_and_accepts_pending_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let (pinned, new) = package_with_pending_golden(dir.path());
    let review = |extra: &[&str]| {
        let mut command = apr(&[&["review"], extra].concat());
        // In CI `review` fails while snapshots are pending (review.rs tests that).
        command.current_dir(dir.path()).env_remove("CI");
        command
    };
    let (out, _) = outputs(&mut review(&[]), 0);
    assert!(out.contains("snap.new.json") && out.contains("1 pending") && out.contains("moved by 2.5"), "{out}");
    assert!(new.exists(), "showing must not touch the pending file");
    outputs(&mut review(&["--reject"]), 0);
    assert!(!new.exists() && pinned.exists());

    let (pinned, new) = package_with_pending_golden(dir.path());
    let pending = std::fs::read(&new).unwrap();
    outputs(&mut review(&["--accept"]), 0);
    assert!(!new.exists());
    assert_eq!(std::fs::read(&pinned).unwrap(), pending, "accept pins the pending snapshot");
}

#[test]
fn bench_prints_a_row_as_soon_as_its_test_finishes() {
    use std::io::BufRead;
    let binary = assert_cmd::cargo::cargo_bin("cargo-apr");
    let mut child = std::process::Command::new(binary)
        .args(["apr", "bench", &model(), "-p", "8", "-n", "64", "-r", "3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let pp_row = stdout.lines().map(Result::unwrap).find(|l| l.contains("pp8"));
    // The decode test (4 x 64 steps) is still running when the prefill row arrives.
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    child.wait().unwrap();
    assert!(pp_row.is_some() && still_running, "row {pp_row:?}, still running {still_running}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let binary = assert_cmd::cargo::cargo_bin("cargo-apr");
    let mut child = std::process::Command::new(binary)
        .args(["apr", "inspect", &model(), "--tensors"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away, as `| head` does
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.code() != Some(101) && !err.contains("panicked"), "{:?} {err}", output.status);
}

#[test]
fn kld_measures_the_distance_to_exact_math_per_position() {
    let text = reference_dir().join("kld/text.txt").display().to_string();
    let args = ["kld", &model(), "--text", &text, "--ctx", "16", "--chunks", "1"];
    let (json, _) = outputs(&mut apr(&[&args[..], &["--json"]].concat()), 0);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!((report["schema"].as_str(), report["exact"].as_str()), (Some("apr.kld.v1"), Some("cpu-reference")));
    let positions = report["positions"].as_array().unwrap();
    let pos: Vec<u64> = positions.iter().map(|p| p["pos"].as_u64().unwrap()).collect();
    assert_eq!(pos, (8..15).collect::<Vec<_>>(), "the second half of the chunk but its last token");
    for p in positions {
        assert!(p["apr"]["kl"].as_f64().is_some_and(|kl| (0.0..0.1).contains(&kl)), "{p}");
    }
    assert!(report["apr"]["top1_agreement"].as_f64().is_some_and(|a| a >= 6.0 / 7.0), "{report}");
    assert!(report.get("llama_cpp").is_none(), "no llama.cpp figures without its file");

    let (table, _) = outputs(&mut apr(&args), 0);
    assert!(table.contains("1 chunks of 16 tokens") && table.contains("7 scored positions"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("apr (cpu)")), "{table}");
}

#[test]
fn kld_refuses_bad_texts_and_chunk_sizes() {
    let text = reference_dir().join("kld/text.txt").display().to_string();
    let (_, err) = outputs(&mut apr(&["kld", &model(), "--text", &text, "--chunks", "0"]), 2);
    assert!(err.contains("--chunks 0"), "{err}");
    let (_, err) = outputs(&mut apr(&["kld", &model(), "--text", &text, "--ctx", "100000"]), 1);
    assert!(err.contains("too short for one chunk of 100000"), "{err}");
    let (_, err) = outputs(&mut apr(&["kld", &model(), "--text", &text, "--ctx", "3"]), 2);
    assert!(err.contains("--ctx 3"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let latin1 = dir.path().join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9").unwrap();
    let (_, err) = outputs(&mut apr(&["kld", &model(), "--text", &latin1.display().to_string()]), 1);
    assert!(err.contains("latin1.txt: the text is not valid UTF-8") && err.contains("offset 3"), "{err}");
}
