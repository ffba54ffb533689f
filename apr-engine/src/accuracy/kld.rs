//! An engine's distance to exact math, measured: a text is run teacher-forced,
//! in chunks as llama-perplexity runs it, through the fast backend and the
//! exact one (`cpu-reference`: every weight dequantized and dotted in f64),
//! and at every scored position the two next-token distributions are compared
//! (KL divergence of the engine from the exact one, top-1 agreement, largest
//! log-probability and logit differences). Given llama.cpp's KL-divergence
//! base file for the same text, llama.cpp's distributions are compared with
//! the same exact reference, so the two engines' errors are figures side by
//! side instead of an argument over near ties.

use serde::Serialize;

use super::llama_kld_base::LlamaKldBase;
use crate::error::{Error, Result};
use crate::model::{Logits, Model};
use crate::tokenizer::Tokenizer;

pub const SCHEMA: &str = "apr.kld.v1";
/// `max|dlogp|` is taken over the tokens this close (nats) to the exact top:
/// llama.cpp's base file floors everything 16 nats below its own top, so a
/// narrower window compares values both files really hold.
pub const LOGPROB_WINDOW: f64 = 10.0;

/// The smallest chunk with a scored position: `n_ctx/2 .. n_ctx-1` is empty below 4.
pub const MIN_CTX: usize = 4;

/// A text's tokens, cut into the chunks llama-perplexity evaluates.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunks {
    pub n_ctx: usize,
    /// `n_chunk * n_ctx` tokens, the text's own (before any BOS substitution).
    pub tokens: Vec<u32>,
    /// Put in place of each chunk's first token while evaluating, when the
    /// model adds a BOS token (as llama-perplexity does).
    pub bos: Option<u32>,
}

impl Chunks {
    /// Tokenizes `text` as `llama-perplexity -f` reads it: one trailing newline
    /// dropped, special-token text kept as text, BOS first if the model adds
    /// one; then whole chunks of `n_ctx` tokens, at most `max_chunks`.
    pub fn of_text(tokenizer: &Tokenizer, text: &str, n_ctx: usize, max_chunks: Option<usize>) -> Result<Chunks> {
        if n_ctx < MIN_CTX {
            return Err(Error::Invalid(format!("a chunk of {n_ctx} tokens scores no position (at least {MIN_CTX})")));
        }
        let text = text.strip_suffix('\n').unwrap_or(text);
        let bos = tokenizer.bos().filter(|_| tokenizer.add_bos());
        let mut tokens: Vec<u32> = bos.into_iter().collect();
        tokens.extend(tokenizer.encode_with_special(text, false));
        let whole = tokens.len() / n_ctx;
        let n_chunk = max_chunks.map_or(whole, |m| m.min(whole));
        if n_chunk == 0 {
            return Err(Error::Invalid(format!(
                "the text is {} tokens: too short for one chunk of {n_ctx} (give a longer text or a smaller --ctx)",
                tokens.len()
            )));
        }
        tokens.truncate(n_chunk * n_ctx);
        Ok(Chunks { n_ctx, tokens, bos })
    }

    pub fn n_chunk(&self) -> usize {
        self.tokens.len() / self.n_ctx
    }

    /// llama-perplexity scores the second half of each chunk but its last
    /// position (which has no next token in the chunk).
    pub fn scored_in_chunk(&self) -> std::ops::Range<usize> {
        self.n_ctx / 2..self.n_ctx - 1
    }

    /// Chunk `c` as evaluated: its first token replaced by BOS when the model adds one.
    fn evaluated(&self, c: usize) -> Vec<u32> {
        let mut chunk = self.tokens[c * self.n_ctx..(c + 1) * self.n_ctx].to_vec();
        if let Some(bos) = self.bos {
            chunk[0] = bos;
        }
        chunk
    }

    /// Fails unless llama.cpp evaluated these very tokens in chunks of the same size.
    pub fn check_same_as(&self, llama: &LlamaKldBase) -> Result<()> {
        let file = llama.path().display();
        if llama.n_ctx() != self.n_ctx {
            return Err(Error::Invalid(format!("{file}: chunks of {} tokens, not {}", llama.n_ctx(), self.n_ctx)));
        }
        let theirs = &llama.tokens()[..self.tokens.len().min(llama.tokens().len())];
        if let Some(i) = theirs.iter().zip(&self.tokens).position(|(a, b)| a != b) {
            return Err(Error::Invalid(format!(
                "{file}: token {i} is {} in llama.cpp's file but {} in apr's tokenization of the text \
                 (was the base file written for another text or model?)",
                theirs[i], self.tokens[i]
            )));
        }
        if theirs.len() < self.tokens.len() {
            return Err(Error::Invalid(format!(
                "{file}: holds {} chunks, the text has {} (written with --chunks?)",
                llama.n_chunk(),
                self.n_chunk()
            )));
        }
        Ok(())
    }
}

/// One engine's distributions against the exact ones at one position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distance {
    /// KL(exact || engine), nats.
    pub kl: f64,
    /// The engine's most likely token.
    pub top1: u32,
    /// Largest |log p - log p_exact| over the tokens within [`LOGPROB_WINDOW`] of the exact top.
    pub max_abs_dlogprob: f64,
    /// Largest |logit - exact logit| over the vocabulary (logits are not in
    /// llama.cpp's file, only log-probabilities: absent there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_dlogit: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Position {
    pub chunk: usize,
    /// Position within the chunk; the row predicts the token at `pos + 1`.
    pub pos: usize,
    pub target: u32,
    pub exact_top1: u32,
    pub apr: Distance,
    /// llama.cpp's distance: its KL is over the outcomes its file tells apart
    /// (see [`tail_merged_kl`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<Distance>,
    /// apr's KL over the same outcomes as llama.cpp's (its tokens above
    /// llama.cpp's floor, and the rest as one): what the paired difference uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apr_kl_on_llama_outcomes: Option<f64>,
}

/// An engine's figures over all scored positions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub mean_kl: f64,
    /// The 99th percentile (nearest rank).
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Share of positions whose top token is the exact top token.
    pub top1_agreement: f64,
    pub max_abs_dlogprob: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs_dlogit: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KldReport {
    pub schema: &'static str,
    pub n_ctx: usize,
    pub n_chunk: usize,
    /// The fast backend's name.
    pub engine: &'static str,
    /// The exact backend's name.
    pub exact: &'static str,
    pub apr: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<Summary>,
    /// The mean of [`Position::apr_kl_on_llama_outcomes`]: apr's mean KL
    /// scored as llama.cpp's is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apr_mean_kl_on_llama_outcomes: Option<f64>,
    /// apr's KL minus llama.cpp's, position by position, both over the
    /// outcomes llama.cpp's file tells apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apr_minus_llama_cpp: Option<PairedDifference>,
    pub positions: Vec<Position>,
}

/// The mean of a per-position difference and its standard error: two engines
/// whose mean KLs differ by less than about two standard errors are not
/// told apart by this text.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedDifference {
    pub mean: f64,
    pub standard_error: f64,
}

impl PairedDifference {
    fn of(differences: &[f64]) -> PairedDifference {
        let n = differences.len() as f64;
        let mean = differences.iter().sum::<f64>() / n;
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        PairedDifference { mean, standard_error: (variance / n).sqrt() }
    }

    /// Whether the difference is more than two standard errors from zero.
    pub fn is_significant(&self) -> bool {
        self.mean.abs() > 2.0 * self.standard_error
    }
}

/// Runs every chunk through `fast` and `exact` (and reads llama.cpp's rows
/// when given), calling `progress(chunk, n_chunk)` after each chunk.
pub fn measure(
    fast: &Model,
    exact: &Model,
    chunks: &Chunks,
    llama: Option<&LlamaKldBase>,
    mut progress: impl FnMut(usize, usize),
) -> Result<KldReport> {
    if let Some(llama) = llama {
        chunks.check_same_as(llama)?;
        if llama.n_vocab() != exact.config.vocab {
            let file = llama.path().display();
            return Err(Error::Invalid(format!(
                "{file}: a vocabulary of {}, the model's is {}",
                llama.n_vocab(),
                exact.config.vocab
            )));
        }
    }
    let mut positions = Vec::new();
    for c in 0..chunks.n_chunk() {
        positions.extend(measure_chunk(fast, exact, chunks, c, llama)?);
        progress(c + 1, chunks.n_chunk());
    }
    let apr = summarize(positions.iter().map(|p| (&p.apr, p.exact_top1)));
    let llama_cpp =
        llama.map(|_| summarize(positions.iter().filter_map(|p| Some((p.llama_cpp.as_ref()?, p.exact_top1)))));
    let apr_minus_llama_cpp = llama.map(|_| {
        let differences: Vec<f64> =
            positions.iter().filter_map(|p| Some(p.apr_kl_on_llama_outcomes? - p.llama_cpp.as_ref()?.kl)).collect();
        PairedDifference::of(&differences)
    });
    let apr_mean_kl_on_llama_outcomes = llama.map(|_| {
        let kls: Vec<f64> = positions.iter().filter_map(|p| p.apr_kl_on_llama_outcomes).collect();
        kls.iter().sum::<f64>() / kls.len().max(1) as f64
    });
    Ok(KldReport {
        schema: SCHEMA,
        n_ctx: chunks.n_ctx,
        n_chunk: chunks.n_chunk(),
        engine: fast.backend_name(),
        exact: exact.backend_name(),
        apr,
        llama_cpp,
        apr_mean_kl_on_llama_outcomes,
        apr_minus_llama_cpp,
        positions,
    })
}

fn measure_chunk(
    fast: &Model,
    exact: &Model,
    chunks: &Chunks,
    c: usize,
    llama: Option<&LlamaKldBase>,
) -> Result<Vec<Position>> {
    let tokens = chunks.evaluated(c);
    let all_logits = |model: &Model| {
        let mut cache = model.new_cache(tokens.len());
        model.forward(&tokens, &mut cache, Logits::All)
    };
    let (fast_logits, exact_logits) = (all_logits(fast)?, all_logits(exact)?);
    let vocab = exact.config.vocab;
    let scored = chunks.scored_in_chunk();
    let mut positions = Vec::with_capacity(scored.len());
    for (i, pos) in scored.clone().enumerate() {
        let row = pos * vocab..(pos + 1) * vocab;
        let (exact_row, fast_row) = (&exact_logits[row.clone()], &fast_logits[row]);
        let exact_lp = log_softmax(exact_row);
        let fast_lp = log_softmax(fast_row);
        let mut apr = distance(&exact_lp, &fast_lp);
        apr.max_abs_dlogit = Some(max_abs_difference(exact_row, fast_row));
        let scored_llama = llama.map(|base| {
            let record = c * scored.len() + i;
            let quantization = base.quantization(record);
            let codes: Vec<u16> = base.codes(record).collect();
            let llama_lp: Vec<f64> = codes.iter().map(|&code| f64::from(quantization.decode(code))).collect();
            // Code 0 is the floor: those tokens' log-probabilities are not in the file.
            let kept: Vec<bool> = codes.iter().map(|&code| code > 0).collect();
            let mut d = distance(&exact_lp, &llama_lp);
            let floored = floored_mass(&llama_lp, &kept, quantization.scale);
            d.kl = tail_merged_kl(&exact_lp, &llama_lp, &kept, floored);
            let apr_floored = fast_lp.iter().zip(&kept).filter(|(_, &k)| !k).map(|(lp, _)| lp.exp()).sum::<f64>();
            (d, tail_merged_kl(&exact_lp, &fast_lp, &kept, apr_floored))
        });
        let (llama_cpp, apr_kl_on_llama_outcomes) = match scored_llama {
            Some((d, apr_kl)) => (Some(d), Some(apr_kl)),
            None => (None, None),
        };
        positions.push(Position {
            chunk: c,
            pos,
            target: chunks.tokens[c * chunks.n_ctx + pos + 1],
            exact_top1: argmax(&exact_lp),
            apr,
            llama_cpp,
            apr_kl_on_llama_outcomes,
        });
    }
    Ok(positions)
}

/// Log-probabilities in f64.
///
/// llama.cpp's rows are used as decoded, not renormalized: every token more
/// than 16 nats below the top reads as the floor there, which over-counts the
/// tail by up to e^-16 per token (5e-3 in all over SmolLM2's 49k tokens);
/// renormalizing would move every log-probability by that much, while as
/// decoded the tail only adds terms of exact probability below e^-16.
fn log_softmax(values: &[f32]) -> Vec<f64> {
    let max = values.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = values.iter().map(|&v| (v as f64 - max).exp()).sum();
    let log_norm = max + sum.ln();
    values.iter().map(|&v| v as f64 - log_norm).collect()
}

fn distance(exact: &[f64], engine: &[f64]) -> Distance {
    let kl = exact.iter().zip(engine).map(|(&p, &q)| p.exp() * (p - q)).sum::<f64>();
    let top = exact.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let max_abs_dlogprob = exact
        .iter()
        .zip(engine)
        .filter(|(&p, _)| p >= top - LOGPROB_WINDOW)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f64::max);
    // Rounding can leave a KL of identical rows a hair below zero.
    Distance { kl: kl.max(0.0), top1: argmax(engine), max_abs_dlogprob, max_abs_dlogit: None }
}

/// KL(exact || engine) over the outcomes an engine's row tells apart: each
/// `kept` token, and all the others as one outcome, of engine probability
/// `engine_rest`.
///
/// llama.cpp's base file floors every token more than 16 nats below its top
/// (code 0): with Qwen2.5's 152k tokens, most of the vocabulary (exact mass
/// ~7e-4 a position). Scored as if the floor were their log-probability, each
/// such token adds `p (log p - floor) < 0`, about -8e-4 a position in all:
/// more than the KL itself. Merged into one outcome, the tail counts as a
/// KL term of its own, never negative (a lower bound of the full KL, by the
/// data-processing inequality; on Qwen2.5-0.5B within 0.1% of it).
fn tail_merged_kl(exact: &[f64], engine: &[f64], kept: &[bool], engine_rest: f64) -> f64 {
    let (mut kl, mut exact_rest) = (0.0, 0.0);
    for ((&p, &q), &k) in exact.iter().zip(engine).zip(kept) {
        if k {
            kl += p.exp() * (p - q);
        } else {
            exact_rest += p.exp();
        }
    }
    if exact_rest > 0.0 {
        kl += exact_rest * (exact_rest / engine_rest.max(f64::MIN_POSITIVE)).ln();
    }
    kl.max(0.0)
}

/// The probability llama.cpp's row leaves to its floored tokens: what its
/// kept tokens leave of 1 (its log-probabilities are normalized over the
/// whole vocabulary). Each kept value is rounded to a step of `scale` (the
/// top one exactly: it is the top of the range), so the remainder is known
/// only to half a step times the kept mass below the top; it is not taken
/// below that (rounding can leave it negative where the tail is ~1e-7).
fn floored_mass(log_probs: &[f64], kept: &[bool], scale: f32) -> f64 {
    let top = log_probs.iter().zip(kept).filter(|(_, &k)| k).map(|(&lp, _)| lp).fold(f64::NEG_INFINITY, f64::max);
    let (mut kept_mass, mut below_top) = (0.0, 0.0);
    for (&lp, _) in log_probs.iter().zip(kept).filter(|(_, &k)| k) {
        kept_mass += lp.exp();
        if lp < top {
            below_top += lp.exp();
        }
    }
    let uncertainty = 0.5 * f64::from(scale) * below_top;
    (1.0 - kept_mass).max(uncertainty)
}

fn max_abs_difference(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).fold(0.0, f64::max)
}

/// The first index of the largest value, as greedy decoding picks.
fn argmax(values: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn summarize<'a>(distances: impl Iterator<Item = (&'a Distance, u32)>) -> Summary {
    let mut kls = Vec::new();
    let (mut agree, mut max_dlogprob, mut max_dlogit) = (0usize, 0.0f64, None::<f64>);
    for (d, exact_top1) in distances {
        kls.push(d.kl);
        agree += usize::from(d.top1 == exact_top1);
        max_dlogprob = max_dlogprob.max(d.max_abs_dlogprob);
        if let Some(v) = d.max_abs_dlogit {
            max_dlogit = Some(max_dlogit.map_or(v, |m| m.max(v)));
        }
    }
    let n = kls.len().max(1);
    let mean_kl = kls.iter().sum::<f64>() / n as f64;
    kls.sort_by(f64::total_cmp);
    let nearest_rank = |q: f64| kls.get(((q * kls.len() as f64).ceil() as usize).saturating_sub(1)).copied();
    Summary {
        mean_kl,
        p99_kl: nearest_rank(0.99).unwrap_or(0.0),
        max_kl: kls.last().copied().unwrap_or(0.0),
        top1_agreement: agree as f64 / n as f64,
        max_abs_dlogprob: max_dlogprob,
        max_abs_dlogit: max_dlogit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_rows_are_at_distance_zero() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let d = distance(&lp, &lp);
        assert_eq!((d.kl, d.top1, d.max_abs_dlogprob), (0.0, 2, 0.0));
    }

    #[test]
    fn kl_of_a_known_pair() {
        // p = (0.5, 0.5), q = (0.25, 0.75): KL = 0.5 ln 2 + 0.5 ln(2/3).
        let p = [0.5f64.ln(), 0.5f64.ln()];
        let q = [0.25f64.ln(), 0.75f64.ln()];
        let d = distance(&p, &q);
        assert!((d.kl - (0.5 * 2f64.ln() + 0.5 * (2.0f64 / 3.0).ln())).abs() < 1e-12);
        assert_eq!(d.top1, 1);
        assert!((d.max_abs_dlogprob - 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn the_dlogprob_window_ignores_the_far_tail() {
        let exact = [0.0, -5.0, -30.0];
        let engine = [0.0, -5.5, -20.0];
        assert_eq!(distance(&exact, &engine).max_abs_dlogprob, 0.5);
    }

    #[test]
    fn a_floored_tail_counts_as_one_outcome() {
        // Exact: (0.9, 0.05, 0.03, 0.02); the engine floors the last two at
        // a value above their true one, as llama.cpp's file does.
        let exact: Vec<f64> = [0.9f64, 0.05, 0.03, 0.02].iter().map(|p| p.ln()).collect();
        let engine_true: Vec<f64> = [0.88f64, 0.06, 0.04, 0.02].iter().map(|p| p.ln()).collect();
        let mut floored = engine_true.clone();
        floored[2] = 0.05f64.ln();
        floored[3] = 0.05f64.ln();
        let kept = [true, true, false, false];
        let rest = floored_mass(&floored, &kept, 0.0);
        assert!((rest - 0.06).abs() < 1e-12);
        let merged = tail_merged_kl(&exact, &floored, &kept, rest);
        let want = 0.9 * (0.9f64 / 0.88).ln() + 0.05 * (0.05f64 / 0.06).ln() + 0.05 * (0.05f64 / 0.06).ln();
        assert!((merged - want).abs() < 1e-12);
        // Never above the full KL, and the floored row read as is comes out lower still.
        assert!(merged <= distance(&exact, &engine_true).kl + 1e-15);
        assert!(distance(&exact, &floored).kl < merged);
    }

    #[test]
    fn a_rounded_away_tail_is_kept_at_the_rounding_error() {
        // The kept values round to a total above 1: the tail is taken as the rounding error.
        let lp = [0.5f64.ln(), 0.500_000_1f64.ln(), -40.0];
        let rest = floored_mass(&lp, &[true, true, false], 2.0e-4);
        assert!((rest - 0.5 * 2.0e-4 * 0.5).abs() < 1e-10, "{rest}");
    }

    #[test]
    fn a_paired_difference_has_the_standard_error_of_its_mean() {
        let d = PairedDifference::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(d.mean, 2.5);
        assert!((d.standard_error - (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
        assert!(d.is_significant());
        assert!(!PairedDifference::of(&[1.0, -1.0, 1.5, -1.5]).is_significant());
    }

    #[test]
    fn summary_takes_the_nearest_rank_percentile_and_agreement() {
        let at = |kl: f64, top1: u32| Distance { kl, top1, max_abs_dlogprob: kl, max_abs_dlogit: Some(2.0 * kl) };
        let distances: Vec<Distance> = (1..=200).map(|i| at(i as f64, u32::from(i % 4 == 0))).collect();
        let s = summarize(distances.iter().map(|d| (d, 0)));
        assert_eq!((s.mean_kl, s.p99_kl, s.max_kl), (100.5, 198.0, 200.0));
        assert_eq!(s.top1_agreement, 0.75);
        assert_eq!((s.max_abs_dlogprob, s.max_abs_dlogit), (200.0, Some(400.0)));
    }
}
