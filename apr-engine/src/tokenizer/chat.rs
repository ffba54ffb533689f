//! Chat templates (TEMPORARY stub: the tokenizer branch replaces this file).
#[derive(Debug, Clone)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}
impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}
pub fn render(_template: &str, _messages: &[ChatMessage], _add_generation_prompt: bool) -> Result<String, String> {
    Err("chat templates not written yet".into())
}
