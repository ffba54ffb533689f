//! `cargo apr qualify` on the real 0.5B (`scripts/fetch-models.sh qwen-0.5b`),
//! CPU only: every CPU cell and tracing check passes, GPU cells are SKIP with
//! the reason, parity holds against a `cargo apr serve` of the same model; a
//! corrupted APR (one layer's FFN down-projection swapped with another's)
//! fails A2 naming the layer, exit 5. Few prompts and tokens keep it short.

mod common;
mod serve_support;

use std::path::PathBuf;

use apr_engine::backend::BackendKind;
use apr_engine::container::ModelFile;
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use common::{apr, model};
use serde_json::Value;
use serve_support::Server;

/// Conversions (the APR copy, 2 GB of F32 SafeTensors and APR) are cached
/// here between runs, as `cargo apr test` caches its conversions.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qualify-cache")
}

fn qualify(args: &[&str]) -> (i32, Value, String) {
    let cache = cache_dir();
    let mut command = apr(&[&["qualify", &model(), "--backends", "cpu", "--json"], args].concat());
    command.env("APR_CACHE_DIR", &cache);
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stderr}"));
    (output.status.code().unwrap_or(-1), json, stderr)
}

fn cell<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["cells"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no cell {id}"))
}

#[test]
fn cpu_cells_and_tracing_pass_gpu_cells_skip_and_parity_holds_against_serve() {
    let server = Server::start(&model(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("qualify.xml");
    let url = format!("http://{}", server.address);
    let args = ["--max-prompts", "1", "-n", "4", "--against", &url, "--junit", junit.to_str().unwrap()];
    let (code, report, table) = qualify(&args);
    eprintln!("{table}");
    assert_eq!(report["schema"], "apr.qualify.v1");
    assert_eq!(report["max_points"], 145);
    let cpu_cells = ["A1", "A2", "B1", "B2"].map(String::from).into_iter().chain((1..=14).map(|n| format!("T{n}")));
    for id in cpu_cells {
        assert_eq!(cell(&report, &id)["result"], "PASS", "{id}: {}\n{table}", cell(&report, &id));
    }
    let gpu_reason = BackendKind::Cuda.unavailable();
    for id in ["A3", "A4", "B3", "B4", "T15"] {
        let c = cell(&report, id);
        assert_eq!((c["result"].as_str(), c["points"].as_u64()), (Some("SKIP"), Some(0)), "{id}: {c}");
        let reason = c["reason"].as_str().unwrap();
        match &gpu_reason {
            Some(why) => assert_eq!(reason, why, "{id}: the reason CUDA cannot run"),
            None => assert!(reason.contains("cuda not in --backends"), "{id}: {reason}"),
        }
    }
    // A1 and A2 on the llama.cpp reference data; B1 says what it is.
    assert!(report["ground_truth"].as_str().unwrap().contains("llama.cpp"), "{report}");
    assert!(cell(&report, "A1")["key_figure"].as_str().unwrap().starts_with("1/1 = llama.cpp"), "{table}");
    assert!(report["notes"].to_string().contains("SafeTensors F32"), "{report}");
    assert_eq!(report["points"], 15 + 15 + 10 + 10 + 14 * 3);
    let parity = &report["parity"];
    assert_eq!((parity["prompts_equal"].as_u64(), parity["holds"].as_bool()), (Some(1), Some(true)), "{parity}");
    assert!(parity["speed_ratio"].as_f64().is_some_and(|r| r > 0.0), "{parity}");
    // GPU cells could run on a machine with CUDA, so only there is a CPU-only run not qualified.
    let expected = if gpu_reason.is_some() { (0, true) } else { (5, false) };
    assert_eq!((code, report["qualified"].as_bool().unwrap()), expected, "{table}");
    assert!(table.contains("total: 92/145 points"), "{table}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("A3 greedy = ground truth") && xml.contains("<skipped"), "{xml}");
}

#[test]
fn a_corrupted_apr_fails_a2_naming_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let corrupted = dir.path().join("swapped.apr");
    let fault = Fault::SwapTensors("blk.3.ffn_down.weight".into(), "blk.7.ffn_down.weight".into());
    write_faulty_copy(&ModelFile::open(model()).unwrap(), &corrupted, &[fault], false).unwrap();
    let args = ["--apr", corrupted.to_str().unwrap(), "--only", "A1,A2", "--max-prompts", "1", "-n", "4"];
    let (code, report, table) = qualify(&args);
    assert_eq!(code, 5, "{table}");
    assert_eq!(cell(&report, "A1")["result"], "PASS", "{table}");
    let a2 = cell(&report, "A2");
    assert_eq!(a2["result"], "FAIL", "{table}");
    assert!(a2["reason"].as_str().unwrap().contains("layer 3"), "the swapped layer is named: {a2}");
    assert!(table.contains("NOT QUALIFIED"), "{table}");
}

#[test]
fn a_missing_model_is_an_error() {
    let output = apr(&["qualify", "/nonexistent/model.gguf", "--backends", "cpu"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such model file"));
}

#[test]
fn a_model_that_does_not_parse_is_an_error_naming_field_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.gguf");
    let mut head = Vec::new();
    let file = std::fs::File::open(model()).unwrap();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, 1000), &mut head).unwrap();
    std::fs::write(&cut, head).unwrap();
    let output = apr(&["qualify", cut.to_str().unwrap(), "--backends", "cpu"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cut.gguf") && stderr.contains("tensor_count at offset 8"), "{stderr}");
}
