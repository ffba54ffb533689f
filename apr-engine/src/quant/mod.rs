//! Quantized block formats: dequantization and quantization.
//!
//! Dequantization is bit-exact with gguf-py's `gguf.quants.dequantize` (the
//! same float32 operations in the same order); quantization follows
//! llama.cpp's reference quantizers and, where gguf-py implements one (F16,
//! BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), produces the same bytes.
//!
//! Block sizes come from [`DType::block_elems`] and [`DType::block_bytes`];
//! the byte layout inside each block is public in [`legacy`] and [`kquants`]
//! (offsets and unpacking helpers) for kernels that read blocks directly.

pub mod float;
pub mod kquants;
pub mod legacy;
pub mod quantize;

use crate::dtype::DType;
use rayon::prelude::*;

pub use float::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16};
pub use kquants::{k4_scale_min, q3_k_scales, QK_K};

/// What went wrong converting between a dtype's bytes and f32 values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error("{op} is not supported for dtype {dtype}")]
    Unsupported { dtype: DType, op: &'static str },
    #[error("{dtype}: {bytes} bytes is not a whole number of {block_bytes}-byte blocks")]
    PartialBlock { dtype: DType, bytes: usize, block_bytes: usize },
    #[error("{dtype}: {values} values is not a whole number of {block_elems}-element blocks")]
    PartialValues { dtype: DType, values: usize, block_elems: usize },
    #[error("{dtype}: {bytes} bytes hold {elements} elements but the output has room for {out_len}")]
    LengthMismatch { dtype: DType, bytes: usize, elements: usize, out_len: usize },
}

/// Decodes one block of bytes into its elements.
type BlockDecoder = fn(&[u8], &mut [f32]);
/// Encodes one block of values into its bytes.
type BlockEncoder = fn(&[f32], &mut [u8]);

/// The block decoder of a dtype, or `None` if it has none. Plain types decode
/// a run of elements at once (their "block" is any whole number of elements).
fn decoder(dtype: DType) -> Option<BlockDecoder> {
    use DType::*;
    Some(match dtype {
        F32 => float::dequantize_f32,
        F16 => float::dequantize_f16,
        BF16 => float::dequantize_bf16,
        F64 => |b, o| float::decode_scalars::<8>(b, o, |x| f64::from_le_bytes(x) as f32),
        I8 => |b, o| float::decode_scalars::<1>(b, o, |x| f32::from(x[0] as i8)),
        I16 => |b, o| float::decode_scalars::<2>(b, o, |x| f32::from(i16::from_le_bytes(x))),
        I32 => |b, o| float::decode_scalars::<4>(b, o, |x| i32::from_le_bytes(x) as f32),
        I64 => |b, o| float::decode_scalars::<8>(b, o, |x| i64::from_le_bytes(x) as f32),
        Q4_0 => legacy::dequantize_q4_0,
        Q4_1 => legacy::dequantize_q4_1,
        Q5_0 => legacy::dequantize_q5_0,
        Q5_1 => legacy::dequantize_q5_1,
        Q8_0 => legacy::dequantize_q8_0,
        Q8_1 => legacy::dequantize_q8_1,
        Q2_K => kquants::dequantize_q2_k,
        Q3_K => kquants::dequantize_q3_k,
        Q4_K => kquants::dequantize_q4_k,
        Q5_K => kquants::dequantize_q5_k,
        Q6_K => kquants::dequantize_q6_k,
        Q8_K => kquants::dequantize_q8_k,
    })
}

/// The block encoder of a quantized dtype (plain float types are handled apart).
fn encoder(dtype: DType) -> Option<BlockEncoder> {
    use DType::*;
    Some(match dtype {
        Q4_0 => legacy::quantize_q4_0,
        Q4_1 => legacy::quantize_q4_1,
        Q5_0 => legacy::quantize_q5_0,
        Q5_1 => legacy::quantize_q5_1,
        Q8_0 => legacy::quantize_q8_0,
        Q8_1 => legacy::quantize_q8_1,
        Q2_K => quantize::quantize_q2_k,
        Q3_K => quantize::quantize_q3_k,
        Q4_K => quantize::quantize_q4_k,
        Q5_K => quantize::quantize_q5_k,
        Q6_K => quantize::quantize_q6_k,
        Q8_K => quantize::quantize_q8_k,
        _ => return None,
    })
}

/// Elements handed to one rayon task: big enough that scheduling is noise.
const TASK_ELEMS: usize = 1 << 15;

/// Below this many elements the work runs on the calling thread.
const PARALLEL_THRESHOLD: usize = 1 << 16;

/// Dequantizes whole blocks `bytes` of `dtype` into `out`, whose length must
/// be exactly the number of elements those blocks hold.
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    let decode = decoder(dtype).ok_or(QuantError::Unsupported { dtype, op: "dequantization" })?;
    let (block_bytes, block_elems) = (dtype.block_bytes(), dtype.block_elems());
    if !bytes.len().is_multiple_of(block_bytes) {
        return Err(QuantError::PartialBlock { dtype, bytes: bytes.len(), block_bytes });
    }
    let elements = bytes.len() / block_bytes * block_elems;
    if elements != out.len() {
        return Err(QuantError::LengthMismatch { dtype, bytes: bytes.len(), elements, out_len: out.len() });
    }
    let blocks_per_task = (TASK_ELEMS / block_elems).max(1);
    let (task_bytes, task_elems) = (block_bytes * blocks_per_task, block_elems * blocks_per_task);
    let run = |(bytes, out): (&[u8], &mut [f32])| {
        if dtype.is_quantized() {
            for (block, ys) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(block_elems)) {
                decode(block, ys);
            }
        } else {
            decode(bytes, out);
        }
    };
    if out.len() < PARALLEL_THRESHOLD {
        run((bytes, out));
    } else {
        bytes.par_chunks(task_bytes).zip(out.par_chunks_mut(task_elems)).for_each(run);
    }
    Ok(())
}

/// Dequantizes whole blocks into a new vector.
pub fn dequantize_to_vec(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>, QuantError> {
    let block_bytes = dtype.block_bytes();
    if decoder(dtype).is_some() && !bytes.len().is_multiple_of(block_bytes) {
        return Err(QuantError::PartialBlock { dtype, bytes: bytes.len(), block_bytes });
    }
    let mut out = vec![0.0; bytes.len() / block_bytes * dtype.block_elems()];
    dequantize(dtype, bytes, &mut out)?;
    Ok(out)
}

/// True if [`quantize`] can produce `dtype`.
pub fn can_quantize(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16) || encoder(dtype).is_some()
}

/// Quantizes `values` (a whole number of blocks) into `dtype`'s bytes.
pub fn quantize(dtype: DType, values: &[f32]) -> Result<Vec<u8>, QuantError> {
    match dtype {
        DType::F32 => return Ok(float::quantize_f32(values)),
        DType::F16 => return Ok(float::quantize_f16(values)),
        DType::BF16 => return Ok(float::quantize_bf16(values)),
        _ => {}
    }
    let encode = encoder(dtype).ok_or(QuantError::Unsupported { dtype, op: "quantization" })?;
    let (block_bytes, block_elems) = (dtype.block_bytes(), dtype.block_elems());
    if !values.len().is_multiple_of(block_elems) {
        return Err(QuantError::PartialValues { dtype, values: values.len(), block_elems });
    }
    let mut out = vec![0u8; values.len() / block_elems * block_bytes];
    // K-quant searches are slow enough that even small inputs gain from threads.
    out.par_chunks_mut(block_bytes)
        .zip(values.par_chunks(block_elems))
        .with_min_len(64)
        .for_each(|(block, xs)| encode(xs, block));
    Ok(out)
}

#[cfg(test)]
mod tests;
