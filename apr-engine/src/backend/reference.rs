//! The reference CPU backend: every weight row dequantized to F32 and dotted
//! with the unquantized activations in f64. Slow and simple on purpose: it is
//! the second backend that `trace-diff` compares the SIMD kernels against
//! (the activations of the fast path are quantized to 8 bits; here they are not).

use rayon::prelude::*;

use super::cpu::Cpu;
use super::{AttentionShape, Backend};
use crate::kernels::WeightMatrix;
use crate::model::weights::RopeStyle;
use crate::quant;

#[derive(Debug, Default, Clone, Copy)]
pub struct CpuReference;

impl Backend for CpuReference {
    fn name(&self) -> &'static str {
        "cpu-reference"
    }

    fn matmul(&self, w: &WeightMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
        let mut by_row = vec![0.0f32; w.rows * n_tokens];
        by_row.par_chunks_mut(n_tokens).enumerate().for_each_init(
            || vec![0.0f32; w.cols],
            |row, (r, sums)| {
                quant::dequantize(w.dtype, w.row(r), row).expect("WeightMatrix::new checked the row size");
                for (t, sum) in sums.iter_mut().enumerate() {
                    let xs = &x[t * w.cols..(t + 1) * w.cols];
                    *sum = row.iter().zip(xs).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
                }
            },
        );
        for (r, sums) in by_row.chunks_exact(n_tokens).enumerate() {
            for (t, &v) in sums.iter().enumerate() {
                out[t * w.rows + r] = v;
            }
        }
    }

    // Everything but the matrix products is shared with the fast backend.
    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        Cpu.rms_norm(x, weight, eps, out)
    }
    fn rope(&self, x: &mut [f32], heads: usize, head_dim: usize, start_pos: usize, base: f32, style: RopeStyle) {
        Cpu.rope(x, heads, head_dim, start_pos, base, style)
    }
    fn attention(&self, q: &[f32], keys: &[f32], values: &[f32], shape: AttentionShape, out: &mut [f32]) {
        Cpu.attention(q, keys, values, shape, out)
    }
    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) {
        Cpu.silu_mul(gate, up)
    }
    fn add(&self, x: &mut [f32], y: &[f32]) {
        Cpu.add(x, y)
    }
}
