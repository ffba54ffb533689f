//! The routes: request in, validated job to the scheduler, response out.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::errors::ApiError;
use super::openai::{ChatRequest, CompletionRequest};
use super::respond::{self, Endpoint, Reply};
use super::scheduler::Job;
use super::tracing::RequestTracing;
use super::validate::{self, parse_body, Settings};
use super::{AppState, Loaded};
use apr_engine::pipeline::PromptMode;

/// `GET /health`: 200 with the model and backend once loaded, 503 before
/// (and after the scheduler stopped, or while shutting down).
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
    match state.ready() {
        Ok(loaded) => Json(json!({
            "status": "ok",
            "model": state.model_id,
            "backend": loaded.pipeline.model.backend_name(),
        }))
        .into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /v1/models`: the one model this server serves.
pub async fn models(State(state): State<Arc<AppState>>) -> Response {
    Json(json!({
        "object": "list",
        "data": [{"id": state.model_id, "object": "model", "created": state.started_at, "owned_by": "apr"}],
    }))
    .into_response()
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    chat(state, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    completion(state, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// Any other path: an OpenAI-style 404.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!("no route for {} {}", request.method(), request.uri().path()))
}

/// A known path with the wrong method.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::invalid(format!("{} is not allowed on {}", request.method(), request.uri().path()), None)
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// With `--api-key`: `Authorization: Bearer KEY` or 401.
pub async fn require_api_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let Some(key) = &state.api_key else { return next.run(request).await };
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match given.and_then(|v| v.strip_prefix("Bearer ")) {
        Some(token) if token.trim() == key => next.run(request).await,
        Some(_) => ApiError::unauthorized("incorrect API key").into_response(),
        None => ApiError::unauthorized("missing API key: send Authorization: Bearer KEY").into_response(),
    }
}

async fn chat(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let loaded = state.ready()?;
    let request: ChatRequest = parse_body(&state.body(body)?)?;
    state.check_model(request.model.as_deref())?;
    let settings = validate::settings(&request.params, loaded.ctx_size)?;
    let logprobs = validate::chat_logprobs(request.logprobs, request.top_logprobs)?;
    let messages = validate::messages(&request.messages)?;
    let tracing = RequestTracing::from_headers(&headers, state.tracing)?;
    let pipeline = loaded.pipeline.clone();
    // The same path as `cargo apr run`: the model's template, the user's text never parsed for special tokens.
    let prompt = tokenize(&state, move || pipeline.chat_tokens(&messages, false)).await?;
    let job = Prepared { endpoint: Endpoint::Chat, prompt, settings, logprobs, tracing, prompt_param: "messages" };
    start(&state, loaded, job).await
}

async fn completion(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let loaded = state.ready()?;
    let request: CompletionRequest = parse_body(&state.body(body)?)?;
    state.check_model(request.model.as_deref())?;
    if request.echo == Some(true) {
        return Err(ApiError::invalid("echo is not supported", Some("echo")));
    }
    let settings = validate::settings(&request.params, loaded.ctx_size)?;
    let logprobs = validate::completion_logprobs(request.logprobs)?;
    let text = validate::prompt(&request.prompt)?;
    let tracing = RequestTracing::from_headers(&headers, state.tracing)?;
    let pipeline = loaded.pipeline.clone();
    // A completion prompt is raw text in the model's own markup, special tokens
    // included, as llama-server reads it (`cargo apr run --raw --parse-special`).
    let mode = PromptMode { raw: true, parse_special: true };
    let prompt = tokenize(&state, move || pipeline.prompt_tokens_with(&text, None, mode)).await?;
    let job = Prepared { endpoint: Endpoint::Completion, prompt, settings, logprobs, tracing, prompt_param: "prompt" };
    start(&state, loaded, job).await
}

/// Tokenizing renders the chat template in a child process: off the async
/// threads, and only a few at once (a flood of requests must not fork a
/// process each before the queue can refuse them).
async fn tokenize(
    state: &AppState,
    work: impl FnOnce() -> apr_engine::Result<Vec<u32>> + Send + 'static,
) -> Result<Vec<u32>, ApiError> {
    let _permit = state.tokenizing.acquire().await.map_err(|_| ApiError::unavailable("the server is shutting down"))?;
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(tokens)) => Ok(tokens),
        Ok(Err(e)) => Err(ApiError::invalid(e.to_string(), None)),
        Err(e) => Err(ApiError::internal(format!("tokenizing failed: {e}"))),
    }
}

/// A request ready for the scheduler.
struct Prepared {
    endpoint: Endpoint,
    prompt: Vec<u32>,
    settings: Settings,
    logprobs: Option<usize>,
    tracing: RequestTracing,
    prompt_param: &'static str,
}

/// Checks the prompt against the context, queues the job, and answers as the request asked.
async fn start(state: &AppState, loaded: &Loaded, p: Prepared) -> Result<Response, ApiError> {
    let max_tokens = validate::budget(p.prompt.len(), p.settings.max_tokens, loaded.ctx_size, p.prompt_param)?;
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (sender, events) = tokio::sync::mpsc::unbounded_channel();
    state.queue.submit(Job {
        id,
        prompt: p.prompt,
        max_tokens,
        sampling: p.settings.sampling,
        stop: p.settings.stop.clone(),
        logprobs: p.logprobs,
        trace: p.tracing.level,
        received: Instant::now(),
        events: sender,
    })?;
    let prefix = if p.endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
    let reply = Reply {
        endpoint: p.endpoint,
        id: format!("{prefix}-{id}"),
        created: unix_time(),
        model: state.model_id.clone(),
        logprobs: p.logprobs.is_some(),
        include_usage: p.settings.include_usage,
        tracing: p.tracing,
        pipeline: loaded.pipeline.clone(),
    };
    if p.settings.stream {
        Ok(respond::streamed(reply, events))
    } else {
        Ok(respond::whole(reply, events).await)
    }
}

pub fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
