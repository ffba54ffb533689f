//! Byte layouts of ggml's weight blocks (re-exported from `quant`) and small
//! scalar helpers shared by the scalar and SIMD kernels.

/// Little-endian f16 at `offset`, widened to f32.
#[inline]
pub fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    half::f16::from_le_bytes([bytes[offset], bytes[offset + 1]]).to_f32()
}

/// Little-endian u32 at `offset` (the high-bit masks of Q5_0/Q5_1).
#[inline]
pub fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]])
}

// The block layouts are quant's (one source of truth for both the codecs and
// the kernels); re-exported here so kernel code reads `layout::q4_k::QS`.
pub use crate::quant::kquants::{q4_k, q5_k, q6_k, QK_K};
pub use crate::quant::legacy::{q4_0, q4_1, q5_0, q5_1, q8_0, QK};

/// The eight 6-bit (scale, min) pairs of a Q4_K/Q5_K block, unpacked from their
/// 12-byte packing: pairs 0..4 are the low 6 bits of bytes 0..4 / 4..8; pairs
/// 4..8 take 4 bits from bytes 8..12 and their top 2 bits from bytes 0..8.
#[inline]
pub fn unpack_k_scales(packed: &[u8]) -> ([u8; 8], [u8; 8]) {
    let q = &packed[..12];
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    for j in 0..4 {
        scales[j] = q[j] & 63;
        mins[j] = q[j + 4] & 63;
        scales[j + 4] = (q[j + 8] & 0x0F) | ((q[j] >> 6) << 4);
        mins[j + 4] = (q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4);
    }
    (scales, mins)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ggml's `get_scale_min_k4`, written out per index, against the batched unpack.
    fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
        if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
        }
    }

    #[test]
    fn block_sizes_agree_with_the_dtype_table() {
        use crate::dtype::DType;
        let sizes = [
            (DType::Q4_0, q4_0::BYTES, QK),
            (DType::Q4_1, q4_1::BYTES, QK),
            (DType::Q5_0, q5_0::BYTES, QK),
            (DType::Q5_1, q5_1::BYTES, QK),
            (DType::Q8_0, q8_0::BYTES, QK),
            (DType::Q4_K, q4_k::BYTES, QK_K),
            (DType::Q5_K, q5_k::BYTES, QK_K),
            (DType::Q6_K, q6_k::BYTES, QK_K),
        ];
        for (dtype, bytes, elems) in sizes {
            assert_eq!(dtype.byte_size(&[elems as u64]).unwrap(), bytes as u64, "{dtype}");
        }
    }

    #[test]
    fn unpack_matches_per_index_rule() {
        let mut packed = [0u8; 12];
        for seed in 0..2000u32 {
            for (i, b) in packed.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2654435761).rotate_left(i as u32 * 5) >> 8) as u8;
            }
            let (scales, mins) = unpack_k_scales(&packed);
            for j in 0..8 {
                assert_eq!((scales[j], mins[j]), scale_min_k4(j, &packed), "seed {seed} pair {j}");
            }
        }
    }
}
