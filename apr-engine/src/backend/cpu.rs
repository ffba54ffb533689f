//! The CPU backend: matrix kernels from `crate::kernels`, attention from `super::attention`.

use super::{attention, AttentionShape, Backend};
use crate::kernels::{self, WeightMatrix};
use crate::model::weights::RopeStyle;

#[derive(Debug, Default, Clone, Copy)]
pub struct Cpu;

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
        for (row, out_row) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / n as f32;
            let scale = 1.0 / (mean_sq + eps).sqrt();
            for ((o, &v), &g) in out_row.iter_mut().zip(row).zip(weight) {
                *o = v * scale * g;
            }
        }
    }

    fn rope(&self, x: &mut [f32], heads: usize, head_dim: usize, start_pos: usize, base: f32, style: RopeStyle) {
        let half = head_dim / 2;
        // The angles depend on position and pair only: computed once per token for all its heads.
        let mut sin_cos = vec![(0.0f32, 0.0f32); half];
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
    }

    fn attention(&self, q: &[f32], keys: &[f32], values: &[f32], s: AttentionShape, out: &mut [f32]) {
        attention::attention(q, keys, values, s, out);
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }

    fn add(&self, x: &mut [f32], y: &[f32]) {
        for (a, &b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}
