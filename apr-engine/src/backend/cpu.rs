//! The CPU backend: buffers are host vectors, weights the mapped file's bytes;
//! matrix kernels from `crate::kernels`, attention from `super::attention`.

use std::borrow::Cow;

use rayon::prelude::*;

use super::{attention, AttentionShape, Backend, HostMatrix, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels;

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

/// RMSNorm of each `weight.len()`-wide row of `x`, scaled by `weight`.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
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

/// Rotates each head of each token of `x` (`n_tokens × heads × head_dim`) in
/// place, token `t` at `positions[t]`.
fn rope_rows(x: &mut [f32], heads: usize, head_dim: usize, positions: &[u32], base: f32, style: RopeStyle) {
    let half = head_dim / 2;
    // The angles depend on position and pair only: computed once per token for all its
    // heads, into this thread's buffer (a decode step calls rope twice per layer).
    ROPE_ANGLES.with_borrow_mut(|sin_cos| {
        sin_cos.resize(half, (0.0, 0.0));
        for (token, &pos) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
            let pos = pos as f32;
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

/// Mutable views of several distinct buffers' first `len` values each.
fn prefixes<'a>(outs: &'a mut [&mut Vec<f32>], lens: impl Iterator<Item = usize>) -> Vec<&'a mut [f32]> {
    outs.iter_mut().zip(lens).map(|(out, len)| &mut out[..len]).collect()
}

impl Backend for Cpu {
    type Buffer = Vec<f32>;
    type Indices = Vec<u32>;
    type Matrix = HostMatrix;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn kernel_name(&self, dtype: DType) -> &'static str {
        kernels::kernel_name(dtype)
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, values: &[f32]) -> Result<Vec<f32>> {
        Ok(values.to_vec())
    }

    fn write(&self, buffer: &mut Vec<f32>, values: &[f32]) -> Result<()> {
        buffer[..values.len()].copy_from_slice(values);
        Ok(())
    }

    fn read<'a>(&self, buffer: &'a Vec<f32>, len: usize) -> Result<Cow<'a, [f32]>> {
        Ok(Cow::Borrowed(&buffer[..len]))
    }

    fn download(&self, mut buffer: Vec<f32>, len: usize) -> Result<Vec<f32>> {
        buffer.truncate(len);
        Ok(buffer)
    }

    fn prepare(&self, matrix: &HostMatrix) -> Result<HostMatrix> {
        Ok(matrix.clone())
    }

    fn alloc_indices(&self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }

    fn write_indices(&self, indices: &mut Vec<u32>, values: &[u32]) -> Result<()> {
        indices[..values.len()].copy_from_slice(values);
        Ok(())
    }

    fn embed(&self, table: &HostMatrix, tokens: &Vec<u32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let table = table.view();
        for (&token, row) in tokens[..n].iter().zip(out.chunks_exact_mut(table.cols)) {
            if token as usize >= table.rows {
                return Err(Error::Invalid(format!("token id {token} is outside the vocabulary ({})", table.rows)));
            }
            kernels::row_f32(&table, token as usize, row);
        }
        Ok(())
    }

    fn matmul(&self, ws: &[&HostMatrix], x: &Vec<f32>, n_rows: usize, outs: &mut [&mut Vec<f32>]) -> Result<()> {
        let views: Vec<_> = ws.iter().map(|w| w.view()).collect();
        let x = &x[..n_rows * views[0].cols];
        let mut outs = prefixes(outs, views.iter().map(|w| n_rows * w.rows));
        kernels::matmul_many(&views, x, n_rows, &mut outs);
        Ok(())
    }

    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, bias_len: usize, n_rows: usize) -> Result<()> {
        let bias = &bias[..bias_len];
        x[..n_rows * bias_len].chunks_exact_mut(bias_len).for_each(|row| elementwise(row, bias, |a, b| a + b));
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        weight: &Vec<f32>,
        width: usize,
        eps: f32,
        n_rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        rms_norm_rows(&x[..n_rows * width], &weight[..width], eps, &mut out[..n_rows * width]);
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &Vec<u32>,
        n_rows: usize,
        heads: usize,
        head_dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        rope_rows(&mut x[..n_rows * heads * head_dim], heads, head_dim, &positions[..n_rows], base, style);
        Ok(())
    }

    fn kv_store(
        &self,
        cache: &mut Vec<f32>,
        positions: &Vec<u32>,
        src: &Vec<f32>,
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        for row in first_row..first_row + n {
            let at = positions[row] as usize;
            cache[at * width..(at + 1) * width].copy_from_slice(&src[row * width..(row + 1) * width]);
        }
        Ok(())
    }

    fn zero(&self, buffer: &mut Vec<f32>, start: usize, len: usize) -> Result<()> {
        buffer[start..start + len].fill(0.0);
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        keys: &Vec<f32>,
        values: &Vec<f32>,
        positions: &Vec<u32>,
        s: AttentionShape,
        first_row: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        debug_assert_eq!(positions[first_row] as usize, s.start_pos, "the span's positions are consecutive");
        let q_width = s.heads * s.head_dim;
        let rows = first_row * q_width..(first_row + s.n_tokens) * q_width;
        let cached = (s.start_pos + s.n_tokens) * s.kv_heads * s.head_dim;
        attention::attention(&q[rows.clone()], &keys[..cached], &values[..cached], s, &mut out[rows]);
        Ok(())
    }

    fn silu_mul(&self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) -> Result<()> {
        elementwise(&mut gate[..len], &up[..len], |g, u| g / (1.0 + (-g).exp()) * u);
        Ok(())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        elementwise(&mut x[..len], &y[..len], |a, b| a + b);
        Ok(())
    }

    fn gather_rows(&self, x: &Vec<f32>, rows: &Vec<u32>, n: usize, width: usize, out: &mut Vec<f32>) -> Result<()> {
        for (i, &row) in rows[..n].iter().enumerate() {
            let row = row as usize;
            out[i * width..(i + 1) * width].copy_from_slice(&x[row * width..(row + 1) * width]);
        }
        Ok(())
    }
}
