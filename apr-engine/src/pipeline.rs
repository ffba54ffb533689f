//! A model with its tokenizer: what `run`, `chat` and the tests drive.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::cpu::Cpu;
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
        let started = Instant::now();
        let file = ModelFile::open(path.as_ref())?;
        let tokenizer = Tokenizer::from_metadata(file.metadata())
            .map_err(|e| Error::Invalid(format!("{}: tokenizer: {e}", path.as_ref().display())))?;
        let model = Model::load(file, Box::new(Cpu))?;
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
            Some(template) => {
                chat::render(template, messages, true).map_err(|e| Error::Invalid(format!("chat template: {e}")))
            }
            None => Ok(messages.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n")),
        }
    }

    /// Token ids for a prompt: through the chat template unless `raw`.
    pub fn prompt_tokens(&self, prompt: &str, system: Option<&str>, raw: bool) -> Result<Vec<u32>> {
        prompt_tokens(&self.tokenizer, self.model.file.metadata(), prompt, system, raw)
    }
}

/// Token ids for a prompt: rendered with the chat template in `metadata`
/// unless `raw` (or the model has none); special tokens written in the text
/// are recognised either way, as llama.cpp does.
pub fn prompt_tokens(
    tokenizer: &Tokenizer,
    metadata: &Metadata,
    prompt: &str,
    system: Option<&str>,
    raw: bool,
) -> Result<Vec<u32>> {
    let text = match metadata.get_str("tokenizer.chat_template") {
        Some(template) if !raw => {
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(ChatMessage::new("system", system));
            }
            messages.push(ChatMessage::new("user", prompt));
            render_chat(template, &messages)?
        }
        _ => prompt.to_string(),
    };
    Ok(tokenizer.encode_with_special(&text, true))
}

fn render_chat(template: &str, messages: &[ChatMessage]) -> Result<String> {
    chat::render(template, messages, true).map_err(|e| Error::Invalid(format!("chat template: {e}")))
}
