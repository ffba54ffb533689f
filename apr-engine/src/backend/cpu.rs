//! The CPU backend: rayon across heads and rows, kernels from `crate::kernels`.

use rayon::prelude::*;

use super::{AttentionShape, Backend};
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
        for (t, token) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let pos = (start_pos + t) as f32;
            for head in token.chunks_exact_mut(head_dim) {
                for i in 0..half {
                    let theta = pos * base.powf(-2.0 * i as f32 / head_dim as f32);
                    let (sin, cos) = theta.sin_cos();
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
        let kv_dim = s.kv_heads * s.head_dim;
        let group = s.heads / s.kv_heads;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        // One work item per (token, head); each writes its own head_dim slice.
        out.par_chunks_mut(s.head_dim).enumerate().for_each_init(Vec::new, |scores, (item, out_head)| {
            let (t, h) = (item / s.heads, item % s.heads);
            let q_head = &q[item * s.head_dim..(item + 1) * s.head_dim];
            let kv_offset = (h / group) * s.head_dim;
            let visible = s.start_pos + t + 1;
            scores.clear();
            scores.extend((0..visible).map(|p| {
                let k = &keys[p * kv_dim + kv_offset..p * kv_dim + kv_offset + s.head_dim];
                q_head.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
            }));
            softmax_in_place(scores);
            out_head.fill(0.0);
            for (p, &w) in scores.iter().enumerate() {
                let v = &values[p * kv_dim + kv_offset..p * kv_dim + kv_offset + s.head_dim];
                for (o, &x) in out_head.iter_mut().zip(v) {
                    *o += w * x;
                }
            }
        });
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

/// Numerically stable softmax.
pub fn softmax_in_place(x: &mut [f32]) {
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
