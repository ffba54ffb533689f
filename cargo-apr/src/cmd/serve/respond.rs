//! The scheduler's events for one request, turned into an OpenAI response:
//! one JSON body, or a stream of server-sent events ending in `data: [DONE]`.

use std::convert::Infallible;
use std::sync::Arc;

use apr_engine::pipeline::Pipeline;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::errors::ApiError;
use super::openai::{ChatLogprob, ChatLogprobs, CompletionLogprobs};
use super::scheduler::{Event, Finish};
use super::tracing::{self, RequestTracing};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// What every response of one request shares.
pub struct Reply {
    pub endpoint: Endpoint,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub logprobs: bool,
    pub include_usage: bool,
    pub tracing: RequestTracing,
    pub pipeline: Arc<Pipeline>,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// The envelope of a response or chunk around `choices`.
    fn envelope(&self, chunk: bool, choices: Value) -> Value {
        json!({"id": self.id, "object": self.object(chunk), "created": self.created, "model": self.model, "choices": choices})
    }

    fn logprobs_json(&self, entries: &[ChatLogprob], text_offset: usize) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        match self.endpoint {
            Endpoint::Chat => json!(ChatLogprobs { content: entries.to_vec() }),
            Endpoint::Completion => {
                let mut out = CompletionLogprobs::default();
                out.extend(entries, text_offset);
                json!(out)
            }
        }
    }

    /// The trace document and its summary, when the client asked for them.
    async fn trace_json(&self, finish: &Finish) -> Option<Value> {
        let trace = finish.trace.clone().filter(|_| self.tracing.returned)?;
        let pipeline = self.pipeline.clone();
        let profile = self.tracing.profile;
        // The roofline measures the machine and walks every step: not on an async thread.
        tokio::task::spawn_blocking(move || tracing::document(&pipeline.model, &trace, profile)).await.ok()
    }

    fn layers(&self) -> usize {
        self.pipeline.model.config.layers
    }
}

/// Waits for the whole generation and answers with one JSON body.
pub async fn whole(reply: Reply, mut events: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut entries = Vec::new();
    let finish = loop {
        match events.recv().await {
            Some(Event::Token(t)) => {
                text.push_str(&t.text);
                entries.extend(t.logprob);
            }
            Some(Event::Done(finish)) => break finish,
            Some(Event::Failed(message)) => return ApiError::internal(message).into_response(),
            None => return ApiError::internal("the scheduler stopped before the request finished").into_response(),
        }
    };
    let logprobs = reply.logprobs_json(&entries, 0);
    let choice = match reply.endpoint {
        Endpoint::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": logprobs, "finish_reason": finish.reason.as_str()}),
        Endpoint::Completion => json!({"index": 0, "text": text, "logprobs": logprobs,
                                       "finish_reason": finish.reason.as_str()}),
    };
    let mut body = reply.envelope(false, json!([choice]));
    body["usage"] = json!(finish.usage);
    if let Some(trace) = reply.trace_json(&finish).await {
        body["trace"] = trace;
    }
    let mut response = Json(body).into_response();
    if reply.tracing.returned {
        response.headers_mut().extend(tracing::summary_headers(&finish, reply.layers()));
    }
    response
}

/// Streams the generation as server-sent events, one chunk per token.
pub fn streamed(reply: Reply, events: UnboundedReceiver<Event>) -> Response {
    let state = StreamState { reply, events, started: false, done: false, text_offset: 0 };
    let chunks = stream::unfold(state, |mut state| async move {
        let batch = state.next_events().await?;
        Some((stream::iter(batch.into_iter().map(Ok::<_, Infallible>)), state))
    })
    .flatten();
    Sse::new(chunks).into_response()
}

/// Where a stream is; dropped (and with it the scheduler's receiver) when the client goes away.
struct StreamState {
    reply: Reply,
    events: UnboundedReceiver<Event>,
    started: bool,
    done: bool,
    text_offset: usize,
}

impl StreamState {
    /// The SSE events for the scheduler's next event; None once `[DONE]` is sent.
    async fn next_events(&mut self) -> Option<Vec<SseEvent>> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        if !self.started && self.reply.endpoint == Endpoint::Chat {
            out.push(data(self.delta(json!({"role": "assistant", "content": ""}), Value::Null, None)));
        }
        self.started = true;
        match self.events.recv().await {
            Some(Event::Token(t)) if t.text.is_empty() && t.logprob.is_none() => {}
            Some(Event::Token(t)) => {
                let logprobs = self.reply.logprobs_json(t.logprob.as_slice(), self.text_offset);
                self.text_offset += t.text.len();
                out.push(data(self.delta(json!({"content": t.text}), logprobs, None)));
            }
            Some(Event::Done(finish)) => out.extend(self.ending(&finish).await),
            Some(Event::Failed(message)) => out.extend(self.failure(ApiError::internal(message))),
            None => out.extend(self.failure(ApiError::internal("the scheduler stopped before the request finished"))),
        }
        Some(out)
    }

    /// One choice of a chunk: chat's `delta`, or completions' `text`.
    fn delta(&self, delta: Value, logprobs: Value, finish_reason: Option<&str>) -> Value {
        let choice = match self.reply.endpoint {
            Endpoint::Chat => json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}),
            Endpoint::Completion => json!({"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                                           "logprobs": logprobs, "finish_reason": finish_reason}),
        };
        self.reply.envelope(true, json!([choice]))
    }

    /// The finish reason, the usage (when asked), the trace (when asked), `[DONE]`.
    async fn ending(&mut self, finish: &Finish) -> Vec<SseEvent> {
        self.done = true;
        let mut out = vec![data(self.delta(json!({}), Value::Null, Some(finish.reason.as_str())))];
        if self.reply.include_usage {
            let mut chunk = self.reply.envelope(true, json!([]));
            chunk["usage"] = json!(finish.usage);
            out.push(data(chunk));
        }
        if let Some(trace) = self.reply.trace_json(finish).await {
            // Headers left before the trace existed: the summary rides in this last chunk.
            let mut chunk = self.reply.envelope(true, json!([]));
            chunk["trace"] = trace;
            chunk["trace_headers"] = tracing::summary_json(finish, self.reply.layers());
            out.push(data(chunk));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }

    fn failure(&mut self, error: ApiError) -> Vec<SseEvent> {
        self.done = true;
        vec![SseEvent::default().data(error.to_json()), SseEvent::default().data("[DONE]")]
    }
}

fn data(value: Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}
