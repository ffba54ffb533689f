//! Inputs the fuzzers (`fuzz/`) found that once broke the engine, kept as
//! regression tests. A container file (`.gguf`, `.apr`, `.safetensors`) must
//! now fail with an error that names the field and points at a byte inside
//! the input; a chat template (`.jinja`) must render or fail without a panic.
//! Every fixture in `tests/fixtures/fuzz/` is also swept, so a new one is
//! checked as soon as it is added.

use std::path::{Path, PathBuf};

use apr_engine::container::{apr, gguf, safetensors, Parsed};
use apr_engine::error::ParseError;
use apr_engine::tokenizer::chat::{self, ChatError, ChatMessage};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

/// Parses with the reader the file's extension names.
fn parse(path: &Path) -> Result<Parsed, ParseError> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match path.extension().and_then(|e| e.to_str()) {
        Some("gguf") => gguf::parse(&bytes),
        Some("apr") => apr::parse(&bytes),
        Some("safetensors") => safetensors::parse(&bytes),
        other => panic!("{}: no reader for extension {other:?}", path.display()),
    }
}

/// The fixtures whose extension is one of `extensions`, sorted.
fn fixtures(extensions: &[&str]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no {extensions:?} fixtures in {}", fixture_dir().display());
    paths
}

fn parse_error(name: &str) -> (ParseError, u64) {
    let path = fixture_dir().join(name);
    let len = std::fs::metadata(&path).unwrap().len();
    match parse(&path) {
        Ok(parsed) => panic!("{name}: malformed input parsed ({} tensors)", parsed.tensors.len()),
        Err(e) => (e, len),
    }
}

/// Found by `fuzz/fuzz_targets/apr.rs` (checksums resealed): the last tensor
/// ends inside the data section but the section ends before its 64-byte
/// padding. The reader refused the file, but with an error at offset 3840
/// in a 3785-byte file; it now names the tensor's padding where it starts.
#[test]
fn apr_last_tensor_padding_past_the_data_section_points_inside_the_file() {
    let (e, len) = parse_error("apr-last-tensor-padding-past-data-end.apr");
    assert_eq!(len, 3785);
    assert_eq!(e.field, "tensor 'model.norm.weight' padding", "{e}");
    // Data section at 2112; the tensor ends 1668 bytes into it, 4 bytes before the footer.
    assert_eq!(e.offset, 2112 + 1668, "{e}");
    assert!(e.offset < len, "{e}");
    assert!(e.reason.contains("padding"), "{e}");
}

/// Every committed fuzz input is refused cleanly: a named field and an
/// offset no further than the end of the input.
#[test]
fn every_fuzz_fixture_is_a_clean_error_inside_its_input() {
    for path in fixtures(&["gguf", "apr", "safetensors"]) {
        let len = std::fs::metadata(&path).unwrap().len();
        match parse(&path) {
            Ok(_) => panic!("{}: malformed input parsed", path.display()),
            Err(e) => {
                assert!(!e.field.is_empty(), "{}: {e}", path.display());
                assert!(e.offset <= len, "{}: offset past the {len}-byte input: {e}", path.display());
            }
        }
    }
}

/// The conversation `fuzz/src/chat.rs` renders templates over (its shape:
/// the panics found did not depend on the messages).
fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Hello!"),
        ChatMessage::new("assistant", "Hi."),
        ChatMessage::new("user", "Again."),
    ]
}

fn render_fixture(path: &Path) -> Result<String, ChatError> {
    let template = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    chat::render(&template, &conversation(), true)
}

/// Found by `fuzz/fuzz_targets/chat_template.rs` (minimized):
/// `{{'%(䪪'|format}}`. minijinja's printf-style parser stepped through the
/// `%(` key one byte at a time and panicked inside the 3-byte character; the
/// `format` filter now refuses a key that is not ASCII first.
#[test]
fn a_format_key_with_a_multibyte_character_is_an_error_not_a_panic() {
    let path = fixture_dir().join("chat-template-format-key-multibyte.jinja");
    match render_fixture(&path) {
        Err(e @ ChatError::Render { .. }) => assert!(e.to_string().contains("not ASCII"), "{e}"),
        other => panic!("{}: {other:?}", path.display()),
    }
}

/// Every committed chat-template fixture renders or fails with an error.
#[test]
fn every_chat_template_fixture_renders_or_fails_cleanly() {
    for path in fixtures(&["jinja"]) {
        if let Err(e) = render_fixture(&path) {
            assert!(!e.to_string().is_empty(), "{}", path.display());
        }
    }
}
