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

use crate::backend::WeightMatrix;

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

/// `x` as the kernel for `dtype` computes with it: rounded to its 8-bit
/// activation blocks and back (Q8 blocks of 32, or Q8_K blocks of 256 for the
/// K-quants), or unchanged for float kernels. What trace-diff's isolation uses
/// to tell 8-bit rounding noise from a wrong result.
pub fn activations_as_seen(dtype: DType, x: &[f32]) -> Vec<f32> {
    use layout::{QK, QK_K};
    let dot = dot::best_kernel(dtype).map(|k| k.dot);
    match dot {
        Some(dot::RowDot::Q8(_)) if x.len().is_multiple_of(QK) => {
            let mut blocks = vec![q8_act::BlockQ8::default(); x.len() / QK];
            q8_act::quantize_q8(x, &mut blocks);
            blocks.iter().flat_map(|b| b.qs.iter().map(move |&q| b.d * q as f32)).collect()
        }
        Some(dot::RowDot::Q8K(_)) if x.len().is_multiple_of(QK_K) => {
            let mut blocks = vec![q8_act::BlockQ8K::default(); x.len() / QK_K];
            q8_act::quantize_q8k(x, &mut blocks);
            blocks.iter().flat_map(|b| b.qs.iter().map(move |&q| b.d * q as f32)).collect()
        }
        _ => x.to_vec(),
    }
}
