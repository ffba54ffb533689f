//! The CPU backend: matrix kernels from `crate::kernels`, attention from `super::attention`.

use rayon::prelude::*;

use super::{attention, AttentionShape, Backend};
use crate::kernels::{self, WeightMatrix};
use crate::model::weights::RopeStyle;

#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

thread_local! {
    /// Rope's (sin, cos) per rotated pair, reused across calls.
    static ROPE_ANGLES: std::cell::RefCell<Vec<(f32, f32)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Below this many values an element-wise op runs on the calling thread: a
/// decode step's vectors are done before the other threads would wake up.
const PARALLEL_MIN_VALUES: usize = 1 << 15;

/// `x[i] = f(x[i], y[i])`, split over rayon's threads for prompt-sized inputs
/// (each element is computed the same way either way, so results are identical).
fn elementwise(x: &mut [f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    assert_eq!(x.len(), y.len(), "element-wise op over {} and {} values", x.len(), y.len());
    let apply = |(xs, ys): (&mut [f32], &[f32])| xs.iter_mut().zip(ys).for_each(|(a, &b)| *a = f(*a, b));
    if x.len() < PARALLEL_MIN_VALUES {
        apply((x, y));
    } else {
        x.par_chunks_mut(PARALLEL_MIN_VALUES / 4).zip(y.par_chunks(PARALLEL_MIN_VALUES / 4)).for_each(apply);
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn matmul(&self, w: &WeightMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
        kernels::matmul(w, x, n_tokens, out);
    }

    fn matmul_many(&self, ws: &[WeightMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
        kernels::matmul_many(ws, x, n_tokens, outs);
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let n = weight.len();
        let norm_row = |(row, out_row): (&[f32], &mut [f32])| {
            let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let scale = 1.0 / (mean_sq + eps).sqrt();
            for ((o, &v), &g) in out_row.iter_mut().zip(row).zip(weight) {
                *o = v * scale * g;
            }
        };
        if x.len() < PARALLEL_MIN_VALUES {
            x.chunks_exact(n).zip(out.chunks_exact_mut(n)).for_each(norm_row);
        } else {
            x.par_chunks_exact(n).zip(out.par_chunks_exact_mut(n)).for_each(norm_row);
        }
    }

    fn rope(&self, x: &mut [f32], heads: usize, head_dim: usize, start_pos: usize, base: f32, style: RopeStyle) {
        let half = head_dim / 2;
        // The angles depend on position and pair only: computed once per token for all its
        // heads, into this thread's buffer (a decode step calls rope twice per layer).
        ROPE_ANGLES.with_borrow_mut(|sin_cos| {
            sin_cos.resize(half, (0.0, 0.0));
            for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
                let pos = (start_pos + t) as f32;
                for (i, sc) in sin_cos.iter_mut().enumerate() {
                    *sc = (pos * base.powf(-2.0 * i as f32 / head_dim as f32)).sin_cos();
                }
                for head in token.chunks_exact_mut(head_dim) {
                    for (i, &(sin, cos)) in sin_cos.iter().enumerate() {
                        let (a, b) = match style {
                            RopeStyle::Halves => (i, i + half),
                            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        };
                        let (x0, x1) = (head[a], head[b]);
                        head[a] = x0 * cos - x1 * sin;
                        head[b] = x0 * sin + x1 * cos;
                    }
                }
            }
        });
    }

    fn attention(&self, q: &[f32], keys: &[f32], values: &[f32], s: AttentionShape, out: &mut [f32]) {
        attention::attention(q, keys, values, s, out);
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        elementwise(gate, up, |g, u| g / (1.0 + (-g).exp()) * u);
    }

    fn add(&self, x: &mut [f32], y: &[f32]) {
        elementwise(x, y, |a, b| a + b);
    }
}
