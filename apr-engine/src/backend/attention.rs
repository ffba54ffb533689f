//! Causal grouped-query attention on the CPU.
//!
//! Work is split into tasks of (one KV head, a block of query tokens): the query
//! heads that share the KV head and the block's tokens form the task's query
//! rows, so each K and V row is read once per task and used for every row.
//! Prefill runs one task per (KV head, token block) in parallel; decode (one
//! token) one per KV head.
//!
//! Every result equals, bit for bit, the plain per-(token, head) algorithm
//! ([`tests`] keeps it as the reference): each score is `Σ_d q[d]·k[d]` summed
//! in `d` order, then scaled; softmax divides each weight by the sum; outputs
//! add `w[p]·v[p]` in `p` order, and only over the keys a row may see. The
//! vector code runs many of these sequential sums side by side instead (scores:
//! `L` keys per vector from a transposed tile of K, `RQ` rows at once; outputs:
//! `W` values of `head_dim` per step, `RR` rows at once), with separate multiply
//! and add (no FMA), so rounding is the scalar code's. The loops are written on
//! fixed-size arrays, compiled per instruction set (AVX-512, AVX2, portable)
//! and chosen at run time. Small models can flip a near-tied greedy token on a
//! last-bit change, so the engine keeps these numerics exactly.

use std::cell::RefCell;

use rayon::prelude::*;

use super::AttentionShape;

/// Query rows a task aims for: enough to reuse each K/V row many times while the
/// task's queries, scores and outputs stay in L1/L2.
const TARGET_ROWS: usize = 48;
/// Query rows per score step (independent accumulators, one vector each).
const RQ: usize = 8;
/// Query rows per weighted-sum step (two vectors each).
const RR: usize = 4;

/// Per-thread buffers reused across calls (tasks never allocate).
#[derive(Default)]
struct Scratch {
    /// The task's query rows, padded with zero rows to a multiple of `RQ`.
    queries: Vec<f32>,
    /// A tile of keys transposed: `head_dim × L`, zero columns past the last key.
    key_tile: Vec<f32>,
    /// `rows × keys` scores, then softmax weights (only each row's visible keys are meaningful).
    scores: Vec<f32>,
    /// Zero weights for the padding rows of a weighted-sum step.
    zeros: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// One unit of parallel work: the query heads of `kv_head` for tokens
/// `first_token..first_token + out.len()`; `out[i]` is token `first_token + i`'s
/// output for those heads (`group × head_dim` values).
struct Task<'a> {
    kv_head: usize,
    first_token: usize,
    out: Vec<&'a mut [f32]>,
}

/// Causal grouped-query attention: `q` and `out` are `n_tokens × heads × head_dim`,
/// `keys`/`values` hold positions `0..start_pos + n_tokens` of `kv_heads × head_dim`.
pub fn attention(q: &[f32], keys: &[f32], values: &[f32], s: AttentionShape, out: &mut [f32]) {
    let width = s.heads * s.head_dim;
    let kv_dim = s.kv_heads * s.head_dim;
    let positions = s.start_pos + s.n_tokens;
    assert!(
        s.kv_heads > 0 && s.heads.is_multiple_of(s.kv_heads),
        "attention: {} heads for {} KV heads",
        s.heads,
        s.kv_heads
    );
    assert_eq!(q.len(), s.n_tokens * width, "attention: q length");
    assert_eq!(out.len(), s.n_tokens * width, "attention: out length");
    assert!(keys.len() >= positions * kv_dim && values.len() >= positions * kv_dim, "attention: cache too short");
    if out.is_empty() {
        return;
    }
    for_each_task(s, out, |task, scratch| attend(q, keys, values, &s, task, scratch));
}

/// Splits `out` into tasks and runs `f` on each in parallel with this thread's scratch.
fn for_each_task(s: AttentionShape, out: &mut [f32], f: impl Fn(&mut Task, &mut Scratch) + Sync) {
    let group = s.heads / s.kv_heads;
    let block = (TARGET_ROWS / group).max(1);
    let mut tasks: Vec<Task> = (0..s.n_tokens.div_ceil(block) * s.kv_heads)
        .map(|i| Task { kv_head: i % s.kv_heads, first_token: i / s.kv_heads * block, out: Vec::new() })
        .collect();
    for (t, token) in out.chunks_exact_mut(s.heads * s.head_dim).enumerate() {
        for (kv_head, heads) in token.chunks_exact_mut(group * s.head_dim).enumerate() {
            tasks[t / block * s.kv_heads + kv_head].out.push(heads);
        }
    }
    tasks.into_par_iter().for_each(|mut task| {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => f(&mut task, &mut scratch),
            Err(_) => f(&mut task, &mut Scratch::default()),
        })
    });
}

fn attend(q: &[f32], keys: &[f32], values: &[f32], s: &AttentionShape, task: &mut Task, scratch: &mut Scratch) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature `attend_avx512` is compiled for (checked just above).
            return unsafe { attend_avx512(q, keys, values, s, task, scratch) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above, for AVX2.
            return unsafe { attend_avx2(q, keys, values, s, task, scratch) };
        }
    }
    attend_task::<8>(q, keys, values, s, task, scratch, dots::<8>)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape, task: &mut Task, scratch: &mut Scratch) {
    // SAFETY: this function runs only where AVX-512F is present.
    attend_task::<16>(q, k, v, s, task, scratch, |a, tile| unsafe { dots_avx512(a, tile) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape, task: &mut Task, scratch: &mut Scratch) {
    // SAFETY: this function runs only where AVX2 is present.
    attend_task::<8>(q, k, v, s, task, scratch, |a, tile| unsafe { dots_avx2(a, tile) })
}

/// One task, `L` lanes per vector; `dots` is [`dots`] for this instruction set.
#[inline(always)]
fn attend_task<const L: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    s: &AttentionShape,
    task: &mut Task,
    scratch: &mut Scratch,
    dots: impl Fn([&[f32]; RQ], &[f32]) -> [[f32; L]; RQ],
) {
    let d = s.head_dim;
    let group = s.heads / s.kv_heads;
    let kv_dim = s.kv_heads * d;
    let offset = task.kv_head * d;
    let rows = task.out.len() * group;
    let padded_rows = rows.next_multiple_of(RQ);
    let n_keys = s.start_pos + task.first_token + task.out.len();
    // Row m is token first_token + m / group; it sees keys 0..visible(m).
    let visible = |m: usize| s.start_pos + task.first_token + m / group + 1;
    let scale = 1.0 / (d as f32).sqrt();

    let Scratch { queries, key_tile, scores, zeros } = scratch;
    gather_queries(q, s, task, padded_rows, queries);
    resize(key_tile, d * L);
    resize(scores, padded_rows * n_keys);
    resize(zeros, n_keys);

    // Scores, a tile of L keys at a time; row blocks whose rows all precede the tile skip it.
    for p0 in (0..n_keys).step_by(L) {
        let width = L.min(n_keys - p0);
        transpose_keys::<L>(|p| &keys[p * kv_dim + offset..p * kv_dim + offset + d], p0, width, &mut key_tile[..d * L]);
        for r0 in (0..padded_rows).step_by(RQ) {
            if p0 >= visible((r0 + RQ).min(rows) - 1) {
                continue;
            }
            let a: [&[f32]; RQ] = std::array::from_fn(|i| &queries[(r0 + i) * d..(r0 + i + 1) * d]);
            let block = dots(a, &key_tile[..d * L]);
            for (i, lanes) in block.iter().enumerate() {
                let row = &mut scores[(r0 + i) * n_keys + p0..][..width];
                row.iter_mut().zip(lanes).for_each(|(s, &dot)| *s = dot * scale);
            }
        }
    }

    for m in 0..rows {
        softmax_in_place(&mut scores[m * n_keys..m * n_keys + visible(m)]);
    }

    // Outputs token by token (its rows see the same keys), RR rows × 2L values at a time.
    for (i, out) in task.out.iter_mut().enumerate() {
        let seen = visible(i * group);
        for h0 in (0..group).step_by(RR) {
            let w: [&[f32]; RR] = std::array::from_fn(|r| match i * group + h0 + r {
                m if h0 + r < group => &scores[m * n_keys..m * n_keys + seen],
                _ => &zeros[..seen],
            });
            let value = |p: usize, c: usize| p * kv_dim + offset + c;
            let whole = d / (2 * L) * (2 * L);
            for c in (0..whole).step_by(2 * L) {
                let sums = weighted_sum::<RR, 2, L>(w, |p| &values[value(p, c)..value(p, c) + 2 * L]);
                store(out, d, h0, group, c, &sums);
            }
            for c in whole..d {
                let sums = weighted_sum::<RR, 1, 1>(w, |p| &values[value(p, c)..value(p, c) + 1]);
                store(out, d, h0, group, c, &sums);
            }
        }
    }
}

/// Writes the sums of heads `h0..` (those below `group`) at offset `c` of each head in `out`.
#[inline(always)]
fn store<const R: usize, const V: usize, const L: usize>(
    out: &mut [f32],
    d: usize,
    h0: usize,
    group: usize,
    c: usize,
    sums: &[[[f32; L]; V]; R],
) {
    for (r, vectors) in sums.iter().enumerate().take(group.saturating_sub(h0)) {
        let dst = &mut out[(h0 + r) * d + c..][..V * L];
        dst.iter_mut().zip(vectors.as_flattened()).for_each(|(o, &v)| *o = v);
    }
}

/// Copies the task's query rows into `queries`, zero rows up to `padded_rows`.
#[inline(always)]
fn gather_queries(q: &[f32], s: &AttentionShape, task: &Task, padded_rows: usize, queries: &mut Vec<f32>) {
    let width = s.heads / s.kv_heads * s.head_dim;
    resize(queries, padded_rows * s.head_dim);
    let queries = &mut queries[..padded_rows * s.head_dim];
    let tokens = task.out.len();
    for (i, dst) in queries[..tokens * width].chunks_exact_mut(width).enumerate() {
        let t = task.first_token + i;
        dst.copy_from_slice(&q[t * s.heads * s.head_dim + task.kv_head * width..][..width]);
    }
    queries[tokens * width..].fill(0.0);
}

fn resize(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// `tile[c * L + j] = key(p0 + j)[c]` for `j < width`, zero for the rest.
#[inline(always)]
fn transpose_keys<'k, const L: usize>(key: impl Fn(usize) -> &'k [f32], p0: usize, width: usize, tile: &mut [f32]) {
    if width < L {
        tile.fill(0.0);
    }
    for j in 0..width {
        for (c, &v) in key(p0 + j).iter().enumerate() {
            tile[c * L + j] = v;
        }
    }
}

/// `R` rows of `a` against the `L` keys of a transposed tile: per (row, key) the
/// sum `Σ_c a[c]·k[c]` in `c` order from -0.0 (what `Iterator::sum` does).
#[inline(always)]
fn dots<const L: usize>(a: [&[f32]; RQ], tile: &[f32]) -> [[f32; L]; RQ] {
    let mut acc = [[-0.0f32; L]; RQ];
    for (c, keys) in tile.chunks_exact(L).enumerate() {
        let keys: &[f32; L] = keys.try_into().unwrap();
        for (sums, row) in acc.iter_mut().zip(&a) {
            let x = row[c];
            for (sum, &k) in sums.iter_mut().zip(keys) {
                *sum += x * k;
            }
        }
    }
    acc
}

/// [`dots`] in AVX-512 (the compiler keeps the portable form's accumulators in memory).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots_avx512(a: [&[f32]; RQ], tile: &[f32]) -> [[f32; 16]; RQ] {
    use std::arch::x86_64::*;
    let depth = tile.len() / 16;
    assert!(a.iter().all(|row| row.len() >= depth));
    let mut acc = [_mm512_set1_ps(-0.0); RQ];
    for c in 0..depth {
        // SAFETY: c < depth, so the tile load and every row[c] are in bounds (asserted above).
        let keys = unsafe { _mm512_loadu_ps(tile.as_ptr().add(c * 16)) };
        for (sum, row) in acc.iter_mut().zip(&a) {
            let x = _mm512_set1_ps(unsafe { *row.get_unchecked(c) });
            *sum = _mm512_add_ps(*sum, _mm512_mul_ps(x, keys));
        }
    }
    acc.map(|v| {
        let mut lanes = [0.0f32; 16];
        // SAFETY: 16 floats fit in `lanes`.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes
    })
}

/// [`dots`] in AVX2.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dots_avx2(a: [&[f32]; RQ], tile: &[f32]) -> [[f32; 8]; RQ] {
    use std::arch::x86_64::*;
    let depth = tile.len() / 8;
    assert!(a.iter().all(|row| row.len() >= depth));
    let mut acc = [_mm256_set1_ps(-0.0); RQ];
    for c in 0..depth {
        // SAFETY: c < depth, so the tile load and every row[c] are in bounds (asserted above).
        let keys = unsafe { _mm256_loadu_ps(tile.as_ptr().add(c * 8)) };
        for (sum, row) in acc.iter_mut().zip(&a) {
            let x = _mm256_set1_ps(unsafe { *row.get_unchecked(c) });
            *sum = _mm256_add_ps(*sum, _mm256_mul_ps(x, keys));
        }
    }
    acc.map(|v| {
        let mut lanes = [0.0f32; 8];
        // SAFETY: 8 floats fit in `lanes`.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes
    })
}

/// For each of `R` weight rows, `Σ_p w[p]·row(p)` from 0.0 in `p` order, over
/// the `V × L` values of `row(p)`.
#[inline(always)]
fn weighted_sum<'v, const R: usize, const V: usize, const L: usize>(
    w: [&[f32]; R],
    row: impl Fn(usize) -> &'v [f32],
) -> [[[f32; L]; V]; R] {
    let mut acc = [[[0.0f32; L]; V]; R];
    for p in 0..w[0].len() {
        let values: &[[f32; L]; V] = row(p).as_chunks().0.try_into().unwrap();
        for (sums, weights) in acc.iter_mut().zip(&w) {
            let weight = weights[p];
            for (sums, vector) in sums.iter_mut().zip(values) {
                for (sum, &x) in sums.iter_mut().zip(vector) {
                    *sum += weight * x;
                }
            }
        }
    }
    acc
}

/// Numerically stable softmax (NaN scores stay NaN, and so does their row).
#[inline(always)]
fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain algorithm, one (token, head) at a time: the vector code must equal it bit for bit.
    fn scalar(q: &[f32], keys: &[f32], values: &[f32], s: AttentionShape) -> Vec<f32> {
        let (d, group) = (s.head_dim, s.heads / s.kv_heads);
        let kv_dim = s.kv_heads * d;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0.0f32; q.len()];
        for (item, out_head) in out.chunks_exact_mut(d).enumerate() {
            let (t, h) = (item / s.heads, item % s.heads);
            let q_head = &q[item * d..(item + 1) * d];
            let kv = (h / group) * d;
            let mut scores: Vec<f32> = (0..s.start_pos + t + 1)
                .map(|p| q_head.iter().zip(&keys[p * kv_dim + kv..][..d]).map(|(a, b)| a * b).sum::<f32>() * scale)
                .collect();
            softmax_in_place(&mut scores);
            for (p, &w) in scores.iter().enumerate() {
                for (o, &x) in out_head.iter_mut().zip(&values[p * kv_dim + kv..][..d]) {
                    *o += w * x;
                }
            }
        }
        out
    }

    /// Attention as the definition states it, in f64, one (token, head) at a time.
    fn reference(q: &[f32], keys: &[f32], values: &[f32], s: AttentionShape) -> Vec<f32> {
        let (d, group) = (s.head_dim, s.heads / s.kv_heads);
        let kv_dim = s.kv_heads * d;
        let mut out = vec![0.0f32; q.len()];
        for t in 0..s.n_tokens {
            for h in 0..s.heads {
                let qh = &q[(t * s.heads + h) * d..][..d];
                let kv = (h / group) * d;
                let visible = s.start_pos + t + 1;
                let scores: Vec<f64> = (0..visible)
                    .map(|p| {
                        let k = &keys[p * kv_dim + kv..][..d];
                        qh.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for (i, o) in out[(t * s.heads + h) * d..][..d].iter_mut().enumerate() {
                    let sum: f64 =
                        weights.iter().enumerate().map(|(p, w)| w * values[p * kv_dim + kv + i] as f64).sum();
                    *o = (sum / total) as f32;
                }
            }
        }
        out
    }

    fn random(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        // A small LCG: deterministic data without another dependency.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    struct Case {
        s: AttentionShape,
        q: Vec<f32>,
        keys: Vec<f32>,
        values: Vec<f32>,
    }

    fn case(s: AttentionShape, seed: u64) -> Case {
        let kv = (s.start_pos + s.n_tokens) * s.kv_heads * s.head_dim;
        Case {
            s,
            q: random(s.n_tokens * s.heads * s.head_dim, seed, 3.0),
            keys: random(kv, seed + 1, 3.0),
            values: random(kv, seed + 2, 1.0),
        }
    }

    /// Every implementation this CPU can run, by name.
    type Variant = fn(&[f32], &[f32], &[f32], &AttentionShape, &mut Task, &mut Scratch);
    fn variants() -> Vec<(&'static str, Variant)> {
        let mut all: Vec<(&'static str, Variant)> =
            vec![("portable", |q, k, v, s, t, sc| attend_task::<8>(q, k, v, s, t, sc, dots::<8>))];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                // SAFETY: features checked.
                all.push(("avx2", |q, k, v, s, t, sc| unsafe { attend_avx2(q, k, v, s, t, sc) }));
            }
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: features checked.
                all.push(("avx512", |q, k, v, s, t, sc| unsafe { attend_avx512(q, k, v, s, t, sc) }));
            }
        }
        all
    }

    fn run(c: &Case, variant: Variant) -> Vec<f32> {
        let mut out = vec![f32::NAN; c.q.len()];
        for_each_task(c.s, &mut out, |task, scratch| variant(&c.q, &c.keys, &c.values, &c.s, task, scratch));
        out
    }

    fn assert_bit_equal(got: &[f32], want: &[f32], what: &str) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(g.to_bits() == w.to_bits() || g.is_nan() && w.is_nan(), "{what}: value {i}: {g} vs {w}");
        }
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 2e-5 * (1.0 + w.abs()), "{what}: value {i}: {g} vs {w}");
        }
    }

    fn shape(n_tokens: usize, start_pos: usize, heads: usize, kv_heads: usize, head_dim: usize) -> AttentionShape {
        AttentionShape { n_tokens, start_pos, heads, kv_heads, head_dim }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// SIMD and portable code equal the plain algorithm bit for bit (and the
        /// f64 definition within rounding) on random shapes: GQA groups of 1..8
        /// heads, head sizes with and without a lane tail, prefill (many tokens)
        /// and decode (one token after a cached prefix).
        #[test]
        fn every_variant_matches_the_definition(
            n_tokens in 1usize..70,
            start_pos in 0usize..40,
            kv_heads in 1usize..4,
            group in 1usize..9,
            head_dim in prop::sample::select(vec![1usize, 7, 16, 20, 64, 72, 128]),
            seed in any::<u64>(),
        ) {
            let c = case(shape(n_tokens, start_pos, kv_heads * group, kv_heads, head_dim), seed);
            let want = reference(&c.q, &c.keys, &c.values, c.s);
            let plain = scalar(&c.q, &c.keys, &c.values, c.s);
            assert_close(&plain, &want, "scalar");
            for (name, variant) in variants() {
                assert_bit_equal(&run(&c, variant), &plain, name);
            }
        }

        /// A prefill of n tokens gives, bit for bit, what n one-token calls give.
        #[test]
        fn prefill_blocks_equal_token_by_token(n_tokens in 1usize..60, group in 1usize..8, seed in any::<u64>()) {
            let c = case(shape(n_tokens, 3, 2 * group, 2, 64), seed);
            let width = c.s.heads * c.s.head_dim;
            for (name, variant) in variants() {
                let all = run(&c, variant);
                for t in 0..n_tokens {
                    let one = Case {
                        s: shape(1, 3 + t, c.s.heads, 2, 64),
                        q: c.q[t * width..(t + 1) * width].to_vec(),
                        keys: c.keys.clone(),
                        values: c.values.clone(),
                    };
                    prop_assert_eq!(&run(&one, variant), &all[t * width..(t + 1) * width].to_vec(), "{} token {}", name, t);
                }
            }
        }
    }

    /// Keys and values after a token's position change nothing for it; the
    /// query heads of one KV head see only that head's keys and values.
    #[test]
    fn causal_mask_and_head_groups() {
        let s = shape(20, 5, 12, 2, 64);
        let c = case(s, 7);
        let kv_dim = s.kv_heads * s.head_dim;
        let width = s.heads * s.head_dim;
        for (name, variant) in variants() {
            let before = run(&c, variant);
            let mut future = case(s, 7);
            let last = s.start_pos + s.n_tokens - 1;
            future.keys[last * kv_dim..].iter_mut().for_each(|k| *k += 5.0);
            future.values[last * kv_dim..].iter_mut().for_each(|v| *v -= 5.0);
            let after = run(&future, variant);
            assert_eq!(before[..(s.n_tokens - 1) * width], after[..(s.n_tokens - 1) * width], "{name}: future leaked");
            assert_ne!(
                before[(s.n_tokens - 1) * width..],
                after[(s.n_tokens - 1) * width..],
                "{name}: last token blind"
            );

            // Changing KV head 1 leaves the outputs of query heads 0..6 (KV head 0) alone.
            let mut other = case(s, 7);
            for p in 0..s.start_pos + s.n_tokens {
                other.values[p * kv_dim + s.head_dim..(p + 1) * kv_dim].iter_mut().for_each(|v| *v *= 2.0);
            }
            let changed = run(&other, variant);
            for t in 0..s.n_tokens {
                let row = t * width;
                assert_eq!(before[row..row + 6 * 64], changed[row..row + 6 * 64], "{name}: group 0 of token {t}");
                assert_ne!(before[row + 6 * 64..row + width], changed[row + 6 * 64..row + width], "{name}: group 1");
            }
        }
    }

    #[test]
    fn nan_in_a_query_reaches_the_output() {
        let s = shape(3, 0, 4, 2, 16);
        let mut c = case(s, 1);
        c.q[0] = f32::NAN;
        for (name, variant) in variants() {
            let out = run(&c, variant);
            assert!(out[..16].iter().all(|v| v.is_nan()), "{name}: head 0 of token 0 must be NaN");
            assert!(out[16..].iter().all(|v| v.is_finite()), "{name}: other heads stay finite");
        }
    }

    /// A NaN value of a later position never reaches an earlier token (masked keys get no `0 · NaN`).
    #[test]
    fn nan_in_a_future_value_stays_in_the_future() {
        let s = shape(20, 0, 12, 2, 64);
        let mut c = case(s, 2);
        c.values[19 * 2 * 64] = f32::NAN;
        let width = s.heads * s.head_dim;
        for (name, variant) in variants() {
            let out = run(&c, variant);
            assert!(out[..19 * width].iter().all(|v| v.is_finite()), "{name}: NaN leaked backwards");
            assert!(out[19 * width..].iter().any(|v| v.is_nan()), "{name}: last token must see its value");
        }
    }

    #[test]
    fn public_entry_point_matches_the_definition() {
        let c = case(shape(37, 11, 12, 2, 128), 3);
        let mut out = vec![0.0; c.q.len()];
        attention(&c.q, &c.keys, &c.values, c.s, &mut out);
        assert_bit_equal(&out, &scalar(&c.q, &c.keys, &c.values, c.s), "attention");
    }
}
