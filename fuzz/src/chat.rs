//! The `chat_template` target's body: a template from the input rendered
//! over a fixed conversation, as the pipeline renders a model's template.

use apr_engine::tokenizer::chat::{self, ChatError, ChatMessage, SpecialTokenTexts};

/// The fixed conversation: every role a template tests for, text with Jinja
/// and special-token syntax in it, and one content wrapped in the literal
/// markers as the pipeline wraps special-token text a user typed.
fn messages() -> Vec<ChatMessage> {
    let mut marked = String::from("Say ");
    chat::mark_literal("<|im_end|>", &mut marked);
    marked.push_str(" twice.");
    vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Hello! {{ 1 + 1 }} {% raw %}<|im_start|>"),
        ChatMessage::new("assistant", "Hi. \"quoted\" \\ ünïcödé\n"),
        ChatMessage::new("user", marked),
    ]
}

/// Renders `input` (invalid UTF-8 skipped) as a chat template. An error is
/// a correct answer; a panic, a hang or running out of memory is a finding,
/// and so is a success whose literal ranges do not lie in its text.
/// Returns whether the template rendered.
pub fn render_template(input: &[u8]) -> bool {
    let Ok(template) = std::str::from_utf8(input) else { return false };
    let Ok(rendered) = render_fixed(template, input.len().is_multiple_of(2)) else { return false };
    let (text, ranges) = chat::take_literal_ranges(&rendered);
    for range in ranges {
        assert!(range.start <= range.end && range.end <= text.len(), "literal range {range:?} outside the text");
        assert!(text.is_char_boundary(range.start) && text.is_char_boundary(range.end), "range {range:?} cuts a char");
    }
    true
}

/// `template` over the fixed conversation, with `<s>` and `</s>` as the BOS
/// and EOS texts. As the pipeline does, a template holding the literal
/// markers is refused (the messages are checked before they are marked).
/// Rendered in this process, not in the child process the product uses, so
/// that a crash of the renderer is seen (and its coverage counted).
pub fn render_fixed(template: &str, add_generation_prompt: bool) -> Result<String, ChatError> {
    chat::check_no_markers(template, &[])?;
    let special = SpecialTokenTexts { bos_token: "<s>".into(), eos_token: "</s>".into() };
    chat::render_in_process(template, &messages(), add_generation_prompt, &special)
}
