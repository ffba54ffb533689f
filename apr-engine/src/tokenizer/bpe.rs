//! Byte-pair merging of one pre-tokenized word, by merge rank.
//!
//! Like llama.cpp: start from one symbol per code point of the byte-level word,
//! repeatedly merge the adjacent pair with the lowest rank (the leftmost on a
//! tie), and stop when no adjacent pair is a merge. A priority queue holds the
//! candidate pairs; entries made stale by an earlier merge are skipped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// A merge line that is not `"left right"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("element {index} ({line:?}) is not two symbols separated by a space")]
pub struct MalformedMerge {
    pub index: usize,
    pub line: String,
}

/// Merge ranks, keyed by the merge line itself (`"left right"`).
///
/// Byte-level symbols never contain a plain space (space is spelt U+0120), so
/// `left + " " + right` names the pair exactly as llama.cpp's split of the line
/// at its first space after position 0 does.
pub struct Merges {
    rank_of: HashMap<String, u32>,
}

impl Merges {
    /// Ranks from `tokenizer.ggml.merges` in file order; a repeated line keeps
    /// its first rank. A line must be two symbols separated by a space (after
    /// its first character, as llama.cpp splits it); one that is not would
    /// never match and is refused, as llama.cpp refuses it.
    pub fn new<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Merges, MalformedMerge> {
        let mut rank_of = HashMap::new();
        for (rank, line) in lines.into_iter().enumerate() {
            let separated = line.char_indices().skip(1).any(|(_, c)| c == ' ') && !line.ends_with(' ');
            if !separated {
                return Err(MalformedMerge { index: rank, line: line.to_string() });
            }
            rank_of.entry(line.to_string()).or_insert(rank as u32);
        }
        Ok(Merges { rank_of })
    }

    pub fn len(&self) -> usize {
        self.rank_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rank_of.is_empty()
    }

    fn rank(&self, left: &str, right: &str, key: &mut String) -> Option<u32> {
        key.clear();
        key.push_str(left);
        key.push(' ');
        key.push_str(right);
        self.rank_of.get(key.as_str()).copied()
    }

    /// The BPE pieces of a byte-level word, as consecutive slices of it.
    pub fn apply<'w>(&self, word: &'w str) -> Vec<&'w str> {
        let mut state = MergeState::new(word);
        let mut key = String::new();
        for left in 0..state.symbols.len().saturating_sub(1) {
            state.push_pair(self, left, left + 1, &mut key);
        }
        while let Some(Reverse(pair)) = state.queue.pop() {
            if state.is_current(&pair) {
                state.merge(self, pair, &mut key);
            }
        }
        state.pieces()
    }
}

/// A symbol: a byte range of the word, linked to its live neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    /// 0 once merged into its left neighbour.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge. Field order makes the derived ordering the queue's:
/// lowest rank first, then leftmost.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Pair {
    rank: u32,
    left: usize,
    right: usize,
    /// Byte length of the two symbols when the pair was queued.
    len: usize,
}

struct MergeState<'w> {
    word: &'w str,
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Reverse<Pair>>,
}

impl<'w> MergeState<'w> {
    fn new(word: &'w str) -> Self {
        let count = word.chars().count();
        let symbols = word
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < count).then_some(i + 1),
            })
            .collect();
        MergeState { word, symbols, queue: BinaryHeap::new() }
    }

    fn text(&self, index: usize) -> &'w str {
        let s = self.symbols[index];
        &self.word[s.start..s.start + s.len]
    }

    fn push_pair(&mut self, merges: &Merges, left: usize, right: usize, key: &mut String) {
        if let Some(rank) = merges.rank(self.text(left), self.text(right), key) {
            let len = self.symbols[left].len + self.symbols[right].len;
            self.queue.push(Reverse(Pair { rank, left, right, len }));
        }
    }

    /// Whether a queued pair still describes two live neighbours as they were
    /// queued. A live left symbol only grows by absorbing its right neighbour, so
    /// unchanged lengths mean unchanged text.
    fn is_current(&self, pair: &Pair) -> bool {
        let (left, right) = (self.symbols[pair.left], self.symbols[pair.right]);
        left.len > 0 && right.len > 0 && left.len + right.len == pair.len
    }

    fn merge(&mut self, merges: &Merges, pair: Pair, key: &mut String) {
        let right = self.symbols[pair.right];
        let left = &mut self.symbols[pair.left];
        left.len += right.len;
        left.next = right.next;
        let prev = left.prev;
        self.symbols[pair.right].len = 0;
        if let Some(next) = right.next {
            self.symbols[next].prev = Some(pair.left);
            self.push_pair(merges, pair.left, next, key);
        }
        if let Some(prev) = prev {
            self.push_pair(merges, prev, pair.left, key);
        }
    }

    fn pieces(&self) -> Vec<&'w str> {
        (0..self.symbols.len()).filter(|&i| self.symbols[i].len > 0).map(|i| self.text(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merges(lines: &[&str]) -> Merges {
        Merges::new(lines.iter().copied()).unwrap()
    }

    #[test]
    fn a_line_without_a_separating_space_is_refused() {
        for bad in ["ab", " ab", "ab ", ""] {
            let err = Merges::new(["a b", bad]).err().unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(err, MalformedMerge { index: 1, line: bad.to_string() });
        }
    }

    #[test]
    fn merges_lowest_rank_first() {
        let m = merges(&["b c", "a b", "a bc"]);
        // "b c" (rank 0) wins over "a b" (rank 1), then "a bc" applies
        assert_eq!(m.apply("abc"), ["abc"]);
        let m = merges(&["a b", "b c"]);
        assert_eq!(m.apply("abc"), ["ab", "c"]);
    }

    #[test]
    fn ties_go_to_the_leftmost_pair() {
        let m = merges(&["a a"]);
        assert_eq!(m.apply("aaa"), ["aa", "a"]);
        assert_eq!(m.apply("aaaa"), ["aa", "aa"]);
        let m = merges(&["a a", "aa aa"]);
        assert_eq!(m.apply("aaaaa"), ["aaaa", "a"]);
    }

    #[test]
    fn stale_pairs_are_skipped() {
        // "b c" is queued, but "a b" merges first and consumes the b
        let m = merges(&["a b", "b c", "ab c"]);
        assert_eq!(m.apply("abc"), ["abc"]);
        let m = merges(&["a b", "b c"]);
        assert_eq!(m.apply("abcbc"), ["ab", "c", "bc"]);
    }

    #[test]
    fn multibyte_symbols_and_no_merges() {
        let m = merges(&["\u{120} h", "\u{120}h i"]);
        assert_eq!(m.apply("\u{120}hi\u{120}"), ["\u{120}hi", "\u{120}"]);
        assert_eq!(m.apply("xyz"), ["x", "y", "z"]);
        assert!(m.apply("").is_empty());
    }

    #[test]
    fn repeated_line_keeps_first_rank() {
        let m = merges(&["b c", "a b", "b c"]);
        assert_eq!(m.len(), 2);
        assert_eq!(m.apply("abc"), ["a", "bc"]);
    }
}
