//! `cargo apr serve` end to end on the real 0.5B model: the binary on an
//! ephemeral loopback port, driven over HTTP. Greedy parity with `cargo apr
//! run`, streaming, every bad input, the tracing headers, the bounded queue,
//! a client hanging up, graceful shutdown, a bounded load test, and the
//! official `openai` Python client (scripts/serve_openai_client.py).

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
mod serve_support;
use common::{apr, model};
use serve_support::{Response, Server};

const PROMPT: &str = "What is 2+2?";
const CHAT: &str = "/v1/chat/completions";

/// `cargo apr run`'s greedy text for `PROMPT` (`--raw` for a completion prompt).
fn run_text(max_tokens: usize, extra: &[&str]) -> String {
    run_text_for(PROMPT, max_tokens, extra)
}

fn run_text_for(prompt: &str, max_tokens: usize, extra: &[&str]) -> String {
    let m = model();
    let n = max_tokens.to_string();
    let output =
        apr(&[&["run", &m, "-p", prompt, "-n", &n, "--json"], extra].concat()).assert().code(0).get_output().clone();
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    json["text"].as_str().unwrap().to_string()
}

fn chat_body(max_tokens: usize, stream: bool) -> Value {
    json!({"model": "qwen2.5-coder-0.5b-instruct", "messages": [{"role": "user", "content": PROMPT}],
           "temperature": 0, "max_tokens": max_tokens, "stream": stream})
}

/// The text of a streamed chat response, and whether it ended with `[DONE]`.
fn streamed_text(response: &Response) -> (String, bool) {
    let data = response.sse_data();
    let text = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect();
    (text, data.last().is_some_and(|d| d == "[DONE]"))
}

#[test]
fn greedy_answers_equal_cargo_apr_run_streamed_or_not() {
    let server = Server::start(&model(), &[]);
    let expected = run_text(24, &[]);
    let whole = server.post_json(CHAT, &chat_body(24, false));
    assert_eq!(whole.status, 200, "{}", whole.body);
    let body = whole.json();
    assert_eq!(body["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(body["usage"]["prompt_tokens"], 36, "the 0.5B's template makes 36 prompt tokens");
    let completion = body["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion));
    let stream = server.post_json(CHAT, &chat_body(24, true));
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").unwrap_or_default().starts_with("text/event-stream"));
    assert_eq!(streamed_text(&stream), (expected, true));
}

/// Different prompts decoded in the same batched steps: each gets its own
/// greedy answer (a mix-up of sequences, caches or logits would show here).
#[test]
fn concurrent_requests_batched_together_each_get_their_own_greedy_answer() {
    let server = Server::start(&model(), &["--parallel", "3"]);
    let prompts = ["What is 2+2?", "Name a prime number.", "Write hello world in C."];
    let answers: Vec<String> = std::thread::scope(|scope| {
        let asks: Vec<_> = prompts
            .iter()
            .map(|p| {
                let body = json!({"messages": [{"role": "user", "content": p}], "temperature": 0, "max_tokens": 20});
                let server = &server;
                scope.spawn(move || server.post_json(CHAT, &body).json()["choices"][0]["message"]["content"].clone())
            })
            .collect();
        asks.into_iter().map(|a| a.join().unwrap().as_str().unwrap_or_default().to_string()).collect()
    });
    for (prompt, answer) in prompts.iter().zip(&answers) {
        assert_eq!(answer, &run_text_for(prompt, 20, &[]), "{prompt}");
    }
}

#[test]
fn completions_take_raw_prompts_and_report_logprobs() {
    let server = Server::start(&model(), &[]);
    let expected = run_text(8, &["--raw", "--parse-special"]);
    let body = json!({"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "logprobs": 3});
    let response = server.post_json("/v1/completions", &body);
    assert_eq!(response.status, 200, "{}", response.body);
    let json = response.json();
    let choice = &json["choices"][0];
    assert_eq!(choice["text"], expected.as_str());
    let logprobs = &choice["logprobs"];
    let tokens = logprobs["tokens"].as_array().unwrap();
    assert_eq!(tokens.concat_text(), expected);
    for (i, lp) in logprobs["token_logprobs"].as_array().unwrap().iter().enumerate() {
        let lp = lp.as_f64().unwrap();
        assert!(lp <= 0.0, "a log-probability is at most 0, got {lp}");
        // Greedy: the chosen token is the most likely one, first among the alternatives.
        let top = logprobs["top_logprobs"][i].as_object().unwrap();
        assert_eq!(top.len(), 3);
        let best = top.values().map(|v| v.as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        assert!((best - lp).abs() < 1e-4, "greedy token {i}: {lp} vs best {best}");
    }
}

trait ConcatText {
    fn concat_text(&self) -> String;
}

impl ConcatText for Vec<Value> {
    fn concat_text(&self) -> String {
        self.iter().filter_map(Value::as_str).collect()
    }
}

/// Each bad input, its status and the field or words the error names.
#[test]
fn bad_inputs_get_openai_errors_with_the_right_status() {
    let server = Server::start(&model(), &["--ctx-size", "64", "--body-limit", "8192"]);
    let long = "word ".repeat(200);
    let message = |content: &str| json!([{"role": "user", "content": content}]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", b"{\"messages\": [".to_vec(), 400, "not valid JSON"),
        ("wrong type", json!({"messages": "hi"}).to_string().into_bytes(), 400, "invalid type"),
        ("unknown model", json!({"model": "gpt-9", "messages": message("hi")}).to_string().into_bytes(), 404, "gpt-9"),
        ("empty messages", json!({"messages": []}).to_string().into_bytes(), 400, "at least one message"),
        (
            "unknown role",
            json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string().into_bytes(),
            400,
            "wizard",
        ),
        (
            "prompt past the context",
            json!({"messages": message(&long)}).to_string().into_bytes(),
            400,
            "context of 64 tokens",
        ),
        (
            "body over the limit",
            json!({"messages": message(&"x".repeat(10_000))}).to_string().into_bytes(),
            413,
            "8192",
        ),
        (
            "max_tokens 0",
            json!({"messages": message("hi"), "max_tokens": 0}).to_string().into_bytes(),
            400,
            "max_tokens",
        ),
        (
            "absurd max_tokens",
            json!({"messages": message("hi"), "max_tokens": 1_000_000_000_000u64}).to_string().into_bytes(),
            400,
            "max_tokens",
        ),
        (
            "max_tokens past the context",
            json!({"messages": message("hi"), "max_tokens": 60}).to_string().into_bytes(),
            400,
            "at most",
        ),
        (
            "NaN temperature",
            br#"{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}"#.to_vec(),
            400,
            "not valid JSON",
        ),
        (
            "temperature as text",
            json!({"messages": message("hi"), "temperature": "NaN"}).to_string().into_bytes(),
            400,
            "invalid type",
        ),
        (
            "temperature out of range",
            json!({"messages": message("hi"), "temperature": 7}).to_string().into_bytes(),
            400,
            "temperature",
        ),
        ("top_p out of range", json!({"messages": message("hi"), "top_p": 0}).to_string().into_bytes(), 400, "top_p"),
        ("invalid UTF-8", b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}".to_vec(), 400, "UTF-8"),
        ("n > 1", json!({"messages": message("hi"), "n": 2}).to_string().into_bytes(), 400, "n = 1"),
    ];
    for (what, body, status, words) in cases {
        let response = server.request("POST", CHAT, &[("Content-Type", "application/json")], &body);
        assert_eq!(response.status, status, "{what}: {}", response.body);
        let error = &response.json()["error"];
        let text = error["message"].as_str().unwrap_or_else(|| panic!("{what}: no message in {}", response.body));
        assert!(text.contains(words), "{what}: {text:?} does not say {words:?}");
        assert!(error["type"].is_string(), "{what}: no type");
        assert!(error.get("param").is_some() && error.get("code").is_some(), "{what}: {error}");
    }
    let empty_prompt = server.post_json("/v1/completions", &json!({"prompt": ""}));
    assert_eq!(empty_prompt.status, 400);
    assert_eq!(empty_prompt.json()["error"]["param"], "prompt");
    let unknown = server.request("GET", "/v2/nothing", &[], b"");
    assert_eq!((unknown.status, unknown.json()["error"]["code"].as_str()), (404, Some("not_found")));
    let wrong_method = server.request("GET", CHAT, &[], b"");
    assert_eq!(wrong_method.status, 405);
    // After all that, the server still answers.
    let fine = server.post_json(CHAT, &json!({"messages": message("hi"), "max_tokens": 2, "temperature": 0}));
    assert_eq!(fine.status, 200, "{}", fine.body);
    assert_no_errors_logged(&server);
}

#[test]
fn a_model_that_cannot_load_ends_the_server_with_exit_1_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gguf");
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&broken, &bytes[..4096]).unwrap();
    let mut command = apr(&["serve", broken.to_str().unwrap(), "--port", "0"]);
    let (_, stderr) = common::outputs(command.timeout(Duration::from_secs(120)), 1);
    assert!(stderr.contains("error: ") && stderr.contains("broken.gguf"), "{stderr}");
}

#[test]
fn an_api_key_is_required_when_one_is_set() {
    let server = Server::start(&model(), &["--api-key", "sesame"]);
    let body = chat_body(2, false).to_string();
    let json = ("Content-Type", "application/json");
    let missing = server.request("POST", CHAT, &[json], body.as_bytes());
    let wrong = server.request("POST", CHAT, &[json, ("Authorization", "Bearer nope")], body.as_bytes());
    let right = server.request("POST", CHAT, &[json, ("Authorization", "Bearer sesame")], body.as_bytes());
    assert_eq!((missing.status, wrong.status, right.status), (401, 401, 200), "{}", right.body);
    assert_eq!(wrong.json()["error"]["code"], "invalid_api_key");
    assert_eq!(server.request("GET", "/v1/models", &[], b"").status, 401);
    assert_eq!(server.request("GET", "/health", &[], b"").status, 200, "health needs no key");
}

#[test]
fn health_and_models_name_the_model_and_backend() {
    let server = Server::start(&model(), &[]);
    let health = server.request("GET", "/health", &[], b"").json();
    assert_eq!((health["status"].as_str(), health["backend"].as_str()), (Some("ok"), Some("cpu")));
    assert_eq!(health["model"], "qwen2.5-coder-0.5b-instruct");
    let models = server.request("GET", "/v1/models", &[], b"").json();
    assert_eq!(models["data"][0]["id"], "qwen2.5-coder-0.5b-instruct");
}

#[test]
fn trace_headers_return_the_trace_and_untraced_requests_carry_none() {
    let server = Server::start(&model(), &["--trace"]);
    let plain = server.post_json(CHAT, &chat_body(3, false));
    assert!(plain.header("x-trace-time-ms").is_none() && plain.json().get("trace").is_none());

    let traced = server.post_json_with(CHAT, &[("X-Trace-Level", "layer")], &chat_body(3, false));
    assert_eq!(traced.status, 200, "{}", traced.body);
    for name in ["x-trace-time-ms", "x-trace-tokens", "x-trace-tok-per-sec", "x-trace-layers", "x-trace-avg-layer-ms"] {
        let value: f64 = traced.header(name).unwrap_or_else(|| panic!("no {name}")).parse().unwrap();
        assert!(value > 0.0, "{name} = {value}");
    }
    assert_eq!(traced.header("x-trace-layers"), Some("24"));
    let body = traced.json();
    let tokens = body["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(traced.header("x-trace-tokens"), Some(tokens.to_string().as_str()));
    let trace = &body["trace"];
    assert_eq!((trace["schema"].as_str(), trace["level"].as_str()), (Some("apr.trace.v1"), Some("layer")));
    let steps = trace["steps"].as_array().unwrap();
    assert_eq!(steps.len() as u64, tokens, "a prefill and one call per further token");
    assert_eq!(steps[0]["n_tokens"], 36);
    assert_eq!(steps[0]["layers"].as_array().unwrap().len(), 24);
    assert!(trace.get("profile").is_none());

    let profiled = server.post_json_with(CHAT, &[("X-Profile", "true")], &chat_body(2, true));
    let last_chunk = profiled.sse_data().iter().rev().nth(1).map(|d| serde_json::from_str::<Value>(d).unwrap());
    let last_chunk = last_chunk.expect("a chunk before [DONE]");
    assert!(last_chunk["trace"]["profile"].is_object(), "the roofline rides in the last chunk: {last_chunk}");
    assert!(last_chunk["trace_headers"]["x-trace-layers"] == "24");

    let payload = server.post_json_with(CHAT, &[("X-Trace-Level", "payload")], &chat_body(1, false)).json();
    assert!(!payload["trace"]["steps"][0]["boundaries"].as_array().unwrap().is_empty());
    let none = server.post_json_with(CHAT, &[("X-Trace-Level", "none")], &chat_body(1, false));
    assert!(none.header("x-trace-layers").is_none() && none.json().get("trace").is_none());
    let bad = server.post_json_with(CHAT, &[("X-Trace-Level", "loud")], &chat_body(1, false));
    assert_eq!(bad.status, 400);
    let request_lines = |log: &[String]| log.iter().filter(|l| l.contains("prompt +") && l.contains("tok/s")).count();
    let log = server.log_when(|log| request_lines(log) >= 5);
    assert_eq!(request_lines(&log), 5, "--trace logs one line per request: {log:?}");
}

#[test]
fn server_trace_level_layer_logs_each_requests_layer_table() {
    let server = Server::start(&model(), &["--trace-level", "layer"]);
    let response = server.post_json(CHAT, &chat_body(2, false));
    assert_eq!(response.status, 200);
    assert!(response.json().get("trace").is_none(), "the server's own tracing returns nothing to the client");
    let log = server.log_when(|log| log.iter().any(|l| l.contains("attention ms"))).join("\n");
    assert!(log.contains("per-layer table") && log.contains("attention ms"), "{log}");
}

#[test]
fn a_full_queue_answers_503_with_retry_after_and_a_hang_up_frees_the_sequence() {
    let server = Server::start(&model(), &["--parallel", "1", "--queue", "1", "--trace"]);
    let long = json!({"messages": [{"role": "user", "content": "Count to a thousand."}], "max_tokens": 2000, "stream": true, "temperature": 0});
    let json = [("Content-Type", "application/json")];
    let mut running = server.send("POST", CHAT, &json, long.to_string().as_bytes()).unwrap();
    read_first_token(&mut running); // it holds the one sequence
    let mut waiting = server.send("POST", CHAT, &json, long.to_string().as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let refused = server.post_json(CHAT, &chat_body(2, false));
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(running); // hang up: the waiting request must get the sequence
    read_first_token(&mut waiting);
    drop(waiting);
    let started = Instant::now();
    let after = server.post_json(CHAT, &chat_body(2, false));
    assert_eq!(after.status, 200, "{}", after.body);
    assert!(started.elapsed() < Duration::from_secs(120));
    let hang_ups = |log: &[String]| log.iter().filter(|l| l.contains("client went away")).count();
    let log = server.log_when(|log| hang_ups(log) >= 2);
    assert_eq!(hang_ups(&log), 2, "{log:?}");
}

/// Reads a streamed response until its first token's chunk (the headers come
/// as soon as the request is queued; the first chunk once it is decoding).
fn read_first_token(stream: &mut std::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the stream ended before its first token: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
}

#[test]
fn sigterm_lets_in_flight_requests_finish_and_exits_cleanly() {
    let mut server = Server::start(&model(), &[]);
    let body = chat_body(16, true).to_string();
    let mut in_flight = server.send("POST", CHAT, &[("Content-Type", "application/json")], body.as_bytes()).unwrap();
    read_first_token(&mut in_flight);
    server.signal(libc::SIGTERM);
    let mut rest = String::new();
    let _ = in_flight.read_to_string(&mut rest);
    assert!(rest.contains("data: [DONE]"), "the in-flight stream was cut: {rest:?}");
    assert_eq!(server.wait(), Some(0), "{:?}", server.log());
    assert!(server.try_request("GET", "/health", &[], b"").is_err(), "new connections are refused");
    let log = server.log_when(|log| log.iter().any(|l| l == "[serve] stopped")).join("\n");
    assert!(log.contains("SIGTERM") && log.contains("[serve] stopped"), "{log}");
}

/// 16 clients, 64 requests, streamed and not, one client hanging up early:
/// every request answered (200, or 503 on purpose), none lost.
#[test]
fn load_test_answers_every_request() {
    let server = Server::start(&model(), &["--parallel", "4", "--queue", "64"]);
    let started = Instant::now();
    let results: Vec<(u16, Duration, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..16)
            .map(|client| {
                scope.spawn({
                    let server = &server;
                    move || (0..4).map(|i| one_load_request(server, client, i)).collect::<Vec<_>>()
                })
            })
            .collect();
        let quitter = scope.spawn(|| {
            let body = json!({"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": 500, "stream": true});
            let mut stream = server.send("POST", CHAT, &[("Content-Type", "application/json")], body.to_string().as_bytes()).unwrap();
            read_first_token(&mut stream); // then hang up
        });
        quitter.join().unwrap();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 64, "every request got an answer");
    let unexpected: Vec<_> = results.iter().filter(|(s, _, _)| *s != 200 && *s != 503).collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    let mut latencies: Vec<Duration> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    latencies.sort();
    assert!(!latencies.is_empty());
    let tokens: u64 = results.iter().map(|r| r.2).sum();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "load test: {} ok, {} busy; latency p50 {:?} p99 {:?}; {tokens} tokens in {elapsed:?} = {:.1} tok/s",
        latencies.len(),
        results.len() - latencies.len(),
        pct(0.5),
        pct(0.99),
        tokens as f64 / elapsed.as_secs_f64()
    );
    assert_no_errors_logged(&server);
}

/// One request of the load test: its status, latency and completion tokens.
fn one_load_request(server: &Server, client: usize, i: usize) -> (u16, Duration, u64) {
    let stream = (client + i).is_multiple_of(2);
    let body = json!({"messages": [{"role": "user", "content": format!("Give me fact number {i} about the number {client}.")}],
                      "max_tokens": 8, "temperature": 0, "stream": stream,
                      "stream_options": {"include_usage": true}});
    let started = Instant::now();
    let response = server.post_json(CHAT, &body);
    let latency = started.elapsed();
    if response.status != 200 {
        return (response.status, latency, 0);
    }
    let usage = if stream {
        let (_, done) = streamed_text(&response);
        assert!(done, "a stream without [DONE]: {}", response.body);
        let chunks = response.sse_data();
        let usage = chunks.iter().rev().nth(1).map(|d| serde_json::from_str::<Value>(d).unwrap()["usage"].clone());
        usage.unwrap_or(Value::Null)
    } else {
        response.json()["usage"].clone()
    };
    (200, latency, usage["completion_tokens"].as_u64().expect("usage.completion_tokens"))
}

fn assert_no_errors_logged(server: &Server) {
    let errors: Vec<String> =
        server.log().into_iter().filter(|l| l.contains("error") || l.contains("panicked")).collect();
    assert!(errors.is_empty(), "the server logged errors: {errors:?}");
}

/// The official `openai` Python package against the server (scripts/test.sh installs it).
#[test]
fn the_openai_python_client_drives_the_server() {
    let import = std::process::Command::new("python3").args(["-c", "import openai"]).status();
    assert!(
        import.is_ok_and(|s| s.success()),
        "the `openai` Python package is missing: python3 -m pip install openai (scripts/test.sh installs it)"
    );
    let server = Server::start(&model(), &[]);
    let expected = run_text(24, &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/serve_openai_client.py");
    let output = std::process::Command::new("python3")
        .args([script, &format!("http://{}/v1", server.address), &expected])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the openai client script failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
