//! Per-request tracing: which level a request asked for (`X-Trace-Level`,
//! `X-Profile`, or the server's own flags), the `X-Trace-*` summary headers,
//! and the trace document returned in the response (the `--trace-output`
//! schema, with the roofline when profiled).

use std::sync::OnceLock;

use apr_engine::model::Model;
use apr_engine::trace::profile::{self, Machine};
use apr_engine::trace::{Trace, TraceLevel};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::errors::ApiError;
use super::scheduler::Finish;

/// A `--trace-level` or `X-Trace-Level` value: `none` is no tracing.
pub fn parse_level(text: &str) -> Result<Option<TraceLevel>, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(None),
        "basic" => Ok(Some(TraceLevel::Basic)),
        "layer" => Ok(Some(TraceLevel::Layer)),
        "payload" => Ok(Some(TraceLevel::Payload)),
        other => Err(format!("unknown trace level '{other}': expected none, basic, layer or payload")),
    }
}

/// What the server's flags trace for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTracing {
    /// `--trace-level`: every request runs under a tracer at this level.
    pub level: Option<TraceLevel>,
    /// `--profile`: traced responses carry the roofline.
    pub profile: bool,
}

/// What one request gets back.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTracing {
    /// The level its tracer runs at (the higher of the header's and the server's).
    pub level: Option<TraceLevel>,
    /// Whether the trace goes back in the response (the client asked for it).
    pub returned: bool,
    pub profile: bool,
}

impl RequestTracing {
    pub fn from_headers(headers: &HeaderMap, server: ServerTracing) -> Result<RequestTracing, ApiError> {
        let asked = match header_text(headers, "x-trace-level")? {
            Some(text) => parse_level(text).map_err(|e| ApiError::invalid(format!("X-Trace-Level: {e}"), None))?,
            None => None,
        };
        let profile = match header_text(headers, "x-profile")? {
            Some(text) => parse_bool(text)?,
            None => false,
        };
        // A roofline needs a trace to place on it: X-Profile alone traces at the basic level.
        let asked = asked.or(profile.then_some(TraceLevel::Basic));
        Ok(RequestTracing {
            level: asked.max(server.level),
            returned: asked.is_some(),
            profile: asked.is_some() && (profile || server.profile),
        })
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| ApiError::invalid(format!("header {name} is not visible ASCII"), None)))
        .transpose()
}

fn parse_bool(text: &str) -> Result<bool, ApiError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(ApiError::invalid(format!("X-Profile: '{other}' is not true or false"), None)),
    }
}

/// The `X-Trace-*` summary of a finished traced request (tok/s over the whole
/// request; the decode rate alone and the time to first token besides).
pub fn summary_headers(finish: &Finish, layers: usize) -> Vec<(HeaderName, HeaderValue)> {
    let steps = finish.trace.as_ref().map_or(&[][..], |t| &t.steps[..]);
    let layer_ms: f64 = steps.iter().map(|s| s.layers_ms).sum();
    let avg_layer_ms = if steps.is_empty() || layers == 0 { 0.0 } else { layer_ms / (steps.len() * layers) as f64 };
    let tokens = finish.usage.completion_tokens;
    let tok_per_sec = if finish.total_ms > 0.0 { tokens as f64 * 1e3 / finish.total_ms } else { 0.0 };
    [
        ("x-trace-time-ms", format!("{:.3}", finish.total_ms)),
        ("x-trace-tokens", tokens.to_string()),
        ("x-trace-tok-per-sec", format!("{tok_per_sec:.3}")),
        ("x-trace-layers", layers.to_string()),
        ("x-trace-avg-layer-ms", format!("{avg_layer_ms:.4}")),
        ("x-trace-first-token-ms", format!("{:.3}", finish.first_token_ms)),
        ("x-trace-decode-tok-per-sec", format!("{:.3}", finish.decode_tok_s)),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((HeaderName::from_static(name), HeaderValue::from_str(&value).ok()?)))
    .collect()
}

/// The same summary as a JSON object (a streamed response's headers are sent
/// before the trace exists, so its final event carries them).
pub fn summary_json(finish: &Finish, layers: usize) -> Value {
    let map = summary_headers(finish, layers)
        .into_iter()
        .map(|(name, value)| (name.as_str().to_string(), Value::from(value.to_str().unwrap_or_default())))
        .collect();
    Value::Object(map)
}

/// The trace document as `--trace-output` writes it, with the roofline when asked.
/// Measuring the machine takes a moment: done once per server, off the async threads.
pub fn document(model: &Model, trace: &Trace, profile: bool) -> Value {
    let mut json = serde_json::to_value(trace).unwrap_or(Value::Null);
    json["schema"] = Value::from("apr.trace.v1");
    if profile {
        static MACHINE: OnceLock<Machine> = OnceLock::new();
        let roofline = profile::profile(model, &trace.steps, *MACHINE.get_or_init(Machine::measure));
        json["profile"] = serde_json::to_value(roofline).unwrap_or(Value::Null);
    }
    json
}
