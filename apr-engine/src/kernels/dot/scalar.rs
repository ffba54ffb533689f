//! Portable reference dot products of one weight row (raw block bytes) with
//! quantized or f32 activations. Integer sums within a block, f32 across blocks,
//! as ggml's reference `vec_dot` functions do. The SIMD kernels are tested against these.

use crate::kernels::layout::{self, f16_at, u32_at, QK};
use crate::kernels::q8_act::{BlockQ8, BlockQ8K};

fn nibble_pairs(qs: &[u8]) -> impl Iterator<Item = (usize, i32, i32)> + '_ {
    qs[..QK / 2].iter().enumerate().map(|(j, &b)| (j, (b & 0x0F) as i32, (b >> 4) as i32))
}

pub fn q4_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q4_0::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let mut isum = 0i32;
        for (j, lo, hi) in nibble_pairs(&b[QS..]) {
            isum += (lo - 8) * y.qs[j] as i32 + (hi - 8) * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (f16_at(b, 0) * y.d);
    }
    sum
}

pub fn q4_1(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q4_1::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let mut isum = 0i32;
        for (j, lo, hi) in nibble_pairs(&b[QS..]) {
            isum += lo * y.qs[j] as i32 + hi * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (f16_at(b, 0) * y.d) + f16_at(b, M) * y.s;
    }
    sum
}

/// Adds the fifth bits of Q5_0/Q5_1 to the nibble pair `(j, j + 16)`.
fn with_fifth_bit(qh: u32, j: usize, lo: i32, hi: i32) -> (i32, i32) {
    (lo | (((qh >> j) & 1) << 4) as i32, hi | (((qh >> (j + 16)) & 1) << 4) as i32)
}

pub fn q5_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q5_0::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let qh = u32_at(b, QH);
        let mut isum = 0i32;
        for (j, lo, hi) in nibble_pairs(&b[QS..]) {
            let (lo, hi) = with_fifth_bit(qh, j, lo, hi);
            isum += (lo - 16) * y.qs[j] as i32 + (hi - 16) * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (f16_at(b, 0) * y.d);
    }
    sum
}

pub fn q5_1(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q5_1::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let qh = u32_at(b, QH);
        let mut isum = 0i32;
        for (j, lo, hi) in nibble_pairs(&b[QS..]) {
            let (lo, hi) = with_fifth_bit(qh, j, lo, hi);
            isum += lo * y.qs[j] as i32 + hi * y.qs[j + 16] as i32;
        }
        sum += isum as f32 * (f16_at(b, 0) * y.d) + f16_at(b, M) * y.s;
    }
    sum
}

pub fn q8_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q8_0::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let isum: i32 = b[QS..QS + QK].iter().zip(&y.qs).map(|(&w, &a)| w as i8 as i32 * a as i32).sum();
        sum += isum as f32 * (f16_at(b, 0) * y.d);
    }
    sum
}

/// `Σ min_j * (sum of the 32 activations of sub-block j)`, from the 16-wide block sums.
fn k_min_term(mins: &[u8; 8], y: &BlockQ8K) -> i32 {
    (0..8).map(|j| mins[j] as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32)).sum()
}

pub fn q4_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    use layout::q4_k::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        let mut isum = 0i32;
        for chunk in 0..4 {
            let (mut lo_sum, mut hi_sum) = (0i32, 0i32);
            for l in 0..32 {
                let q = b[QS + 32 * chunk + l];
                lo_sum += (q & 0x0F) as i32 * y.qs[64 * chunk + l] as i32;
                hi_sum += (q >> 4) as i32 * y.qs[64 * chunk + 32 + l] as i32;
            }
            isum += scales[2 * chunk] as i32 * lo_sum + scales[2 * chunk + 1] as i32 * hi_sum;
        }
        sum += f16_at(b, 0) * y.d * isum as f32 - f16_at(b, DMIN) * y.d * k_min_term(&mins, y) as f32;
    }
    sum
}

pub fn q5_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    use layout::q5_k::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        let mut isum = 0i32;
        for chunk in 0..4 {
            let (mut lo_sum, mut hi_sum) = (0i32, 0i32);
            for l in 0..32 {
                let (q, h) = (b[QS + 32 * chunk + l], b[QH + l]);
                let lo = (q & 0x0F) | (((h >> (2 * chunk)) & 1) << 4);
                let hi = (q >> 4) | (((h >> (2 * chunk + 1)) & 1) << 4);
                lo_sum += lo as i32 * y.qs[64 * chunk + l] as i32;
                hi_sum += hi as i32 * y.qs[64 * chunk + 32 + l] as i32;
            }
            isum += scales[2 * chunk] as i32 * lo_sum + scales[2 * chunk + 1] as i32 * hi_sum;
        }
        sum += f16_at(b, 0) * y.d * isum as f32 - f16_at(b, DMIN) * y.d * k_min_term(&mins, y) as f32;
    }
    sum
}

/// The 6-bit value of element `e` (0..256) of a Q6_K block, before the -32 offset.
pub(crate) fn q6_k_value(b: &[u8], e: usize) -> i32 {
    use layout::q6_k::*;
    let (half, within) = (e / 128, e % 128);
    let (quarter, l) = (within / 32, within % 32);
    let low_byte = b[QL + 64 * half + l + 32 * (quarter & 1)];
    let low = if quarter < 2 { low_byte & 0x0F } else { low_byte >> 4 };
    let high = (b[QH + 32 * half + l] >> (2 * quarter)) & 3;
    (low | (high << 4)) as i32
}

pub fn q6_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    use layout::q6_k::*;
    let mut sum = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let mut isum = 0i32;
        for group in 0..16 {
            let scale = b[SCALES + group] as i8 as i32;
            let dot: i32 = (16 * group..16 * group + 16).map(|e| (q6_k_value(b, e) - 32) * y.qs[e] as i32).sum();
            isum += scale * dot;
        }
        sum += f16_at(b, D) * y.d * isum as f32;
    }
    sum
}

pub fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn f32_row(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(4).zip(x).map(|(w, v)| f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * v).sum()
}

pub fn f16_row(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2).zip(x).map(|(w, v)| half::f16::from_le_bytes([w[0], w[1]]).to_f32() * v).sum()
}

pub fn bf16_row(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2).zip(x).map(|(w, v)| half::bf16::from_le_bytes([w[0], w[1]]).to_f32() * v).sum()
}
