//! The tracing matrix: each check runs the real command (this executable:
//! `run`, `chat`, `serve` on an ephemeral loopback port) and inspects what it
//! printed or returned. 3 points each, 15 checks.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use apr_engine::backend::BackendKind;

use super::report::{Cell, NOT_SELECTED};
use super::server::{chat_body, model_id, Http, Server};

const POINTS: u32 = 3;
const PROMPT: &str = "What is 2+2?";
/// Tokens each traced command generates: enough for a prefill and two decode steps.
const TOKENS: &str = "3";

/// What a finished command printed.
struct Printed {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn apr(args: &[&str], stdin: Option<&str>) -> Result<Printed, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running executable: {e}"))?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {args:?}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).map_err(|e| format!("cannot write stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{args:?}: {e}"))?;
    Ok(Printed {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A check's verdict: the figure shown on a pass, or why it failed.
type Check = Result<String, String>;

fn expect(printed: &Printed, what: &str, holds: bool, figure: &str) -> Check {
    if !printed.ok {
        return Err(format!("exited with an error: {}", last_line(&printed.stderr)));
    }
    if holds {
        Ok(figure.to_string())
    } else {
        Err(format!("{what} missing from its output: {}", last_line(&printed.stderr)))
    }
}

fn last_line(text: &str) -> &str {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(nothing printed)")
}

fn trace_calls(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.starts_with("[TRACE] pos=")).count()
}

fn run_cmd(model: &str, extra: &[&str]) -> Result<Printed, String> {
    apr(&[&["run", model, "-p", PROMPT, "-n", TOKENS], extra].concat(), None)
}

fn chat_cmd(model: &str, extra: &[&str]) -> Result<Printed, String> {
    apr(&[&["chat", model, "-n", TOKENS], extra].concat(), Some(&format!("{PROMPT}\n")))
}

fn run_plain(model: &str) -> Check {
    let p = run_cmd(model, &[])?;
    let quiet = !p.stdout.trim().is_empty() && !p.stderr.contains("[TRACE]");
    expect(&p, "an answer without trace lines", quiet, &format!("answered {:?}, no trace", p.stdout.trim()))
}

fn run_trace(model: &str, extra: &[&str]) -> Check {
    let p = run_cmd(model, extra)?;
    let calls = trace_calls(&p.stderr);
    let kernels = p.stderr.lines().any(|l| l.starts_with("[TRACE] kernel "));
    expect(&p, "[TRACE] call and kernel lines", calls > 0 && kernels, &format!("{calls} traced calls, kernels named"))
}

fn run_layer(model: &str, extra: &[&str]) -> Check {
    let p = run_cmd(model, extra)?;
    let table = p.stderr.contains("[TRACE] per layer over") && p.stderr.contains("layer attention ms");
    expect(&p, "the per-layer table", table, "per-layer table printed")
}

fn run_profile(model: &str, extra: &[&str]) -> Check {
    let p = run_cmd(model, extra)?;
    let roofline = p.stderr.contains("machine:") && p.stderr.contains("recommendation:");
    expect(&p, "the roofline (machine:, recommendation:)", roofline, "roofline printed")
}

fn run_trace_output(model: &str) -> Check {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("trace.json");
    let p = run_cmd(model, &["--trace-output", path.to_str().ok_or("temporary path is not UTF-8")?])?;
    if !p.ok {
        return Err(format!("exited with an error: {}", last_line(&p.stderr)));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("no trace file: {e}"))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("trace file is not JSON: {e}"))?;
    let steps = json["steps"].as_array().map_or(0, Vec::len);
    if json["schema"] != "apr.trace.v1" || steps == 0 {
        return Err(format!("trace file has schema {} and {steps} steps", json["schema"]));
    }
    Ok(format!("apr.trace.v1 JSON, {steps} steps"))
}

fn chat_plain(model: &str) -> Check {
    let p = chat_cmd(model, &[])?;
    let quiet = !p.stdout.trim().is_empty() && !p.stderr.contains("[TRACE]");
    expect(&p, "an answer without trace lines", quiet, "answered, no trace")
}

fn chat_trace(model: &str) -> Check {
    let p = chat_cmd(model, &["--trace"])?;
    let calls = trace_calls(&p.stderr);
    expect(&p, "[TRACE] call lines", calls > 0, &format!("{calls} traced calls"))
}

fn chat_layer(model: &str) -> Check {
    let p = chat_cmd(model, &["--trace-level", "layer"])?;
    expect(&p, "the per-layer table", p.stderr.contains("[TRACE] per layer over"), "per-layer table printed")
}

fn chat_profile(model: &str) -> Check {
    let p = chat_cmd(model, &["--profile"])?;
    expect(&p, "the roofline", p.stderr.contains("machine:"), "roofline printed")
}

/// The serve checks, on one `--trace` server and one `--trace-level layer` server.
fn serve_checks(model: &Path) -> Vec<Check> {
    let http = match Http::new() {
        Ok(h) => h,
        Err(e) => return vec![Err(format!("no HTTP client: {e}")); 5],
    };
    let traced = Server::start(model, &["--trace"], &http);
    let mut checks = match &traced {
        Ok(server) => vec![
            serve_health(server, &http),
            serve_trace_log(server, &http),
            serve_profile_header(server, &http),
            serve_trace_level_header(server, &http),
        ],
        Err(e) => vec![Err(format!("serve --trace did not start: {e}")); 4],
    };
    drop(traced);
    let layer = Server::start(model, &["--trace-level", "layer"], &http)
        .map_err(|e| format!("serve --trace-level layer did not start: {e}"))
        .and_then(|server| serve_layer_log(&server, &http));
    checks.insert(2, layer);
    checks
}

fn chat_request(server: &Server, http: &Http, headers: &[(&str, &str)]) -> Result<super::server::Reply, String> {
    let model = model_id(http, &server.base).map_err(|e| e.to_string())?;
    let reply = http
        .post_json(&format!("{}/v1/chat/completions", server.base), headers, &chat_body(&model, PROMPT, None, 3))
        .map_err(|e| format!("request failed: {e}"))?;
    if reply.status != 200 {
        return Err(format!("status {}: {}", reply.status, reply.body));
    }
    Ok(reply)
}

fn serve_health(server: &Server, http: &Http) -> Check {
    let reply = http.get(&format!("{}/health", server.base)).map_err(|e| format!("request failed: {e}"))?;
    match reply.status {
        200 => Ok(format!("200 on {}", server.base)),
        status => Err(format!("/health answered {status}")),
    }
}

fn serve_trace_log(server: &Server, http: &Http) -> Check {
    chat_request(server, http, &[])?;
    let is_request_line = |l: &String| l.starts_with("[serve] request ") && l.contains("tok/s");
    let log = server.log_when(|log| log.iter().any(is_request_line));
    match log.iter().find(|l| is_request_line(l)) {
        Some(line) => Ok(line.trim_start_matches("[serve] ").to_string()),
        None => Err("no `[serve] request ... tok/s` line in its log".into()),
    }
}

fn serve_layer_log(server: &Server, http: &Http) -> Check {
    chat_request(server, http, &[])?;
    let log = server.log_when(|log| log.iter().any(|l| l.contains("attention ms"))).join("\n");
    if log.contains("per-layer table") && log.contains("attention ms") {
        Ok("per-layer table logged".into())
    } else {
        Err("no per-layer table in its log".into())
    }
}

fn serve_profile_header(server: &Server, http: &Http) -> Check {
    let body = chat_request(server, http, &[("X-Profile", "true")])?.json();
    if body["trace"]["profile"].is_object() {
        Ok("roofline in the response's trace".into())
    } else {
        Err("X-Profile: true returned no trace.profile".into())
    }
}

fn serve_trace_level_header(server: &Server, http: &Http) -> Check {
    let reply = chat_request(server, http, &[("X-Trace-Level", "layer")])?;
    let body = reply.json();
    let layers = reply.header("x-trace-layers").unwrap_or("none").to_string();
    if body["trace"]["schema"] == "apr.trace.v1" && body["trace"]["level"] == "layer" {
        Ok(format!("apr.trace.v1 trace, X-Trace-Layers {layers}"))
    } else {
        Err("X-Trace-Level: layer returned no layer trace".into())
    }
}

/// `run --backend cuda --trace`, where CUDA can run.
fn gpu_trace(model: &str) -> Check {
    run_trace(model, &["--backend", "cuda", "--trace"])
}

/// Every check of the matrix, in order, as cells; `selected` says which to run.
pub fn run_all(model: &Path, backends: &[BackendKind], selected: impl Fn(&str) -> bool) -> Vec<Cell> {
    let m = model.to_string_lossy().into_owned();
    let m = m.as_str();
    type Runner<'a> = Box<dyn Fn() -> Check + 'a>;
    let cpu: Vec<(&str, &str, &str, Runner)> = vec![
        ("T1", "run, no tracing", "cpu", Box::new(|| run_plain(m))),
        ("T2", "run --trace", "cpu", Box::new(|| run_trace(m, &["--trace"]))),
        ("T3", "run --trace-level layer", "cpu", Box::new(|| run_layer(m, &["--trace-level", "layer"]))),
        ("T4", "run --profile", "cpu", Box::new(|| run_profile(m, &["--profile"]))),
        ("T5", "run --trace-output (JSON)", "cpu", Box::new(|| run_trace_output(m))),
        ("T6", "chat, no tracing", "cpu", Box::new(|| chat_plain(m))),
        ("T7", "chat --trace", "cpu", Box::new(|| chat_trace(m))),
        ("T8", "chat --trace-level layer", "cpu", Box::new(|| chat_layer(m))),
        ("T9", "chat --profile", "cpu", Box::new(|| chat_profile(m))),
    ];
    let mut cells: Vec<Cell> = cpu
        .into_iter()
        .map(|(id, name, backend, check)| {
            let cell = Cell::new(id, name, backend, "GGUF", POINTS);
            if !selected(id) {
                return cell.skip(format!("{NOT_SELECTED} (--only)"));
            }
            let started = Instant::now();
            settle(cell, check()).timed(started)
        })
        .collect();
    let serve_names = [
        ("T10", "serve /health"),
        ("T11", "serve --trace logs"),
        ("T12", "serve --trace-level layer logs"),
        ("T13", "serve X-Profile"),
        ("T14", "serve X-Trace-Level trace"),
    ];
    let any_serve = serve_names.iter().any(|(id, _)| selected(id));
    let started = Instant::now();
    let serve_results = if any_serve { serve_checks(model) } else { Vec::new() };
    for (i, (id, name)) in serve_names.iter().enumerate() {
        let cell = Cell::new(id, name, "cpu", "GGUF", POINTS);
        cells.push(match serve_results.get(i) {
            Some(check) if selected(id) => settle(cell, check.clone()).timed(started),
            _ => cell.skip(format!("{NOT_SELECTED} (--only)")),
        });
    }
    cells.push(gpu_cell(m, backends, &selected));
    cells
}

fn gpu_cell(model: &str, backends: &[BackendKind], selected: &impl Fn(&str) -> bool) -> Cell {
    let cell = Cell::new("T15", "GPU + run --trace", "cuda", "GGUF", POINTS);
    if let Some(why) = BackendKind::Cuda.unavailable() {
        return cell.skip(why);
    }
    if !backends.contains(&BackendKind::Cuda) || !selected("T15") {
        return cell.skip(format!("{NOT_SELECTED} (cuda not in --backends or --only)"));
    }
    let started = Instant::now();
    settle(cell, gpu_trace(model)).timed(started)
}

fn settle(cell: Cell, check: Check) -> Cell {
    match check {
        Ok(figure) => cell.pass(figure),
        Err(why) => cell.fail(String::new(), why),
    }
}
