//! AVX-512 VNNI kernels for the K-quants (the bulk of a Q4_K_M model). Every
//! `unsafe fn` here requires AVX-512 F, BW, VL and VNNI; `super::avx512_kernel`
//! hands them out only after run-time detection.
//!
//! One 512-bit register holds 64 weights of one super-block. `vpmaddubsw` multiplies
//! them with the token's 64 activation bytes into 32 pair sums (i16), and `vpdpwssd`
//! multiplies those by the sub-block scales (i16, one per 32 or 16 weights) and
//! accumulates into 16 i32 lanes: two instructions per 64 weights where AVX2 needs
//! six, and the super-block's integer sum stays exact. The activations are read in
//! their natural Q8_K order; the weights are rearranged once per super-block and
//! reused for every token of the tile.

use std::arch::x86_64::*;

use super::{Rows8K, Rows8Q8, TILE};
use crate::kernels::layout;
use crate::kernels::q8_act::{BlockQ8, BlockQ8K};

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn f16(bytes: &[u8], offset: usize) -> f32 {
    let bits = u16::from_le_bytes([bytes[offset], bytes[offset + 1]]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 64 activation bytes of `y` from element `at`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn acts64(y: &BlockQ8K, at: usize) -> __m512i {
    debug_assert!(at + 64 <= y.qs.len());
    _mm512_loadu_si512(y.qs.as_ptr().add(at) as *const __m512i)
}

/// The 16 block sums (one per 16 activations) of `y`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn block_sums(y: &BlockQ8K) -> __m256i {
    _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i)
}

/// i16 lane `l` of the result is `values[index[l]]`, for 16 values widened from bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn spread_i16(values: __m256i, index: &[u16; 32]) -> __m512i {
    _mm512_permutexvar_epi16(_mm512_loadu_si512(index.as_ptr() as *const __m512i), _mm512_castsi256_si512(values))
}

/// Lane indexes mapping 32 i16 lanes (pair sums of 64 weights) to the scale of the
/// sub-block each pair falls in, when a sub-block covers `width` weights and the
/// register starts at sub-block `first`.
const fn scale_index(first: u16, width: u16) -> [u16; 32] {
    let mut index = [0u16; 32];
    let mut lane = 0;
    while lane < 32 {
        index[lane] = first + (2 * lane as u16) / width;
        lane += 1;
    }
    index
}

/// Q4_K: register `c` holds sub-blocks 2c and 2c+1 (32 weights each).
const Q4K_SCALES: [[u16; 32]; 4] = [scale_index(0, 32), scale_index(2, 32), scale_index(4, 32), scale_index(6, 32)];
/// Q4_K's min term pairs the 16 block sums (16 activations each) with the 8 mins.
const Q4K_MINS: [u16; 16] = {
    let mut index = [0u16; 16];
    let mut lane = 0;
    while lane < 16 {
        index[lane] = lane as u16 / 2;
        lane += 1;
    }
    index
};
/// Q6_K: register `r` holds groups 4r..4r+4 (16 weights each).
const Q6K_SCALES: [[u16; 32]; 4] = [scale_index(0, 16), scale_index(4, 16), scale_index(8, 16), scale_index(12, 16)];

/// One super-block of a K-quant, unpacked for the integer loop: four registers of
/// 64 unsigned weights (elements 64r..64r+64), the i16 scale of each weight pair,
/// and the correction the kernel subtracts through the block sums.
struct Unpacked {
    weights: [__m512i; 4],
    scales: [__m512i; 4],
    /// i16 factors of the 16 block sums (Q4_K: its mins; Q6_K: 32 × its scales).
    correction: __m256i,
    /// f32 factor of the integer sum (the block's `d`).
    d: f32,
    /// f32 factor of the correction (Q4_K: `dmin`); `None` when it is `d` too, so
    /// the correction is subtracted exactly in the integer sum (Q6_K).
    d_correction: Option<f32>,
}

/// A K-quant super-block type this file has kernels for.
trait KQuant {
    const BYTES: usize;
    /// Registers of the [`Rows8K`] layout (8 weights of each of 8 rows) that share one scale.
    const REGS_PER_SCALE: usize;
    unsafe fn unpack(b: &[u8]) -> Unpacked;
    /// The block's factors for the [`Rows8K`] layout.
    fn factors(b: &[u8]) -> Factors;
}

/// One row's super-block factors, as the [`Rows8K`] kernel applies them.
struct Factors {
    /// Scale of each group of `8 × REGS_PER_SCALE` weights.
    scales: [i16; 16],
    /// Factor of each of the 16 block sums in the correction.
    corrections: [i16; 16],
    d: f32,
    d_correction: f32,
}

struct Q4K;
struct Q6K;

impl KQuant for Q4K {
    const BYTES: usize = layout::q4_k::BYTES;
    const REGS_PER_SCALE: usize = 4;

    /// Sub-block scales (32 weights each) and, per block sum, its sub-block's min.
    fn factors(b: &[u8]) -> Factors {
        use layout::q4_k::*;
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        Factors {
            scales: std::array::from_fn(|s| if s < 8 { scales[s] as i16 } else { 0 }),
            corrections: std::array::from_fn(|i| mins[i / 2] as i16),
            d: layout::f16_at(b, 0),
            d_correction: layout::f16_at(b, DMIN),
        }
    }

    /// The 32 bytes of chunk `c` hold elements 64c..64c+32 in their low nibbles
    /// and 64c+32..64c+64 in their high ones; one register takes both halves in order.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn unpack(b: &[u8]) -> Unpacked {
        use layout::q4_k::*;
        let low4 = _mm512_set1_epi8(0x0F);
        let weights = std::array::from_fn(|c| {
            let bits = _mm256_loadu_si256(b[QS + 32 * c..].as_ptr() as *const __m256i);
            let both = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(bits), _mm256_srli_epi16(bits, 4));
            _mm512_and_si512(both, low4)
        });
        let (scales, mins) = layout::unpack_k_scales(&b[SCALES..]);
        let scales16 = _mm256_cvtepu8_epi16(_mm_loadl_epi64(scales.as_ptr() as *const __m128i));
        let mins16 = _mm256_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr() as *const __m128i));
        let mins_index = _mm256_loadu_si256(Q4K_MINS.as_ptr() as *const __m256i);
        Unpacked {
            weights,
            scales: std::array::from_fn(|r| spread_i16(scales16, &Q4K_SCALES[r])),
            correction: _mm256_permutexvar_epi16(mins_index, mins16),
            d: f16(b, 0),
            d_correction: Some(f16(b, DMIN)),
        }
    }
}

impl KQuant for Q6K {
    const BYTES: usize = layout::q6_k::BYTES;
    const REGS_PER_SCALE: usize = 2;

    /// Group scales (16 weights each); the -32 offset as 32 × scale per block sum.
    fn factors(b: &[u8]) -> Factors {
        use layout::q6_k::*;
        let scale = |g: usize| b[SCALES + g] as i8 as i16;
        Factors {
            scales: std::array::from_fn(scale),
            corrections: std::array::from_fn(|g| 32 * scale(g)),
            d: layout::f16_at(b, D),
            d_correction: layout::f16_at(b, D),
        }
    }

    /// Half `h` holds elements 128h..128h+128; its 64 `ql` bytes give the low
    /// nibbles of elements 0..64 and the high nibbles of 64..128, and bits 2k..2k+2
    /// of its 32 `qh` bytes the top bits of quarter k. Values are unsigned (0..64):
    /// the -32 offset is applied through the block sums.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn unpack(b: &[u8]) -> Unpacked {
        use layout::q6_k::*;
        let low4 = _mm512_set1_epi8(0x0F);
        let low2 = _mm512_set1_epi8(0x03);
        let mut weights = [_mm512_setzero_si512(); 4];
        for half in 0..2 {
            let ql = _mm512_loadu_si512(b[QL + 64 * half..].as_ptr() as *const __m512i);
            let qh = _mm256_loadu_si256(b[QH + 32 * half..].as_ptr() as *const __m256i);
            // Quarters 0|1 take bits 0..2 | 2..4 of qh; quarters 2|3 the same four bits higher.
            let qh01 = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), _mm256_srli_epi16(qh, 2));
            let high01 = _mm512_slli_epi16(_mm512_and_si512(qh01, low2), 4);
            let high23 = _mm512_slli_epi16(_mm512_and_si512(_mm512_srli_epi16(qh01, 4), low2), 4);
            weights[2 * half] = _mm512_or_si512(_mm512_and_si512(ql, low4), high01);
            weights[2 * half + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), high23);
        }
        let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b[SCALES..].as_ptr() as *const __m128i));
        Unpacked {
            weights,
            scales: std::array::from_fn(|r| spread_i16(scales16, &Q6K_SCALES[r])),
            correction: _mm256_slli_epi16(scales16, 5),
            d: f16(b, D),
            d_correction: None,
        }
    }
}

/// Dots a row of K-quant super-blocks with `T` tokens:
/// `Σ d·y.d·Σ scale·w·y − d_correction·y.d·Σ correction·bsum` per block.
/// `T = 1` is the matvec kernel; every token's result is the same bit for bit
/// whatever `T` is (same operations in the same order).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k_blocks<K: KQuant, const T: usize>(row: &[u8], acts: &[&[BlockQ8K]; T]) -> [f32; T] {
    let n = row.len() / K::BYTES;
    assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
    let mut acc = [_mm512_setzero_ps(); T];
    for (i, b) in row.chunks_exact(K::BYTES).enumerate() {
        let mut ahead = 0;
        while ahead < K::BYTES {
            _mm_prefetch::<_MM_HINT_T0>(b.as_ptr().wrapping_add(PREFETCH_BYTES + ahead) as *const i8);
            ahead += 64;
        }
        let u = K::unpack(b);
        for t in 0..T {
            // SAFETY: i < n <= acts[t].len(), asserted above.
            let y = acts[t].get_unchecked(i);
            let mut isum = _mm512_setzero_si512();
            for r in 0..4 {
                let pairs = _mm512_maddubs_epi16(u.weights[r], acts64(y, 64 * r));
                isum = _mm512_dpwssd_epi32(isum, pairs, u.scales[r]);
            }
            let correction = _mm512_zextsi256_si512(_mm256_madd_epi16(block_sums(y), u.correction));
            match u.d_correction {
                None => isum = _mm512_sub_epi32(isum, correction),
                Some(d_correction) => {
                    let scale = _mm512_set1_ps(d_correction * y.d);
                    acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(correction), scale, acc[t]);
                }
            }
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(u.d * y.d), acc[t]);
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]))
}

/// How far ahead of the block being read the weight stream is prefetched.
const PREFETCH_BYTES: usize = 2048;

macro_rules! k_kernels {
    ($($block:ident: $single:ident, $tile:ident;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $single(row: &[u8], acts: &[BlockQ8K]) -> f32 {
            k_blocks::<$block, 1>(row, &[acts])[0]
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $tile(row: &[u8], acts: &[&[BlockQ8K]; TILE]) -> [f32; TILE] {
            k_blocks::<$block, TILE>(row, acts)
        }
    )*};
}

k_kernels! {
    Q4K: q4_k, q4_k_tile;
    Q6K: q6_k, q6_k_tile;
}

/// Repacks super-block `i` of eight rows into the [`Rows8K`] layout.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn repack_one<K: KQuant>(rows: &[&[u8]; 8], i: usize, out: &mut Rows8K) {
    let mut values = [0u8; 256];
    for (r, row) in rows.iter().enumerate() {
        let b = &row[i * K::BYTES..(i + 1) * K::BYTES];
        for (k, w) in K::unpack(b).weights.iter().enumerate() {
            _mm512_storeu_si512(values[64 * k..].as_mut_ptr() as *mut __m512i, *w);
        }
        for (g, register) in out.weights.iter_mut().enumerate() {
            register[8 * r..8 * r + 8].copy_from_slice(&values[8 * g..8 * g + 8]);
        }
        let f = K::factors(b);
        for (s, scales) in out.scales.iter_mut().enumerate() {
            scales[r] = f.scales[s];
        }
        for (q, corrections) in out.corrections.iter_mut().enumerate() {
            corrections[4 * r..4 * r + 4].copy_from_slice(&f.corrections[4 * q..4 * q + 4]);
        }
        out.d[2 * r..2 * r + 2].fill(f.d);
        out.d_correction[2 * r..2 * r + 2].fill(f.d_correction);
    }
}

/// Eight rows × `T` tokens over super-blocks in the [`Rows8K`] layout. Four (Q4_K)
/// or two (Q6_K) pair-sum registers share a scale, so they are added as i16
/// before one `vpdpwssd` applies it: five instructions per 2048 products (Q4_K).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows8_blocks<K: KQuant, const T: usize>(blocks: &[Rows8K], acts: &[&[BlockQ8K]; T]) -> [[f32; 8]; T] {
    let n = blocks.len();
    assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
    let per_row: [u16; 32] = std::array::from_fn(|lane| lane as u16 / 4);
    let per_row = _mm512_loadu_si512(per_row.as_ptr() as *const __m512i);
    let mut acc = [_mm512_setzero_ps(); T];
    for (i, block) in blocks.iter().enumerate() {
        let mut isum = [_mm512_setzero_si512(); T];
        for s in 0..32 / K::REGS_PER_SCALE {
            let compact = _mm_loadu_si128(block.scales[s].as_ptr() as *const __m128i);
            let scale = _mm512_permutexvar_epi16(per_row, _mm512_castsi128_si512(compact));
            let first = s * K::REGS_PER_SCALE;
            for t in 0..T {
                // SAFETY: i < n <= acts[t].len(), asserted above.
                let y = acts[t].get_unchecked(i);
                let mut pairs = _mm512_setzero_si512();
                for g in first..first + K::REGS_PER_SCALE {
                    let w = _mm512_load_si512(block.weights[g].as_ptr() as *const __m512i);
                    pairs = _mm512_add_epi16(pairs, _mm512_maddubs_epi16(w, broadcast8(&y.qs, 8 * g)));
                }
                isum[t] = _mm512_dpwssd_epi32(isum[t], pairs, scale);
            }
        }
        let d = _mm512_load_ps(block.d.as_ptr());
        let d_correction = _mm512_load_ps(block.d_correction.as_ptr());
        for t in 0..T {
            let y = acts[t].get_unchecked(i);
            let mut correction = _mm512_setzero_si512();
            for (q, factors) in block.corrections.iter().enumerate() {
                let factors = _mm512_load_si512(factors.as_ptr() as *const __m512i);
                correction = _mm512_dpwssd_epi32(correction, factors, broadcast8(&y.bsums, 4 * q));
            }
            let y_d = _mm512_set1_ps(y.d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, y_d), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(correction), _mm512_mul_ps(d_correction, y_d), acc[t]);
        }
    }
    std::array::from_fn(|t| row_sums(acc[t]))
}

/// The eight row results of a [`Rows8K`]/[`Rows8Q8`] accumulator: row r's sum is
/// in lanes 2r and 2r + 1.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row_sums(acc: __m512) -> [f32; 8] {
    let mut lanes = [0.0f32; 16];
    _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
    std::array::from_fn(|r| lanes[2 * r] + lanes[2 * r + 1])
}

/// The 8 bytes of `values` from index `at` (elements of 1 or 2 bytes), in every 64-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn broadcast8<E>(values: &[E], at: usize) -> __m512i {
    assert!((at + 8 / std::mem::size_of::<E>()) <= values.len());
    _mm512_set1_epi64(std::ptr::read_unaligned(values.as_ptr().add(at) as *const i64))
}

macro_rules! rows8_kernels {
    ($($block:ident: $repack:ident, $tile:ident, $single:ident;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $repack(rows: &[&[u8]; 8], out: &mut [Rows8K]) {
            for (i, block) in out.iter_mut().enumerate() {
                repack_one::<$block>(rows, i, block);
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $tile(blocks: &[Rows8K], acts: &[&[BlockQ8K]; TILE]) -> [[f32; 8]; TILE] {
            rows8_blocks::<$block, TILE>(blocks, acts)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $single(blocks: &[Rows8K], acts: &[BlockQ8K]) -> [f32; 8] {
            rows8_blocks::<$block, 1>(blocks, &[acts])[0]
        }
    )*};
}

rows8_kernels! {
    Q4K: q4_k_repack, q4_k_rows8_tile, q4_k_rows8;
    Q6K: q6_k_repack, q6_k_rows8_tile, q6_k_rows8;
}

/// Eight rows × `T` tokens over 32-wide blocks in the [`Rows8Q8`] layout: four
/// `vpdpbusd` per block (2048 products), then the `OFFSET` the weights were
/// shifted by comes back out through the activations' exact integer sum.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows8_block32<const OFFSET: i32, const T: usize>(
    blocks: &[Rows8Q8],
    acts: &[&[BlockQ8]; T],
) -> [[f32; 8]; T] {
    let n = blocks.len();
    assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
    let mut acc = [_mm512_setzero_ps(); T];
    for (i, block) in blocks.iter().enumerate() {
        let weights: [__m512i; 4] =
            std::array::from_fn(|g| _mm512_load_si512(block.weights[g].as_ptr() as *const __m512i));
        let d = _mm512_load_ps(block.d.as_ptr());
        for t in 0..T {
            // SAFETY: i < n <= acts[t].len(), asserted above.
            let y = acts[t].get_unchecked(i);
            let mut isum = _mm512_setzero_si512();
            for (g, &w) in weights.iter().enumerate() {
                isum = _mm512_dpbusd_epi32(isum, w, broadcast8(&y.qs, 8 * g));
            }
            // Each row's sum is split over lanes 2r and 2r + 1: take the offset from the even ones.
            isum = _mm512_sub_epi32(isum, _mm512_maskz_set1_epi32(0x5555, OFFSET * y.sum));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, _mm512_set1_ps(y.d)), acc[t]);
        }
    }
    std::array::from_fn(|t| row_sums(acc[t]))
}

macro_rules! rows8_block32_kernels {
    ($($block:ident, $offset:literal: $repack:ident, $tile:ident, $single:ident;)*) => {$(
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $repack(rows: &[&[u8]; 8], out: &mut [Rows8Q8]) {
            super::avx2::repack_block32::<super::avx2::$block, $offset>(rows, out)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $tile(blocks: &[Rows8Q8], acts: &[&[BlockQ8]; TILE]) -> [[f32; 8]; TILE] {
            rows8_block32::<$offset, TILE>(blocks, acts)
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
        pub(crate) unsafe fn $single(blocks: &[Rows8Q8], acts: &[BlockQ8]) -> [f32; 8] {
            rows8_block32::<$offset, 1>(blocks, &[acts])[0]
        }
    )*};
}

rows8_block32_kernels! {
    Q4_0, 8: q4_0_repack, q4_0_rows8_tile, q4_0_rows8;
    Q5_0, 16: q5_0_repack, q5_0_rows8_tile, q5_0_rows8;
    Q8_0, 128: q8_0_repack, q8_0_rows8_tile, q8_0_rows8;
}

/// A Q5_0 block's 32 weights plus 16, as unsigned bytes (0..32): the low nibbles
/// are elements 0..16, the high ones 16..32, and bit j of `qh` is element j's
/// fifth bit, added in one masked instruction.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_unsigned(b: &[u8]) -> __m256i {
    use layout::q5_0::*;
    let packed = _mm_loadu_si128(b[QS..QS + 16].as_ptr() as *const __m128i);
    let both = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16(packed, 4));
    let nibbles = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
    _mm256_mask_add_epi8(nibbles, layout::u32_at(b, QH), nibbles, _mm256_set1_epi8(0x10))
}

/// Two 256-bit halves as one register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn join(low: __m256i, high: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
}

/// Q5_0 against `T` tokens, two blocks per 512-bit register: one `vpdpbusd` per
/// pair, the +16 shift taken back through the activations' exact sums, and one
/// FMA with both blocks' scales. An odd last block runs in the low half alone.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q5_0_blocks<const T: usize>(row: &[u8], acts: &[&[BlockQ8]; T]) -> [f32; T] {
    use layout::q5_0::BYTES;
    let n = row.len() / BYTES;
    assert!(acts.iter().all(|a| a.len() >= n), "fewer activation blocks than weight blocks");
    let mut acc = [_mm512_setzero_ps(); T];
    for i in (0..n).step_by(2) {
        let a = &row[i * BYTES..(i + 1) * BYTES];
        _mm_prefetch::<_MM_HINT_T0>(a.as_ptr().wrapping_add(PREFETCH_BYTES) as *const i8);
        let pair = i + 1 < n;
        let (w_b, d_b) = if pair {
            let b = &row[(i + 1) * BYTES..(i + 2) * BYTES];
            (q5_0_unsigned(b), f16(b, 0))
        } else {
            (_mm256_setzero_si256(), 0.0)
        };
        let w = join(q5_0_unsigned(a), w_b);
        let d_a = f16(a, 0);
        for t in 0..T {
            // SAFETY: i (and i + 1 when `pair`) < n <= acts[t].len(), asserted above.
            let ya = acts[t].get_unchecked(i);
            let load = |y: &BlockQ8| _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let (y_b, sum_b, scale_b) = if pair {
                let yb = acts[t].get_unchecked(i + 1);
                (load(yb), yb.sum, d_b * yb.d)
            } else {
                (_mm256_setzero_si256(), 0, 0.0)
            };
            let mut isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, join(load(ya), y_b));
            let shift =
                _mm512_or_si512(_mm512_maskz_set1_epi32(1, 16 * ya.sum), _mm512_maskz_set1_epi32(1 << 8, 16 * sum_b));
            isum = _mm512_sub_epi32(isum, shift);
            let scale = _mm512_castsi512_ps(join(
                _mm256_castps_si256(_mm256_set1_ps(d_a * ya.d)),
                _mm256_castps_si256(_mm256_set1_ps(scale_b)),
            ));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), scale, acc[t]);
        }
    }
    std::array::from_fn(|t| _mm512_reduce_add_ps(acc[t]))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q5_0(row: &[u8], acts: &[BlockQ8]) -> f32 {
    q5_0_blocks::<1>(row, &[acts])[0]
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn q5_0_tile(row: &[u8], acts: &[&[BlockQ8]; TILE]) -> [f32; TILE] {
    q5_0_blocks::<TILE>(row, acts)
}
