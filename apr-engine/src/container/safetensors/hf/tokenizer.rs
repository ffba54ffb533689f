//! `tokenizer.json` (Hugging Face tokenizers, byte-level BPE) and
//! `tokenizer_config.json` (special tokens, chat template), to and from the
//! `tokenizer.*` GGUF keys.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::{Doc, HfError};
use crate::container::{MetaArray, MetaValue, Metadata};

/// GGUF token types (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Qwen2's pre-tokenizer split (from its tokenizer.json); llama.cpp calls it `qwen2`.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special-token roles: tokenizer_config field, config.json id field, GGUF key.
const SPECIAL: &[(&str, Option<&str>, &str)] = &[
    ("bos_token", Some("bos_token_id"), "tokenizer.ggml.bos_token_id"),
    ("eos_token", Some("eos_token_id"), "tokenizer.ggml.eos_token_id"),
    ("unk_token", None, "tokenizer.ggml.unknown_token_id"),
    ("pad_token", Some("pad_token_id"), "tokenizer.ggml.padding_token_id"),
];

/// tokenizer_config field, GGUF key, for the boolean switches.
const SWITCHES: &[(&str, &str)] =
    &[("add_bos_token", "tokenizer.ggml.add_bos_token"), ("add_eos_token", "tokenizer.ggml.add_eos_token")];

/// The vocabulary as GGUF keeps it.
struct Vocab<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i32>,
}

impl<'a> Vocab<'a> {
    /// `None` unless the metadata holds a byte-level BPE (`gpt2`) vocabulary.
    fn of(meta: &'a Metadata) -> Option<Vocab<'a>> {
        if meta.get_str("tokenizer.ggml.model") != Some("gpt2") {
            return None;
        }
        let tokens: Vec<&str> =
            meta.get("tokenizer.ggml.tokens")?.as_array()?.as_strings()?.iter().map(String::as_str).collect();
        let types = match meta.get("tokenizer.ggml.token_type").and_then(MetaValue::as_array) {
            Some(types) => types.values().map(|t| t.as_f64().map_or(NORMAL, |v| v as i32)).collect(),
            None => vec![NORMAL; tokens.len()],
        };
        (types.len() == tokens.len()).then_some(Vocab { tokens, types })
    }

    /// llama.cpp pads vocabularies to the embedding size with `[PAD<id>]` tokens Hugging Face does not list.
    fn is_padding(&self, id: usize) -> bool {
        self.types[id] == UNUSED && self.tokens[id] == padding_token(id)
    }
}

fn padding_token(id: usize) -> String {
    format!("[PAD{id}]")
}

/// `tokenizer.json`, if the metadata holds a vocabulary it can express.
pub fn export_tokenizer(meta: &Metadata) -> Option<Value> {
    let vocab = Vocab::of(meta)?;
    let mut map = Map::new();
    let mut added = Vec::new();
    for (id, (&token, &kind)) in vocab.tokens.iter().zip(&vocab.types).enumerate() {
        if vocab.is_padding(id) {
            continue;
        }
        map.entry(token.to_string()).or_insert(json!(id));
        if matches!(kind, CONTROL | USER_DEFINED | UNKNOWN) {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": kind == USER_DEFINED, "special": kind != USER_DEFINED,
            }));
        }
    }
    let merges: Vec<&str> = meta
        .get("tokenizer.ggml.merges")
        .and_then(MetaValue::as_array)
        .and_then(MetaArray::as_strings)
        .map(|m| m.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let pre = meta.get_str("tokenizer.ggml.pre").unwrap_or("default");
    Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": if pre == "qwen2" { json!({"type": "NFC"}) } else { Value::Null },
        "pre_tokenizer": pre_tokenizer(pre),
        "post_processor": post_processor(meta, &vocab),
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": map, "merges": merges,
        },
    }))
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex})
}

/// The pre-tokenizer llama.cpp's `pre` name stands for (as the original models' tokenizer.json spell it).
fn pre_tokenizer(pre: &str) -> Value {
    match pre {
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]}),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(true),
        ]}),
        _ => byte_level(true),
    }
}

/// The inverse of [`pre_tokenizer`]: llama.cpp's name for a tokenizer.json pre-tokenizer.
fn pre_name(pre_tokenizer: &Value) -> &'static str {
    let kind = |v: &Value| v.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    let parts: Vec<&Value> = match pre_tokenizer.get("pretokenizers").and_then(Value::as_array) {
        Some(parts) => parts.iter().collect(),
        None => vec![pre_tokenizer],
    };
    let split_regex =
        |v: &Value| v.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str).map(str::to_string);
    match parts.as_slice() {
        [split, level]
            if kind(split) == "Split"
                && split_regex(split).as_deref() == Some(QWEN2_SPLIT)
                && kind(level) == "ByteLevel" =>
        {
            "qwen2"
        }
        [digits, level]
            if kind(digits) == "Digits"
                && digits.get("individual_digits") == Some(&Value::Bool(true))
                && kind(level) == "ByteLevel" =>
        {
            "smollm"
        }
        [level] if kind(level) == "ByteLevel" && level.get("use_regex") != Some(&Value::Bool(false)) => "gpt-2",
        _ => "default",
    }
}

/// Byte-level post-processing; with `add_bos_token`, a template that prepends BOS.
fn post_processor(meta: &Metadata, vocab: &Vocab) -> Value {
    let add_bos = meta.get("tokenizer.ggml.add_bos_token") == Some(&MetaValue::Bool(true));
    let bos = meta.get_u64("tokenizer.ggml.bos_token_id").and_then(|id| Some((id, *vocab.tokens.get(id as usize)?)));
    let Some((id, token)) = bos.filter(|_| add_bos) else { return byte_level(false) };
    let special = |s: &str| json!({"SpecialToken": {"id": s, "type_id": 0}});
    let sequence = |s: &str, t: u32| json!({"Sequence": {"id": s, "type_id": t}});
    json!({
        "type": "TemplateProcessing",
        "single": [special(token), sequence("A", 0)],
        "pair": [special(token), sequence("A", 0), special(token), sequence("B", 1)],
        "special_tokens": { token: {"id": token, "ids": [id], "tokens": [token]} },
    })
}

/// `tokenizer_config.json`: special tokens by content, switches, chat template.
pub fn export_tokenizer_config(meta: &Metadata) -> Option<Value> {
    let tokens = meta.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array)?.as_strings().unwrap_or_default();
    let mut config = Map::new();
    for &(field, key) in SWITCHES {
        if let Some(MetaValue::Bool(on)) = meta.get(key) {
            config.insert(field.into(), json!(on));
        }
    }
    for &(field, _, key) in SPECIAL {
        let content = meta.get_u64(key).and_then(|id| tokens.get(id as usize)).map(String::as_str);
        config.insert(field.into(), content.map_or(Value::Null, |c| json!(c)));
    }
    if let Some(template) = meta.get_str("tokenizer.chat_template") {
        config.insert("chat_template".into(), json!(template));
    }
    if let Some(context) = meta.arch_u64("context_length") {
        config.insert("model_max_length".into(), json!(context));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    Some(Value::Object(config))
}

/// The `tokenizer.*` keys from tokenizer.json, tokenizer_config.json and config.json.
pub fn import(
    tokenizer: Option<&Doc>,
    tokenizer_config: Option<&Doc>,
    config: Option<&Doc>,
    meta: &mut Metadata,
) -> Result<(), HfError> {
    let mut by_content = HashMap::new();
    if let Some(tokenizer) = tokenizer {
        let vocab_size = config.and_then(|c| c.value.get("vocab_size")).and_then(Value::as_u64);
        let (tokens, types) = read_vocab(tokenizer, vocab_size)?;
        for (id, token) in tokens.iter().enumerate().rev() {
            by_content.insert(token.clone(), id as u64);
        }
        meta.insert("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
        let arch = meta.architecture().unwrap_or_default();
        let pre = if arch == "qwen2" {
            "qwen2"
        } else {
            pre_name(tokenizer.value.get("pre_tokenizer").unwrap_or(&Value::Null))
        };
        meta.insert("tokenizer.ggml.pre", MetaValue::String(pre.into()));
        meta.insert("tokenizer.ggml.tokens", MetaValue::string_array(tokens));
        meta.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(types)));
        meta.insert("tokenizer.ggml.merges", MetaValue::string_array(read_merges(tokenizer)?));
    }
    for &(field, id_field, key) in SPECIAL {
        let id = special_id(tokenizer_config, field, &by_content)?
            .or_else(|| config.zip(id_field).and_then(|(c, f)| first_id(c.value.get(f)?)));
        if let Some(id) = id {
            let id = u32::try_from(id)
                .map_err(|_| HfError::invalid(super::CONFIG, field, format!("id {id} overflows u32")))?;
            meta.insert(key, MetaValue::U32(id));
        }
    }
    let Some(tokenizer_config) = tokenizer_config else { return Ok(()) };
    for &(field, key) in SWITCHES {
        match tokenizer_config.value.get(field) {
            Some(Value::Bool(on)) => meta.insert(key, MetaValue::Bool(*on)),
            None | Some(Value::Null) => {}
            Some(other) => return Err(tokenizer_config.error(field, format!("{other} is not a boolean"))),
        }
    }
    if let Some(template) = chat_template(tokenizer_config)? {
        meta.insert("tokenizer.chat_template", MetaValue::String(template));
    }
    Ok(())
}

/// Tokens by id and their GGUF types, from `model.vocab` and `added_tokens`.
fn read_vocab(doc: &Doc, vocab_size: Option<u64>) -> Result<(Vec<String>, Vec<i32>), HfError> {
    let model = doc.value.get("model").ok_or_else(|| doc.error("model", "missing"))?;
    let kind = model.get("type").and_then(Value::as_str);
    if kind != Some("BPE") || model.get("byte_fallback") == Some(&Value::Bool(true)) {
        return Err(doc.error("model.type", "only byte-level BPE tokenizers are supported"));
    }
    let vocab =
        model.get("vocab").and_then(Value::as_object).ok_or_else(|| doc.error("model.vocab", "not an object"))?;
    let added = match doc.value.get("added_tokens") {
        None | Some(Value::Null) => &[][..],
        Some(v) => v.as_array().ok_or_else(|| doc.error("added_tokens", "not an array"))?.as_slice(),
    };
    let mut entries: Vec<(u64, String, i32)> = Vec::with_capacity(vocab.len() + added.len());
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| doc.error("model.vocab", format!("id of {token:?} is {id}, not an id")))?;
        entries.push((id, token.clone(), NORMAL));
    }
    for token in added {
        let id = token.get("id").and_then(Value::as_u64);
        let content = token.get("content").and_then(Value::as_str);
        let (Some(id), Some(content)) = (id, content) else {
            return Err(doc.error("added_tokens", format!("entry {token} lacks an id or content")));
        };
        let special = token.get("special").and_then(Value::as_bool).unwrap_or(false);
        entries.push((id, content.to_string(), if special { CONTROL } else { USER_DEFINED }));
    }
    let count = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0).max(vocab_size.unwrap_or(0));
    // Ids come from an untrusted file: cap the table by what the file lists.
    let limit = 2 * entries.len() as u64 + 1024;
    if count > limit {
        return Err(
            doc.error("model.vocab", format!("ids up to {count} for {} tokens leave too many gaps", entries.len()))
        );
    }
    let mut tokens: Vec<Option<String>> = vec![None; count as usize];
    let mut types = vec![UNUSED; count as usize];
    for (id, content, kind) in entries {
        let slot = &mut tokens[id as usize];
        if slot.as_ref().is_some_and(|t| *t != content) && kind == NORMAL {
            return Err(doc.error("model.vocab", format!("id {id} is given to two tokens")));
        }
        *slot = Some(content);
        types[id as usize] = kind;
    }
    let tokens = tokens.into_iter().enumerate().map(|(id, t)| t.unwrap_or_else(|| padding_token(id))).collect();
    Ok((tokens, types))
}

/// Merges as GGUF keeps them: `"a b"`; tokenizer.json has either that or `["a", "b"]`.
fn read_merges(doc: &Doc) -> Result<Vec<String>, HfError> {
    let Some(merges) = doc.value.get("model").and_then(|m| m.get("merges")) else { return Ok(Vec::new()) };
    let merges = merges.as_array().ok_or_else(|| doc.error("model.merges", "not an array"))?;
    merges
        .iter()
        .map(|merge| match merge {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => Ok(format!("{a} {b}")),
                _ => Err(doc.error("model.merges", format!("{merge} is not a pair of strings"))),
            },
            _ => Err(doc.error("model.merges", format!("{merge} is not a merge"))),
        })
        .collect()
}

/// A special token named in tokenizer_config.json (a string or `{"content": ...}`), as an id.
fn special_id(doc: Option<&Doc>, field: &str, by_content: &HashMap<String, u64>) -> Result<Option<u64>, HfError> {
    let Some(value) = doc.and_then(|d| d.value.get(field)) else { return Ok(None) };
    let content = match value {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("content").and_then(Value::as_str).unwrap_or_default(),
        _ => return Ok(None),
    };
    Ok(by_content.get(content).copied())
}

/// config.json ids are a number or, for several EOS tokens, a list: the first is the one GGUF keeps.
fn first_id(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_array()?.first()?.as_u64())
}

/// tokenizer_config's chat template: a string, or a list of named templates (the `default` one is used).
fn chat_template(doc: &Doc) -> Result<Option<String>, HfError> {
    match doc.value.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(named)) => {
            let template_of = |t: &Value| t.get("template").and_then(Value::as_str).map(str::to_string);
            let default = named.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
            Ok(default.or(named.first()).and_then(template_of))
        }
        Some(other) => Err(doc.error("chat_template", format!("{} is not a template", kind_of(other)))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Object(_) => "an object",
        _ => "this",
    }
}
