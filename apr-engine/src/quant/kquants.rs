//! The 256-element super-block formats ("K-quants"): layouts, scale
//! unpacking and dequantization.
//!
//! Dequantization mirrors gguf-py's float32 operation order: the f16 super
//! scale is multiplied by the sub-block scale first (`dl = d * sc`), then by
//! the quant, and the min term (`dmin * m`) is subtracted last.

use super::float::read_f16;

/// Elements in every K-quant super-block.
pub const QK_K: usize = 256;

/// Bytes of the packed 6-bit scales and mins of Q4_K and Q5_K.
pub const K_SCALE_SIZE: usize = 12;

/// Byte offsets inside a Q2_K block (84 bytes): 16 sub-blocks of 16.
pub mod q2_k {
    /// 16 bytes: low nibble = scale, high nibble = min of sub-block i.
    pub const SCALES: usize = 0;
    /// 64 bytes of 2-bit quants (see [`super::q2_k_quant`]).
    pub const QS: usize = 16;
    pub const D: usize = 80;
    pub const DMIN: usize = 82;
}

/// Byte offsets inside a Q3_K block (110 bytes): 16 sub-blocks of 16.
pub mod q3_k {
    /// 32 bytes: bit k of byte l is the high bit of element 32k + l (set means no -4 offset).
    pub const HMASK: usize = 0;
    /// 64 bytes of low 2-bit quants, laid out as Q2_K's.
    pub const QS: usize = 32;
    /// 12 bytes of 6-bit signed scales (see [`super::q3_k_scales`]).
    pub const SCALES: usize = 96;
    pub const D: usize = 108;
}

/// Byte offsets inside a Q4_K block (144 bytes): 8 sub-blocks of 32.
pub mod q4_k {
    /// Bytes in one block.
    pub const BYTES: usize = 144;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    /// 12 bytes of 6-bit scales and mins (see [`super::k4_scale_min`]).
    pub const SCALES: usize = 4;
    /// 128 bytes: byte 32c + l holds element 64c + l (low) and 64c + 32 + l (high).
    pub const QS: usize = 16;
}

/// Byte offsets inside a Q5_K block (176 bytes): 8 sub-blocks of 32.
pub mod q5_k {
    /// Bytes in one block.
    pub const BYTES: usize = 176;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    /// 32 bytes: bit k of byte l is the fifth bit of element 32k + l.
    pub const QH: usize = 16;
    /// 128 bytes of low nibbles, laid out as Q4_K's.
    pub const QS: usize = 48;
}

/// Byte offsets inside a Q6_K block (210 bytes): 16 sub-blocks of 16.
pub mod q6_k {
    /// Bytes in one block.
    pub const BYTES: usize = 210;
    /// 128 bytes of low nibbles (see [`super::q6_k_quant`]).
    pub const QL: usize = 0;
    /// 64 bytes of high 2-bit pairs.
    pub const QH: usize = 128;
    /// 16 int8 scales.
    pub const SCALES: usize = 192;
    pub const D: usize = 208;
}

/// Byte offsets inside a Q8_K block (292 bytes).
pub mod q8_k {
    /// f32 scale (not f16).
    pub const D: usize = 0;
    /// 256 int8 quants.
    pub const QS: usize = 4;
    /// 16 little-endian i16 sums of each group of 16 quants.
    pub const BSUMS: usize = 260;
}

/// Scale and min (both 6-bit) of sub-block `j` (0..8) of a Q4_K/Q5_K block,
/// from its 12 packed bytes. Bytes 0..4 hold scales 0..4 in their low six
/// bits, bytes 4..8 mins 0..4; sub-blocks 4..8 keep their low four bits in
/// bytes 8..12 and their top two bits in the spare top bits of bytes 0..8.
#[inline]
pub fn k4_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        let scale = (scales[j + 4] & 0x0f) | ((scales[j - 4] >> 6) << 4);
        let min = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (scale, min)
    }
}

/// The 16 signed scales of a Q3_K block (each in -32..32) from its 12 packed
/// bytes: low nibbles from bytes 0..8 (scale i < 8 in the low half of byte i,
/// scale i >= 8 in the high half of byte i - 8), top two bits from bytes
/// 8..12 (scale i in bits 2*(i/4) of byte 8 + i%4).
#[inline]
pub fn q3_k_scales(scales: &[u8]) -> [i8; 16] {
    std::array::from_fn(|i| {
        let low = if i < 8 { scales[i] & 0x0f } else { scales[i - 8] >> 4 };
        let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    })
}

/// The 2-bit quant of element `e` (0..256) from a 64-byte Q2_K/Q3_K array:
/// each 128-element half uses 32 bytes, four 2-bit fields per byte.
#[inline]
pub fn q2_k_quant(qs: &[u8], e: usize) -> u8 {
    let (half, within) = (e / 128, e % 128);
    (qs[32 * half + within % 32] >> (2 * (within / 32))) & 3
}

/// The 4-bit quant of element `e` (0..256) from a 128-byte Q4_K/Q5_K array.
#[inline]
pub fn q4_k_quant(qs: &[u8], e: usize) -> u8 {
    let (chunk, within) = (e / 64, e % 64);
    (qs[32 * chunk + within % 32] >> (4 * (within / 32))) & 0x0f
}

/// Bit `e / 32` of byte `e % 32`: the high-bit arrays of Q3_K and Q5_K.
#[inline]
pub fn bit_plane(mask: &[u8], e: usize) -> u8 {
    (mask[e % 32] >> (e / 32)) & 1
}

/// The 6-bit quant (0..64, before the -32 offset) of element `e` of a Q6_K block.
#[inline]
pub fn q6_k_quant(ql: &[u8], qh: &[u8], e: usize) -> u8 {
    let (half, within) = (e / 128, e % 128);
    let low = (ql[64 * half + within % 64] >> (4 * (within / 64))) & 0x0f;
    let high = (qh[32 * half + within % 32] >> (2 * (within / 32))) & 3;
    low | (high << 4)
}

// The decoders below walk the packed arrays in storage order (rather than
// calling the per-element helpers above) so that the inner loops run over
// contiguous bytes and vectorize; the float operations are the same.

/// Walks the 2-bit fields of Q2_K/Q3_K: calls `emit(sub, l, y, q)` for each
/// element, where `sub` is its 16-element sub-block, `l` (0..32) the byte
/// of its 32-byte group and `q` its 2-bit quant.
#[inline(always)]
fn for_each_2bit(qs: &[u8], out: &mut [f32], mut emit: impl FnMut(usize, usize, &mut f32, u8)) {
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for shift in 0..4 {
            for part in 0..2 {
                let sub = 8 * half + 2 * shift + part;
                let ys = &mut out[16 * sub..16 * sub + 16];
                for (i, y) in ys.iter_mut().enumerate() {
                    let l = 16 * part + i;
                    emit(sub, l, y, (q[l] >> (2 * shift)) & 3);
                }
            }
        }
    }
}

pub(crate) fn dequantize_q2_k(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q2_k::D);
    let dmin = read_f16(block, q2_k::DMIN);
    let scales = &block[q2_k::SCALES..q2_k::SCALES + 16];
    let dl: [f32; 16] = std::array::from_fn(|i| d * f32::from(scales[i] & 0x0f));
    let ml: [f32; 16] = std::array::from_fn(|i| dmin * f32::from(scales[i] >> 4));
    for_each_2bit(&block[q2_k::QS..q2_k::QS + 64], out, |sub, _, y, q| *y = dl[sub] * f32::from(q) - ml[sub]);
}

pub(crate) fn dequantize_q3_k(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q3_k::D);
    let scales = q3_k_scales(&block[q3_k::SCALES..q3_k::SCALES + 12]);
    let dl: [f32; 16] = std::array::from_fn(|i| d * f32::from(scales[i]));
    let hmask = &block[q3_k::HMASK..q3_k::HMASK + 32];
    for_each_2bit(&block[q3_k::QS..q3_k::QS + 64], out, |sub, l, y, q| {
        // Sub-block `sub` covers elements 16*sub.., whose high bits are bit plane sub / 2.
        let high = (hmask[l] >> (sub / 2)) & 1;
        // A clear high bit means the quant is offset by -4.
        *y = dl[sub] * f32::from(q as i8 - (((high ^ 1) << 2) as i8));
    });
}

/// Decodes Q4_K/Q5_K: 4 chunks of 64 elements, the low then the high
/// nibbles of 32 bytes, each half with its own scale and min;
/// `high_bit(sub, l)` gives the fifth bit (always 0 for Q4_K).
#[inline(always)]
fn dequantize_k4(block: &[u8], qs_at: usize, out: &mut [f32], high_bit: impl Fn(usize, usize) -> u8) {
    let d = read_f16(block, q4_k::D);
    let dmin = read_f16(block, q4_k::DMIN);
    let scales = &block[q4_k::SCALES..q4_k::SCALES + K_SCALE_SIZE];
    for chunk in 0..4 {
        let q = &block[qs_at + 32 * chunk..qs_at + 32 * chunk + 32];
        for half in 0..2 {
            let sub = 2 * chunk + half;
            let (sc, m) = k4_scale_min(scales, sub);
            let dl = d * f32::from(sc);
            let ml = dmin * f32::from(m);
            let ys = &mut out[32 * sub..32 * sub + 32];
            for (l, y) in ys.iter_mut().enumerate() {
                let quant = ((q[l] >> (4 * half)) & 0x0f) | (high_bit(sub, l) << 4);
                *y = dl * f32::from(quant) - ml;
            }
        }
    }
}

pub(crate) fn dequantize_q4_k(block: &[u8], out: &mut [f32]) {
    dequantize_k4(block, q4_k::QS, out, |_, _| 0);
}

pub(crate) fn dequantize_q5_k(block: &[u8], out: &mut [f32]) {
    let qh: [u8; 32] = block[q5_k::QH..q5_k::QH + 32].try_into().expect("32 bytes");
    dequantize_k4(block, q5_k::QS, out, |sub, l| (qh[l] >> sub) & 1);
}

pub(crate) fn dequantize_q6_k(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q6_k::D);
    let dl: [f32; 16] = std::array::from_fn(|i| d * f32::from(block[q6_k::SCALES + i] as i8));
    for half in 0..2 {
        let ql = &block[q6_k::QL + 64 * half..q6_k::QL + 64 * half + 64];
        let qh = &block[q6_k::QH + 32 * half..q6_k::QH + 32 * half + 32];
        // Four 32-element rows: low nibbles of ql[0..32], of ql[32..64], then their high nibbles.
        for row in 0..4 {
            let (bytes, nibble) = (&ql[32 * (row % 2)..32 * (row % 2) + 32], 4 * (row / 2));
            for part in 0..2 {
                let sub = 8 * half + 2 * row + part;
                let ys = &mut out[16 * sub..16 * sub + 16];
                for (i, y) in ys.iter_mut().enumerate() {
                    let l = 16 * part + i;
                    let q = ((bytes[l] >> nibble) & 0x0f) | (((qh[l] >> (2 * row)) & 3) << 4);
                    *y = dl[sub] * f32::from(q as i8 - 32);
                }
            }
        }
    }
}

/// Q8_K values are `d * q` (llama.cpp's `dequantize_row_q8_K`; gguf-py has no Q8_K codec).
pub(crate) fn dequantize_q8_k(block: &[u8], out: &mut [f32]) {
    let d = f32::from_le_bytes(block[q8_k::D..q8_k::D + 4].try_into().expect("4 bytes"));
    for (y, &q) in out.iter_mut().zip(&block[q8_k::QS..q8_k::QS + QK_K]) {
        *y = d * f32::from(q as i8);
    }
}
