//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Within a block, quant `j` of the low nibbles (or of the int8 array) is
//! element `j`; 4/5-bit formats put elements 16..32 in the high nibbles.
//! Dequantization follows gguf-py's float32 operation order exactly
//! (`d * q`, or `d * q + m`); quantization follows llama.cpp's reference
//! (`quantize_row_*_ref`), which gguf-py reproduces bit for bit.

use super::float::{f32_to_f16, read_f16};

/// Elements in every legacy block.
pub const QK: usize = 32;

/// Byte offsets inside a Q4_0 block (18 bytes).
pub mod q4_0 {
    /// Bytes in one block.
    pub const BYTES: usize = 18;
    /// f16 scale.
    pub const D: usize = 0;
    /// 16 bytes: element j in the low nibble of byte j, element j+16 in its high nibble.
    pub const QS: usize = 2;
}

/// Byte offsets inside a Q4_1 block (20 bytes).
pub mod q4_1 {
    /// Bytes in one block.
    pub const BYTES: usize = 20;
    pub const D: usize = 0;
    /// f16 minimum, added after scaling.
    pub const M: usize = 2;
    pub const QS: usize = 4;
}

/// Byte offsets inside a Q5_0 block (22 bytes).
pub mod q5_0 {
    /// Bytes in one block.
    pub const BYTES: usize = 22;
    pub const D: usize = 0;
    /// u32 little-endian: bit j is the fifth bit of element j.
    pub const QH: usize = 2;
    pub const QS: usize = 6;
}

/// Byte offsets inside a Q5_1 block (24 bytes).
pub mod q5_1 {
    /// Bytes in one block.
    pub const BYTES: usize = 24;
    pub const D: usize = 0;
    pub const M: usize = 2;
    pub const QH: usize = 4;
    pub const QS: usize = 8;
}

/// Byte offsets inside a Q8_0 block (34 bytes).
pub mod q8_0 {
    /// Bytes in one block.
    pub const BYTES: usize = 34;
    pub const D: usize = 0;
    /// 32 int8 quants.
    pub const QS: usize = 2;
}

/// Byte offsets inside a Q8_1 block (36 bytes).
pub mod q8_1 {
    /// Bytes in one block.
    pub const BYTES: usize = 36;
    pub const D: usize = 0;
    /// f16 of `d * sum(qs)`, used by dot products only.
    pub const S: usize = 2;
    pub const QS: usize = 4;
}

/// The 4-bit quant of element `j` (0..32) from a 16-byte nibble array.
#[inline]
pub fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < QK / 2 {
        qs[j] & 0x0f
    } else {
        qs[j - QK / 2] >> 4
    }
}

/// The 5-bit quant of element `j`: its nibble plus bit `j` of `qh`.
#[inline]
pub fn five_bit(qs: &[u8], qh: u32, j: usize) -> u8 {
    nibble(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

fn read_u32(block: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(block[at..at + 4].try_into().expect("4 bytes"))
}

/// Calls `emit(j, y, q)` for the 32 elements of a nibble block, where `q` is
/// element j's nibble; the loop runs over the 16 bytes so it vectorizes.
#[inline(always)]
fn for_each_nibble(qs: &[u8], out: &mut [f32], mut emit: impl FnMut(usize, &mut f32, u8)) {
    let (low, high) = out.split_at_mut(QK / 2);
    for (j, ((&byte, lo), hi)) in qs[..QK / 2].iter().zip(low).zip(high).enumerate() {
        emit(j, lo, byte & 0x0f);
        emit(j + QK / 2, hi, byte >> 4);
    }
}

pub(crate) fn dequantize_q4_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q4_0::D);
    for_each_nibble(&block[q4_0::QS..], out, |_, y, q| *y = d * f32::from(q as i8 - 8));
}

pub(crate) fn dequantize_q4_1(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q4_1::D);
    let m = read_f16(block, q4_1::M);
    for_each_nibble(&block[q4_1::QS..], out, |_, y, q| *y = d * f32::from(q) + m);
}

/// Bit 4 of each of the 32 quants, from the packed `qh` word (spelled out
/// once per block so the per-element loop has no variable shifts).
fn fifth_bits(qh: u32) -> [u8; QK] {
    std::array::from_fn(|j| (((qh >> j) & 1) as u8) << 4)
}

pub(crate) fn dequantize_q5_0(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q5_0::D);
    let high = fifth_bits(read_u32(block, q5_0::QH));
    for_each_nibble(&block[q5_0::QS..], out, |j, y, q| *y = d * f32::from((q | high[j]) as i8 - 16));
}

pub(crate) fn dequantize_q5_1(block: &[u8], out: &mut [f32]) {
    let d = read_f16(block, q5_1::D);
    let m = read_f16(block, q5_1::M);
    let high = fifth_bits(read_u32(block, q5_1::QH));
    for_each_nibble(&block[q5_1::QS..], out, |j, y, q| *y = d * f32::from(q | high[j]) + m);
}

pub(crate) fn dequantize_q8_0(block: &[u8], out: &mut [f32]) {
    dequantize_int8(read_f16(block, q8_0::D), &block[q8_0::QS..], out);
}

/// Q8_1 values are `d * q`; the stored sum does not enter (gguf-py has no
/// Q8_1 codec; this is llama.cpp's reading of the block).
pub(crate) fn dequantize_q8_1(block: &[u8], out: &mut [f32]) {
    dequantize_int8(read_f16(block, q8_1::D), &block[q8_1::QS..], out);
}

fn dequantize_int8(d: f32, qs: &[u8], out: &mut [f32]) {
    for (y, &q) in out.iter_mut().zip(qs) {
        *y = (q as i8) as f32 * d;
    }
}

/// Index of the first element of largest magnitude (ties keep the first).
fn index_of_abs_max(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if v.abs() > x[best].abs() {
            best = i;
        }
    }
    best
}

fn min_max(x: &[f32]) -> (f32, f32) {
    x.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (if v < lo { v } else { lo }, if v > hi { v } else { hi }))
}

/// `1/d`, or 0 for a zero scale (an all-zero block).
fn inverse(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// Truncates like a C float-to-int cast, then clamps into `0..=max` (what
/// gguf-py's `trunc().astype(uint8).clip()` does for in-range values).
fn truncate_clamped(v: f32, max: u8) -> u8 {
    (v.trunc() as i32).clamp(0, i32::from(max)) as u8
}

/// Packs 32 small quants into the nibble layout (element j+16 in the high half).
fn pack_nibbles(q: &[u8; QK], qs: &mut [u8]) {
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0f) | ((q[j + QK / 2] & 0x0f) << 4);
    }
}

/// Bit j of the result is bit 4 of quant j.
fn high_bits(q: &[u8; QK]) -> u32 {
    q.iter().enumerate().fold(0, |acc, (j, &v)| acc | (u32::from(v >> 4) & 1) << j)
}

/// Symmetric 4/5-bit quantization: the element of largest magnitude maps to
/// `-levels/2`, so `d = max / -(levels/2)`.
fn quantize_symmetric(x: &[f32], half_levels: f32, max_q: u8) -> (u16, [u8; QK]) {
    let max = x[index_of_abs_max(x)];
    let d = max / -half_levels;
    let id = inverse(d);
    let mut q = [0u8; QK];
    for (slot, &v) in q.iter_mut().zip(x) {
        *slot = truncate_clamped(v * id + (half_levels + 0.5), max_q);
    }
    (f32_to_f16(d), q)
}

/// Asymmetric 4/5-bit quantization over `[min, max]`.
fn quantize_affine(x: &[f32], max_q: u8) -> (u16, u16, [u8; QK]) {
    let (min, max) = min_max(x);
    let d = (max - min) / f32::from(max_q);
    let id = inverse(d);
    let mut q = [0u8; QK];
    for (slot, &v) in q.iter_mut().zip(x) {
        *slot = truncate_clamped((v - min) * id + 0.5, max_q);
    }
    (f32_to_f16(d), f32_to_f16(min), q)
}

pub(crate) fn quantize_q4_0(x: &[f32], block: &mut [u8]) {
    let (d, q) = quantize_symmetric(x, 8.0, 15);
    block[q4_0::D..q4_0::D + 2].copy_from_slice(&d.to_le_bytes());
    pack_nibbles(&q, &mut block[q4_0::QS..]);
}

pub(crate) fn quantize_q4_1(x: &[f32], block: &mut [u8]) {
    let (d, m, q) = quantize_affine(x, 15);
    block[q4_1::D..q4_1::D + 2].copy_from_slice(&d.to_le_bytes());
    block[q4_1::M..q4_1::M + 2].copy_from_slice(&m.to_le_bytes());
    pack_nibbles(&q, &mut block[q4_1::QS..]);
}

pub(crate) fn quantize_q5_0(x: &[f32], block: &mut [u8]) {
    let (d, q) = quantize_symmetric(x, 16.0, 31);
    block[q5_0::D..q5_0::D + 2].copy_from_slice(&d.to_le_bytes());
    block[q5_0::QH..q5_0::QH + 4].copy_from_slice(&high_bits(&q).to_le_bytes());
    pack_nibbles(&q, &mut block[q5_0::QS..]);
}

pub(crate) fn quantize_q5_1(x: &[f32], block: &mut [u8]) {
    let (d, m, q) = quantize_affine(x, 31);
    block[q5_1::D..q5_1::D + 2].copy_from_slice(&d.to_le_bytes());
    block[q5_1::M..q5_1::M + 2].copy_from_slice(&m.to_le_bytes());
    block[q5_1::QH..q5_1::QH + 4].copy_from_slice(&high_bits(&q).to_le_bytes());
    pack_nibbles(&q, &mut block[q5_1::QS..]);
}

/// Max-abs scale `d = amax / 127` and round-half-away quants; returns d (as
/// f32, before rounding to f16) and the quants.
fn quantize_int8(x: &[f32]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    let mut q = [0i8; QK];
    for (slot, &v) in q.iter_mut().zip(x) {
        *slot = (v * id).round() as i8;
    }
    (d, q)
}

pub(crate) fn quantize_q8_0(x: &[f32], block: &mut [u8]) {
    let (d, q) = quantize_int8(x);
    block[q8_0::D..q8_0::D + 2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    for (out, v) in block[q8_0::QS..].iter_mut().zip(q) {
        *out = v as u8;
    }
}

pub(crate) fn quantize_q8_1(x: &[f32], block: &mut [u8]) {
    let (d, q) = quantize_int8(x);
    let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
    block[q8_1::D..q8_1::D + 2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    block[q8_1::S..q8_1::S + 2].copy_from_slice(&f32_to_f16(sum as f32 * d).to_le_bytes());
    for (out, v) in block[q8_1::QS..].iter_mut().zip(q) {
        *out = v as u8;
    }
}
