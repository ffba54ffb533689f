//! A `cargo apr serve` child on an ephemeral loopback port (this same
//! executable), and the small blocking HTTP client the tracing checks and
//! `--against` use (reqwest on a current-thread tokio runtime, as `fetch`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

/// How long a server may take to load the model and answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

impl Http {
    pub fn new() -> anyhow::Result<Http> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;
        Ok(Http { runtime, client })
    }

    pub fn get(&self, url: &str) -> anyhow::Result<Reply> {
        self.send(self.client.get(url))
    }

    pub fn post_json(&self, url: &str, headers: &[(&str, &str)], body: &Value) -> anyhow::Result<Reply> {
        let mut request = self.client.post(url).header("content-type", "application/json").body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request)
    }

    fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
        let started = Instant::now();
        self.runtime.block_on(async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await?;
            Ok(Reply { status, headers, body, elapsed: started.elapsed() })
        })
    }
}

/// A running `serve` child; killed and reaped when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve MODEL --port 0 EXTRA` and waits until `/health` is 200.
    pub fn start(model: &Path, extra: &[&str], http: &Http) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("cannot find the running executable")?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start `serve`")?;
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(address) = line.strip_prefix("[serve] listening on http://") {
                    let _ = address_tx.send(address.to_string());
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        let mut server = Server { child, base: String::new(), log };
        let address = address_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow::anyhow!("serve did not start listening: {}", server.log().join("\n")))?;
        server.base = format!("http://{address}");
        server.wait_until_healthy(http)?;
        Ok(server)
    }

    fn wait_until_healthy(&mut self, http: &Http) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("serve exited ({status}): {}", self.log().join("\n"));
            }
            if http.get(&format!("{}/health", self.base)).is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("serve did not become healthy within {} s", START_TIMEOUT.as_secs())
    }

    /// Its stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Its stderr once `done` holds of it (a line may be read after the answer it
    /// belongs to), or after a few seconds.
    pub fn log_when(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first model the server lists (`/v1/models`): requests must name it
/// (`cargo apr serve` and Ollama refuse other names).
pub fn model_id(http: &Http, base: &str) -> anyhow::Result<String> {
    let url = format!("{}/v1/models", base.trim_end_matches('/'));
    let reply = http.get(&url)?;
    let id = reply.json()["data"][0]["id"].as_str().map(String::from);
    id.ok_or_else(|| anyhow::anyhow!("{url}: status {}, no model listed: {}", reply.status, reply.body))
}

/// A chat request of `max_tokens` greedy tokens to `model`.
pub fn chat_body(model: &str, question: &str, system: Option<&str>, max_tokens: usize) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.push(serde_json::json!({"role": "user", "content": question}));
    serde_json::json!({"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0})
}
