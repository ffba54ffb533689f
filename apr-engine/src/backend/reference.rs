//! The reference CPU backend: every weight row dequantized to F32 and dotted
//! with the unquantized activations in f64. Slow and simple on purpose: it is
//! the second backend that `trace-diff` compares the SIMD kernels against
//! (the activations of the fast path are quantized to 8 bits; here they are
//! not). Everything but the matrix products is the CPU backend's own code.

use std::borrow::Cow;

use rayon::prelude::*;

use super::cpu::Cpu;
use super::{AttentionShape, Backend, HostMatrix, RopeStyle, WeightMatrix};
use crate::dtype::DType;
use crate::error::Result;
use crate::quant;

#[derive(Debug, Default, Clone, Copy)]
pub struct CpuReference;

/// `out[t][r] = w[r] · x[t]` in f64 over the dequantized row.
fn exact_matmul(w: &WeightMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
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

impl Backend for CpuReference {
    type Buffer = Vec<f32>;
    type Indices = Vec<u32>;
    type Matrix = HostMatrix;

    fn name(&self) -> &'static str {
        "cpu-reference"
    }

    fn kernel_name(&self, _dtype: DType) -> &'static str {
        "dequant×F32 (f64 sums)"
    }

    fn matmul(&self, ws: &[&HostMatrix], x: &Vec<f32>, n_rows: usize, outs: &mut [&mut Vec<f32>]) -> Result<()> {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let w = w.view();
            exact_matmul(&w, &x[..n_rows * w.cols], n_rows, &mut out[..n_rows * w.rows]);
        }
        Ok(())
    }

    // Everything below is the CPU backend's.
    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Cpu.alloc(len)
    }
    fn upload(&self, values: &[f32]) -> Result<Vec<f32>> {
        Cpu.upload(values)
    }
    fn write(&self, buffer: &mut Vec<f32>, values: &[f32]) -> Result<()> {
        Cpu.write(buffer, values)
    }
    fn read<'a>(&self, buffer: &'a Vec<f32>, len: usize) -> Result<Cow<'a, [f32]>> {
        Cpu.read(buffer, len)
    }
    fn download(&self, buffer: Vec<f32>, len: usize) -> Result<Vec<f32>> {
        Cpu.download(buffer, len)
    }
    fn prepare(&self, matrix: &HostMatrix) -> Result<HostMatrix> {
        Cpu.prepare(matrix)
    }
    fn alloc_indices(&self, len: usize) -> Result<Vec<u32>> {
        Cpu.alloc_indices(len)
    }
    fn write_indices(&self, indices: &mut Vec<u32>, values: &[u32]) -> Result<()> {
        Cpu.write_indices(indices, values)
    }
    fn embed(&self, table: &HostMatrix, tokens: &Vec<u32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        Cpu.embed(table, tokens, n, out)
    }
    fn add_bias(&self, x: &mut Vec<f32>, bias: &Vec<f32>, bias_len: usize, n_rows: usize) -> Result<()> {
        Cpu.add_bias(x, bias, bias_len, n_rows)
    }
    fn rms_norm(&self, x: &Vec<f32>, w: &Vec<f32>, width: usize, eps: f32, n: usize, out: &mut Vec<f32>) -> Result<()> {
        Cpu.rms_norm(x, w, width, eps, n, out)
    }
    fn rope(
        &self,
        x: &mut Vec<f32>,
        positions: &Vec<u32>,
        n_rows: usize,
        heads: usize,
        dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        Cpu.rope(x, positions, n_rows, heads, dim, base, style)
    }
    fn kv_store(
        &self,
        cache: &mut Vec<f32>,
        positions: &Vec<u32>,
        src: &Vec<f32>,
        row: usize,
        n: usize,
        w: usize,
    ) -> Result<()> {
        Cpu.kv_store(cache, positions, src, row, n, w)
    }
    fn zero(&self, buffer: &mut Vec<f32>, start: usize, len: usize) -> Result<()> {
        Cpu.zero(buffer, start, len)
    }
    fn attention(
        &self,
        q: &Vec<f32>,
        keys: &Vec<f32>,
        values: &Vec<f32>,
        positions: &Vec<u32>,
        shape: AttentionShape,
        first_row: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        Cpu.attention(q, keys, values, positions, shape, first_row, out)
    }
    fn silu_mul(&self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) -> Result<()> {
        Cpu.silu_mul(gate, up, len)
    }
    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        Cpu.add(x, y, len)
    }
    fn gather_rows(&self, x: &Vec<f32>, rows: &Vec<u32>, n: usize, width: usize, out: &mut Vec<f32>) -> Result<()> {
        Cpu.gather_rows(x, rows, n, width, out)
    }
}
