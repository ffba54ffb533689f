//! AVX2 + FMA + F16C kernels. Every `unsafe fn` here requires those three CPU
//! features; `super::avx2_kernel` hands them out only after run-time detection.
//! Loads are unaligned and stay inside the `chunks_exact` block they read.

use std::arch::x86_64::*;

use crate::kernels::layout::{self, u32_at};
use crate::kernels::q8_act::{BlockQ8, BlockQ8K};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16(bytes: &[u8], offset: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(ptr: *const u8) -> __m256i {
    _mm256_loadu_si256(ptr as *const __m256i)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load_acts(qs: &[i8]) -> __m256i {
    debug_assert!(qs.len() >= 32);
    load(qs.as_ptr() as *const u8)
}

/// Σ over pairs of unsigned `a` × signed `b` bytes, as 8 f32 lanes. Pair sums of
/// 255·127·2 fit i16 only when `a <= 128`, which every caller guarantees.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_u8_i8(a: __m256i, b: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
}

/// Σ signed × signed bytes: moves the sign of `a` onto `b` so `maddubs` applies.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_i8_i8(a: __m256i, b: __m256i) -> __m256i {
    dot_u8_i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

/// The 32 nibbles of 16 bytes: low nibbles in bytes 0..16, high in 16..32 (ggml's element order).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(ptr: *const u8) -> __m256i {
    let packed = _mm_loadu_si128(ptr as *const __m128i);
    let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// Byte j is 0xFF where bit j of `bits` is set, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    // Copy byte k of `bits` into bytes 8k..8k+8, then test bit (j % 8) of each.
    let spread = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), spread);
    let all_but_own_bit = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, all_but_own_bit), _mm256_set1_epi64x(-1))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q4_0::*;
    let mut acc = _mm256_setzero_ps();
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let w = _mm256_sub_epi8(nibbles(b[QS..].as_ptr()), _mm256_set1_epi8(8));
        let d = _mm256_set1_ps(f16(b, 0) * y.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(w, load_acts(&y.qs))), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_1(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q4_1::*;
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let d = _mm256_set1_ps(f16(b, 0) * y.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_u8_i8(nibbles(b[QS..].as_ptr()), load_acts(&y.qs))), acc);
        offsets += f16(b, M) * y.s;
    }
    hsum(acc) + offsets
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q5_0::*;
    let mut acc = _mm256_setzero_ps();
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        // value - 16 = nibble | 0xF0 (as i8) where the fifth bit is clear, nibble where set.
        let clear_high = _mm256_andnot_si256(bits_to_bytes(u32_at(b, QH)), _mm256_set1_epi8(0xF0u8 as i8));
        let w = _mm256_or_si256(nibbles(b[QS..].as_ptr()), clear_high);
        let d = _mm256_set1_ps(f16(b, 0) * y.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(w, load_acts(&y.qs))), acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_1(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q5_1::*;
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let high = _mm256_and_si256(bits_to_bytes(u32_at(b, QH)), _mm256_set1_epi8(0x10));
        let w = _mm256_or_si256(nibbles(b[QS..].as_ptr()), high);
        let d = _mm256_set1_ps(f16(b, 0) * y.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_u8_i8(w, load_acts(&y.qs))), acc);
        offsets += f16(b, M) * y.s;
    }
    hsum(acc) + offsets
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    use layout::q8_0::*;
    let mut acc = _mm256_setzero_ps();
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let d = _mm256_set1_ps(f16(b, 0) * y.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(load(b[QS..].as_ptr()), load_acts(&y.qs))), acc);
    }
    hsum(acc)
}

/// `scale × Σ pairs(w × y)` for one 32-element sub-block, as 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scaled_sub_block(w: __m256i, y: &[i8], scale: u8) -> __m256i {
    _mm256_madd_epi16(_mm256_set1_epi16(scale as i16), _mm256_maddubs_epi16(w, load_acts(y)))
}

/// `Σ min_j * (activation sum of sub-block j)` from the 16-wide block sums.
#[inline]
fn k_min_term(mins: &[u8; 8], y: &BlockQ8K) -> i32 {
    (0..8).map(|j| mins[j] as i32 * (y.bsums[2 * j] as i32 + y.bsums[2 * j + 1] as i32)).sum()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    use layout::q4_k::*;
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut min_terms = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        let mut isum = _mm256_setzero_si256();
        for chunk in 0..4 {
            let bits = load(b[QS + 32 * chunk..].as_ptr());
            let lo = _mm256_and_si256(bits, low4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
            let lo = scaled_sub_block(lo, &y.qs[64 * chunk..], scales[2 * chunk]);
            let hi = scaled_sub_block(hi, &y.qs[64 * chunk + 32..], scales[2 * chunk + 1]);
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(lo, hi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0) * y.d), _mm256_cvtepi32_ps(isum), acc);
        min_terms += f16(b, DMIN) * y.d * k_min_term(&mins, y) as f32;
    }
    hsum(acc) - min_terms
}

/// 16 in each byte whose bit `bit` is set in `high_bits`, else 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bit(high_bits: __m256i, bit: usize) -> __m256i {
    let mask = _mm256_set1_epi8((1u8 << bit) as i8);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(high_bits, mask), mask);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q5_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    use layout::q5_k::*;
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut min_terms = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        let high_bits = load(b[QH..].as_ptr());
        let mut isum = _mm256_setzero_si256();
        for chunk in 0..4 {
            let bits = load(b[QS + 32 * chunk..].as_ptr());
            let lo = _mm256_or_si256(_mm256_and_si256(bits, low4), fifth_bit(high_bits, 2 * chunk));
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
            let hi = _mm256_or_si256(hi, fifth_bit(high_bits, 2 * chunk + 1));
            let lo = scaled_sub_block(lo, &y.qs[64 * chunk..], scales[2 * chunk]);
            let hi = scaled_sub_block(hi, &y.qs[64 * chunk + 32..], scales[2 * chunk + 1]);
            isum = _mm256_add_epi32(isum, _mm256_add_epi32(lo, hi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16(b, 0) * y.d), _mm256_cvtepi32_ps(isum), acc);
        min_terms += f16(b, DMIN) * y.d * k_min_term(&mins, y) as f32;
    }
    hsum(acc) - min_terms
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    use layout::q6_k::*;
    let low4 = _mm256_set1_epi8(0x0F);
    let low2 = _mm256_set1_epi8(0x03);
    let mut acc = _mm256_setzero_ps();
    let mut offset_terms = 0.0f32;
    for (b, y) in row.chunks_exact(BYTES).zip(acts) {
        let scales: [i8; 16] = std::array::from_fn(|k| b[SCALES + k] as i8);
        let mut isum = _mm256_setzero_si256();
        for half in 0..2 {
            let ql0 = load(b[QL + 64 * half..].as_ptr());
            let ql1 = load(b[QL + 64 * half + 32..].as_ptr());
            let qh = load(b[QH + 32 * half..].as_ptr());
            // Bits 2k..2k+2 of qh are the high bits of quarter k; values stay unsigned
            // (0..64) and the -32 offset is applied through the block sums below.
            let quarters = [
                _mm256_or_si256(_mm256_and_si256(ql0, low4), _mm256_slli_epi16(_mm256_and_si256(qh, low2), 4)),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, low4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), low2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), low2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), low2), 4),
                ),
            ];
            for (k, &w) in quarters.iter().enumerate() {
                let group = 8 * half + 2 * k;
                // 16-element groups: scale `group` for the low 128 bits, `group + 1` for the high.
                let scale =
                    _mm256_set_m128i(_mm_set1_epi16(scales[group + 1] as i16), _mm_set1_epi16(scales[group] as i16));
                let products = _mm256_maddubs_epi16(w, load_acts(&y.qs[128 * half + 32 * k..]));
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(scale, products));
            }
        }
        let d = f16(b, D) * y.d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum), acc);
        let offset: i32 = (0..16).map(|g| scales[g] as i32 * y.bsums[g] as i32).sum();
        offset_terms += d * (32 * offset) as f32;
    }
    hsum(acc) - offset_terms
}

/// Dot of the first `n` weights (8 at a time as f32 by the `|i| load` expression,
/// pasted in place so it inlines with AVX2 enabled; the tail by the `$scalar` closure) with `x`; four accumulators hide FMA latency.
macro_rules! float_dot {
    ($n:expr, $x:expr, |$i:ident| $load:expr, $scalar:expr) => {{
        let (n, x) = ($n, $x);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = i + 8 * k;
                *a = _mm256_fmadd_ps($load, _mm256_loadu_ps(x[$i..$i + 8].as_ptr()), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            let $i = i;
            acc[0] = _mm256_fmadd_ps($load, _mm256_loadu_ps(x[i..i + 8].as_ptr()), acc[0]);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        hsum(sum) + (i..n).map(|j| $scalar(j) * x[j]).sum::<f32>()
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_dot(a: &[f32], x: &[f32]) -> f32 {
    let n = a.len().min(x.len());
    float_dot!(n, x, |i| _mm256_loadu_ps(a[i..i + 8].as_ptr()), |j: usize| a[j])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_row(row: &[u8], x: &[f32]) -> f32 {
    let n = (row.len() / 4).min(x.len());
    let at = |j: usize| f32::from_le_bytes([row[4 * j], row[4 * j + 1], row[4 * j + 2], row[4 * j + 3]]);
    float_dot!(n, x, |i| _mm256_loadu_ps(row[4 * i..4 * i + 32].as_ptr() as *const f32), at)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_row(row: &[u8], x: &[f32]) -> f32 {
    let n = (row.len() / 2).min(x.len());
    let at = |j: usize| half::f16::from_le_bytes([row[2 * j], row[2 * j + 1]]).to_f32();
    float_dot!(n, x, |i| _mm256_cvtph_ps(_mm_loadu_si128(row[2 * i..2 * i + 16].as_ptr() as *const __m128i)), at)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn bf16_row(row: &[u8], x: &[f32]) -> f32 {
    let n = (row.len() / 2).min(x.len());
    let at = |j: usize| half::bf16::from_le_bytes([row[2 * j], row[2 * j + 1]]).to_f32();
    float_dot!(n, x, |i| bf16_widen(row[2 * i..2 * i + 16].as_ptr()), at)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16_widen(ptr: *const u8) -> __m256 {
    let halves = _mm_loadu_si128(ptr as *const __m128i);
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16))
}
