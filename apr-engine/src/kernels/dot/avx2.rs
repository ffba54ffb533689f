//! AVX2 + FMA + F16C kernels. Every `unsafe fn` here requires those three CPU
//! features; `super::avx2_kernel` hands them out only after run-time detection.
//! Loads are unaligned and stay inside the `chunks_exact` block they read.

use std::arch::x86_64::*;

use super::{Rows8Q8, TILE};
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

/// How far ahead of the block being read the weight stream is prefetched: far
/// enough to cover DRAM latency at this kernel's rate, a few rows of a matvec.
const PREFETCH_BYTES: usize = 2048;

/// Asks for the weights `PREFETCH_BYTES` past `block` (past a row's end this is the
/// next row of the chunk; beyond the matrix the hint is harmless: prefetches don't fault).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn prefetch_ahead(block: &[u8]) {
    _mm_prefetch::<_MM_HINT_T0>(block.as_ptr().wrapping_add(PREFETCH_BYTES) as *const i8);
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

/// A 32-wide weight block type, unpacked to 32 bytes of weights and its f16 scale.
pub(super) trait Block32 {
    const BYTES: usize;
    /// Signed weights (Q4_0/Q5_0/Q8_0), or unsigned ones with an offset `m` (Q4_1/Q5_1).
    const SIGNED: bool;
    /// The block's weights as bytes and its scale `d`.
    unsafe fn unpack(b: &[u8]) -> (__m256i, f32);
    /// The offset `m` of the unsigned types (0 for signed ones).
    unsafe fn offset(_b: &[u8]) -> f32 {
        0.0
    }
}

pub(super) struct Q4_0;
pub(super) struct Q4_1;
pub(super) struct Q5_0;
pub(super) struct Q5_1;
pub(super) struct Q8_0;

impl Block32 for Q4_0 {
    const BYTES: usize = layout::q4_0::BYTES;
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(b: &[u8]) -> (__m256i, f32) {
        (_mm256_sub_epi8(nibbles(b[layout::q4_0::QS..].as_ptr()), _mm256_set1_epi8(8)), f16(b, 0))
    }
}

impl Block32 for Q4_1 {
    const BYTES: usize = layout::q4_1::BYTES;
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(b: &[u8]) -> (__m256i, f32) {
        (nibbles(b[layout::q4_1::QS..].as_ptr()), f16(b, 0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn offset(b: &[u8]) -> f32 {
        f16(b, layout::q4_1::M)
    }
}

impl Block32 for Q5_0 {
    const BYTES: usize = layout::q5_0::BYTES;
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(b: &[u8]) -> (__m256i, f32) {
        use layout::q5_0::*;
        // value - 16 = nibble | 0xF0 (as i8) where the fifth bit is clear, nibble where set.
        let clear_high = _mm256_andnot_si256(bits_to_bytes(u32_at(b, QH)), _mm256_set1_epi8(0xF0u8 as i8));
        (_mm256_or_si256(nibbles(b[QS..].as_ptr()), clear_high), f16(b, 0))
    }
}

impl Block32 for Q5_1 {
    const BYTES: usize = layout::q5_1::BYTES;
    const SIGNED: bool = false;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(b: &[u8]) -> (__m256i, f32) {
        use layout::q5_1::*;
        let high = _mm256_and_si256(bits_to_bytes(u32_at(b, QH)), _mm256_set1_epi8(0x10));
        (_mm256_or_si256(nibbles(b[QS..].as_ptr()), high), f16(b, 0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn offset(b: &[u8]) -> f32 {
        f16(b, layout::q5_1::M)
    }
}

impl Block32 for Q8_0 {
    const BYTES: usize = layout::q8_0::BYTES;
    const SIGNED: bool = true;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn unpack(b: &[u8]) -> (__m256i, f32) {
        (load(b[layout::q8_0::QS..].as_ptr()), f16(b, 0))
    }
}

/// Dots a row of 32-wide blocks with `T` tokens, unpacking each block once. For
/// signed weights the sign moves onto the activations (`maddubs` and `dpbusd` want
/// one operand unsigned); unsigned ones add `m · s` per block. `T = 1` is the
/// matvec kernel. `$pair_dot` sums byte products in groups of four into i32 lanes.
macro_rules! blocks32_fn {
    ($name:ident, $features:literal, $pair_dot:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<B: Block32, const T: usize>(row: &[u8], acts: &[&[BlockQ8]; T]) -> [f32; T] {
            let n = row.len() / B::BYTES;
            assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
            let mut acc = [_mm256_setzero_ps(); T];
            let mut offsets = [0.0f32; T];
            for (i, b) in row.chunks_exact(B::BYTES).enumerate() {
                prefetch_ahead(b);
                let (w, d) = B::unpack(b);
                let w_abs = if B::SIGNED { _mm256_sign_epi8(w, w) } else { w };
                let m = B::offset(b);
                for t in 0..T {
                    // SAFETY: i < n <= acts[t].len(), asserted above.
                    let y = acts[t].get_unchecked(i);
                    let y_qs = load_acts(&y.qs);
                    let y_qs = if B::SIGNED { _mm256_sign_epi8(y_qs, w) } else { y_qs };
                    let products = _mm256_cvtepi32_ps($pair_dot(w_abs, y_qs));
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), products, acc[t]);
                    if !B::SIGNED {
                        offsets[t] += m * y.s;
                    }
                }
            }
            let mut out = [0.0f32; T];
            for t in 0..T {
                out[t] = hsum(acc[t]) + offsets[t];
            }
            out
        }
    };
}

blocks32_fn!(blocks32, "avx2,fma,f16c", dot_u8_i8);
blocks32_fn!(blocks32_vnni, "avx2,fma,f16c,avxvnni", dot_u8_i8_vnni);

/// [`dot_u8_i8`] in one instruction (no i16 intermediate, so no bound on `a`;
/// where `dot_u8_i8` does not saturate, the two agree exactly).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn dot_u8_i8_vnni(a: __m256i, b: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b)
}

macro_rules! block32_kernels {
    ($($block:ident: $single:ident, $tile:ident, $single_vnni:ident, $tile_vnni:ident;)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $single(row: &[u8], acts: &[BlockQ8]) -> f32 {
            blocks32::<$block, 1>(row, &[acts])[0]
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $tile(row: &[u8], acts: &[&[BlockQ8]; TILE]) -> [f32; TILE] {
            blocks32::<$block, TILE>(row, acts)
        }

        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        pub(crate) unsafe fn $single_vnni(row: &[u8], acts: &[BlockQ8]) -> f32 {
            blocks32_vnni::<$block, 1>(row, &[acts])[0]
        }

        #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
        pub(crate) unsafe fn $tile_vnni(row: &[u8], acts: &[&[BlockQ8]; TILE]) -> [f32; TILE] {
            blocks32_vnni::<$block, TILE>(row, acts)
        }
    )*};
}

/// Repacks eight rows of a signed 32-wide type into [`Rows8Q8`] blocks, each
/// weight shifted by `OFFSET` into an unsigned byte.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn repack_block32<B: Block32, const OFFSET: u8>(rows: &[&[u8]; 8], out: &mut [Rows8Q8]) {
    debug_assert!(B::SIGNED, "unsigned types carry an offset m the Rows8Q8 layout has no room for");
    let mut values = [0u8; 32];
    for (i, block) in out.iter_mut().enumerate() {
        for (r, row) in rows.iter().enumerate() {
            let b = &row[i * B::BYTES..(i + 1) * B::BYTES];
            let (w, d) = B::unpack(b);
            let shifted = _mm256_add_epi8(w, _mm256_set1_epi8(OFFSET as i8));
            _mm256_storeu_si256(values.as_mut_ptr() as *mut __m256i, shifted);
            for (g, register) in block.weights.iter_mut().enumerate() {
                register[8 * r..8 * r + 8].copy_from_slice(&values[8 * g..8 * g + 8]);
            }
            block.d[2 * r..2 * r + 2].fill(d);
        }
    }
}

block32_kernels! {
    Q4_0: q4_0, q4_0_tile, q4_0_vnni, q4_0_tile_vnni;
    Q4_1: q4_1, q4_1_tile, q4_1_vnni, q4_1_tile_vnni;
    Q5_0: q5_0, q5_0_tile, q5_0_vnni, q5_0_tile_vnni;
    Q5_1: q5_1, q5_1_tile, q5_1_vnni, q5_1_tile_vnni;
    Q8_0: q8_0, q8_0_tile, q8_0_vnni, q8_0_tile_vnni;
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

/// Q4_K against `T` tokens: each 64-element chunk's nibbles are split once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_blocks<const T: usize>(row: &[u8], acts: &[&[BlockQ8K]; T]) -> [f32; T] {
    use layout::q4_k::*;
    let n = row.len() / BYTES;
    assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
    let low4 = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); T];
    let mut min_terms = [0.0f32; T];
    for (i, b) in row.chunks_exact(BYTES).enumerate() {
        prefetch_ahead(b);
        prefetch_ahead(&b[64..]);
        // SAFETY (every get_unchecked below): i < n <= acts[t].len(), asserted above.
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        let mut isum = [_mm256_setzero_si256(); T];
        for chunk in 0..4 {
            let bits = load(b[QS + 32 * chunk..].as_ptr());
            let lo = _mm256_and_si256(bits, low4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low4);
            for t in 0..T {
                let y = acts[t].get_unchecked(i);
                let lo = scaled_sub_block(lo, &y.qs[64 * chunk..], scales[2 * chunk]);
                let hi = scaled_sub_block(hi, &y.qs[64 * chunk + 32..], scales[2 * chunk + 1]);
                isum[t] = _mm256_add_epi32(isum[t], _mm256_add_epi32(lo, hi));
            }
        }
        let (d, dmin) = (f16(b, 0), f16(b, DMIN));
        for t in 0..T {
            let y = acts[t].get_unchecked(i);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * y.d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            min_terms[t] += dmin * y.d * k_min_term(&mins, y) as f32;
        }
    }
    let mut out = [0.0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]) - min_terms[t];
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    q4_k_blocks::<1>(row, &[acts])[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q4_k_tile(row: &[u8], acts: &[&[BlockQ8K]; TILE]) -> [f32; TILE] {
    q4_k_blocks::<TILE>(row, acts)
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

/// The four 32-byte quarters of one 128-element half of a Q6_K block, as unsigned
/// 6-bit values (0..64; the -32 offset is applied through the block sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_quarters(b: &[u8], half: usize) -> [__m256i; 4] {
    use layout::q6_k::*;
    let low4 = _mm256_set1_epi8(0x0F);
    let low2 = _mm256_set1_epi8(0x03);
    let ql0 = load(b[QL + 64 * half..].as_ptr());
    let ql1 = load(b[QL + 64 * half + 32..].as_ptr());
    let qh = load(b[QH + 32 * half..].as_ptr());
    // Bits 2k..2k+2 of qh, moved to bits 4..6, are the high bits of quarter k.
    let high = [
        _mm256_slli_epi16(_mm256_and_si256(qh, low2), 4),
        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), low2), 4),
        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), low2), 4),
        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), low2), 4),
    ];
    [
        _mm256_or_si256(_mm256_and_si256(ql0, low4), high[0]),
        _mm256_or_si256(_mm256_and_si256(ql1, low4), high[1]),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), high[2]),
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), high[3]),
    ]
}

/// Q6_K against `T` tokens: each half's 6-bit values and scales are built once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_blocks<const T: usize>(row: &[u8], acts: &[&[BlockQ8K]; T]) -> [f32; T] {
    use layout::q6_k::*;
    let n = row.len() / BYTES;
    assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
    let mut acc = [_mm256_setzero_ps(); T];
    let mut offset_terms = [0.0f32; T];
    for (i, b) in row.chunks_exact(BYTES).enumerate() {
        prefetch_ahead(b);
        prefetch_ahead(&b[64..]);
        prefetch_ahead(&b[128..]);
        // SAFETY (every get_unchecked below): i < n <= acts[t].len(), asserted above.
        let scales: [i8; 16] = std::array::from_fn(|k| b[SCALES + k] as i8);
        let mut isum = [_mm256_setzero_si256(); T];
        for half in 0..2 {
            let quarters = q6_k_quarters(b, half);
            for (k, &w) in quarters.iter().enumerate() {
                let group = 8 * half + 2 * k;
                // 16-element groups: scale `group` for the low 128 bits, `group + 1` for the high.
                let scale =
                    _mm256_set_m128i(_mm_set1_epi16(scales[group + 1] as i16), _mm_set1_epi16(scales[group] as i16));
                for t in 0..T {
                    let y = acts[t].get_unchecked(i);
                    let products = _mm256_maddubs_epi16(w, load_acts(&y.qs[128 * half + 32 * k..]));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(scale, products));
                }
            }
        }
        let d_w = f16(b, D);
        for t in 0..T {
            let y = acts[t].get_unchecked(i);
            let d = d_w * y.d;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(isum[t]), acc[t]);
            let offset: i32 = (0..16).map(|g| scales[g] as i32 * y.bsums[g] as i32).sum();
            offset_terms[t] += d * (32 * offset) as f32;
        }
    }
    let mut out = [0.0f32; T];
    for t in 0..T {
        out[t] = hsum(acc[t]) - offset_terms[t];
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k(row: &[u8], acts: &[BlockQ8K]) -> f32 {
    q6_k_blocks::<1>(row, &[acts])[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q6_k_tile(row: &[u8], acts: &[&[BlockQ8K]; TILE]) -> [f32; TILE] {
    q6_k_blocks::<TILE>(row, acts)
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
