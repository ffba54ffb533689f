//! Byte layouts of ggml's weight blocks (facts from ggml-common.h), as offsets
//! and small scalar helpers shared by the scalar and SIMD kernels.

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

/// Elements per block of the 32-wide formats (Q4_0 .. Q8_0, and Q8 activations).
pub const QK: usize = 32;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// `block_q4_0`: f16 d, 16 bytes of nibbles (element j low, j+16 high).
pub mod q4_0 {
    pub const BYTES: usize = 18;
    pub const QS: usize = 2;
}
/// `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles.
pub mod q4_1 {
    pub const BYTES: usize = 20;
    pub const M: usize = 2;
    pub const QS: usize = 4;
}
/// `block_q5_0`: f16 d, u32 fifth bits (bit j for element j), 16 bytes of nibbles.
pub mod q5_0 {
    pub const BYTES: usize = 22;
    pub const QH: usize = 2;
    pub const QS: usize = 6;
}
/// `block_q5_1`: f16 d, f16 m, u32 fifth bits, 16 bytes of nibbles.
pub mod q5_1 {
    pub const BYTES: usize = 24;
    pub const M: usize = 2;
    pub const QH: usize = 4;
    pub const QS: usize = 8;
}
/// `block_q8_0`: f16 d, 32 i8.
pub mod q8_0 {
    pub const BYTES: usize = 34;
    pub const QS: usize = 2;
}
/// `block_q4_K`: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles.
/// Each 64-element chunk c uses bytes `32c..32c+32`: low nibbles are sub-block 2c,
/// high nibbles sub-block 2c+1.
pub mod q4_k {
    pub const BYTES: usize = 144;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QS: usize = 16;
}
/// `block_q5_K`: like Q4_K plus 32 bytes of fifth bits before the nibbles; chunk c
/// takes bit 2c (low half) and bit 2c+1 (high half) of `qh[l]`.
pub mod q5_k {
    pub const BYTES: usize = 176;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QH: usize = 16;
    pub const QS: usize = 48;
}
/// `block_q6_K`: 128 bytes low nibbles, 64 bytes of 2-bit highs, 16 i8 scales
/// (one per 16 elements), f16 d last. Values are `q - 32`.
pub mod q6_k {
    pub const BYTES: usize = 210;
    pub const QL: usize = 0;
    pub const QH: usize = 128;
    pub const SCALES: usize = 192;
    pub const D: usize = 208;
}

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
