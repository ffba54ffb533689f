//! Prompt-sized matrix products on tensor cores, through cuBLAS: a tile of
//! weight rows is dequantized from its file dtype to bf16 (at most
//! `WEIGHT_TILE_VALUES` at a time, so no second copy of the weights lives on
//! the device), the input is rounded to bf16 once per product, and cuBLAS
//! multiplies them with f32 accumulation. bf16 keeps f32's range, so no
//! activation overflows; its 8-bit mantissa is rounding noise far below the
//! 8-bit activations the CPU's kernels use.

use std::sync::{Arc, Mutex};

use cudarc::cublas::{result::gemm_ex, sys, CudaBlas};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};

use super::{device_error, int, CudaMatrix};
use crate::error::Result;

/// Weight values dequantized at once: 32 MiB of bf16.
const WEIGHT_TILE_VALUES: usize = 1 << 24;

pub(super) struct TensorCores {
    scratch: Mutex<Scratch>,
}

struct Scratch {
    blas: CudaBlas,
    weight_tile: CudaSlice<u16>,
    /// The input in bf16, grown to the largest prompt seen.
    input: CudaSlice<u16>,
}

impl TensorCores {
    /// cuBLAS on `stream`, or why it cannot be had (the tiled kernels serve then).
    pub fn new(stream: &Arc<CudaStream>) -> std::result::Result<TensorCores, String> {
        let blas = CudaBlas::new(Arc::clone(stream)).map_err(|e| format!("cuBLAS: {e:?}"))?;
        let alloc = |len| stream.alloc_zeros::<u16>(len).map_err(|e| e.to_string());
        let scratch = Scratch { blas, weight_tile: alloc(WEIGHT_TILE_VALUES)?, input: alloc(1)? };
        Ok(TensorCores { scratch: Mutex::new(scratch) })
    }

    /// `outs[i] = ws[i] · x` for `n_rows` rows of `x` (all matrices `cols` wide).
    pub fn matmul(
        &self,
        stream: &Arc<CudaStream>,
        to_bf16: &cudarc::driver::CudaFunction,
        ws: &[&CudaMatrix],
        x: &CudaSlice<f32>,
        n_rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let cols = ws[0].cols;
        let len = n_rows * cols;
        if scratch.input.len() < len {
            scratch.input = stream.alloc_zeros::<u16>(len).map_err(device_error)?;
        }
        let mut launch = stream.launch_builder(to_bf16);
        let values = len as i64;
        launch.arg(x).arg(&values).arg(&mut scratch.input);
        // SAFETY: x holds n_rows × cols values; input as many.
        unsafe { launch.launch(LaunchConfig::for_num_elems(len as u32)) }.map_err(device_error)?;
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let tile_rows = (WEIGHT_TILE_VALUES / w.cols).min(w.rows);
            for row0 in (0..w.rows).step_by(tile_rows) {
                let rows = tile_rows.min(w.rows - row0);
                scratch.dequantize(stream, w, row0, rows)?;
                scratch.gemm(stream, w, row0, rows, n_rows, out)?;
            }
        }
        Ok(())
    }
}

impl Scratch {
    /// Rows `row0..row0 + rows` of `w` into the weight tile, in bf16.
    fn dequantize(&mut self, stream: &Arc<CudaStream>, w: &CudaMatrix, row0: usize, rows: usize) -> Result<()> {
        let (row_bytes, cols, first, n) = (int(w.row_bytes)?, int(w.cols)?, int(row0)?, int(rows)?);
        let mut launch = stream.launch_builder(&w.dequant_bf16);
        launch.arg(&w.bytes).arg(&row_bytes).arg(&cols).arg(&first).arg(&n).arg(&mut self.weight_tile);
        // SAFETY: the rows lie inside w; the tile holds rows × cols values (tile_rows × cols ≤ its size).
        unsafe { launch.launch(LaunchConfig::for_num_elems((rows * w.cols / 32) as u32)) }.map_err(device_error)?;
        Ok(())
    }

    /// `out[t][row0 + r] = tile[r] · input[t]`. In cuBLAS's column-major
    /// terms: the row-major tile is a k × m matrix, used transposed; the input
    /// a k × n one; the output an m × n one whose columns are `w.rows` apart.
    fn gemm(
        &mut self,
        stream: &Arc<CudaStream>,
        w: &CudaMatrix,
        row0: usize,
        rows: usize,
        n_rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (m, n, k, ld_out) = (int(rows)?, int(n_rows)?, int(w.cols)?, int(w.rows)?);
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (tile, _a) = self.weight_tile.device_ptr(stream);
        let (input, _b) = self.input.device_ptr(stream);
        let mut target = out.slice_mut(row0..);
        let (c, _c) = target.device_ptr_mut(stream);
        // SAFETY: the tile holds m × k, the input n × k and out n × ld_out values from row0; all on `stream`.
        unsafe {
            gemm_ex(
                *self.blas.handle(),
                sys::cublasOperation_t::CUBLAS_OP_T,
                sys::cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                tile as *const _,
                sys::cudaDataType::CUDA_R_16BF,
                k,
                input as *const _,
                sys::cudaDataType::CUDA_R_16BF,
                k,
                (&beta as *const f32).cast(),
                c as *mut _,
                sys::cudaDataType::CUDA_R_32F,
                ld_out,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| device_error(format!("cuBLAS GEMM: {e:?}")))
    }
}
