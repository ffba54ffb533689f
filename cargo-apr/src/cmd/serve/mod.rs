//! `cargo apr serve MODEL`: an OpenAI-compatible HTTP server (axum on tokio).
//!
//! The async side parses, validates and tokenizes requests and writes the
//! responses; one scheduler thread loads the model, then owns the forward pass
//! and every KV cache, decoding all active requests together
//! (`scheduler.rs`). The two meet in a bounded queue of jobs and, per request,
//! a channel of events (tokens, then the end).

mod args;
mod errors;
mod handlers;
mod openai;
mod respond;
mod scheduler;
mod stop;
mod tracing;
mod validate;

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use apr_engine::pipeline::Pipeline;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::oneshot;

pub use args::Args;
use errors::ApiError;
use scheduler::{Job, Queue};

use super::common_args::opened;
use super::threads;

/// Prompts tokenized at once; the rest wait their turn.
const TOKENIZING_AT_ONCE: usize = 4;

/// What every handler sees.
pub struct AppState {
    /// Set by the scheduler thread once the model is loaded.
    loaded: OnceLock<Loaded>,
    /// Set if the scheduler thread panicked: every request, /health
    /// included, is 503 with the reason from then on.
    scheduler_stopped: OnceLock<String>,
    queue: Queue,
    model_id: String,
    /// Names a request's `model` may use for this model.
    model_names: Vec<String>,
    api_key: Option<String>,
    body_limit: usize,
    tracing: tracing::ServerTracing,
    shutting_down: AtomicBool,
    /// Requests tokenizing at once (each may fork the chat template's renderer).
    tokenizing: tokio::sync::Semaphore,
    next_id: AtomicU64,
    started_at: u64,
}

pub struct Loaded {
    pipeline: Arc<Pipeline>,
    ctx_size: usize,
}

impl AppState {
    /// The loaded model, or 503 while loading or shutting down.
    fn ready(&self) -> Result<&Loaded, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("the server is shutting down"));
        }
        if let Some(why) = self.scheduler_stopped.get() {
            return Err(ApiError::unavailable(format!("the scheduler stopped ({why}); restart the server")));
        }
        self.loaded.get().ok_or_else(|| ApiError::unavailable("the model is loading"))
    }

    /// A request naming another model is refused (404, as OpenAI answers).
    fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(name) if !self.model_names.iter().any(|n| n == name) => Err(ApiError::not_found(format!(
                "the model '{name}' does not exist: this server serves '{}'",
                self.model_id
            ))
            .with_code("model_not_found")),
            _ => Ok(()),
        }
    }

    /// The body, or the reason it could not be read (413 past `--body-limit`).
    fn body(
        &self,
        body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<axum::body::Bytes, ApiError> {
        body.map_err(|rejection| {
            let status = rejection.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::invalid(
                    format!("the request body is larger than {} bytes (--body-limit)", self.body_limit),
                    None,
                )
                .with_status(status)
                .with_code("request_too_large")
            } else {
                ApiError::invalid(format!("cannot read the request body: {}", rejection.body_text()), None)
                    .with_status(status)
            }
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    args.check()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2) // the model's threads do the heavy work; these only move bytes
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<u8> {
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address: SocketAddr = listener.local_addr()?;
    // Tests and scripts read the port from this line (`--port 0` picks a free one).
    eprintln!("[serve] listening on http://{address}");
    let (queue, jobs) = Queue::new(args.queue);
    let state = Arc::new(new_state(&args, queue));
    let (load_failed, load_failure) = oneshot::channel();
    let scheduler = {
        let state = state.clone();
        std::thread::Builder::new()
            .name("apr-scheduler".into())
            .spawn(move || load_and_schedule(&args, &state, jobs, load_failed))?
    };
    let app = router(state.clone());
    let failure = Arc::new(Mutex::new(None));
    let shutdown = stop_signal(state.clone(), load_failure, failure.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("serving")?;
    // Every connection is closed: let the scheduler finish what is queued, and end.
    state.queue.close();
    tokio::task::spawn_blocking(move || scheduler.join()).await.ok();
    let failure = failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    match failure {
        Some(error) => Err(error),
        None => {
            eprintln!("[serve] stopped");
            Ok(crate::exit::PASS)
        }
    }
}

fn new_state(args: &Args, queue: Queue) -> AppState {
    let path = args.model.path();
    let model_id = model_id(path);
    let model_names = vec![model_id.clone(), path.display().to_string(), file_name(path)];
    AppState {
        loaded: OnceLock::new(),
        scheduler_stopped: OnceLock::new(),
        queue,
        model_id,
        model_names,
        api_key: args.api_key.clone(),
        body_limit: args.body_limit,
        tracing: args.server_tracing(),
        shutting_down: AtomicBool::new(false),
        tokenizing: tokio::sync::Semaphore::new(TOKENIZING_AT_ONCE),
        next_id: AtomicU64::new(1),
        started_at: handlers::unix_time(),
    }
}

/// The model's name in the API: its file name without the extension.
fn model_id(path: &Path) -> String {
    path.file_stem().map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(handlers::chat_completions))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/models", get(handlers::models))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), handlers::require_api_key));
    Router::new()
        .route("/health", get(handlers::health))
        .merge(api)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(state.body_limit))
        .with_state(state)
}

/// Resolves on SIGINT or SIGTERM (or when the model failed to load): from then
/// on new requests get 503, and axum stops accepting connections and waits for
/// the in-flight ones.
async fn stop_signal(
    state: Arc<AppState>,
    load_failure: oneshot::Receiver<anyhow::Error>,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
) {
    let load_failed = async {
        match load_failure.await {
            Ok(error) => error,
            Err(_) => std::future::pending().await, // loaded: only a signal stops the server
        }
    };
    tokio::select! {
        name = signal() => eprintln!("[serve] {name}: finishing in-flight requests, refusing new ones"),
        error = load_failed => *failure.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error),
    }
    state.shutting_down.store(true, Ordering::SeqCst);
}

async fn signal() -> &'static str {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return interrupt.await.map_or("SIGINT", |_| "SIGINT"),
        };
        tokio::select! {
            _ = interrupt => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
        "interrupt"
    }
}

/// The scheduler thread: sizes the thread pool (this thread is one of its
/// workers, as `run`'s main thread is), loads the model, then schedules until
/// the queue closes.
fn load_and_schedule(args: &Args, state: &AppState, jobs: Receiver<Job>, load_failed: oneshot::Sender<anyhow::Error>) {
    let pipeline = match load(args) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            let _ = load_failed.send(e);
            return;
        }
    };
    let ctx_size = args.ctx_size(pipeline.model.config.context_length);
    eprintln!(
        "[serve] {} loaded on {} in {:.2} s; up to {} sequences of {} positions each ({} of KV cache at most); queue of {}",
        state.model_id,
        pipeline.model.backend_description(),
        pipeline.load_time.as_secs_f64(),
        args.parallel,
        ctx_size,
        super::human_bytes(kv_budget(&pipeline, args.parallel, ctx_size)),
        args.queue
    );
    let config = args.scheduler_config(ctx_size);
    let _ = state.loaded.set(Loaded { pipeline: pipeline.clone(), ctx_size });
    let scheduled = std::panic::catch_unwind(AssertUnwindSafe(|| scheduler::run(&pipeline, &config, jobs)));
    if let Err(panic) = scheduled {
        // A bug, not an input: say so, and stop taking requests that nobody would answer.
        let why =
            panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        let why = why.unwrap_or_else(|| "a panic".into());
        eprintln!("[serve] error: the scheduler stopped: {why}");
        let _ = state.scheduler_stopped.set(why);
        state.queue.close();
    }
}

/// Bytes the KV caches take when all `parallel` sequences are in use: keys and
/// values of every layer, f32, `ctx_size` positions each (taken as caches are first used).
fn kv_budget(pipeline: &Pipeline, parallel: usize, ctx_size: usize) -> u64 {
    let c = &pipeline.model.config;
    let per_position = 2 * c.layers * c.kv_heads * c.head_dim * std::mem::size_of::<f32>();
    (parallel * ctx_size * per_position) as u64
}

fn load(args: &Args) -> anyhow::Result<Pipeline> {
    threads::configure(args.threads)?;
    opened(args.model.path(), Pipeline::open_on(args.model.path(), args.backend.backend))
}
