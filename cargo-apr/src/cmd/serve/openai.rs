//! The OpenAI request and response bodies the server reads and writes
//! (the subset llama.cpp's `llama-server` also speaks). Unknown request
//! fields are ignored, as OpenAI's own API does for clients newer than it.

use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<RequestMessage>,
    #[serde(flatten)]
    pub params: GenerationParams,
    /// Chat: whether to return log-probabilities (`top_logprobs` says how many alternatives).
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub params: GenerationParams,
    /// Completions: how many alternatives to list per token (0 = only the chosen one).
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
}

/// The sampling and stopping fields both endpoints share.
#[derive(Debug, Deserialize, Default)]
pub struct GenerationParams {
    pub max_tokens: Option<i64>,
    /// The newer name of `max_tokens` in the chat API.
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    pub content: Option<Content>,
}

/// A message's content: a string, or an array of parts of which only text is understood.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }
    }
}

/// One alternative of a chat log-probability entry.
#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// A chat `logprobs.content[]` entry: the chosen token and its alternatives.
#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChatLogprobs {
    pub content: Vec<ChatLogprob>,
}

/// The completions API's older log-probability layout: parallel arrays.
#[derive(Debug, Clone, Serialize, Default)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Appends the chosen tokens of `entries`; `offset` is where their text starts.
    pub fn extend(&mut self, entries: &[ChatLogprob], mut offset: usize) {
        for e in entries {
            self.tokens.push(e.token.clone());
            self.token_logprobs.push(e.logprob);
            let top = e.top_logprobs.iter().map(|t| (t.token.clone(), serde_json::json!(t.logprob))).collect();
            self.top_logprobs.push(top);
            self.text_offset.push(offset);
            offset += e.token.len();
        }
    }
}
