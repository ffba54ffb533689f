//! Generation: prefill, then one token at a time, with greedy or seeded
//! sampling, stopping at an end-of-generation token or a token budget.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Model, NoObserver, Observer};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax, ties to the lowest id, as llama.cpp).
    pub temperature: f32,
    /// 0 = no top-k cut.
    pub top_k: usize,
    /// 1.0 = no nucleus cut.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 42 }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Sampler { params, rng: StdRng::seed_from_u64(params.seed) }
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.params.top_k > 0 {
            candidates.truncate(self.params.top_k);
        }
        let max = candidates[0].1;
        let mut probs: Vec<f32> =
            candidates.iter().map(|&(_, l)| ((l - max) / self.params.temperature).exp()).collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        // Nucleus: keep the smallest prefix whose mass reaches top_p.
        let mut mass = 0.0;
        let keep = probs.iter().position(|&p| {
            mass += p;
            mass >= self.params.top_p
        });
        let keep = keep.map_or(probs.len(), |i| i + 1);
        let kept_mass: f32 = probs[..keep].iter().sum();
        let mut draw = self.rng.random::<f32>() * kept_mass;
        for (i, &p) in probs[..keep].iter().enumerate() {
            if draw < p {
                return candidates[i].0;
            }
            draw -= p;
        }
        candidates[keep - 1].0
    }
}

/// Index of the largest value; ties go to the lowest index.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` highest `(id, logit)` pairs, highest first (ties: lower id first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
    let k = k.min(all.len());
    if k == 0 {
        return Vec::new();
    }
    all.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Record the top-k logits at every position of prompt and generation.
    pub logits_top_k: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub prefill_s: f64,
    pub decode_s: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Generation {
    pub tokens: Vec<u32>,
    /// Per position of prompt + generation (the row that predicts the next token).
    pub top_logits: Vec<Vec<(u32, f32)>>,
    pub timings: Timings,
}

/// Generates after `prompt` (appended to `cache`), calling `on_token` for
/// each new token; stops after an end-of-generation token (kept) or `max_tokens`.
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[u32],
    options: &GenerateOptions,
    is_eog: impl Fn(u32) -> bool,
    on_token: impl FnMut(u32),
) -> Result<Generation> {
    generate_observed(model, cache, prompt, options, is_eog, on_token, &mut NoObserver)
}

/// [`generate`], showing `observer` every forward call (for `--trace`).
pub fn generate_observed(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[u32],
    options: &GenerateOptions,
    is_eog: impl Fn(u32) -> bool,
    mut on_token: impl FnMut(u32),
    observer: &mut dyn Observer,
) -> Result<Generation> {
    check_fits(model, cache, prompt.len(), options.max_tokens)?;
    let mut out = Generation::default();
    let mut sampler = Sampler::new(options.sampling);
    let vocab = model.config.vocab;
    let started = Instant::now();
    let mode = if options.logits_top_k.is_some() { Logits::All } else { Logits::Last };
    let logits = model.forward_observed(prompt, cache, mode, observer)?;
    if let Some(k) = options.logits_top_k {
        out.top_logits.extend(logits.chunks_exact(vocab).map(|row| top_k(row, k)));
    }
    let mut last = logits[logits.len() - vocab..].to_vec();
    let prefill = started.elapsed();
    let decode_started = Instant::now();
    while out.tokens.len() < options.max_tokens {
        let token = sampler.sample(&last);
        out.tokens.push(token);
        on_token(token);
        if is_eog(token) || out.tokens.len() == options.max_tokens {
            break;
        }
        last = model.forward_observed(&[token], cache, Logits::Last, observer)?;
        if let Some(k) = options.logits_top_k {
            out.top_logits.push(top_k(&last, k));
        }
    }
    out.timings = timings(prompt.len(), prefill, out.tokens.len().saturating_sub(1), decode_started.elapsed());
    Ok(out)
}

/// Refuses, before any work, a generation that cannot complete: an empty
/// prompt (there is nothing to predict from), a prompt longer than the
/// model's context, or one whose `max_tokens` would run past the cache. The
/// last sampled token is never fed back, so it needs no position.
fn check_fits(model: &Model, cache: &KvCache, prompt: usize, max_tokens: usize) -> Result<()> {
    let context_length = model.config.context_length;
    if prompt == 0 {
        return Err(Error::Invalid("the prompt is empty (0 tokens): there is nothing to generate from".into()));
    }
    let start = cache.len();
    if start.saturating_add(prompt) > context_length {
        let before = if start > 0 { format!(" after {start} tokens already in the context") } else { String::new() };
        return Err(Error::Invalid(format!(
            "the prompt has {prompt} tokens{before}, more than the model's context length of {context_length} tokens"
        )));
    }
    let capacity = cache.capacity();
    let needed = start.checked_add(prompt).and_then(|n| n.checked_add(max_tokens.saturating_sub(1)));
    if needed.is_none_or(|needed| needed > capacity) {
        let room = capacity.saturating_add(1).saturating_sub(start + prompt);
        let cached = if start > 0 { format!("{start} cached + ") } else { String::new() };
        return Err(Error::Invalid(format!(
            "{cached}{prompt} prompt tokens + max_tokens {max_tokens} do not fit a context of {capacity} \
             positions (the model's context length is {context_length}): at most {room} new tokens fit"
        )));
    }
    Ok(())
}

fn timings(prompt: usize, prefill: Duration, decoded: usize, decode: Duration) -> Timings {
    let rate = |n: usize, d: Duration| if d.as_secs_f64() > 0.0 { n as f64 / d.as_secs_f64() } else { 0.0 };
    Timings {
        prefill_s: prefill.as_secs_f64(),
        decode_s: decode.as_secs_f64(),
        prefill_tok_s: rate(prompt, prefill),
        decode_tok_s: rate(decoded, decode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_ties_go_to_lowest_id() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 2.0], 2), vec![(1, 3.0), (2, 3.0)]);
    }

    #[test]
    fn seeded_sampling_is_repeatable_and_respects_top_k() {
        let logits = [0.0, 1.0, 2.0, 3.0, 4.0];
        let params = SamplingParams { temperature: 1.0, top_k: 2, top_p: 1.0, seed: 7 };
        let a: Vec<u32> = (0..50).scan(Sampler::new(params), |s, _| Some(s.sample(&logits))).collect();
        let b: Vec<u32> = (0..50).scan(Sampler::new(params), |s, _| Some(s.sample(&logits))).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&t| t == 3 || t == 4));
        assert!(a.contains(&3) && a.contains(&4));
    }
}
