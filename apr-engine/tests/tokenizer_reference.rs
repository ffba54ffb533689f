//! The tokenizer against llama.cpp on the real models.
//!
//! - Every string of `shared/reference/<model>/tokenization.json` encodes to
//!   llama.cpp's ids (with its special-parsing flag), each id's bytes are
//!   llama.cpp's piece, and the ids decode back to the text.
//! - The greedy prompts, rendered through the model's own chat template (or
//!   raw, where the reference says no template was applied) and encoded, are
//!   llama.cpp's prompt ids; the generated ids decode to its text.
//! - The end-of-generation set is llama.cpp's.
//! - SmolLM2 (llama arch, `smollm` pre-tokenizer) round-trips text and renders its template;
//!   its tokenization and greedy prompts are checked against llama.cpp like the Qwen ones.

use std::time::Instant;

use apr_engine::container::ModelFile;
use apr_engine::testing::models::{ReferenceModel, QWEN_0_5B, QWEN_1_5B, SMOLLM2};
use apr_engine::tokenizer::chat::{self, ChatMessage};
use apr_engine::tokenizer::{PreTokenizer, TokenAttr, Tokenizer};
use serde_json::Value;

struct Loaded {
    tokenizer: Tokenizer,
    template: String,
}

fn load(model: ReferenceModel) -> Loaded {
    let file = ModelFile::open(model.require()).unwrap();
    let tokenizer = Tokenizer::from_metadata(file.metadata()).unwrap();
    let template = file.metadata().get_str("tokenizer.chat_template").expect("chat template").to_string();
    Loaded { tokenizer, template }
}

fn reference(model: &ReferenceModel, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(model.reference_file(name)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tokenization_matches_llama_cpp(model: ReferenceModel) {
    let Loaded { tokenizer, .. } = load(model);
    let reference = reference(&model, "tokenization.json");
    assert_eq!(tokenizer.vocab_size() as u64, reference["settings"]["n_vocab"].as_u64().unwrap());
    assert_eq!(tokenizer.bos().map(u64::from), reference["settings"]["bos"].as_u64());
    assert_eq!(tokenizer.eos().map(u64::from), reference["settings"]["eos"].as_u64());
    assert!(!tokenizer.add_bos(), "Qwen2.5 and SmolLM2 set add_bos_token false");

    let cases: Vec<&Value> = ["cases", "extra_cases"].iter().flat_map(|k| reference[k].as_array().unwrap()).collect();
    assert!(cases.len() >= 10, "{} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        let got = tokenizer.encode_with_special(text, case["parse_special"].as_bool().unwrap());
        assert_eq!(got, expected, "{name}: ids of {text:?}");
        // add_bos_token is false, so llama.cpp's add_special=true adds nothing
        assert_eq!(ids(&case["ids_with_add_special_true"]), expected, "{name}");

        let pieces: Vec<String> = expected.iter().map(|&id| hex(tokenizer.token_bytes(id))).collect();
        let expected_pieces: Vec<&str> =
            case["pieces_hex"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(pieces, expected_pieces, "{name}: token bytes");
        assert!(case["detokenized_roundtrip_equal"].as_bool().unwrap());
        assert_eq!(tokenizer.decode(&expected), text, "{name}: decode");
    }
}

fn greedy_prompts_match_llama_cpp(model: ReferenceModel) {
    let Loaded { tokenizer, template } = load(model);
    let reference = reference(&model, "greedy.json");
    let results = reference["results"].as_array().unwrap();
    assert!(!results.is_empty());
    for case in results {
        let question = case["question"].as_str().unwrap();
        let prompt = if case["chat_template_applied"].as_bool().expect("chat_template_applied") {
            let mut messages = Vec::new();
            if let Some(system) = case["system"].as_str() {
                messages.push(ChatMessage::new("system", system));
            }
            messages.push(ChatMessage::new("user", question));
            chat::render_with(&template, &messages, true, &tokenizer.chat_special_tokens()).unwrap()
        } else {
            question.to_string() // a raw prompt: tokenized as written
        };
        assert_eq!(prompt, case["prompt"].as_str().unwrap(), "rendered prompt for {question:?}");
        assert_eq!(
            tokenizer.encode_with_special(&prompt, true),
            ids(&case["prompt_ids"]),
            "prompt ids for {question:?}"
        );

        let generated = ids(&case["generated_ids"]);
        let text_ids: Vec<u32> = generated.iter().copied().filter(|&id| !tokenizer.is_eog(id)).collect();
        assert_eq!(tokenizer.decode(&text_ids), case["text"].as_str().unwrap(), "generated text for {question:?}");
        if case["stop_reason"] == "eog" {
            assert!(tokenizer.is_eog(*generated.last().unwrap()), "{question:?} stopped at an end-of-generation token");
        }
    }
}

/// llama.cpp's EOG set for Qwen2.5-Coder: eos `<|im_end|>` and, by text,
/// `<|endoftext|>`, `<|fim_pad|>`, `<|repo_name|>`, `<|file_sep|>` and `</s>`
/// (128247: a normal token in the file, which llama.cpp's EOG text list turns
/// into an end-of-generation control token).
fn qwen_eog_set(model: ReferenceModel) {
    let Loaded { tokenizer, .. } = load(model);
    assert_eq!(tokenizer.eog_ids(), [128247, 151643, 151645, 151662, 151663, 151664]);
    assert!(tokenizer.token_attr(128247).unwrap().has(TokenAttr::CONTROL));
    assert_eq!(tokenizer.token_text(128247), Some("</s>"));
    for id in [151644, 151657, 100] {
        assert!(!tokenizer.is_eog(id), "{id}");
    }
}

fn qwen_template_default_system_message(model: ReferenceModel) {
    let Loaded { tokenizer, template } = load(model);
    let prompt = chat::render(&template, &[ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let without_generation_prompt = chat::render(&template, &[ChatMessage::new("user", "Hi")], false).unwrap();
    assert!(without_generation_prompt.ends_with("Hi<|im_end|>\n"), "{without_generation_prompt:?}");
    // a multi-turn chat: the assistant's turn is closed and the next user turn follows
    let turns = [
        ChatMessage::new("system", "S"),
        ChatMessage::new("user", "a"),
        ChatMessage::new("assistant", "b"),
        ChatMessage::new("user", "c"),
    ];
    let prompt = chat::render(&template, &turns, true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n\
         <|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tokenizer.encode_with_special(&prompt, true);
    assert_eq!(ids.iter().filter(|&&id| id == 151644).count(), 5, "five <|im_start|> tokens");
}

#[test]
fn qwen_0_5b_tokenization_matches_llama_cpp() {
    tokenization_matches_llama_cpp(QWEN_0_5B);
}

#[test]
fn qwen_1_5b_tokenization_matches_llama_cpp() {
    tokenization_matches_llama_cpp(QWEN_1_5B);
}

#[test]
fn qwen_0_5b_greedy_prompts_match_llama_cpp() {
    greedy_prompts_match_llama_cpp(QWEN_0_5B);
}

#[test]
fn qwen_1_5b_greedy_prompts_match_llama_cpp() {
    greedy_prompts_match_llama_cpp(QWEN_1_5B);
}

#[test]
fn smollm2_tokenization_matches_llama_cpp() {
    tokenization_matches_llama_cpp(SMOLLM2);
}

#[test]
fn smollm2_greedy_prompts_match_llama_cpp() {
    greedy_prompts_match_llama_cpp(SMOLLM2);
}

#[test]
fn qwen_eog_sets_are_llama_cpps() {
    qwen_eog_set(QWEN_0_5B);
    qwen_eog_set(QWEN_1_5B);
}

#[test]
fn qwen_templates_inject_their_default_system_message() {
    qwen_template_default_system_message(QWEN_0_5B);
    qwen_template_default_system_message(QWEN_1_5B);
}

#[test]
fn qwen_special_parsing_on_and_off() {
    let Loaded { tokenizer, .. } = load(QWEN_0_5B);
    let text = "<|im_start|>x<tool_call></s>";
    // off: control tokens are text, the user-defined <tool_call> is still one token
    let off = tokenizer.encode_with_special(text, false);
    assert!(!off.contains(&151644) && off.contains(&151657) && !off.contains(&128247), "{off:?}");
    assert_eq!(tokenizer.decode(&off), text);
    // on: <|im_start|> and (control by llama.cpp's override) </s> are single tokens
    let on = tokenizer.encode_with_special(text, true);
    assert_eq!(on.first(), Some(&151644));
    assert_eq!(on[on.len() - 2..], [151657, 128247]);
    assert_eq!(tokenizer.decode(&on), text);
}

#[test]
fn qwen_round_trips_and_encodes_kilobytes_in_milliseconds() {
    let Loaded { tokenizer, .. } = load(QWEN_0_5B);
    assert_eq!(tokenizer.pre_tokenizer(), PreTokenizer::Qwen2);
    let paragraph = "fn main() {\n    let x: Vec<u8> = (0..255).collect(); // bytes\n    println!(\"{x:?} 你好 😀 \
                     naïve café — 12345\");\n}\n\n\t\r\n  trailing  ";
    let text = paragraph.repeat(40);
    let started = Instant::now();
    let ids = tokenizer.encode_with_special(&text, false);
    let elapsed = started.elapsed();
    assert_eq!(tokenizer.decode(&ids), text);
    assert!(elapsed.as_millis() < 200, "{} bytes took {elapsed:?}", text.len());
    eprintln!("{} bytes -> {} tokens in {elapsed:?}", text.len(), ids.len());
}

#[test]
fn smollm2_round_trips_and_renders_its_template() {
    let Loaded { tokenizer, template } = load(SMOLLM2);
    assert_eq!(tokenizer.pre_tokenizer(), PreTokenizer::DigitsThenGpt2);
    assert_eq!((tokenizer.bos(), tokenizer.eos(), tokenizer.vocab_size()), (Some(1), Some(2), 49152));
    // eos <|im_end|>, <|endoftext|> by text, and <reponame> as llama.cpp's FIM repo token
    assert_eq!(tokenizer.eog_ids(), [0, 2, 4]);

    for text in ["Hello, world! I'm here.", "x = 12345 + 6.78\n\tdone", "你好，世界 😀 naïve", "   spaced   out   ", ""]
    {
        let ids = tokenizer.encode_with_special(text, false);
        assert_eq!(tokenizer.decode(&ids), text, "{ids:?}");
    }
    // the smollm split gives every digit its own token
    let digits = tokenizer.encode_with_special("2024", false);
    assert_eq!(digits.len(), 4, "{digits:?}");
    assert_eq!(tokenizer.decode(&digits[..1]), "2");

    let prompt = chat::render(&template, &[ChatMessage::new("user", "What is 2+2?")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tokenizer.encode_with_special(&prompt, true);
    assert_eq!(ids[0], 1, "<|im_start|> is one token");
    assert_eq!(ids.iter().filter(|&&id| id == 2).count(), 2, "two <|im_end|>");
    assert_eq!(tokenizer.decode(&ids), prompt);
}

/// 2300 strings tokenized by llama.cpp itself (`tests/fixtures/tokenizer_llamacpp_fuzz.json`):
/// 1500 random mixes of ASCII, whitespace runs, contractions, CJK, Cyrillic,
/// Greek, emoji, combining marks, Unicode digits and spaces, special-token
/// texts and random code points from every plane (half with special parsing
/// on), and 800 chunks of this repository's sources. Every id must be equal,
/// and so must the end-of-generation and control sets.
#[test]
fn fuzz_strings_match_llama_cpp() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer_llamacpp_fuzz.json"))
            .unwrap(),
    )
    .unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2300);
    for (model, field) in [(QWEN_0_5B, "qwen"), (SMOLLM2, "smollm")] {
        let Loaded { tokenizer, .. } = load(model);
        let reference = &fixture[model.file.trim_end_matches(".gguf")];
        assert_eq!(tokenizer.eog_ids(), ids(&reference["eog"]), "{field}: EOG set");
        let control: Vec<u32> = (0..tokenizer.vocab_size() as u32)
            .filter(|&id| tokenizer.token_attr(id).unwrap().has(TokenAttr::CONTROL))
            .collect();
        assert_eq!(control, ids(&reference["control"]), "{field}: control tokens");

        let mismatches: Vec<String> = cases
            .iter()
            .filter_map(|case| {
                let text = case["text"].as_str().unwrap();
                let expected = ids(&case[field]);
                let got = tokenizer.encode_with_special(text, case["parse_special"].as_bool().unwrap());
                (got != expected).then(|| format!("{text:?}: ours {got:?}, llama.cpp {expected:?}"))
            })
            .collect();
        assert!(
            mismatches.is_empty(),
            "{field}: {} of {} differ:\n{}",
            mismatches.len(),
            cases.len(),
            mismatches.join("\n")
        );
    }
}
