//! GPT-2 byte-level BPE tokenizer built from GGUF-style metadata, matching llama.cpp.
//!
//! Encoding: special tokens written in the text are cut out first
//! ([`special`]), the rest is split into words by the vocabulary's
//! pre-tokenizer ([`pretokenize`]), each word is spelt in the byte-level
//! alphabet ([`bytelevel`]) and merged by rank ([`bpe`]). Decoding concatenates
//! each token's bytes: the byte-level text decoded for normal tokens, the text
//! itself for control and user-defined ones, nothing for unused ones.

pub mod bpe;
pub mod bytelevel;
pub mod chat;
pub mod pretokenize;
pub mod special;
mod unicode_classes;
mod vocab;

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use crate::container::Metadata;
pub use pretokenize::PreTokenizer;
use special::{Fragment, SpecialTokens};
pub use vocab::TokenAttr;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("metadata key {key} is missing")]
    Missing { key: &'static str },
    #[error("metadata key {key}: {reason}")]
    Malformed { key: &'static str, reason: String },
    #[error("tokenizer.ggml.model {0:?} is not supported (apr reads gpt2 byte-level BPE vocabularies)")]
    UnsupportedModel(String),
    #[error(
        "tokenizer.ggml.pre {0:?} is not a supported pre-tokenizer (the qwen2, gpt2 and smollm/starcoder families are)"
    )]
    UnsupportedPre(String),
}

impl TokenizerError {
    fn malformed(key: &'static str, reason: impl Into<String>) -> Self {
        TokenizerError::Malformed { key, reason: reason.into() }
    }
}

pub struct Tokenizer {
    /// Token texts as stored (byte-level spelling for normal tokens).
    texts: Vec<String>,
    attrs: Vec<TokenAttr>,
    id_of_text: HashMap<String, u32>,
    /// Every token's bytes, concatenated; token i is `piece_bytes[piece_ends[i-1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<usize>,
    merges: bpe::Merges,
    pre: PreTokenizer,
    specials: SpecialTokens,
    eog: BTreeSet<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

impl Tokenizer {
    /// Reads `tokenizer.ggml.*` keys: model (gpt2), pre, tokens, merges,
    /// token_type, the special token ids and add_bos_token.
    pub fn from_metadata(meta: &Metadata) -> Result<Tokenizer, TokenizerError> {
        let model = vocab::required_str(meta, vocab::KEY_MODEL)?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let pre_name = vocab::required_str(meta, vocab::KEY_PRE)?;
        let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| TokenizerError::UnsupportedPre(pre_name.into()))?;
        let texts = vocab::token_texts(meta)?;
        let merges = bpe::Merges::new(vocab::string_array(meta, vocab::KEY_MERGES)?.iter().map(String::as_str))
            .map_err(|e| TokenizerError::malformed(vocab::KEY_MERGES, e.to_string()))?;
        let mut attrs = vocab::token_attrs(meta, texts.len())?;
        let id_of_text = vocab::ids_by_text(&texts);
        let ids = vocab::SpecialIds::read(meta, texts.len())?;
        let eog = vocab::end_of_generation(&ids, &id_of_text, &texts, &mut attrs);
        let add_bos = vocab::optional_bool(meta, vocab::KEY_ADD_BOS)?.unwrap_or(false);
        let specials = SpecialTokens::new(
            attrs
                .iter()
                .enumerate()
                .filter(|(_, a)| a.has(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN))
                .map(|(id, a)| (texts[id].clone(), id as u32, !a.has(TokenAttr::CONTROL | TokenAttr::UNKNOWN))),
        );
        let (piece_bytes, piece_ends) = vocab::pieces(&texts, &attrs);
        Ok(Tokenizer {
            texts,
            attrs,
            id_of_text,
            piece_bytes,
            piece_ends,
            merges,
            pre,
            specials,
            eog,
            bos: ids.bos,
            eos: ids.eos,
            add_bos,
        })
    }

    /// Token ids of `text`, without BOS. With `parse_special`, control tokens
    /// written in the text (`<|im_start|>`) become their ids; user-defined
    /// tokens do either way.
    pub fn encode_with_special(&self, text: &str, parse_special: bool) -> Vec<u32> {
        self.encode_fragments(text, self.specials.partition(text, parse_special))
    }

    /// Token ids of rendered chat text: special tokens are parsed, except in
    /// the byte ranges `literal` (what users typed), where their text stays
    /// text, as llama.cpp's server tokenizes message content.
    pub fn encode_outside_literals(&self, text: &str, literal: &[Range<usize>]) -> Vec<u32> {
        self.encode_fragments(text, self.specials.partition_outside(text, literal))
    }

    /// `text` with each control-token text in it wrapped in the chat literal
    /// markers ([`chat::mark_literal`]), so that it survives rendering as text.
    pub fn mark_special_text(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, always) in self.specials.find_all(text) {
            out.push_str(&text[at..range.start]);
            // User-defined tokens are tokens with special parsing off too.
            if always {
                out.push_str(&text[range.clone()]);
            } else {
                chat::mark_literal(&text[range.clone()], &mut out);
            }
            at = range.end;
        }
        out.push_str(&text[at..]);
        out
    }

    fn encode_fragments(&self, text: &str, fragments: Vec<Fragment<'_>>) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        let mut spelling = String::new();
        for fragment in fragments {
            match fragment {
                Fragment::Token(id) => ids.push(id),
                Fragment::Text(text) => {
                    for word in self.pre.split(text) {
                        self.encode_word(word, &mut spelling, &mut ids);
                    }
                }
            }
        }
        ids
    }

    fn encode_word(&self, word: &str, spelling: &mut String, ids: &mut Vec<u32>) {
        spelling.clear();
        bytelevel::encode_into(word.as_bytes(), spelling);
        for piece in self.merges.apply(spelling) {
            match self.id_of_text.get(piece) {
                Some(&id) => ids.push(id),
                // A merge result missing from the vocabulary: llama.cpp falls back to
                // the tokens of its single bytes, dropping those it does not have.
                None => ids.extend(piece.char_indices().filter_map(|(i, c)| {
                    let one_byte = c.is_ascii().then(|| &piece[i..i + 1])?;
                    self.id_of_text.get(one_byte).copied()
                })),
            }
        }
    }

    /// The text of `ids`: their bytes concatenated, invalid UTF-8 replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes one token stands for (empty for an unknown id).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let id = id as usize;
        if id >= self.piece_ends.len() {
            return &[];
        }
        let start = if id == 0 { 0 } else { self.piece_ends[id - 1] };
        &self.piece_bytes[start..self.piece_ends[id]]
    }

    /// The token's text as stored in the vocabulary (byte-level spelling for normal tokens).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub fn token_attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }

    /// The id of a token by its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.id_of_text.get(text).copied()
    }

    /// Whether generation stops at this token (llama.cpp's end-of-generation set).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> Vec<u32> {
        self.eog.iter().copied().collect()
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn vocab_size(&self) -> usize {
        self.texts.len()
    }

    /// `tokenizer.ggml.add_bos_token`: whether a prompt should start with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// The BOS and EOS texts, for chat templates that write them.
    pub fn chat_special_tokens(&self) -> chat::SpecialTokenTexts {
        let text = |id: Option<u32>| id.and_then(|id| self.token_text(id)).unwrap_or_default().to_string();
        chat::SpecialTokenTexts { bos_token: text(self.bos), eos_token: text(self.eos) }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.texts.len())
            .field("merges", &self.merges.len())
            .field("pre", &self.pre)
            .field("special_tokens", &self.specials.len())
            .field("eog", &self.eog)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}
