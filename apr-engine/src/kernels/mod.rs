//! CPU matrix kernels over weights in their file dtype. Weight blocks are read
//! directly: activations are quantized once per matmul (Q8 blocks for the 32-wide
//! types, Q8_K for the K-quants) and each row is an integer dot product; F32, F16
//! and BF16 rows are float dots. Q2_K/Q3_K and other types dequantize a row at a time.

pub mod dot;
pub mod layout;
mod matmul;
pub mod q8_act;

use crate::dtype::DType;
use crate::quant;

pub use matmul::{matmul, matmul_many};

/// A row-major `[rows, cols]` weight borrowed in its file dtype.
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

    /// Bytes of one row (whole blocks: `new` checked `cols` is a multiple of the block size).
    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_elems() * self.dtype.block_bytes()
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.bytes[r * n..(r + 1) * n]
    }
}

/// Row `row` of `w` as f32 (the embedding lookup).
pub fn row_f32(w: &WeightMatrix, row: usize, out: &mut [f32]) {
    quant::dequantize(w.dtype, w.row(row), out).expect("row size checked in WeightMatrix::new");
}

/// The kernel `matmul` uses for `dtype` on this CPU, e.g. "Q4_K×Q8_K avx2".
pub fn kernel_name(dtype: DType) -> &'static str {
    match dot::best_kernel(dtype) {
        Some(kernel) => kernel.name,
        None => match dtype {
            DType::Q2_K => "Q2_K dequant×F32",
            DType::Q3_K => "Q3_K dequant×F32",
            _ => "dequant×F32",
        },
    }
}
