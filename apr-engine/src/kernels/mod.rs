//! CPU matrix kernels over weights in their file dtype (placeholder: a
//! row-at-a-time dequantize-and-dot; the SIMD kernels replace it).

use rayon::prelude::*;

use crate::dtype::DType;
use crate::quant;

#[derive(Debug, Clone, Copy)]
pub struct WeightMatrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(String);

impl<'a> WeightMatrix<'a> {
    pub fn new(dtype: DType, rows: usize, cols: usize, bytes: &'a [u8]) -> Result<Self, KernelError> {
        let expected = dtype.byte_size(&[rows as u64, cols as u64]).map_err(|e| KernelError(e.to_string()))?;
        if expected != bytes.len() as u64 {
            return Err(KernelError(format!("{dtype} [{rows}, {cols}] needs {expected} bytes, got {}", bytes.len())));
        }
        Ok(WeightMatrix { dtype, rows, cols, bytes })
    }

    fn row_bytes(&self) -> usize {
        self.bytes.len() / self.rows
    }
}

pub fn row_f32(w: &WeightMatrix, row: usize, out: &mut [f32]) {
    let rb = w.row_bytes();
    quant::dequantize(w.dtype, &w.bytes[row * rb..(row + 1) * rb], out).expect("row size checked in WeightMatrix::new");
}

pub fn matmul(w: &WeightMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    let mut transposed = vec![0.0f32; n_tokens * w.rows];
    transposed.par_chunks_mut(n_tokens).enumerate().for_each_init(
        || vec![0.0f32; w.cols],
        |row_buf, (r, out_row)| {
            row_f32(w, r, row_buf);
            for (t, o) in out_row.iter_mut().enumerate() {
                *o = row_buf.iter().zip(&x[t * w.cols..(t + 1) * w.cols]).map(|(a, b)| a * b).sum();
            }
        },
    );
    for t in 0..n_tokens {
        for r in 0..w.rows {
            out[t * w.rows + r] = transposed[r * n_tokens + t];
        }
    }
}

pub fn kernel_name(dtype: DType) -> &'static str {
    dtype.name()
}
