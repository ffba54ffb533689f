//! Throughput and latency measurement: what `cargo apr bench` and
//! `cargo apr profile` report. Tests assert correctness, never these numbers.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Result;
use crate::generate::argmax;
use crate::model::{Logits, Model};

/// Mean and standard deviation of repeated measurements.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Spread {
        let n = samples.len().max(1) as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Spread { mean, std: var.sqrt() }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub reps: usize,
}

/// llama-bench's two tests: `pp` (one forward call over N prompt tokens from
/// an empty cache) and `tg` (N single-token calls from an empty cache).
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub reps: usize,
    pub prompt_tok_s: f64,
    pub prompt_tok_s_std: f64,
    pub decode_tok_s: f64,
    pub decode_tok_s_std: f64,
}

/// Token ids for a synthetic prompt: spread over the vocabulary, fixed, so runs compare.
fn bench_tokens(model: &Model, n: usize) -> Vec<u32> {
    let vocab = model.config.vocab as u64;
    (0..n as u64).map(|i| ((i * 7919 + 13) % vocab.min(100_000)) as u32).collect()
}

pub fn bench(model: &Model, o: BenchOptions) -> Result<BenchResult> {
    let prompt = bench_tokens(model, o.prompt_tokens);
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    // One untimed warm-up of each test faults the weights in.
    for rep in 0..=o.reps {
        let (p, g) = (time_prefill(model, &prompt)?, time_decode(model, o.gen_tokens)?);
        if rep > 0 {
            pp.push(o.prompt_tokens as f64 / p.as_secs_f64());
            tg.push(o.gen_tokens as f64 / g.as_secs_f64());
        }
    }
    let (pp, tg) = (Spread::of(&pp), Spread::of(&tg));
    Ok(BenchResult {
        prompt_tokens: o.prompt_tokens,
        gen_tokens: o.gen_tokens,
        reps: o.reps,
        prompt_tok_s: pp.mean,
        prompt_tok_s_std: pp.std,
        decode_tok_s: tg.mean,
        decode_tok_s_std: tg.std,
    })
}

fn time_prefill(model: &Model, prompt: &[u32]) -> Result<Duration> {
    if prompt.is_empty() {
        return Ok(Duration::from_secs(1));
    }
    let mut cache = model.new_cache(prompt.len());
    let started = Instant::now();
    model.forward(prompt, &mut cache, Logits::Last)?;
    Ok(started.elapsed())
}

fn time_decode(model: &Model, n: usize) -> Result<Duration> {
    Ok(decode_latencies(model, 0, n)?.iter().sum::<Duration>().max(Duration::from_nanos(1)))
}

/// Latency of each of `warmup + measure` single-token calls (greedy, from an
/// empty cache), of which the last `measure` are returned.
pub fn decode_latencies(model: &Model, warmup: usize, measure: usize) -> Result<Vec<Duration>> {
    let mut cache = model.new_cache(warmup + measure + 1);
    let mut token = bench_tokens(model, 1)[0];
    let mut out = Vec::with_capacity(measure);
    for i in 0..warmup + measure {
        let started = Instant::now();
        let logits = model.forward(&[token], &mut cache, Logits::Last)?;
        token = argmax(&logits);
        if i >= warmup {
            out.push(started.elapsed());
        }
    }
    Ok(out)
}

/// The `p`-th percentile (0..=100) of `latencies`, nearest rank.
pub fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&l, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&l, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&l, 100.0), Duration::from_millis(100));
    }

    #[test]
    fn spread_is_sample_std() {
        let s = Spread::of(&[1.0, 3.0]);
        assert_eq!(s.mean, 2.0);
        assert!((s.std - 2f64.sqrt()).abs() < 1e-12);
    }
}
