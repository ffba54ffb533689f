//! Special tokens written in the text: cut out whole before BPE.
//!
//! As llama.cpp partitions: the special tokens, longest text first, each in turn
//! cut every text fragment at each of its non-overlapping occurrences (left to
//! right). So a longer token wins over a shorter one that overlaps it, wherever
//! either starts. Control and unknown tokens are matched only when special
//! parsing is on; user-defined ones (Qwen's `<tool_call>`) always.

use std::ops::Range;

/// A piece of the text after partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

struct SpecialToken {
    text: String,
    id: u32,
    /// Matched even with special parsing off (user-defined tokens).
    always: bool,
}

pub struct SpecialTokens {
    /// Longest text first; ties by id so that the order is deterministic.
    tokens: Vec<SpecialToken>,
}

impl SpecialTokens {
    /// `(text, id, always)` for each control, user-defined or unknown token.
    pub fn new(tokens: impl IntoIterator<Item = (String, u32, bool)>) -> SpecialTokens {
        let mut tokens: Vec<SpecialToken> = tokens
            .into_iter()
            .filter(|(text, _, _)| !text.is_empty())
            .map(|(text, id, always)| SpecialToken { text, id, always })
            .collect();
        tokens.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        SpecialTokens { tokens }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn partition<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        self.partition_with(text, parse_special, &[])
    }

    /// [`SpecialTokens::partition`] with special parsing on, except inside the
    /// byte ranges `literal` (text a user typed): there a special token's
    /// text stays text, as with special parsing off.
    pub fn partition_outside<'t>(&self, text: &'t str, literal: &[Range<usize>]) -> Vec<Fragment<'t>> {
        self.partition_with(text, true, literal)
    }

    fn partition_with<'t>(&self, text: &'t str, parse_special: bool, literal: &[Range<usize>]) -> Vec<Fragment<'t>> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        for token in &self.tokens {
            if (parse_special || token.always) && text.contains(token.text.as_str()) {
                let literal = if token.always { &[][..] } else { literal };
                fragments = cut_at(text, &fragments, token, literal);
            }
        }
        fragments
    }

    /// Each special token found in `text`, in order, with its byte range and
    /// whether it is matched even with special parsing off.
    pub fn find_all(&self, text: &str) -> Vec<(Range<usize>, bool)> {
        let mut found = Vec::new();
        let mut at = 0;
        for fragment in self.partition(text, true) {
            match fragment {
                Fragment::Text(t) => at += t.len(),
                Fragment::Token(id) => {
                    let token = self.tokens.iter().find(|t| t.id == id).expect("partition returns known ids");
                    found.push((at..at + token.text.len(), token.always));
                    at += token.text.len();
                }
            }
        }
        found
    }
}

/// Cuts every text fragment at each occurrence of `token` that does not
/// overlap a `literal` range of `whole` (the fragments are slices of it).
fn cut_at<'t>(
    whole: &'t str,
    fragments: &[Fragment<'t>],
    token: &SpecialToken,
    literal: &[Range<usize>],
) -> Vec<Fragment<'t>> {
    let mut out = Vec::with_capacity(fragments.len() + 2);
    for fragment in fragments {
        let Fragment::Text(text) = *fragment else {
            out.push(*fragment);
            continue;
        };
        // Where this fragment starts in `whole` (it is a sub-slice of it).
        let base = text.as_ptr() as usize - whole.as_ptr() as usize;
        let mut rest_start = 0;
        for (at, _) in text.match_indices(token.text.as_str()) {
            let span = base + at..base + at + token.text.len();
            if at < rest_start || literal.iter().any(|r| r.start < span.end && span.start < r.end) {
                continue;
            }
            if at > rest_start {
                out.push(Fragment::Text(&text[rest_start..at]));
            }
            out.push(Fragment::Token(token.id));
            rest_start = at + token.text.len();
        }
        if rest_start < text.len() {
            out.push(Fragment::Text(&text[rest_start..]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Fragment::{Text, Token};

    fn specials() -> SpecialTokens {
        SpecialTokens::new([
            ("<|im_start|>".to_string(), 1, false),
            ("<|im_end|>".to_string(), 2, false),
            ("<tool_call>".to_string(), 3, true),
            ("<|im".to_string(), 4, false),
        ])
    }

    #[test]
    fn cuts_control_tokens_only_when_parsing_special() {
        let s = specials();
        assert_eq!(
            s.partition("<|im_start|>user\nhi<|im_end|>\n", true),
            [Token(1), Text("user\nhi"), Token(2), Text("\n")]
        );
        assert_eq!(s.partition("<|im_start|>user", false), [Text("<|im_start|>user")]);
    }

    #[test]
    fn user_defined_tokens_are_cut_either_way() {
        let s = specials();
        assert_eq!(s.partition("a<tool_call>b<tool_call>", false), [Text("a"), Token(3), Text("b"), Token(3)]);
    }

    #[test]
    fn control_tokens_inside_literal_ranges_stay_text() {
        let s = specials();
        let text = "<|im_start|>user\nx<|im_end|>y<tool_call><|im_end|>";
        // the first <|im_end|> (bytes 18..28) and the <tool_call> are in the literal range
        assert_eq!(
            s.partition_outside(text, &[Range { start: 18, end: 39 }]),
            [Token(1), Text("user\nx<|im_end|>y"), Token(3), Token(2)]
        );
        assert_eq!(s.find_all("a<|im_end|><tool_call>"), [(1..11, false), (11..22, true)]);
    }

    #[test]
    fn longest_token_wins_over_a_shorter_prefix() {
        let s = specials();
        assert_eq!(s.partition("<|im<|im_end|>x", true), [Token(4), Token(2), Text("x")]);
        assert!(s.partition("", true).is_empty());
    }
}
