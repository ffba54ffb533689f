//! Hugging Face companions: `config.json`, `tokenizer.json` and
//! `tokenizer_config.json` beside a SafeTensors file.
//!
//! On import they become GGUF-keyed metadata, so the rest of the engine reads
//! one kind of metadata. On export the same mapping runs backwards; every
//! metadata key that the import would not rebuild exactly (general.*,
//! llama.rope.dimension_count, a key whose type differs, ...) is kept, typed,
//! under `gguf_metadata` in config.json, so GGUF -> SafeTensors -> GGUF
//! keeps the metadata.

mod config;
mod tokenizer;
mod typed;

use std::path::Path;

use serde_json::{Map, Value};

use super::METADATA_PREFIX;
use crate::container::{Metadata, ModelFile, TensorSource};
use crate::error::{Error, ParseError, Result};

pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// Newer transformers keep the chat template in its own file.
const CHAT_TEMPLATE: &str = "chat_template.jinja";

/// The config.json field holding metadata with no Hugging Face equivalent.
pub const GGUF_METADATA: &str = "gguf_metadata";

/// Reads the companions beside `model`'s file (if any) into its metadata.
pub fn read_companions(model: &mut ModelFile) -> Result<()> {
    let dir = match model.path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let config = Loaded::read(&dir, CONFIG)?;
    let tokenizer = Loaded::read(&dir, TOKENIZER)?;
    let mut tokenizer_config = Loaded::read(&dir, TOKENIZER_CONFIG)?;
    if config.is_none() && tokenizer.is_none() && tokenizer_config.is_none() {
        return Ok(());
    }
    if let Some(template) = read_text(&dir, CHAT_TEMPLATE)? {
        add_chat_template(&mut tokenizer_config, template);
    }
    let docs = Docs {
        config: config.as_ref().map(Loaded::doc),
        tokenizer: tokenizer.as_ref().map(Loaded::doc),
        tokenizer_config: tokenizer_config.as_ref().map(Loaded::doc),
    };
    let mut meta = import(&docs, true).map_err(|e| e.error.in_file(dir.join(e.file)))?;
    // The file's own `safetensors.*` keys follow the companions' keys.
    for (key, value) in std::mem::take(&mut model.parsed.metadata.entries) {
        meta.entries.entry(key).or_insert(value);
    }
    model.parsed.metadata = meta;
    Ok(())
}

/// A companion file read from disk.
struct Loaded {
    file: &'static str,
    text: String,
    value: Value,
}

impl Loaded {
    fn read(dir: &Path, file: &'static str) -> Result<Option<Loaded>> {
        let Some(text) = read_text(dir, file)? else { return Ok(None) };
        let value = parse_json(file, &text).map_err(|e| e.in_file(dir.join(file)))?;
        Ok(Some(Loaded { file, text, value }))
    }

    fn doc(&self) -> Doc<'_> {
        Doc { file: self.file, value: &self.value, text: &self.text }
    }
}

/// A `chat_template.jinja` applies unless tokenizer_config.json has its own template.
fn add_chat_template(tokenizer_config: &mut Option<Loaded>, template: String) {
    let loaded = tokenizer_config.get_or_insert_with(|| Loaded {
        file: TOKENIZER_CONFIG,
        text: String::new(),
        value: Value::Object(Map::new()),
    });
    if let Some(map) = loaded.value.as_object_mut() {
        map.entry("chat_template").or_insert(Value::String(template));
    }
}

fn read_text(dir: &Path, name: &str) -> Result<Option<String>> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn parse_json(name: &str, text: &str) -> Result<Value, ParseError> {
    serde_json::from_str(text).map_err(|e| {
        let offset = super::reader::line_column_offset(text, e.line(), e.column());
        ParseError::new(name, offset, format!("invalid JSON: {e}"))
    })
}

/// One companion file: its parsed JSON and its text (to locate fields for errors).
pub(crate) struct Doc<'a> {
    file: &'static str,
    value: &'a Value,
    text: &'a str,
}

impl Doc<'_> {
    /// An error about `field`, at the offset where its key first appears in the file.
    fn error(&self, field: &str, reason: impl Into<String>) -> HfError {
        let key = field.rsplit('.').next().unwrap_or(field);
        let offset = self.text.find(&format!("\"{key}\"")).unwrap_or(0) as u64;
        HfError { file: self.file, error: ParseError::new(format!("{}: {field}", self.file), offset, reason) }
    }
}

/// A problem in one of the companion files.
#[derive(Debug)]
pub(crate) struct HfError {
    file: &'static str,
    error: ParseError,
}

impl HfError {
    fn invalid(file: &'static str, field: &str, reason: String) -> HfError {
        HfError { file, error: ParseError::new(format!("{file}: {field}"), 0, reason) }
    }
}

struct Docs<'a> {
    config: Option<Doc<'a>>,
    tokenizer: Option<Doc<'a>>,
    tokenizer_config: Option<Doc<'a>>,
}

/// GGUF-keyed metadata from the companions; `restore` applies `gguf_metadata`.
fn import(docs: &Docs, restore: bool) -> Result<Metadata, HfError> {
    let mut meta = Metadata::default();
    if let Some(config) = &docs.config {
        config::import(config, &mut meta)?;
    }
    tokenizer::import(docs.tokenizer.as_ref(), docs.tokenizer_config.as_ref(), docs.config.as_ref(), &mut meta)?;
    let kept = docs.config.as_ref().and_then(|c| Some((c, c.value.get(GGUF_METADATA)?)));
    if let (true, Some((config, kept))) = (restore, kept) {
        let kept = kept.as_object().ok_or_else(|| config.error(GGUF_METADATA, "is not an object"))?;
        for (key, value) in kept {
            let value =
                typed::decode(value).map_err(|reason| config.error(GGUF_METADATA, format!("{key}: {reason}")))?;
            meta.insert(key.clone(), value);
        }
    }
    Ok(meta)
}

/// A companion file ready to write.
pub(crate) struct Companion {
    pub file_name: &'static str,
    pub bytes: Vec<u8>,
}

/// config.json, tokenizer.json and tokenizer_config.json for `source`;
/// empty when it has no metadata.
pub(crate) fn export_companions(source: &dyn TensorSource) -> Result<Vec<Companion>> {
    let meta = source.metadata();
    if meta.is_empty() {
        return Ok(Vec::new());
    }
    let mut config = config::export(meta, source.specs());
    let tokenizer = tokenizer::export_tokenizer(meta);
    let tokenizer_config = tokenizer::export_tokenizer_config(meta);
    let kept = keys_import_would_lose(meta, &config, tokenizer.as_ref(), tokenizer_config.as_ref())?;
    if !kept.is_empty() {
        config.insert(GGUF_METADATA.into(), Value::Object(kept));
    }
    let mut companions = vec![companion(CONFIG, &Value::Object(config))?];
    if let Some(tokenizer) = tokenizer {
        companions.push(companion(TOKENIZER, &tokenizer)?);
    }
    if let Some(tokenizer_config) = tokenizer_config {
        companions.push(companion(TOKENIZER_CONFIG, &tokenizer_config)?);
    }
    Ok(companions)
}

fn companion(file_name: &'static str, value: &Value) -> Result<Companion> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(format!("{file_name}: {e}")))?;
    bytes.push(b'\n');
    Ok(Companion { file_name, bytes })
}

/// Runs the import on the files about to be written and returns, typed, each
/// metadata key whose value it would not give back.
fn keys_import_would_lose(
    meta: &Metadata,
    config: &Map<String, Value>,
    tokenizer: Option<&Value>,
    tokenizer_config: Option<&Value>,
) -> Result<Map<String, Value>> {
    let config = Value::Object(config.clone());
    let doc = |file, value| Doc { file, value, text: "" };
    let docs = Docs {
        config: Some(doc(CONFIG, &config)),
        tokenizer: tokenizer.map(|t| doc(TOKENIZER, t)),
        tokenizer_config: tokenizer_config.map(|t| doc(TOKENIZER_CONFIG, t)),
    };
    let rebuilt = import(&docs, false)
        .map_err(|e| Error::Invalid(format!("exported companions do not read back: {}", e.error)))?;
    Ok(meta
        .entries
        .iter()
        .filter(|(key, value)| !key.starts_with(METADATA_PREFIX) && rebuilt.get(key) != Some(value))
        .map(|(key, value)| (key.clone(), typed::encode(value)))
        .collect())
}
