//! Pre-tokenizers: the regex splits that cut text into words before BPE.
//!
//! llama.cpp does not run these regexes through a regex engine: it walks the
//! code points by hand, and where its walk and the regex disagree (text at a
//! segment end, the order of alternatives) the walk is what the reference ids
//! come from. So these are hand-written walks with the same decisions; each
//! branch names the regex alternative it stands for.

use super::unicode_classes::RUNS;

/// The general-category class of a code point, as far as the splits care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharClass {
    /// `\p{L}`: Lu, Ll, Lt, Lm, Lo.
    Letter,
    /// `\p{N}`: Nd, Nl, No.
    Number,
    /// Everything else, unassigned code points included.
    Other,
}

pub fn char_class(c: char) -> CharClass {
    let cp = c as u32;
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => CharClass::Letter,
            '0'..='9' => CharClass::Number,
            _ => CharClass::Other,
        };
    }
    let run = RUNS.partition_point(|&(start, _)| start <= cp) - 1;
    RUNS[run].1
}

/// Which split a vocabulary uses (`tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Qwen2,
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
    Gpt2,
    /// Every `\p{N}` cut out on its own first, then the GPT-2 split inside each piece
    /// (StarCoder's and SmolLM's pre-tokenizer).
    DigitsThenGpt2,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, with llama.cpp's aliases.
    pub fn from_name(name: &str) -> Option<PreTokenizer> {
        Some(match name {
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "hunyuan" | "solar-open" | "grok-2" => {
                PreTokenizer::Qwen2
            }
            "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" => PreTokenizer::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                PreTokenizer::DigitsThenGpt2
            }
            _ => return None,
        })
    }

    /// Splits `text` into words; concatenated, the words give back `text`.
    pub fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let chars = Chars::new(text);
        let mut lengths = Vec::new();
        match self {
            PreTokenizer::Qwen2 => split_qwen2(&chars.window(0, chars.len()), &mut lengths),
            PreTokenizer::Gpt2 => split_gpt2(&chars.window(0, chars.len()), &mut lengths),
            PreTokenizer::DigitsThenGpt2 => {
                for (start, end) in digit_segments(&chars) {
                    split_gpt2(&chars.window(start, end), &mut lengths);
                }
            }
        }
        chars.slices(text, &lengths)
    }
}

/// The code points of a text with their byte offsets.
struct Chars {
    chars: Vec<char>,
    byte_offsets: Vec<usize>,
}

impl Chars {
    fn new(text: &str) -> Chars {
        let (byte_offsets, chars) = text.char_indices().unzip();
        Chars { chars, byte_offsets }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    fn window(&self, start: usize, end: usize) -> Window<'_> {
        Window { chars: &self.chars[start..end] }
    }

    /// Cuts `text` into consecutive pieces of `lengths` code points.
    fn slices<'t>(&self, text: &'t str, lengths: &[usize]) -> Vec<&'t str> {
        let byte_at = |i: usize| self.byte_offsets.get(i).copied().unwrap_or(text.len());
        let mut start = 0;
        lengths
            .iter()
            .map(|&n| {
                let piece = &text[byte_at(start)..byte_at(start + n)];
                start += n;
                piece
            })
            .collect()
    }
}

/// One segment being split. Positions past its end read as "no character":
/// no class, not whitespace, so a lookahead never sees the next segment.
struct Window<'c> {
    chars: &'c [char],
}

impl Window<'_> {
    fn len(&self) -> usize {
        self.chars.len()
    }

    fn at(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }

    fn is(&self, pos: usize, class: CharClass) -> bool {
        self.at(pos).is_some_and(|c| char_class(c) == class)
    }

    fn is_letter(&self, pos: usize) -> bool {
        self.is(pos, CharClass::Letter)
    }

    fn is_number(&self, pos: usize) -> bool {
        self.is(pos, CharClass::Number)
    }

    fn is_space(&self, pos: usize) -> bool {
        self.at(pos).is_some_and(char::is_whitespace)
    }

    fn is_newline(&self, pos: usize) -> bool {
        matches!(self.at(pos), Some('\r' | '\n'))
    }

    /// `[^\s\p{L}\p{N}]` at a position inside the segment.
    fn is_other(&self, pos: usize) -> bool {
        pos < self.len() && !self.is_space(pos) && self.is(pos, CharClass::Other)
    }

    /// Neither whitespace, letter nor number; true past the end, where llama.cpp's
    /// empty flags pass this test.
    fn is_not_space_letter_number(&self, pos: usize) -> bool {
        !self.is_space(pos) && !self.is_letter(pos) && !self.is_number(pos)
    }

    fn skip_while(&self, mut pos: usize, test: impl Fn(&Self, usize) -> bool) -> usize {
        while test(self, pos) {
            pos += 1;
        }
        pos
    }

    /// The length of a contraction (`'s`, `'re`, ...) at `pos`, if one starts there.
    fn contraction(&self, pos: usize, ignore_case: bool) -> Option<usize> {
        if self.at(pos) != Some('\'') {
            return None;
        }
        let letter = |i: usize| self.at(pos + i).map(|c| if ignore_case { c.to_ascii_lowercase() } else { c });
        match (letter(1)?, letter(2)) {
            ('s' | 't' | 'm' | 'd', _) => Some(2),
            ('r', Some('e')) | ('v', Some('e')) | ('l', Some('l')) => Some(3),
            _ => None,
        }
    }

    /// Where a whitespace run starting at `pos` ends, and the end of its last `\r` or `\n`.
    fn whitespace_run(&self, pos: usize) -> (usize, Option<usize>) {
        let end = self.skip_while(pos, Self::is_space);
        let last_newline_end = (pos..end).rev().find(|&i| self.is_newline(i)).map(|i| i + 1);
        (end, last_newline_end)
    }

    /// `\s+(?!\S)` then `\s+`: a run of several spaces followed by a non-space
    /// leaves its last space to the next word.
    fn whitespace_token_end(&self, pos: usize, run_end: usize) -> usize {
        if run_end - pos > 1 && run_end < self.len() {
            run_end - 1
        } else {
            run_end
        }
    }
}

/// Appends the word lengths (in code points) of Qwen2's split of `w`.
fn split_qwen2(w: &Window, lengths: &mut Vec<usize>) {
    let mut pos = 0;
    while pos < w.len() {
        let end = qwen2_word_end(w, pos);
        lengths.push(end - pos);
        pos = end;
    }
}

fn qwen2_word_end(w: &Window, pos: usize) -> usize {
    let c = w.chars[pos];
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if let Some(n) = w.contraction(pos, true) {
        return pos + n;
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if !w.is_newline(pos) && !w.is_number(pos) && (w.is_letter(pos) || w.is_letter(pos + 1)) {
        return w.skip_while(pos + 1, Window::is_letter);
    }
    // \p{N}: one digit per word
    if w.is_number(pos) {
        return pos + 1;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    let after_space = pos + usize::from(c == ' ');
    if w.is_not_space_letter_number(if c == ' ' { pos + 1 } else { pos }) {
        let end = w.skip_while(after_space, Window::is_other);
        return w.skip_while(end, Window::is_newline);
    }
    let (run_end, last_newline_end) = w.whitespace_run(pos);
    // \s*[\r\n]+
    if let Some(end) = last_newline_end {
        return end;
    }
    // \s+(?!\S) | \s+
    if run_end > pos {
        return w.whitespace_token_end(pos, run_end);
    }
    pos + 1
}

/// Appends the word lengths of GPT-2's split of `w`.
fn split_gpt2(w: &Window, lengths: &mut Vec<usize>) {
    let mut pos = 0;
    while pos < w.len() {
        let end = gpt2_word_end(w, pos);
        lengths.push(end - pos);
        pos = end;
    }
}

fn gpt2_word_end(w: &Window, pos: usize) -> usize {
    // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
    if let Some(n) = w.contraction(pos, false) {
        return pos + n;
    }
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the optional space, then a run of one class
    let body = pos + usize::from(w.chars[pos] == ' ');
    if w.is_letter(body) {
        return w.skip_while(body, Window::is_letter);
    }
    if w.is_number(body) {
        return w.skip_while(body, Window::is_number);
    }
    if w.is_other(body) {
        return w.skip_while(body, Window::is_other);
    }
    // \s+(?!\S) and the whitespace left over
    let (run_end, _) = w.whitespace_run(pos);
    if run_end > pos {
        return w.whitespace_token_end(pos, run_end);
    }
    pos + 1
}

/// Segments (code point ranges) of `\p{N}` split: each number alone, the text between as one.
fn digit_segments(chars: &Chars) -> Vec<(usize, usize)> {
    let all = chars.window(0, chars.len());
    let mut segments = Vec::new();
    let mut start = 0;
    for pos in 0..chars.len() {
        if all.is_number(pos) {
            if start < pos {
                segments.push((start, pos));
            }
            segments.push((pos, pos + 1));
            start = pos + 1;
        }
    }
    if start < chars.len() {
        segments.push((start, chars.len()));
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen2(text: &str) -> Vec<&str> {
        PreTokenizer::Qwen2.split(text)
    }

    fn smollm(text: &str) -> Vec<&str> {
        PreTokenizer::DigitsThenGpt2.split(text)
    }

    #[test]
    fn classes_cover_scripts_beyond_ascii() {
        for c in ['é', 'ß', 'Ж', 'λ', '中', 'あ', 'ア', '한', 'ا', 'ー', '\u{2EBF0}'] {
            assert_eq!(char_class(c), CharClass::Letter, "{c:?} (U+{:04X})", c as u32);
        }
        for c in ['٣', '²', 'Ⅻ', '½', '𝟘', '①'] {
            assert_eq!(char_class(c), CharClass::Number, "{c:?} (U+{:04X})", c as u32);
        }
        // combining marks, emoji, CJK punctuation, and U+1C89 (assigned only in Unicode 16)
        for c in ['\u{301}', '😀', '，', '。', '\u{1C89}', '\u{10FFFF}', '_', '$'] {
            assert_eq!(char_class(c), CharClass::Other, "{c:?} (U+{:04X})", c as u32);
        }
    }

    #[test]
    fn qwen2_contractions_any_case() {
        assert_eq!(qwen2("I'm we'RE it'S you'll"), ["I", "'m", " we", "'RE", " it", "'S", " you", "'ll"]);
        // a quote with no contraction after it is punctuation
        assert_eq!(qwen2("'x' 'Ve"), ["'x", "'", " '", "Ve"]);
    }

    #[test]
    fn qwen2_numbers_are_single_digits() {
        assert_eq!(qwen2("x=12345;"), ["x", "=", "1", "2", "3", "4", "5", ";"]);
        assert_eq!(qwen2("add(2, 3)"), ["add", "(", "2", ",", " ", "3", ")"]);
        assert_eq!(qwen2("٣²"), ["٣", "²"]);
    }

    #[test]
    fn qwen2_letters_take_one_leading_non_letter() {
        assert_eq!(qwen2("(a, b):"), ["(a", ",", " b", "):"]);
        assert_eq!(qwen2("$x _y"), ["$x", " _", "y"]);
    }

    #[test]
    fn qwen2_cjk_and_emoji() {
        // punctuation before letters is their optional prefix
        assert_eq!(qwen2("你好，世界！"), ["你好", "，世界", "！"]);
        assert_eq!(qwen2("hi 😀😀 ok"), ["hi", " 😀😀", " ok"]);
        assert_eq!(qwen2("こんにちは 안녕"), ["こんにちは", " 안녕"]);
        // a combining mark is not a letter: it ends the word (llama.cpp applies no NFC)
        assert_eq!(qwen2("cafe\u{301} re\u{301}sume\u{301}"), ["cafe", "\u{301}", " re", "\u{301}sume", "\u{301}"]);
    }

    #[test]
    fn qwen2_whitespace_runs_leave_last_space_to_the_word() {
        assert_eq!(qwen2("   leading and trailing   "), ["  ", " leading", " and", " trailing", "   "]);
        assert_eq!(qwen2("a\t\tb"), ["a", "\t", "\tb"]);
        assert_eq!(qwen2("x  1"), ["x", " ", " ", "1"]);
    }

    #[test]
    fn qwen2_newlines() {
        assert_eq!(qwen2("a:\n    if"), ["a", ":\n", "   ", " if"]);
        assert_eq!(qwen2("a\n\nb"), ["a", "\n\n", "b"]);
        // spaces before newlines go with them; spaces after the last newline are a run of their own
        assert_eq!(qwen2("a  \n  \n  b"), ["a", "  \n  \n", " ", " b"]);
        assert_eq!(qwen2("x\r\n"), ["x", "\r\n"]);
        assert_eq!(qwen2(")\n\n"), [")\n\n"]);
    }

    #[test]
    fn qwen2_trailing_single_space() {
        assert_eq!(qwen2("a "), ["a", " "]);
        assert_eq!(qwen2(" "), [" "]);
        assert_eq!(qwen2(""), Vec::<&str>::new());
    }

    #[test]
    fn gpt2_contractions_are_case_sensitive() {
        let gpt2 = |t| PreTokenizer::Gpt2.split(t);
        assert_eq!(gpt2("I'm I'M"), ["I", "'m", " I", "'", "M"]);
        assert_eq!(gpt2("x  y"), ["x", " ", " y"]);
        assert_eq!(gpt2("a 12 b"), ["a", " 12", " b"]);
        assert_eq!(gpt2("hi!!  "), ["hi", "!!", "  "]);
    }

    #[test]
    fn smollm_cuts_every_digit_before_the_gpt2_split() {
        assert_eq!(smollm("a 123 b"), ["a", " ", "1", "2", "3", " b"]);
        assert_eq!(smollm("v2.0"), ["v", "2", ".", "0"]);
        // a digit cuts the segment, so whitespace before it ends without lookahead
        assert_eq!(smollm("x   7"), ["x", "   ", "7"]);
        assert_eq!(smollm("don't"), ["don", "'t"]);
    }

    #[test]
    fn split_reassembles_the_text() {
        let text = "Mixed: 東京 2024年, naïve café — “quotes” \u{a0}nbsp\u{3000}ideographic\r\n\tend 😀👍🏽 ";
        for pre in [PreTokenizer::Qwen2, PreTokenizer::Gpt2, PreTokenizer::DigitsThenGpt2] {
            let words = pre.split(text);
            assert_eq!(words.concat(), text, "{pre:?}");
            assert!(words.iter().all(|w| !w.is_empty()), "{pre:?}: {words:?}");
        }
    }
}
