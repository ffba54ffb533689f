#![no_main]
//! `tokenizer::chat::render_with` on arbitrary template text over a fixed
//! conversation (see `src/chat.rs`). Errors (syntax, raised exceptions, the
//! fuel budget, the output cap) are fine; panics, hangs and running out of
//! memory are not.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    apr_fuzz::chat::render_template(input);
});
