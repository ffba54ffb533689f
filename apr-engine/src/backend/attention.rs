//! Causal grouped-query attention on the CPU.
//!
//! Work is split into tasks of (one KV head, a block of query tokens): the
//! query heads that share the KV head and the block's tokens form the task's
//! query rows, so each K and V row is read once per task and used for every
//! row. A task computes all its scores (dot products, `RQ` rows × `RK` keys at
//! a time), then a softmax per row over the keys it may see, then the weighted
//! sum of V rows (`RR` rows × `W` output values at a time). Prefill runs one task
//! per (KV head, token block) in parallel; decode (one token) one per KV head.
//!
//! The inner loops are written on fixed-size arrays so that the compiler keeps
//! the accumulators in vector registers; they are compiled once per instruction
//! set (AVX-512, AVX2 + FMA, chosen at run time) and once portably.

use std::cell::RefCell;

use rayon::prelude::*;

use super::AttentionShape;

/// Query rows a task aims for: enough to reuse each K/V row many times while the
/// task's queries, scores and outputs stay in L1/L2.
const TARGET_ROWS: usize = 48;
/// Query rows × keys per dot-product step (8 independent accumulators).
const RQ: usize = 4;
const RK: usize = 2;
/// Query rows per weighted-sum step.
const RR: usize = 4;

/// Per-thread buffers reused across calls (tasks never allocate).
#[derive(Default)]
struct Scratch {
    /// The task's query rows, scaled by `1/√head_dim`, padded to a multiple of `RQ` rows.
    queries: Vec<f32>,
    /// `rows × keys` scores, then softmax weights (zero where masked).
    scores: Vec<f32>,
    /// `rows × head_dim` unnormalised outputs.
    sums: Vec<f32>,
    /// `1 / Σ exp` per row.
    inv_totals: Vec<f32>,
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
        if has_avx512() {
            // SAFETY: the CPU has the features `attend_avx512` is compiled for (checked just above).
            return unsafe { attend_avx512(q, keys, values, s, task, scratch) };
        }
        if has_avx2_fma() {
            // SAFETY: as above, for AVX2 and FMA.
            return unsafe { attend_avx2(q, keys, values, s, task, scratch) };
        }
    }
    attend_task::<Separate, 8, 16>(q, keys, values, s, task, scratch)
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn attend_avx512(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape, task: &mut Task, scratch: &mut Scratch) {
    attend_task::<Fused, 16, 32>(q, k, v, s, task, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(q: &[f32], k: &[f32], v: &[f32], s: &AttentionShape, task: &mut Task, scratch: &mut Scratch) {
    attend_task::<Fused, 8, 16>(q, k, v, s, task, scratch)
}

/// `a * b + c`, fused (one rounding) where the instruction set has FMA.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// A fused multiply-add: only inside functions compiled with FMA (elsewhere it is a library call).
struct Fused;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// A multiply, then an add: the portable fallback.
struct Separate;
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// One task: `L` lanes per dot-product accumulator, `W` outputs per weighted-sum step.
#[inline(always)]
fn attend_task<M: MulAdd, const L: usize, const W: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    s: &AttentionShape,
    task: &mut Task,
    scratch: &mut Scratch,
) {
    let d = s.head_dim;
    let group = s.heads / s.kv_heads;
    let kv_dim = s.kv_heads * d;
    let offset = task.kv_head * d;
    let rows = task.out.len() * group;
    let padded_rows = rows.next_multiple_of(RQ.max(RR));
    let n_keys = s.start_pos + task.first_token + task.out.len();
    // Row m is token first_token + m / group; it sees keys 0..visible(m).
    let visible = |m: usize| s.start_pos + task.first_token + m / group + 1;
    let key = |p: usize| &keys[p * kv_dim + offset..p * kv_dim + offset + d];

    let Scratch { queries, scores, sums, inv_totals } = scratch;
    gather_queries(q, s, task, padded_rows, queries);
    resize(scores, padded_rows * n_keys);
    resize(sums, padded_rows * d);
    resize(inv_totals, padded_rows);

    // Scores: RQ rows against RK keys at a time, each row block up to the keys its last row sees.
    for r0 in (0..padded_rows).step_by(RQ) {
        let limit = visible((r0 + RQ).min(rows) - 1);
        let a: [&[f32]; RQ] = std::array::from_fn(|i| &queries[(r0 + i) * d..(r0 + i + 1) * d]);
        let whole = limit / RK * RK;
        for p0 in (0..whole).step_by(RK) {
            let b: [&[f32]; RK] = std::array::from_fn(|j| key(p0 + j));
            let block = dots::<M, L, RQ, RK>(a, b);
            for (i, row) in block.iter().enumerate() {
                scores[(r0 + i) * n_keys + p0..][..RK].copy_from_slice(row);
            }
        }
        for p in whole..limit {
            let block = dots::<M, L, RQ, 1>(a, [key(p)]);
            for (i, row) in block.iter().enumerate() {
                scores[(r0 + i) * n_keys + p] = row[0];
            }
        }
    }

    // Softmax per row over its visible keys; the masked tail of each row block becomes zero weight.
    for m in 0..padded_rows {
        let row = &mut scores[m * n_keys..(m + 1) * n_keys];
        if m < rows {
            let (seen, masked) = row.split_at_mut(visible(m));
            inv_totals[m] = 1.0 / exp_in_place(seen);
            masked.fill(0.0);
        } else {
            row.fill(0.0);
        }
    }

    // Weighted sum of V rows: RR rows × W outputs at a time.
    for r0 in (0..padded_rows).step_by(RR) {
        let limit = visible((r0 + RR).min(rows) - 1);
        let w: [&[f32]; RR] = std::array::from_fn(|i| &scores[(r0 + i) * n_keys..(r0 + i) * n_keys + limit]);
        let whole = d / W * W;
        for c in (0..whole).step_by(W) {
            let acc = weighted_sum::<M, RR, W>(w, |p| &values[p * kv_dim + offset + c..][..W]);
            for (i, part) in acc.iter().enumerate() {
                sums[(r0 + i) * d + c..][..W].copy_from_slice(part);
            }
        }
        for c in whole..d {
            let acc = weighted_sum::<M, RR, 1>(w, |p| &values[p * kv_dim + offset + c..][..1]);
            for (i, part) in acc.iter().enumerate() {
                sums[(r0 + i) * d + c] = part[0];
            }
        }
    }

    for (i, out) in task.out.iter_mut().enumerate() {
        for (h, head) in out.chunks_exact_mut(d).enumerate() {
            let m = i * group + h;
            for (o, &v) in head.iter_mut().zip(&sums[m * d..(m + 1) * d]) {
                *o = v * inv_totals[m];
            }
        }
    }
}

/// Copies the task's query rows into `queries` (scaled by `1/√head_dim`), zero rows up to `padded_rows`.
#[inline(always)]
fn gather_queries(q: &[f32], s: &AttentionShape, task: &Task, padded_rows: usize, queries: &mut Vec<f32>) {
    let width = s.heads / s.kv_heads * s.head_dim;
    let scale = 1.0 / (s.head_dim as f32).sqrt();
    resize(queries, padded_rows * s.head_dim);
    let queries = &mut queries[..padded_rows * s.head_dim];
    let tokens = task.out.len();
    for (i, dst) in queries[..tokens * width].chunks_exact_mut(width).enumerate() {
        let t = task.first_token + i;
        let src = &q[t * s.heads * s.head_dim + task.kv_head * width..][..width];
        dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v * scale);
    }
    queries[tokens * width..].fill(0.0);
}

fn resize(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// `R × K` dot products of equally long rows, each summed in `L` lanes and then
/// across the lanes (so every pair's result depends only on its two rows).
#[inline(always)]
fn dots<M: MulAdd, const L: usize, const R: usize, const K: usize>(a: [&[f32]; R], b: [&[f32]; K]) -> [[f32; K]; R] {
    let d = b[0].len();
    let whole = d / L * L;
    let mut acc = [[[0.0f32; L]; K]; R];
    for c in (0..whole).step_by(L) {
        let av: [&[f32; L]; R] = std::array::from_fn(|i| a[i][c..c + L].try_into().unwrap());
        let bv: [&[f32; L]; K] = std::array::from_fn(|j| b[j][c..c + L].try_into().unwrap());
        for i in 0..R {
            for j in 0..K {
                for l in 0..L {
                    acc[i][j][l] = M::mul_add(av[i][l], bv[j][l], acc[i][j][l]);
                }
            }
        }
    }
    std::array::from_fn(|i| {
        std::array::from_fn(|j| {
            let tail = (whole..d).fold(0.0, |sum, c| M::mul_add(a[i][c], b[j][c], sum));
            sum_lanes(&acc[i][j]) + tail
        })
    })
}

/// Sum of the lanes, pairwise (the order a vector reduction takes).
#[inline(always)]
fn sum_lanes<const L: usize>(lanes: &[f32; L]) -> f32 {
    let mut v = *lanes;
    let mut n = L;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            v[l] += v[l + n];
        }
    }
    v[0]
}

/// For each of `R` weight rows, `Σ_p w[p] · row(p)` over `W` values of `row(p)`.
#[inline(always)]
fn weighted_sum<'v, M: MulAdd, const R: usize, const W: usize>(
    w: [&[f32]; R],
    row: impl Fn(usize) -> &'v [f32],
) -> [[f32; W]; R] {
    let mut acc = [[0.0f32; W]; R];
    for p in 0..w[0].len() {
        let v: &[f32; W] = row(p).try_into().unwrap();
        for (sums, weights) in acc.iter_mut().zip(&w) {
            let weight = weights[p];
            for (sum, &x) in sums.iter_mut().zip(v) {
                *sum = M::mul_add(weight, x, *sum);
            }
        }
    }
    acc
}

/// `x = exp(x - max)` in place; returns the sum. NaN scores stay NaN (and so does the sum).
#[inline(always)]
fn exp_in_place(x: &mut [f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        total += *v;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
            vec![("portable", |q, k, v, s, t, sc| attend_task::<Separate, 8, 16>(q, k, v, s, t, sc))];
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx2_fma() {
                // SAFETY: features checked.
                all.push(("avx2", |q, k, v, s, t, sc| unsafe { attend_avx2(q, k, v, s, t, sc) }));
            }
            if has_avx512() {
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

        /// SIMD and portable code match the f64 definition on random shapes:
        /// GQA groups of 1..8 heads, head sizes with and without a lane tail,
        /// prefill (many tokens) and decode (one token after a cached prefix).
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
            for (name, variant) in variants() {
                assert_close(&run(&c, variant), &want, name);
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
        let out = run(&c, variants().last().unwrap().1);
        assert!(out[..16].iter().all(|v| v.is_nan()), "head 0 of token 0 must be NaN");
        assert!(out[16..].iter().all(|v| v.is_finite()), "other heads stay finite");
    }

    #[test]
    fn public_entry_point_matches_the_definition() {
        let c = case(shape(37, 11, 12, 2, 128), 3);
        let mut out = vec![0.0; c.q.len()];
        attention(&c.q, &c.keys, &c.values, c.s, &mut out);
        assert_close(&out, &reference(&c.q, &c.keys, &c.values, c.s), "attention");
    }
}
