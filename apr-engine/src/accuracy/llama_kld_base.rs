//! llama.cpp's KL-divergence base file: the full-vocabulary log-probabilities
//! that `llama-perplexity -m MODEL -f TEXT -c N_CTX --kl-divergence-base FILE`
//! writes for the scored positions of TEXT (tools/perplexity/perplexity.cpp,
//! llama.cpp 0c1e57098).
//!
//! Layout, little-endian, no padding between fields:
//!
//! | offset | field | |
//! |---|---|---|
//! | 0 | magic | the 8 bytes `_logits_` |
//! | 8 | n_ctx | i32: tokens per chunk |
//! | 12 | n_vocab | i32 |
//! | 16 | n_chunk | i32: number of chunks (the text's tokens / n_ctx, rounded down) |
//! | 20 | tokens | i32 x (n_chunk * n_ctx): the text's first n_chunk * n_ctx tokens |
//! | then | records | per chunk, per scored position, `nv = 2 * ceil(n_vocab / 2) + 4` u16 words |
//!
//! llama-perplexity scores the second half of each chunk: positions
//! `n_ctx/2 ..= n_ctx-2` of the chunk, the row at position p predicting the
//! token at p + 1 (so `n_ctx - 1 - n_ctx/2` records per chunk). A record is
//! `f32 scale, f32 min_log_prob, u16 q[n_vocab]` (plus one unused u16 when
//! n_vocab is odd), and the log-probability of token i is
//! `scale * q[i] + min_log_prob`. llama.cpp floors the logits at 16 below the
//! row's maximum before quantizing, so every token at or below that floor reads
//! as `min_log_prob`, and the step between codes is at most 16 / 65535 nats.
//!
//! When the model adds a BOS token, llama.cpp puts it in place of each chunk's
//! first token while evaluating, but the file keeps the text's own token.
//!
//! The file is memory-mapped: records are decoded one position at a time, so a
//! 150k-vocabulary file of hundreds of megabytes costs one row of memory.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::container::cursor::Cursor;
use crate::error::{Error, ParseError, Result};

const MAGIC: &[u8; 8] = b"_logits_";
const HEADER_BYTES: u64 = 20;
/// Two f32 (scale, min_log_prob) at the head of each record, in u16 words.
const RECORD_HEAD_WORDS: u64 = 4;

/// A parsed KL-divergence base file.
#[derive(Debug)]
pub struct LlamaKldBase {
    path: PathBuf,
    map: Mmap,
    n_ctx: usize,
    n_vocab: usize,
    n_chunk: usize,
    tokens: Vec<u32>,
    records_offset: usize,
}

/// Where a scored position lies in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredPosition {
    pub chunk: usize,
    /// Position within the chunk (`n_ctx/2 ..= n_ctx-2`).
    pub pos_in_chunk: usize,
    /// Index of this position's token in [`LlamaKldBase::tokens`].
    pub token_index: usize,
    /// The token at the next position: the one this row predicts.
    pub target: u32,
}

/// How one record's u16 codes map back to log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantization {
    pub scale: f32,
    pub min_log_prob: f32,
}

impl Quantization {
    pub fn decode(&self, code: u16) -> f32 {
        // The same f32 expression llama.cpp's --kl-divergence mode evaluates.
        self.scale * f32::from(code) + self.min_log_prob
    }
}

/// Reads and checks a KL-divergence base file.
pub fn read(path: &Path) -> Result<LlamaKldBase> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only; a file changed underneath us by another
    // process is outside what any reader can defend against.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let layout = parse(&map).map_err(|e| e.in_file(path))?;
    Ok(LlamaKldBase {
        path: path.to_path_buf(),
        map,
        n_ctx: layout.n_ctx,
        n_vocab: layout.n_vocab,
        n_chunk: layout.n_chunk,
        tokens: layout.tokens,
        records_offset: layout.records_offset,
    })
}

/// What [`parse`] checks and finds.
struct Layout {
    n_ctx: usize,
    n_vocab: usize,
    n_chunk: usize,
    tokens: Vec<u32>,
    records_offset: usize,
}

fn parse(bytes: &[u8]) -> Result<Layout, ParseError> {
    let mut cursor = Cursor::new(bytes);
    let magic = cursor.array::<8>("magic")?;
    if &magic != MAGIC {
        return Err(ParseError::new("magic", 0, format!("{magic:02x?} is not \"_logits_\"")));
    }
    let n_ctx = positive_i32(&mut cursor, "n_ctx")?;
    if n_ctx < 3 {
        return Err(ParseError::new(
            "n_ctx",
            8,
            format!("{n_ctx}: llama-perplexity scores positions n_ctx/2..n_ctx-2, so no position is scored"),
        ));
    }
    let n_vocab = positive_i32(&mut cursor, "n_vocab").map_err(|e| explain_short_header(e, bytes.len()))?;
    let n_chunk = positive_i32(&mut cursor, "n_chunk")?;
    let tokens = read_tokens(&mut cursor, n_ctx, n_vocab, n_chunk)?;
    let records_offset = cursor.pos() as usize;
    check_records(bytes, records_offset, n_ctx, n_vocab, n_chunk)?;
    Ok(Layout { n_ctx, n_vocab, n_chunk, tokens, records_offset })
}

fn positive_i32(cursor: &mut Cursor, field: &str) -> Result<usize, ParseError> {
    let at = cursor.pos();
    let value = cursor.i32(field)?;
    if value <= 0 {
        return Err(ParseError::new(field, at, format!("{value} is not positive")));
    }
    Ok(value as usize)
}

/// llama-perplexity writes the magic and n_ctx before it checks that the text
/// is long enough, and stops there when it is not.
fn explain_short_header(error: ParseError, file_len: usize) -> ParseError {
    if file_len == 12 {
        let reason = format!(
            "{}; llama-perplexity stops after n_ctx when the text has fewer than 2 * n_ctx tokens",
            error.reason
        );
        return ParseError { reason, ..error };
    }
    error
}

fn read_tokens(cursor: &mut Cursor, n_ctx: usize, n_vocab: usize, n_chunk: usize) -> Result<Vec<u32>, ParseError> {
    // Both factors are below 2^31, so neither product overflows a u64.
    let count = n_ctx as u64 * n_chunk as u64;
    let bytes = cursor.take(byte_len(count * 4, "tokens", cursor.pos())?, "tokens")?;
    // The bytes are in the file, so this allocation is bounded by its size.
    let mut tokens = Vec::with_capacity(count as usize);
    for (index, raw) in bytes.chunks_exact(4).enumerate() {
        let token = i32::from_le_bytes(raw.try_into().expect("chunks of 4"));
        if token < 0 || token as usize >= n_vocab {
            let offset = HEADER_BYTES + 4 * index as u64;
            let reason = format!("{token} is outside the vocabulary of {n_vocab}");
            return Err(ParseError::new(format!("tokens[{index}]"), offset, reason));
        }
        tokens.push(token as u32);
    }
    Ok(tokens)
}

fn byte_len(len: u64, field: &str, offset: u64) -> Result<usize, ParseError> {
    usize::try_from(len)
        .map_err(|_| ParseError::new(field, offset, format!("{len} bytes is more than memory can address")))
}

fn scored_per_chunk(n_ctx: usize) -> usize {
    n_ctx - 1 - n_ctx / 2
}

/// u16 words per record: llama.cpp rounds n_vocab up to even and adds the two f32.
fn record_words(n_vocab: usize) -> u64 {
    2 * (n_vocab as u64).div_ceil(2) + RECORD_HEAD_WORDS
}

/// The records must fill the rest of the file exactly, and each record's
/// scale and minimum must be those of a log-probability row.
fn check_records(bytes: &[u8], start: usize, n_ctx: usize, n_vocab: usize, n_chunk: usize) -> Result<(), ParseError> {
    let per_chunk = scored_per_chunk(n_ctx) as u64;
    let record_bytes = record_words(n_vocab) * 2;
    let count = n_chunk as u64 * per_chunk;
    let remaining = (bytes.len() - start) as u64;
    let start = start as u64;
    let needed = count.checked_mul(record_bytes).ok_or_else(|| {
        ParseError::new("records", start, format!("{count} records of {record_bytes} bytes overflow a 64-bit size"))
    })?;
    if remaining < needed {
        let complete = remaining / record_bytes;
        let (chunk, pos) = (complete / per_chunk, n_ctx as u64 / 2 + complete % per_chunk);
        let reason = format!(
            "the file ends after {complete} of {count} records ({} bytes short; did llama-perplexity stop early?)",
            needed - remaining
        );
        return Err(ParseError::new(
            format!("chunk {chunk} position {pos} log-probs"),
            start + complete * record_bytes,
            reason,
        ));
    }
    if remaining > needed {
        let reason = format!("{} bytes after the last of {count} records", remaining - needed);
        return Err(ParseError::new("end of file", start + needed, reason));
    }
    for record in 0..count {
        let offset = start + record * record_bytes;
        let mut head = Cursor::at(bytes, offset as usize);
        let scale = head.f32("scale")?;
        let min_log_prob = head.f32("min_log_prob")?;
        let field = |name: &str| {
            format!("chunk {} position {} {name}", record / per_chunk, n_ctx as u64 / 2 + record % per_chunk)
        };
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(ParseError::new(field("scale"), offset, format!("{scale} is not a finite non-negative step")));
        }
        if !(min_log_prob.is_finite() && min_log_prob <= 0.0) {
            return Err(ParseError::new(
                field("min_log_prob"),
                offset + 4,
                format!("{min_log_prob} is not a log-probability"),
            ));
        }
    }
    Ok(())
}

impl LlamaKldBase {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tokens per chunk (llama-perplexity's `-c`).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    pub fn n_chunk(&self) -> usize {
        self.n_chunk
    }

    /// The evaluated tokens, chunk after chunk (`n_chunk * n_ctx`).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The first scored position within a chunk (`n_ctx / 2`).
    pub fn first_scored(&self) -> usize {
        self.n_ctx / 2
    }

    pub fn scored_per_chunk(&self) -> usize {
        scored_per_chunk(self.n_ctx)
    }

    /// The number of records: scored positions over all chunks.
    pub fn n_scored(&self) -> usize {
        self.n_chunk * self.scored_per_chunk()
    }

    /// Where record `index` lies in the text. Panics if `index >= n_scored()`.
    pub fn scored(&self, index: usize) -> ScoredPosition {
        assert!(index < self.n_scored(), "record {index} of {}", self.n_scored());
        let chunk = index / self.scored_per_chunk();
        let pos_in_chunk = self.first_scored() + index % self.scored_per_chunk();
        let token_index = chunk * self.n_ctx + pos_in_chunk;
        ScoredPosition { chunk, pos_in_chunk, token_index, target: self.tokens[token_index + 1] }
    }

    pub fn scored_positions(&self) -> impl Iterator<Item = ScoredPosition> + '_ {
        (0..self.n_scored()).map(|index| self.scored(index))
    }

    /// Record `index`'s scale and minimum. Panics if `index >= n_scored()`.
    pub fn quantization(&self, index: usize) -> Quantization {
        let head = self.record(index);
        let f32_at = |at: usize| f32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
        Quantization { scale: f32_at(0), min_log_prob: f32_at(4) }
    }

    /// The u16 codes of record `index`, one per vocabulary entry.
    pub fn codes(&self, index: usize) -> impl Iterator<Item = u16> + '_ {
        let words = &self.record(index)[RECORD_HEAD_WORDS as usize * 2..][..self.n_vocab * 2];
        words.chunks_exact(2).map(|w| u16::from_le_bytes([w[0], w[1]]))
    }

    /// llama.cpp's log-probabilities at record `index`, decoded to f32 (one
    /// per vocabulary entry). Panics if `index >= n_scored()`.
    pub fn log_probs(&self, index: usize) -> Vec<f32> {
        let quantization = self.quantization(index);
        self.codes(index).map(|code| quantization.decode(code)).collect()
    }

    fn record(&self, index: usize) -> &[u8] {
        assert!(index < self.n_scored(), "record {index} of {}", self.n_scored());
        let record_bytes = record_words(self.n_vocab) as usize * 2;
        &self.map[self.records_offset + index * record_bytes..][..record_bytes]
    }
}
