//! What each tracing flag of `run` and `chat` prints on the real 0.5B model
//! (`--trace`, `--trace-level none|layer|payload`, `--trace-output` read back,
//! `--profile`, `--verbose`), and compare-inference's "produced no output".

use apr_engine::container::{MetaValue, ModelFile};
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::testing::models::QWEN_0_5B;
use serde_json::Value;

mod common;
use common::{apr, model};

const PROMPT: &str = "What is 2+2?";
/// Prompt tokens of PROMPT in the 0.5B's chat template.
const PROMPT_TOKENS: u64 = 36;

/// `run` on the 0.5B generating 3 tokens with `extra` flags; returns stdout and stderr.
fn run(extra: &[&str]) -> (String, String) {
    let m = model();
    let output = apr(&[&["run", &m, "-p", PROMPT, "-n", "3"], extra].concat()).assert().code(0).get_output().clone();
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A two-turn `chat` on the 0.5B with `extra` flags; returns stderr.
fn chat(extra: &[&str]) -> String {
    let m = model();
    let output = apr(&[&["chat", &m, "-n", "3"], extra].concat())
        .write_stdin("What is 2+2?\nAnd times three?\n")
        .assert()
        .code(0)
        .get_output()
        .clone();
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn call_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("[TRACE] pos=")).collect()
}

fn read_trace(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn run_trace_prints_one_line_per_call_and_the_kernels() {
    let (out, err) = run(&["--trace"]);
    assert!(out.starts_with("2 +"), "{out}");
    let calls = call_lines(&err);
    assert_eq!(calls.len(), 3, "one prefill and two decode calls:\n{err}");
    assert!(calls[0].starts_with(&format!("[TRACE] pos=0..{} ({PROMPT_TOKENS} tokens): 24 layers", PROMPT_TOKENS - 1)));
    assert!(calls[1].starts_with(&format!("[TRACE] pos={PROMPT_TOKENS}: 24 layers")), "{}", calls[1]);
    for kernel in ["attn_q", "ffn_down", "output"] {
        assert!(err.lines().any(|l| l.starts_with(&format!("[TRACE] kernel {kernel} "))), "{kernel}:\n{err}");
    }
    assert!(!err.contains("per layer") && !err.contains("machine:"), "basic level only:\n{err}");
}

#[test]
fn run_trace_level_layer_adds_a_row_per_layer() {
    let (_, err) = run(&["--trace-level", "layer"]);
    assert!(err.contains("[TRACE] per layer over 3 calls:"), "{err}");
    let rows: Vec<_> = err.lines().skip_while(|l| !l.starts_with("layer attention ms")).skip(1).take(24).collect();
    let layers: Vec<String> = rows.iter().map(|r| r.split_whitespace().next().unwrap_or("").to_string()).collect();
    assert_eq!(layers, (0..24).map(|l| l.to_string()).collect::<Vec<_>>(), "{err}");
}

#[test]
fn run_trace_level_payload_prints_activation_statistics() {
    let (_, err) = run(&["--trace-level", "payload"]);
    assert!(
        err.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["pos", "layer", "boundary", "mean", "std", "min", "max", "l2", "nan", "inf", "zeros"]),
        "{err}"
    );
    for boundary in ["Embedding", "AttnNorm"] {
        assert!(err.contains(boundary), "{boundary}:\n{err}");
    }
}

#[test]
fn run_trace_output_writes_the_schema_and_every_call_and_prints_no_steps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    let (_, err) = run(&["--trace-output", path.to_str().unwrap()]);
    assert!(call_lines(&err).is_empty() && err.contains("[trace] written to"), "{err}");
    let trace = read_trace(&path);
    assert_eq!(trace["schema"], "apr.trace.v1", "{trace}");
    assert_eq!(trace["schema_version"], 1);
    assert_eq!(trace["level"], "basic");
    assert_eq!(trace["model"]["layers"], 24);
    assert_eq!(trace["model"]["architecture"], "qwen2");
    let steps = trace["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{trace}");
    assert_eq!(steps[0]["n_tokens"], PROMPT_TOKENS);
    assert_eq!(steps[2]["start_pos"], PROMPT_TOKENS + 1);
    assert!(trace["kernels"].as_array().is_some_and(|k| !k.is_empty()));
    assert!(trace.get("profile").is_none(), "no roofline without --profile");
}

#[test]
fn run_profile_prints_the_roofline_and_adds_it_to_the_trace_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trace.json");
    let (_, err) = run(&["--profile", "--trace-output", path.to_str().unwrap()]);
    assert!(err.contains("machine:") && err.contains("GateUpProjection") && err.contains("recommendation:"), "{err}");
    let trace = read_trace(&path);
    assert!(trace["profile"]["machine"]["bandwidth_gb_s"].as_f64().is_some_and(|b| b > 0.0), "{trace}");
}

#[test]
fn run_verbose_prints_facts_about_the_model_and_the_run() {
    let (_, err) = run(&["--verbose"]);
    for fact in ["architecture", "qwen2", "layers", "24", "threads", "prefill", &format!("{PROMPT_TOKENS} tokens")] {
        assert!(err.lines().any(|l| l.starts_with("[apr]") && l.contains(fact)), "{fact}:\n{err}");
    }
}

#[test]
fn chat_traces_each_turn() {
    let err = chat(&["--trace"]);
    let calls = call_lines(&err);
    // Turn 1: the whole prompt then 2 decode steps; turn 2: the new part of the prompt then 2 steps.
    assert_eq!(calls.len(), 6, "{err}");
    assert!(calls[0].starts_with(&format!("[TRACE] pos=0..{}", PROMPT_TOKENS - 1)), "{}", calls[0]);
    assert!(!calls[3].starts_with("[TRACE] pos=0.."), "turn 2 reuses the cache: {}", calls[3]);
    let layer = chat(&["--trace-level", "layer"]);
    assert_eq!(layer.matches("[TRACE] per layer over 3 calls:").count(), 2, "{layer}");
}

#[test]
fn chat_profile_prints_a_roofline_per_turn() {
    let err = chat(&["--profile"]);
    assert_eq!(err.matches("recommendation:").count(), 2, "{err}");
}

#[test]
fn chat_trace_output_covers_the_whole_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.json");
    let err = chat(&["--trace-output", path.to_str().unwrap(), "--trace-level", "payload"]);
    assert!(err.contains("[trace] written to"), "{err}");
    let trace = read_trace(&path);
    assert_eq!(trace["schema"], "apr.trace.v1");
    assert_eq!(trace["level"], "payload");
    let steps = trace["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6, "two turns of three calls: {trace:.300}");
    let second_prefill = &steps[3];
    assert!(second_prefill["start_pos"].as_u64().unwrap() > PROMPT_TOKENS, "{second_prefill:.300}");
    assert!(steps.iter().all(|s| s["boundaries"].as_array().is_some_and(|b| !b.is_empty())));
}

#[test]
fn trace_level_none_traces_nothing_in_run_and_chat() {
    let (out, err) = run(&["--trace-level", "none"]);
    assert!(out.starts_with("2 +"), "{out}");
    assert!(!err.contains("[TRACE]") && !err.contains("[trace]"), "{err}");
    let err = chat(&["--trace-level", "none"]);
    assert!(!err.contains("[TRACE]") && err.matches("[turn ").count() == 2, "{err}");
}

#[test]
fn chat_trace_level_payload_prints_activation_statistics_per_turn() {
    let err = chat(&["--trace-level", "payload"]);
    let headers = err.lines().filter(|l| l.split_whitespace().take(3).eq(["pos", "layer", "boundary"])).count();
    assert_eq!(headers, 6, "a statistics table per call, three calls a turn:\n{err:.2000}");
    assert!(err.contains("Embedding") && err.contains("AttnNorm"), "{err:.2000}");
}

#[test]
fn chat_verbose_prints_facts_about_the_model() {
    let err = chat(&["--verbose"]);
    for fact in ["architecture", "qwen2", "layers", "24", "threads", "backend", "load time"] {
        assert!(err.lines().any(|l| l.starts_with("[apr]") && l.contains(fact)), "{fact}:\n{err}");
    }
}

#[test]
fn compare_inference_says_when_model_b_produced_no_output() {
    let m = model();
    let first = apr(&["run", &m, "-p", PROMPT, "-n", "1", "--json"]).assert().code(0).get_output().stdout.clone();
    let first: Value = serde_json::from_slice(&first).unwrap();
    let first_token = first["tokens"][0].as_u64().unwrap() as u32;
    // The candidate ends generation on the very token the reference starts with: it says nothing.
    let dir = tempfile::tempdir().unwrap();
    let mute = dir.path().join("mute.apr");
    let eos = Fault::SetMetadata("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(first_token));
    write_faulty_copy(&ModelFile::open(QWEN_0_5B.require()).unwrap(), &mute, &[eos], false).unwrap();
    let output = apr(&["compare-inference", &m, mute.to_str().unwrap(), "-p", PROMPT, "-n", "4"]).assert().code(5);
    let out = String::from_utf8_lossy(&output.get_output().stdout).into_owned();
    assert!(out.contains("diagnosis: model B produced no output"), "{out}");
}
