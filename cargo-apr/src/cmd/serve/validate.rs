//! Request bodies to validated generation settings: every value a client can
//! get wrong is checked here and refused with a 400 naming the field.

use apr_engine::generate::SamplingParams;
use apr_engine::tokenizer::chat::ChatMessage;
use axum::body::Bytes;
use serde::de::DeserializeOwned;

use super::errors::ApiError;
use super::openai::{Content, GenerationParams, Prompt, RequestMessage, Stop};

/// OpenAI's own limits on a request's stop sequences and listed alternatives.
const MAX_STOPS: usize = 4;
const MAX_TOP_LOGPROBS: u32 = 20;
const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// A body as `T`: invalid UTF-8, malformed JSON and wrong types are each a 400 saying which.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::invalid(format!("the request body is not valid UTF-8 (at byte {})", e.valid_up_to()), None)
    })?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}"), None))?;
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid request: {e}"), None))
}

/// The generation settings shared by both endpoints.
#[derive(Debug, Clone)]
pub struct Settings {
    /// None: as many as the context holds.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

pub fn settings(p: &GenerationParams, ctx_size: usize) -> Result<Settings, ApiError> {
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only n = 1 is supported", Some("n")));
    }
    let sampling = sampling(p)?;
    Ok(Settings {
        max_tokens: max_tokens(p, ctx_size)?,
        sampling,
        stop: stop_sequences(p.stop.as_ref())?,
        stream: p.stream.unwrap_or(false),
        include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

fn max_tokens(p: &GenerationParams, ctx_size: usize) -> Result<Option<usize>, ApiError> {
    let Some(asked) = p.max_completion_tokens.or(p.max_tokens) else { return Ok(None) };
    if asked < 1 {
        return Err(ApiError::invalid(format!("max_tokens must be at least 1, got {asked}"), Some("max_tokens")));
    }
    if asked as u64 > ctx_size as u64 {
        return Err(ApiError::invalid(
            format!("max_tokens {asked} is more than the context of {ctx_size} tokens (--ctx-size) can hold"),
            Some("max_tokens"),
        ));
    }
    Ok(Some(asked as usize))
}

/// OpenAI's defaults: temperature 1 and top-p 1; a sampled request without a
/// seed gets a fresh one.
fn sampling(p: &GenerationParams) -> Result<SamplingParams, ApiError> {
    let temperature = p.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && (0.0..=2.0).contains(&temperature)) {
        return Err(ApiError::invalid("temperature must be a number from 0 to 2", Some("temperature")));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid("top_p must be in (0, 1]", Some("top_p")));
    }
    let top_k = p.top_k.unwrap_or(0);
    if top_k < 0 {
        return Err(ApiError::invalid("top_k must be 0 (no cut) or more", Some("top_k")));
    }
    let seed = p.seed.map_or_else(fresh_seed, |s| s as u64);
    Ok(SamplingParams { temperature: temperature as f32, top_k: top_k as usize, top_p: top_p as f32, seed })
}

fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| d.as_nanos() as u64)
}

fn stop_sequences(stop: Option<&Stop>) -> Result<Vec<String>, ApiError> {
    let stops = match stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid(format!("at most {MAX_STOPS} stop sequences"), Some("stop")));
    }
    Ok(stops)
}

/// How many alternatives a chat request wants listed, if it wants log-probabilities.
pub fn chat_logprobs(logprobs: Option<bool>, top: Option<u32>) -> Result<Option<usize>, ApiError> {
    match (logprobs.unwrap_or(false), top) {
        (false, Some(_)) => Err(ApiError::invalid("top_logprobs needs logprobs: true", Some("top_logprobs"))),
        (false, None) => Ok(None),
        (true, top) => Ok(Some(alternatives(top.unwrap_or(0), "top_logprobs")?)),
    }
}

/// The completions API's `logprobs`: the number of alternatives itself.
pub fn completion_logprobs(logprobs: Option<u32>) -> Result<Option<usize>, ApiError> {
    logprobs.map(|n| alternatives(n, "logprobs")).transpose()
}

fn alternatives(n: u32, param: &'static str) -> Result<usize, ApiError> {
    if n > MAX_TOP_LOGPROBS {
        return Err(ApiError::invalid(format!("{param} must be at most {MAX_TOP_LOGPROBS}"), Some(param)));
    }
    Ok(n as usize)
}

/// The conversation as the chat template takes it.
pub fn messages(messages: &[RequestMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages must hold at least one message", Some("messages")));
    }
    messages.iter().map(message).collect()
}

fn message(m: &RequestMessage) -> Result<ChatMessage, ApiError> {
    if !ROLES.contains(&m.role.as_str()) {
        return Err(ApiError::invalid(
            format!("unknown role '{}': expected one of {}", m.role, ROLES.join(", ")),
            Some("messages"),
        ));
    }
    let content = match &m.content {
        None => String::new(),
        Some(Content::Text(text)) => text.clone(),
        Some(Content::Parts(parts)) => text_parts(parts)?,
    };
    Ok(ChatMessage::new(m.role.clone(), content))
}

fn text_parts(parts: &[super::openai::ContentPart]) -> Result<String, ApiError> {
    parts
        .iter()
        .map(|p| match (p.kind.as_str(), &p.text) {
            ("text", Some(text)) => Ok(text.as_str()),
            _ => Err(ApiError::invalid(
                format!("content part of type '{}' is not supported: only text", p.kind),
                Some("messages"),
            )),
        })
        .collect()
}

/// The one prompt of a completions request.
pub fn prompt(prompt: &Prompt) -> Result<String, ApiError> {
    let text = match prompt {
        Prompt::Text(text) => text,
        Prompt::Texts(texts) if texts.len() == 1 => &texts[0],
        Prompt::Texts(_) => {
            return Err(ApiError::invalid("exactly one prompt per request is supported", Some("prompt")))
        }
    };
    if text.is_empty() {
        return Err(ApiError::invalid("the prompt is empty: there is nothing to complete", Some("prompt")));
    }
    Ok(text.clone())
}

/// How many tokens may be generated after `prompt` tokens: refuses a prompt
/// past the context and a `max_tokens` that does not fit after it. The last
/// sampled token is never fed back, so it needs no position.
pub fn budget(
    prompt: usize,
    max_tokens: Option<usize>,
    ctx_size: usize,
    param: &'static str,
) -> Result<usize, ApiError> {
    if prompt > ctx_size {
        return Err(ApiError::invalid(
            format!("the prompt has {prompt} tokens, more than the context of {ctx_size} tokens (--ctx-size)"),
            Some(param),
        )
        .with_code("context_length_exceeded"));
    }
    let room = ctx_size + 1 - prompt;
    match max_tokens {
        Some(asked) if asked > room => Err(ApiError::invalid(
            format!(
                "the prompt has {prompt} tokens and max_tokens is {asked}: more than the context of {ctx_size} \
                 tokens (--ctx-size); at most {room} new tokens fit"
            ),
            Some("max_tokens"),
        )
        .with_code("context_length_exceeded")),
        Some(asked) => Ok(asked),
        None => Ok(room),
    }
}
