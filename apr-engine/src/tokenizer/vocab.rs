//! The vocabulary from metadata: token texts, attributes, special ids, the
//! end-of-generation set and each token's bytes, as llama.cpp derives them.

use std::collections::{BTreeSet, HashMap};

use super::{bytelevel, TokenizerError};
use crate::container::{MetaArray, MetaValue, Metadata};

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";

/// A token's attributes (llama.cpp's `llama_token_attr` bits this tokenizer uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenAttr(u8);

impl TokenAttr {
    pub const UNDEFINED: TokenAttr = TokenAttr(0);
    pub const NORMAL: TokenAttr = TokenAttr(1);
    pub const UNKNOWN: TokenAttr = TokenAttr(2);
    pub const CONTROL: TokenAttr = TokenAttr(4);
    pub const USER_DEFINED: TokenAttr = TokenAttr(8);
    pub const UNUSED: TokenAttr = TokenAttr(16);
    pub const BYTE: TokenAttr = TokenAttr(32);

    /// From a GGUF token type: 1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte; anything else undefined.
    pub fn from_token_type(token_type: i64) -> TokenAttr {
        match token_type {
            1 => Self::NORMAL,
            2 => Self::UNKNOWN,
            3 => Self::CONTROL,
            4 => Self::USER_DEFINED,
            5 => Self::UNUSED,
            6 => Self::BYTE,
            _ => Self::UNDEFINED,
        }
    }

    /// Whether any of `bits` is set.
    pub fn has(self, bits: TokenAttr) -> bool {
        self.0 & bits.0 != 0
    }
}

impl std::ops::BitOr for TokenAttr {
    type Output = TokenAttr;
    fn bitor(self, rhs: TokenAttr) -> TokenAttr {
        TokenAttr(self.0 | rhs.0)
    }
}

pub fn required_str<'m>(meta: &'m Metadata, key: &'static str) -> Result<&'m str, TokenizerError> {
    match meta.get(key) {
        None => Err(TokenizerError::Missing { key }),
        Some(MetaValue::String(s)) => Ok(s),
        Some(other) => Err(TokenizerError::malformed(key, format!("expected a string, found {:?}", other.meta_type()))),
    }
}

pub fn optional_bool(meta: &Metadata, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match meta.get(key) {
        None => Ok(None),
        Some(MetaValue::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(TokenizerError::malformed(key, format!("expected a bool, found {:?}", other.meta_type()))),
    }
}

/// The elements of a string array.
pub fn string_array<'m>(meta: &'m Metadata, key: &'static str) -> Result<&'m [String], TokenizerError> {
    let array = array(meta, key)?;
    array.as_strings().ok_or_else(|| {
        TokenizerError::malformed(key, format!("expected an array of strings, found one of {:?}", array.elem_type()))
    })
}

fn array<'m>(meta: &'m Metadata, key: &'static str) -> Result<&'m MetaArray, TokenizerError> {
    let value = meta.get(key).ok_or(TokenizerError::Missing { key })?;
    value
        .as_array()
        .ok_or_else(|| TokenizerError::malformed(key, format!("expected an array, found {:?}", value.meta_type())))
}

/// Token texts; an empty one becomes `[EMPTY_<id>]` as in llama.cpp, so that no
/// special token matches the empty string.
pub fn token_texts(meta: &Metadata) -> Result<Vec<String>, TokenizerError> {
    let texts: Vec<String> = string_array(meta, KEY_TOKENS)?
        .iter()
        .enumerate()
        .map(|(id, text)| if text.is_empty() { format!("[EMPTY_{id}]") } else { text.to_string() })
        .collect();
    if texts.is_empty() {
        return Err(TokenizerError::malformed(KEY_TOKENS, "the vocabulary is empty"));
    }
    if u32::try_from(texts.len()).is_err() {
        return Err(TokenizerError::malformed(KEY_TOKENS, format!("{} tokens do not fit u32 ids", texts.len())));
    }
    Ok(texts)
}

/// Attributes from `tokenizer.ggml.token_type`; all normal when the key is absent.
pub fn token_attrs(meta: &Metadata, n_tokens: usize) -> Result<Vec<TokenAttr>, TokenizerError> {
    let key = KEY_TOKEN_TYPE;
    if meta.get(key).is_none() {
        return Ok(vec![TokenAttr::NORMAL; n_tokens]);
    }
    let types = array(meta, key)?;
    if types.len() != n_tokens {
        return Err(TokenizerError::malformed(key, format!("{} types for {n_tokens} tokens", types.len())));
    }
    types
        .values()
        .enumerate()
        .map(|(id, t)| match t.as_f64() {
            Some(v) if (0.0..=6.0).contains(&v) && v.fract() == 0.0 => Ok(TokenAttr::from_token_type(v as i64)),
            Some(v) if v.fract() == 0.0 => Err(TokenizerError::malformed(
                key,
                format!("element {id} is {v}, not a token type (0 undefined, 1 normal .. 6 byte)"),
            )),
            _ => Err(TokenizerError::malformed(key, format!("element {id} is {:?}, not an integer", t.meta_type()))),
        })
        .collect()
}

/// Token text to id; a repeated text maps to its last id, as in llama.cpp.
pub fn ids_by_text(texts: &[String]) -> HashMap<String, u32> {
    texts.iter().enumerate().map(|(id, text)| (text.clone(), id as u32)).collect()
}

/// Special token ids named by the metadata.
#[derive(Debug, Default, Clone)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

impl SpecialIds {
    pub fn read(meta: &Metadata, n_tokens: usize) -> Result<SpecialIds, TokenizerError> {
        let id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            let Some(value) = meta.get(key) else { return Ok(None) };
            match value.as_u64() {
                Some(id) if (id as usize) < n_tokens && id <= u32::MAX as u64 => Ok(Some(id as u32)),
                Some(id) => {
                    Err(TokenizerError::malformed(key, format!("id {id} is outside the {n_tokens}-token vocabulary")))
                }
                None => {
                    Err(TokenizerError::malformed(key, format!("expected a token id, found {:?}", value.meta_type())))
                }
            }
        };
        Ok(SpecialIds {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            eom: id("tokenizer.ggml.eom_token_id")?,
            fim_pre: id("tokenizer.ggml.fim_pre_token_id")?,
            fim_suf: id("tokenizer.ggml.fim_suf_token_id")?,
            fim_mid: id("tokenizer.ggml.fim_mid_token_id")?,
            fim_pad: id("tokenizer.ggml.fim_pad_token_id")?,
            fim_rep: id("tokenizer.ggml.fim_rep_token_id")?,
            fim_sep: id("tokenizer.ggml.fim_sep_token_id")?,
        })
    }
}

// Texts by which llama.cpp recognises special tokens that the metadata does not name.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

/// Tokens that end generation whatever the metadata says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Tokens llama.cpp always renders as text (gpt-oss): forced to user-defined.
const ALWAYS_RENDERED_TEXTS: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// The metadata's id, or else the lowest id whose text is one of `texts`, which
/// llama.cpp then marks as a control token. (llama.cpp takes the first in hash
/// order when several match; the lowest id is the deterministic choice.)
fn named_or_found(
    named: Option<u32>,
    texts: &[&str],
    by_text: &HashMap<String, u32>,
    attrs: &mut [TokenAttr],
) -> Option<u32> {
    if named.is_some() {
        return named;
    }
    let found = texts.iter().filter_map(|t| by_text.get(*t).copied()).min()?;
    mark_control(attrs, found);
    Some(found)
}

fn mark_control(attrs: &mut [TokenAttr], id: u32) {
    let attr = &mut attrs[id as usize];
    *attr = *attr | TokenAttr::CONTROL;
}

/// llama.cpp's end-of-generation set; also marks the control tokens it finds by text.
pub fn end_of_generation(
    named: &SpecialIds,
    by_text: &HashMap<String, u32>,
    texts: &[String],
    attrs: &mut [TokenAttr],
) -> BTreeSet<u32> {
    let mut found = |named: Option<u32>, candidates: &[&str]| named_or_found(named, candidates, by_text, attrs);
    let eot = found(named.eot, EOT_TEXTS);
    let eom = found(named.eom, EOM_TEXTS);
    for (id, candidates) in
        [(named.fim_pre, FIM_PRE_TEXTS), (named.fim_suf, FIM_SUF_TEXTS), (named.fim_mid, FIM_MID_TEXTS)]
    {
        found(id, candidates);
    }
    let fim_pad = found(named.fim_pad, FIM_PAD_TEXTS);
    let fim_rep = found(named.fim_rep, FIM_REP_TEXTS);
    let fim_sep = found(named.fim_sep, FIM_SEP_TEXTS);

    let mut eog: BTreeSet<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
    for &text in EOG_TEXTS {
        if let Some(&id) = by_text.get(text) {
            eog.insert(id);
            mark_control(attrs, id);
        }
    }
    for &text in ALWAYS_RENDERED_TEXTS {
        if let Some(&id) = by_text.get(text) {
            attrs[id as usize] = TokenAttr::USER_DEFINED;
        }
    }
    eog.extend([named.eos, eot, eom].into_iter().flatten());
    drop_eog_exceptions(&mut eog, texts, attrs);
    eog
}

/// llama.cpp's two exceptions: `<|end|>` is not an end when `<|return|>` and a
/// call token are (gpt-oss), or a call and `<|flush|>` (solar-open); `</s>` is a
/// normal token when `<|tool_response>` or `<|plamo:eos|>` is an end.
fn drop_eog_exceptions(eog: &mut BTreeSet<u32>, texts: &[String], attrs: &mut [TokenAttr]) {
    let find = |eog: &BTreeSet<u32>, wanted: &[&str]| {
        eog.iter().copied().find(|&id| wanted.contains(&texts[id as usize].as_str()))
    };
    let has = |eog: &BTreeSet<u32>, wanted: &[&str]| find(eog, wanted).is_some();
    if let Some(end) = find(eog, &["<|end|>"]) {
        let call = has(eog, &["<|call|>", "<|calls|>"]);
        if call && (has(eog, &["<|return|>"]) || has(eog, &["<|flush|>"])) {
            eog.remove(&end);
            attrs[end as usize] = TokenAttr::USER_DEFINED;
        }
    }
    if let Some(s) = find(eog, &["</s>"]) {
        if has(eog, &["<|tool_response>", "<|plamo:eos|>"]) {
            eog.remove(&s);
            attrs[s as usize] = TokenAttr::NORMAL;
        }
    }
}

/// Each token's bytes, as llama.cpp's token-to-piece with special tokens shown:
/// control, user-defined and unknown tokens are their text; normal ones their
/// byte-level text decoded; byte tokens (`<0xAB>`) their byte; others nothing.
pub fn pieces(texts: &[String], attrs: &[TokenAttr]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::with_capacity(texts.iter().map(String::len).sum());
    let mut ends = Vec::with_capacity(texts.len());
    for (text, &attr) in texts.iter().zip(attrs) {
        if attr.has(TokenAttr::CONTROL | TokenAttr::USER_DEFINED | TokenAttr::UNKNOWN) {
            bytes.extend_from_slice(text.as_bytes());
        } else if attr.has(TokenAttr::NORMAL) {
            bytes.extend(bytelevel::decode(text));
        } else if attr.has(TokenAttr::BYTE) {
            bytes.extend(byte_token_value(text));
        }
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// The byte of a `<0xAB>` token.
fn byte_token_value(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(texts: &[&str]) -> (Vec<String>, HashMap<String, u32>) {
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let by_text = ids_by_text(&texts);
        (texts, by_text)
    }

    #[test]
    fn eog_takes_named_ids_and_known_texts() {
        let (texts, by_text) =
            vocab(&["a", "<|endoftext|>", "<|im_end|>", "<|fim_pad|>", "<|repo_name|>", "</s>", "x"]);
        let mut attrs = vec![TokenAttr::NORMAL; texts.len()];
        let named = SpecialIds { eos: Some(6), ..Default::default() };
        let eog = end_of_generation(&named, &by_text, &texts, &mut attrs);
        assert_eq!(eog.into_iter().collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
        // found by text: marked control; named eos: left as it was
        assert!(attrs[5].has(TokenAttr::CONTROL) && attrs[3].has(TokenAttr::CONTROL));
        assert_eq!(attrs[6], TokenAttr::NORMAL);
    }

    #[test]
    fn gpt_oss_end_is_not_an_end() {
        let (texts, by_text) = vocab(&["<|end|>", "<|return|>", "<|call|>", "<|start|>"]);
        let mut attrs = vec![TokenAttr::CONTROL; texts.len()];
        let eog = end_of_generation(&SpecialIds::default(), &by_text, &texts, &mut attrs);
        assert_eq!(eog.into_iter().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(attrs[0], TokenAttr::USER_DEFINED);
        assert_eq!(attrs[3], TokenAttr::USER_DEFINED);
    }

    #[test]
    fn pieces_by_attribute() {
        let texts: Vec<String> =
            ["\u{120}hi", "<|im_end|>", "[PAD1]", "<0x0A>"].iter().map(|t| t.to_string()).collect();
        let attrs = [TokenAttr::NORMAL, TokenAttr::CONTROL, TokenAttr::UNUSED, TokenAttr::BYTE];
        let (bytes, ends) = pieces(&texts, &attrs);
        assert_eq!(bytes, b" hi<|im_end|>\n");
        assert_eq!(ends, [3, 13, 13, 14]);
    }
}
