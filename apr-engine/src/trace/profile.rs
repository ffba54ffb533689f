//! The roofline view behind `--profile`: for each operation, the bytes it
//! moved and the FLOPs it did (counted from the shapes of the tensors it
//! touched), its measured time, and where that puts it against this
//! machine's measured memory bandwidth and compute peak.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::StepTrace;
use crate::model::{Model, Op};

/// What this machine can do, measured on the spot.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Machine {
    /// Streaming read bandwidth over all worker threads, GB/s.
    pub bandwidth_gb_s: f64,
    /// f32 multiply-add throughput over all worker threads (AVX2 FMA where present), GFLOP/s.
    pub compute_gflop_s: f64,
}

impl Machine {
    /// Measures read bandwidth (a sum over a buffer far larger than the
    /// caches) and f32 FMA throughput (independent accumulators, vectorisable).
    pub fn measure() -> Machine {
        Machine { bandwidth_gb_s: measure_bandwidth(), compute_gflop_s: measure_compute() }
    }

    /// FLOPs per byte at which an operation stops being memory-bound.
    pub fn balance(&self) -> f64 {
        self.compute_gflop_s / self.bandwidth_gb_s
    }
}

fn measure_bandwidth() -> f64 {
    const BYTES: usize = 256 << 20;
    let buffer = vec![1.0f32; BYTES / 4];
    let sum = |b: &[f32]| b.par_chunks(1 << 16).map(|c| c.iter().sum::<f32>()).sum::<f32>();
    std::hint::black_box(sum(&buffer)); // fault the pages in
    let started = Instant::now();
    let reps = 4;
    for _ in 0..reps {
        std::hint::black_box(sum(std::hint::black_box(&buffer)));
    }
    (BYTES * reps) as f64 / started.elapsed().as_secs_f64() / 1e9
}

fn measure_compute() -> f64 {
    const ITERS: usize = 1 << 22;
    let threads = rayon::current_num_threads();
    let started = Instant::now();
    let flops: usize = (0..threads).into_par_iter().map(|t| fma_loop(t as f32, ITERS)).sum();
    flops as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// Runs `iters` rounds of independent multiply-adds on the widest unit
/// available; returns the FLOPs done.
fn fma_loop(seed: f32, iters: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected just above.
        return unsafe { fma_loop_avx2(seed, iters) };
    }
    let mut acc = [seed; 32];
    let (a, b) = (std::hint::black_box(0.999_f32), std::hint::black_box(0.001_f32));
    for _ in 0..iters / 32 {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    std::hint::black_box(acc);
    2 * (iters / 32) * 32
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(seed: f32, iters: usize) -> usize {
    use std::arch::x86_64::*;
    // Ten independent accumulators hide the FMA latency on two ports.
    let mut acc = [_mm256_set1_ps(seed); 10];
    let (a, b) = (_mm256_set1_ps(std::hint::black_box(0.999)), _mm256_set1_ps(std::hint::black_box(0.001)));
    let rounds = iters / 80;
    for _ in 0..rounds {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    std::hint::black_box(acc);
    rounds * 10 * 8 * 2
}

/// Bytes moved and FLOPs done by one operation in one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cost {
    pub bytes: f64,
    pub flops: f64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.bytes += o.bytes;
        self.flops += o.flops;
    }
}

/// The cost of `op` of one layer (or outside the layers) for `n` tokens at `start`.
pub fn op_cost(model: &Model, layer: Option<usize>, op: Op, start: usize, n: usize) -> Cost {
    let c = &model.config;
    let tensors = model.file.tensors();
    let f = 4.0; // bytes per f32 activation
    let (n_f, hidden) = (n as f64, c.hidden as f64);
    // A matrix product reads the weight once per call and the activations once per token.
    let matmul = |indices: &[usize]| {
        let mut cost = Cost::default();
        for &i in indices {
            let t = &tensors[i];
            let (rows, cols) = (t.shape[0] as f64, t.shape.get(1).copied().unwrap_or(1) as f64);
            cost += Cost { bytes: t.size as f64 + n_f * (rows + cols) * f, flops: 2.0 * rows * cols * n_f };
        }
        cost
    };
    let elementwise = |width: f64, streams: f64, flops_each: f64| Cost {
        bytes: n_f * width * streams * f,
        flops: n_f * width * flops_each,
    };
    let w = layer.map(|l| &model.weights.layers[l]);
    match (op, w) {
        (Op::QkvProjection, Some(w)) => matmul(&[w.q, w.k, w.v]),
        (Op::OutProjection, Some(w)) => matmul(&[w.o]),
        (Op::GateUpProjection, Some(w)) => matmul(&[w.gate, w.up]),
        (Op::DownProjection, Some(w)) => matmul(&[w.down]),
        (Op::LmHead, _) => matmul(&[model.weights.output]),
        (Op::Attention, _) => {
            // Each query reads the keys and values of every earlier position.
            let kv = (c.kv_heads * c.head_dim) as f64;
            let q = (c.heads * c.head_dim) as f64;
            let positions: f64 = (start..start + n).map(|p| (p + 1) as f64).sum();
            Cost { bytes: positions * 2.0 * kv * f + n_f * 2.0 * q * f, flops: positions * 4.0 * q }
        }
        (Op::Rope, _) => elementwise(((c.heads + c.kv_heads) * c.head_dim) as f64, 2.0, 6.0),
        (Op::AttnNorm | Op::FfnNorm | Op::FinalNorm, _) => elementwise(hidden, 3.0, 4.0),
        (Op::AttnResidual | Op::FfnResidual, _) => elementwise(hidden, 3.0, 1.0),
        (Op::Activation, _) => elementwise(c.ffn as f64, 3.0, 6.0),
        (Op::Embedding, _) => elementwise(hidden, 2.0, 1.0),
        _ => Cost::default(),
    }
}

/// Prefill calls (many tokens per weight read) and decode calls (one) sit at
/// very different places on the roofline, so they are profiled apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Prefill,
    Decode,
}

/// One operation summed over a run.
#[derive(Debug, Clone, Serialize)]
pub struct OpProfile {
    pub phase: Phase,
    pub op: Op,
    pub calls: usize,
    pub ms: f64,
    pub share: f64,
    pub bytes: f64,
    pub flops: f64,
    /// FLOPs per byte.
    pub intensity: f64,
    pub achieved_gb_s: f64,
    pub achieved_gflop_s: f64,
    pub bound: Bound,
    /// Measured time over the roofline's best time for the same work.
    pub roofline_efficiency: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Memory,
    Compute,
}

#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub machine: Machine,
    pub total_ms: f64,
    pub ops: Vec<OpProfile>,
    pub recommendation: String,
}

/// Sums the traced steps per operation and places each on the roofline.
pub fn profile(model: &Model, steps: &[StepTrace], machine: Machine) -> Profile {
    let mut sums: BTreeMap<(Phase, Op), (usize, f64, Cost)> = BTreeMap::new();
    for step in steps {
        let phase = if step.n_tokens > 1 { Phase::Prefill } else { Phase::Decode };
        for t in &step.ops {
            let entry = sums.entry((phase, t.op)).or_default();
            entry.0 += 1;
            entry.1 += t.ms;
            entry.2 += op_cost(model, t.layer, t.op, step.start_pos, step.n_tokens);
        }
    }
    let total_ms: f64 = sums.values().map(|s| s.1).sum();
    let mut ops: Vec<OpProfile> = sums
        .into_iter()
        .map(|((phase, op), (calls, ms, cost))| place(phase, op, calls, ms, cost, total_ms, &machine))
        .collect();
    ops.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    let recommendation = recommend(&ops);
    Profile { machine, total_ms, ops, recommendation }
}

fn place(phase: Phase, op: Op, calls: usize, ms: f64, cost: Cost, total_ms: f64, machine: &Machine) -> OpProfile {
    let seconds = (ms / 1e3).max(1e-12);
    let intensity = cost.flops / cost.bytes.max(1.0);
    let bound = if intensity < machine.balance() { Bound::Memory } else { Bound::Compute };
    let best_s = (cost.bytes / (machine.bandwidth_gb_s * 1e9)).max(cost.flops / (machine.compute_gflop_s * 1e9));
    OpProfile {
        phase,
        op,
        calls,
        ms,
        share: ms / total_ms.max(1e-12),
        bytes: cost.bytes,
        flops: cost.flops,
        intensity,
        achieved_gb_s: cost.bytes / seconds / 1e9,
        achieved_gflop_s: cost.flops / seconds / 1e9,
        bound,
        roofline_efficiency: best_s / seconds,
    }
}

/// Points at the operation where the most time is lost against its roofline.
fn recommend(ops: &[OpProfile]) -> String {
    let lost = |o: &OpProfile| o.ms * (1.0 - o.roofline_efficiency.min(1.0));
    let Some(worst) = ops.iter().max_by(|a, b| lost(a).total_cmp(&lost(b))) else {
        return "nothing was traced".into();
    };
    let what = match worst.bound {
        Bound::Memory => format!(
            "it is memory-bound at {:.1} GB/s ({:.0}% of the measured bandwidth): read fewer bytes (lower-bit weights, fused projections) or stream them better",
            worst.achieved_gb_s,
            worst.roofline_efficiency * 100.0
        ),
        Bound::Compute => format!(
            "it is compute-bound at {:.1} GFLOP/s ({:.0}% of the measured f32 FMA peak): do more per instruction (integer dot products such as VNNI, several tokens per unpacked weight block)",
            worst.achieved_gflop_s,
            worst.roofline_efficiency * 100.0
        ),
    };
    format!("{:?} in {:?} takes {:.0}% of the time; {what}", worst.op, worst.phase, worst.share * 100.0)
}

/// The roofline table.
pub fn render(profile: &Profile) -> String {
    let mut out = String::new();
    let m = &profile.machine;
    let _ = writeln!(
        out,
        "machine: {:.1} GB/s read bandwidth, {:.1} GFLOP/s f32, balance {:.2} FLOP/byte",
        m.bandwidth_gb_s,
        m.compute_gflop_s,
        m.balance()
    );
    let _ = writeln!(
        out,
        "{:<8} {:<18} {:>6} {:>9} {:>6} {:>10} {:>10} {:>9} {:>8} {:>9} {:>7} {:>5}",
        "phase", "op", "calls", "ms", "share", "MB", "MFLOP", "FLOP/B", "GB/s", "GFLOP/s", "bound", "eff"
    );
    for o in &profile.ops {
        let _ = writeln!(
            out,
            "{:<8} {:<18} {:>6} {:>9.2} {:>5.1}% {:>10.1} {:>10.1} {:>9.2} {:>8.2} {:>9.2} {:>7} {:>4.0}%",
            format!("{:?}", o.phase),
            format!("{:?}", o.op),
            o.calls,
            o.ms,
            o.share * 100.0,
            o.bytes / 1e6,
            o.flops / 1e6,
            o.intensity,
            o.achieved_gb_s,
            o.achieved_gflop_s,
            match o.bound {
                Bound::Memory => "memory",
                Bound::Compute => "compute",
            },
            o.roofline_efficiency * 100.0
        );
    }
    let _ = writeln!(out, "recommendation: {}", profile.recommendation);
    out
}
