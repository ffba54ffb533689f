//! A model with its tokenizer: what `run`, `chat` and the tests drive.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::BackendKind;
use crate::container::{Metadata, ModelFile};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::chat::{self, ChatMessage};
use crate::tokenizer::Tokenizer;

pub struct Pipeline {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_time: Duration,
}

impl Pipeline {
    /// Opens a model file on the CPU backend.
    pub fn open(path: impl AsRef<Path>) -> Result<Pipeline> {
        Pipeline::open_on(path, BackendKind::Cpu)
    }

    /// Opens a model file on `backend`.
    pub fn open_on(path: impl AsRef<Path>, backend: BackendKind) -> Result<Pipeline> {
        let started = Instant::now();
        let file = ModelFile::open(path.as_ref())?;
        // The model first: its checks (the tokens array against the embedding) say more.
        let model = Model::load(file, backend).map_err(|e| e.about_file(path.as_ref()))?;
        let tokenizer = Tokenizer::from_metadata(model.file.metadata())
            .map_err(|e| Error::Invalid(format!("{}: tokenizer: {e}", path.as_ref().display())))?;
        Ok(Pipeline { model, tokenizer, load_time: started.elapsed() })
    }

    /// The model's chat template, if its metadata has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.model.file.metadata().get_str("tokenizer.chat_template")
    }

    /// Renders `messages` with the model's chat template (generation prompt
    /// appended); a model without a template gets the plain concatenation.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        match self.chat_template() {
            Some(template) => render_chat(template, messages),
            None => Ok(messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")),
        }
    }

    /// Token ids for a prompt: through the chat template unless `raw`;
    /// special-token text the user typed stays text (see [`prompt_tokens`]).
    pub fn prompt_tokens(&self, prompt: &str, system: Option<&str>, raw: bool) -> Result<Vec<u32>> {
        prompt_tokens(&self.tokenizer, self.model.file.metadata(), prompt, system, raw)
    }

    /// [`Pipeline::prompt_tokens`], choosing whether special-token text the
    /// user typed becomes the special tokens.
    pub fn prompt_tokens_with(&self, prompt: &str, system: Option<&str>, mode: PromptMode) -> Result<Vec<u32>> {
        prompt_tokens_with(&self.tokenizer, self.model.file.metadata(), prompt, system, mode)
    }

    /// Token ids of a conversation rendered with the model's chat template
    /// (generation prompt appended).
    pub fn chat_tokens(&self, messages: &[ChatMessage], parse_special: bool) -> Result<Vec<u32>> {
        chat_tokens(&self.tokenizer, self.model.file.metadata(), messages, parse_special)
    }
}

/// How a prompt becomes tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptMode {
    /// Skip the chat template: the prompt is the whole text.
    pub raw: bool,
    /// Special-token text the user typed (`<|im_end|>`) becomes the special
    /// token. Off by default, so a user cannot forge a turn of the conversation;
    /// on, for raw prompts written in the model's own markup.
    pub parse_special: bool,
}

/// Token ids for a prompt: rendered with the chat template in `metadata`
/// unless `raw` (or the model has none). Only the template's own markup is
/// parsed for special tokens; the text the user typed is not, as llama.cpp's
/// server tokenizes message content. (User-defined tokens such as Qwen's
/// `<tool_call>` are tokens either way, as in llama.cpp.)
pub fn prompt_tokens(
    tokenizer: &Tokenizer,
    metadata: &Metadata,
    prompt: &str,
    system: Option<&str>,
    raw: bool,
) -> Result<Vec<u32>> {
    prompt_tokens_with(tokenizer, metadata, prompt, system, PromptMode { raw, parse_special: false })
}

/// [`prompt_tokens`] with the choice of parsing special tokens in the user's text.
pub fn prompt_tokens_with(
    tokenizer: &Tokenizer,
    metadata: &Metadata,
    prompt: &str,
    system: Option<&str>,
    mode: PromptMode,
) -> Result<Vec<u32>> {
    // The template would wrap an empty message in markup and the model would
    // answer a question nobody asked: refused as the raw empty prompt is.
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt is empty: there is nothing to answer".into()));
    }
    if mode.raw || metadata.get_str(CHAT_TEMPLATE).is_none() {
        return non_empty(tokenizer.encode_with_special(prompt, mode.parse_special), "the prompt");
    }
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(ChatMessage::new("system", system));
    }
    messages.push(ChatMessage::new("user", prompt));
    chat_tokens(tokenizer, metadata, &messages, mode.parse_special)
}

/// Token ids of `messages` rendered with the chat template in `metadata`
/// (messages joined by newlines when it has none).
pub fn chat_tokens(
    tokenizer: &Tokenizer,
    metadata: &Metadata,
    messages: &[ChatMessage],
    parse_special: bool,
) -> Result<Vec<u32>> {
    let Some(template) = metadata.get_str(CHAT_TEMPLATE) else {
        let text = messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n");
        return non_empty(tokenizer.encode_with_special(&text, parse_special), "the prompt");
    };
    let ids = if parse_special {
        tokenizer.encode_with_special(&render_chat(template, messages)?, true)
    } else {
        chat::check_no_markers(template, messages).map_err(template_error)?;
        let marked: Vec<ChatMessage> = messages
            .iter()
            .map(|m| ChatMessage::new(m.role.clone(), tokenizer.mark_special_text(&m.content)))
            .collect();
        let (text, literal) = chat::take_literal_ranges(&render_chat(template, &marked)?);
        tokenizer.encode_outside_literals(&text, &literal)
    };
    non_empty(ids, "the prompt rendered by the chat template (tokenizer.chat_template)")
}

const CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// An empty prompt gives the model nothing to predict from: refused here,
/// where the reason can be named.
fn non_empty(ids: Vec<u32>, what: &str) -> Result<Vec<u32>> {
    if ids.is_empty() {
        return Err(Error::Invalid(format!("{what} is empty (0 tokens): there is nothing to generate from")));
    }
    Ok(ids)
}

fn render_chat(template: &str, messages: &[ChatMessage]) -> Result<String> {
    chat::render(template, messages, true).map_err(template_error)
}

fn template_error(e: chat::ChatError) -> Error {
    Error::Invalid(format!("{CHAT_TEMPLATE}: {e}"))
}
