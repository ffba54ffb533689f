//! Activations quantized to 8-bit blocks once per matmul, so every weight row
//! is dotted against integers. Values are kept in `-127..=127` (never -128):
//! the AVX2 kernels negate activations with `sign_epi8`, which would overflow.

use super::layout::{QK, QK_K};

/// One block of 32 activations for the 32-wide weight types (ggml's `block_q8_0`
/// and `block_q8_1` together). `d` and `s` are rounded through f16 as ggml stores them.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale: `x ≈ d * qs`.
    pub d: f32,
    /// `d * Σ qs`, for the `+ m` term of Q4_1/Q5_1.
    pub s: f32,
    pub qs: [i8; QK],
    /// `Σ qs` exactly, for kernels that shift signed weights to unsigned bytes.
    pub sum: i32,
}

impl Default for BlockQ8 {
    fn default() -> Self {
        BlockQ8 { d: 0.0, s: 0.0, qs: [0; QK], sum: 0 }
    }
}

/// One super-block of 256 activations for the K-quants (ggml's `block_q8_K`):
/// an f32 scale and the sum of each 16 values, which the min/offset terms need.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] }
    }
}

fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Quantizes `x` (a multiple of 32 long) into `out` (`x.len() / 32` blocks).
pub fn quantize_q8(x: &[f32], out: &mut [BlockQ8]) {
    assert_eq!(x.len(), out.len() * QK, "Q8 activations: {} values for {} blocks", x.len(), out.len());
    for (values, block) in x.chunks_exact(QK).zip(out) {
        let d = abs_max(values) / 127.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in block.qs.iter_mut().zip(values) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
            sum += *q as i32;
        }
        block.d = round_f16(d);
        block.s = round_f16(d * sum as f32);
        block.sum = sum;
    }
}

/// Quantizes `x` (a multiple of 256 long) into `out` (`x.len() / 256` blocks).
pub fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(x.len(), out.len() * QK_K, "Q8_K activations: {} values for {} blocks", x.len(), out.len());
    for (values, block) in x.chunks_exact(QK_K).zip(out) {
        let amax = abs_max(values);
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (q, &v) in block.qs.iter_mut().zip(values) {
            *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        for (sum, group) in block.bsums.iter_mut().zip(block.qs.chunks_exact(16)) {
            *sum = group.iter().map(|&q| q as i16).sum();
        }
        block.d = if amax > 0.0 { 1.0 / inv } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_reconstructs_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173).collect();
        let mut blocks = vec![BlockQ8::default(); 2];
        quantize_q8(&x, &mut blocks);
        for (values, b) in x.chunks(QK).zip(&blocks) {
            let step = abs_max(values) / 127.0;
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert!((b.s - b.d * sum as f32).abs() <= 1e-3 * b.s.abs().max(b.d));
            assert_eq!(b.sum, sum);
            for (&v, &q) in values.iter().zip(&b.qs) {
                // d is rounded to f16 (relative 2^-11), so 127 steps move by at most 127 * 2^-11 * step.
                assert!((v - b.d * q as f32).abs() <= step * (0.5 + 127.0 / 2048.0), "{v} vs {q}");
            }
        }
    }

    #[test]
    fn q8k_block_sums_and_range() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 91 % 257) as f32 - 128.0) * 0.01).collect();
        let mut blocks = vec![BlockQ8K::default(); 2];
        quantize_q8k(&x, &mut blocks);
        for (values, b) in x.chunks(QK_K).zip(&blocks) {
            assert!(b.qs.iter().all(|&q| q != -128));
            for (g, &s) in b.bsums.iter().enumerate() {
                assert_eq!(s as i32, b.qs[16 * g..16 * g + 16].iter().map(|&q| q as i32).sum::<i32>());
            }
            for (&v, &q) in values.iter().zip(&b.qs) {
                assert!((v - b.d * q as f32).abs() <= b.d * 0.5001, "{v} vs {q}");
            }
        }
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let mut b = [BlockQ8K::default()];
        quantize_q8k(&[0.0; QK_K], &mut b);
        assert_eq!(b[0].d, 0.0);
        assert!(b[0].qs.iter().all(|&q| q == 0));
    }
}
