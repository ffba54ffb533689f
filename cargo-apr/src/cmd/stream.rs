//! Streaming text out of tokens whose pieces may split a UTF-8 character.

use apr_engine::tokenizer::Tokenizer;

pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        TextStream { tokenizer, pending: Vec::new() }
    }

    /// Adds a token; returns the text that is now complete. End-of-generation
    /// tokens print nothing.
    pub fn push(&mut self, token: u32) -> String {
        if self.tokenizer.is_eog(token) {
            return String::new();
        }
        self.pending.extend_from_slice(self.tokenizer.token_bytes(token));
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete character at the end waits for the next token;
            // an invalid sequence is flushed (lossily) rather than held forever.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        text
    }

    /// Whatever is still pending, lossily.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
