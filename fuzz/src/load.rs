//! The `load` target's body: the whole path from a file's bytes to logits.
//!
//! bytes -> [`ModelFile::from_bytes`] (reader chosen by magic) ->
//! [`Tokenizer::from_metadata`] and a prompt through the chat template ->
//! [`ModelConfig::from_metadata`] -> [`ModelWeights::locate`] ->
//! [`Model::load`] on the CPU backend -> a forward of one token, then one more.
//!
//! An `Err` anywhere is a correct answer to a malformed model. A panic, an
//! abort, a hang or running out of memory is a finding; so is a success that
//! breaks what the next step relies on (token ids outside the vocabulary,
//! logits of the wrong length).

use apr_engine::backend::BackendKind;
use apr_engine::container::ModelFile;
use apr_engine::model::weights::ModelWeights;
use apr_engine::model::{Logits, Model, ModelConfig};
use apr_engine::pipeline;
use apr_engine::tokenizer::Tokenizer;

/// Inputs whose tensors declare more bytes than this in all are skipped: a
/// forward over a big valid model is slow, not a bug. (Tensors lie inside the
/// input, so this binds only if they overlap or `-max_len` is raised.)
pub const MAX_TENSOR_BYTES: u64 = 8 << 20;
/// Configurations with more decoder layers than this are not loaded.
pub const MAX_LAYERS: usize = 4;
/// The KV cache holds at most this many positions (fewer if the model's
/// `context_length` says so): the target runs two.
pub const MAX_POSITIONS: usize = 8;

/// Text encoded with special tokens parsed, as a raw prompt is.
const RAW_TEXT: &str = "<|im_start|>user\nHello, world! 123 ünïcödé\t<|im_end|>";

/// Makes the calling thread rayon's only worker, before anything else uses
/// rayon. The engine's kernels then run inline on the fuzzing thread: no hand
/// off to a pool thread for each of the forward pass's dozens of parallel
/// loops (which cost more than the tiny model's arithmetic), one thread per
/// libFuzzer job, and a panic's stack is the fuzzing thread's own.
pub fn single_threaded() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build_global()
        .expect("rayon's global pool is not yet built");
}

/// How far an input got: each step is reached only if the one before succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reached {
    /// Not a model file the readers accept, or over the caps.
    Nothing,
    Parsed,
    Configured,
    Located,
    Loaded,
    /// Both forward calls returned logits.
    Forward,
}

/// What an input did: how far the model got, and whether its tokenizer loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub reached: Reached,
    pub tokenizer: bool,
}

/// Runs the load path on `input`; panics only on a finding.
pub fn load_and_run(input: &[u8]) -> Outcome {
    let mut outcome = Outcome { reached: Reached::Nothing, tokenizer: false };
    let Ok(file) = ModelFile::from_bytes("fuzz-input", input) else { return outcome };
    let declared = file.tensors().iter().fold(0u64, |sum, t| sum.saturating_add(t.size));
    if declared > MAX_TENSOR_BYTES {
        return outcome;
    }
    outcome.reached = Reached::Parsed;

    // The tokenizer does not depend on the weights: run it whatever they are.
    let prompt = Tokenizer::from_metadata(file.metadata()).ok().map(|tokenizer| {
        outcome.tokenizer = true;
        tokenize(&tokenizer, &file)
    });

    let Ok(config) = ModelConfig::from_metadata(file.metadata(), file.tensors()) else { return outcome };
    outcome.reached = Reached::Configured;
    if config.layers > MAX_LAYERS {
        return outcome;
    }
    if ModelWeights::locate(&file, &config).is_err() {
        return outcome;
    }
    outcome.reached = Reached::Located;
    let Ok(model) = Model::load(file, BackendKind::Cpu) else { return outcome };
    assert_eq!(model.config, config, "Model::load read another configuration");
    outcome.reached = Reached::Loaded;

    let mut cache = model.new_cache(config.context_length.min(MAX_POSITIONS));
    // The prompt's first token when there is one (the tokenizer's ids are then
    // rows of the embedding), else token 0.
    let first = prompt.as_ref().and_then(|ids| ids.first().copied()).unwrap_or(0);
    let Ok(logits) = model.forward(&[first], &mut cache, Logits::Last) else { return outcome };
    assert_eq!(logits.len(), config.vocab, "logits for one position");
    assert_eq!(cache.len(), 1, "the cache holds the token");
    // A decode step: position 1, reading the cached position 0.
    let next = ((u64::from(first) + 1) % config.vocab.max(1) as u64) as u32;
    let Ok(logits) = model.forward(&[next], &mut cache, Logits::Last) else { return outcome };
    assert_eq!(logits.len(), config.vocab, "logits for one position");
    outcome.reached = Reached::Forward;
    outcome
}

/// Encodes a raw text and a chat prompt (through the file's chat template,
/// when it has one); every id must be a token of the vocabulary, and decoding
/// them must not fail. Returns the chat prompt's ids when it rendered.
fn tokenize(tokenizer: &Tokenizer, file: &ModelFile) -> Vec<u32> {
    let check = |ids: &[u32]| {
        let vocab = tokenizer.vocab_size();
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            panic!("the tokenizer produced id {bad}, outside its vocabulary of {vocab}");
        }
        tokenizer.decode(ids);
    };
    let raw = tokenizer.encode_with_special(RAW_TEXT, true);
    check(&raw);
    match pipeline::prompt_tokens(tokenizer, file.metadata(), "Hi <|im_end|> there", Some("Be brief."), false) {
        Ok(ids) => {
            check(&ids);
            ids
        }
        Err(_) => raw,
    }
}
