//! K-quant quantization: llama.cpp's reference algorithms
//! (`quantize_row_q*_K_ref`), transcribed for their semantics with the same
//! float32 operation order, so results match llama.cpp's reference path.
//!
//! - Q2_K, Q4_K, Q5_K: per sub-block, an affine fit (scale and min) found by an
//!   iterative search over candidate inverse scales, weighted least squares
//!   (`make_qkx2_quants`); the sub-block scales and mins are then themselves
//!   quantized against the block's largest one.
//! - Q3_K: a symmetric fit refined by coordinate descent (`make_q3_quants`).
//! - Q6_K: a symmetric fit with x²-weighted scale search (`make_qx_quants`).
//! - Q8_K: max-abs scale, nearest int.

use super::float::{f16_to_f32, f32_to_f16};
use super::kquants::{k4_scale_min, q2_k, q3_k, q3_k_scales, q4_k, q5_k, q6_k, q8_k, K_SCALE_SIZE, QK_K};

/// Below this a group counts as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, as llama.cpp's `nearest_int` does: adding
/// 1.5 * 2^23 leaves the rounded integer in the low mantissa bits. Valid for
/// |x| <= 4194303; outside that (or for NaN) it returns some in-range garbage
/// value that callers clamp, exactly as the reference does.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    let shifted = x + 12_582_912.0;
    (shifted.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

fn write_f16(block: &mut [u8], at: usize, value: f32) {
    block[at..at + 2].copy_from_slice(&f32_to_f16(value).to_le_bytes());
}

fn read_f16_bits(block: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([block[at], block[at + 1]]))
}

/// Options of the affine search.
struct AffineSearch {
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Weighted absolute error instead of squared error.
    use_mad: bool,
}

/// Fits `x ≈ scale * L - min_out` with `L` in `0..=nmax` (`make_qkx2_quants`).
/// Writes `L`, returns `(scale, min_out)` where `min_out >= 0`.
fn make_qkx2_quants(x: &[f32], weights: &[f32], levels: &mut [u8], opts: &AffineSearch) -> (f32, f32) {
    let n = x.len();
    let nmax = opts.nmax;
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let error_of = |diff: f32| if opts.use_mad { diff.abs() } else { diff * diff };
    let quant = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);

    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        levels[i] = quant(iscale, x[i], min) as u8;
        let diff = scale * f32::from(levels[i]) + min - x[i];
        best_error += weights[i] * error_of(diff);
    }
    if opts.nstep < 1 {
        return (scale, -min);
    }
    let mut candidate = [0u8; 32];
    let candidate = &mut candidate[..n];
    for step in 0..=opts.nstep {
        iscale = (opts.rmin + opts.rdelta * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = quant(iscale, x[i], min);
            candidate[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(candidate[i]) + this_min - x[i];
                error += weights[i] * error_of(diff);
            }
            if error < best_error {
                levels.copy_from_slice(candidate);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Value and magnitude of the first element of largest magnitude.
fn signed_abs_max(x: &[f32]) -> (f32, f32) {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric fit `x ≈ scale * (L - nmax)`, `L` in `0..2*nmax`, with x²
/// weights and a search over 18 nearby inverse scales
/// (`make_qx_quants(.., rmse_type = 1, NULL)`). Returns the scale.
fn make_qx_quants(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (max, amax) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let (w, l) = (v * v, quant(iscale, v) as f32);
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let fill = |iscale: f32, levels: &mut [u8]| {
        for (slot, &v) in levels.iter_mut().zip(x) {
            *slot = (nmax + quant(iscale, v)) as u8;
        }
    };

    let iscale = -(nmax as f32) / max;
    fill(iscale, levels);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for step in (-9..=9).filter(|&s| s != 0) {
        let iscale = -(nmax as f32 + 0.1 * step as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            fill(iscale, levels);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Q3_K's symmetric fit with coordinate descent on x²-weighted error
/// (`make_q3_quants(.., do_rmse = true)`). Writes `L + nmax` into `levels`.
fn make_q3_quants(x: &[f32], nmax: i32, levels: &mut [u8]) -> f32 {
    let (max, amax) = signed_abs_max(x);
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut l = [0i32; 16];
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (i, &v) in x.iter().enumerate() {
        l[i] = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        let (w, li) = (v * v, l[i] as f32);
        sumlx += w * v * li;
        suml2 += w * li * li;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let mut slx = sumlx - w * v * l[i] as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * l[i] as f32 * l[i] as f32;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    slx += w * v * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (slot, &li) in levels.iter_mut().zip(&l) {
        *slot = (li + nmax) as u8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Packs 256 2-bit levels as Q2_K/Q3_K store them.
fn pack_2bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for half in 0..2 {
        for l in 0..32 {
            let at = 128 * half + l;
            qs[32 * half + l] = levels[at] | (levels[at + 32] << 2) | (levels[at + 64] << 4) | (levels[at + 96] << 6);
        }
    }
}

/// Packs 256 levels' low nibbles as Q4_K/Q5_K store them.
fn pack_4bit(levels: &[u8; QK_K], qs: &mut [u8]) {
    for chunk in 0..4 {
        for l in 0..32 {
            qs[32 * chunk + l] = (levels[64 * chunk + l] & 0x0f) | ((levels[64 * chunk + l + 32] & 0x0f) << 4);
        }
    }
}

/// Sets bit `e / 32` of byte `e % 32` for each level with `bit` set (then clears it in the level).
fn pack_bit_plane(levels: &mut [u8; QK_K], bit: u8, mask: &mut [u8]) {
    mask[..32].fill(0);
    for (e, level) in levels.iter_mut().enumerate() {
        if *level & bit != 0 {
            mask[e % 32] |= 1 << (e / 32);
            *level &= !bit;
        }
    }
}

/// Packs eight 6-bit (scale, min) pairs into Q4_K/Q5_K's 12 bytes
/// (the inverse of [`k4_scale_min`]).
fn pack_k4_scales(ls: &[u8; 8], lm: &[u8; 8], out: &mut [u8]) {
    out[..K_SCALE_SIZE].fill(0);
    for j in 0..8 {
        if j < 4 {
            out[j] = ls[j];
            out[j + 4] = lm[j];
        } else {
            out[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            out[j - 4] |= (ls[j] >> 4) << 6;
            out[j] |= (lm[j] >> 4) << 6;
        }
    }
}

/// Requantizes each sub-block against its stored (f16-rounded) scale and
/// min: `L = nearest_int((x + dmin*m) / (d*sc))`, clamped to `0..=nmax`.
/// Sub-blocks whose scale is zero keep the levels from the search.
fn requantize_affine(
    x: &[f32],
    sub: usize,
    d: f32,
    dmin: f32,
    sc_m: impl Fn(usize) -> (u8, u8),
    nmax: i32,
    levels: &mut [u8],
) {
    for (j, (xs, ls)) in x.chunks_exact(sub).zip(levels.chunks_exact_mut(sub)).enumerate() {
        let (sc, m) = sc_m(j);
        let dl = d * f32::from(sc);
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * f32::from(m);
        for (slot, &v) in ls.iter_mut().zip(xs) {
            *slot = nearest_int((v + dm) / dl).clamp(0, nmax) as u8;
        }
    }
}

pub(crate) fn quantize_q2_k(x: &[f32], block: &mut [u8]) {
    const Q4SCALE: f32 = 15.0;
    let opts = AffineSearch { nmax: 3, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: true };
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 16], [0.0f32; 16]);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(xs, &weights, ls, &opts);
    }
    let max_scale = scales.iter().fold(0.0f32, |acc, &s| if s > acc { s } else { acc });
    let max_min = mins.iter().fold(0.0f32, |acc, &m| if m > acc { m } else { acc });

    let packed = &mut block[q2_k::SCALES..q2_k::SCALES + 16];
    packed.fill(0);
    write_f16(block, q2_k::D, 0.0);
    write_f16(block, q2_k::DMIN, 0.0);
    if max_scale > 0.0 {
        let iscale = Q4SCALE / max_scale;
        for (slot, &s) in block[q2_k::SCALES..q2_k::SCALES + 16].iter_mut().zip(&scales) {
            *slot = nearest_int(iscale * s) as u8;
        }
        write_f16(block, q2_k::D, max_scale / Q4SCALE);
    }
    if max_min > 0.0 {
        let iscale = Q4SCALE / max_min;
        for (slot, &m) in block[q2_k::SCALES..q2_k::SCALES + 16].iter_mut().zip(&mins) {
            *slot |= (nearest_int(iscale * m) << 4) as u8;
        }
        write_f16(block, q2_k::DMIN, max_min / Q4SCALE);
    }
    let d = read_f16_bits(block, q2_k::D);
    let dmin = read_f16_bits(block, q2_k::DMIN);
    let packed: [u8; 16] = block[q2_k::SCALES..q2_k::SCALES + 16].try_into().expect("16 bytes");
    requantize_affine(x, 16, d, dmin, |j| (packed[j] & 0x0f, packed[j] >> 4), 3, &mut levels);
    pack_2bit(&levels, &mut block[q2_k::QS..q2_k::QS + 64]);
}

pub(crate) fn quantize_q3_k(x: &[f32], block: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        scales[j] = make_q3_quants(xs, 4, ls);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }

    let packed = &mut block[q3_k::SCALES..q3_k::SCALES + 12];
    packed.fill(0);
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in scales.iter().enumerate() {
            let l = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            if j < 8 {
                packed[j] = l & 0x0f;
            } else {
                packed[j - 8] |= (l & 0x0f) << 4;
            }
            packed[8 + j % 4] |= (l >> 4) << (2 * (j / 4));
        }
        write_f16(block, q3_k::D, 1.0 / iscale);
    } else {
        write_f16(block, q3_k::D, 0.0);
    }

    let d = read_f16_bits(block, q3_k::D);
    let stored = q3_k_scales(&block[q3_k::SCALES..q3_k::SCALES + 12]);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        let dl = d * f32::from(stored[j]);
        if dl == 0.0 {
            continue;
        }
        for (slot, &v) in ls.iter_mut().zip(xs) {
            *slot = (nearest_int(v / dl).clamp(-4, 3) + 4) as u8;
        }
    }
    pack_bit_plane(&mut levels, 4, &mut block[q3_k::HMASK..q3_k::HMASK + 32]);
    pack_2bit(&levels, &mut block[q3_k::QS..q3_k::QS + 64]);
}

/// The shared part of Q4_K and Q5_K: affine search per 32-element
/// sub-block, 6-bit scales/mins, then requantization. Returns the levels.
fn quantize_k4_common(
    x: &[f32],
    block: &mut [u8],
    opts: &AffineSearch,
    d_at: usize,
    dmin_at: usize,
    scales_at: usize,
) -> [u8; QK_K] {
    let mut levels = [0u8; QK_K];
    let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
    for (j, (xs, ls)) in x.chunks_exact(32).zip(levels.chunks_exact_mut(32)).enumerate() {
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        (scales[j], mins[j]) = make_qkx2_quants(xs, &weights, ls, opts);
    }
    let max_scale = scales.iter().fold(0.0f32, |acc, &s| if s > acc { s } else { acc });
    let max_min = mins.iter().fold(0.0f32, |acc, &m| if m > acc { m } else { acc });
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
    let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
    pack_k4_scales(&ls, &lm, &mut block[scales_at..scales_at + K_SCALE_SIZE]);
    write_f16(block, d_at, max_scale / 63.0);
    write_f16(block, dmin_at, max_min / 63.0);

    let d = read_f16_bits(block, d_at);
    let dmin = read_f16_bits(block, dmin_at);
    let packed: [u8; K_SCALE_SIZE] = block[scales_at..scales_at + K_SCALE_SIZE].try_into().expect("12 bytes");
    requantize_affine(x, 32, d, dmin, |j| k4_scale_min(&packed, j), opts.nmax, &mut levels);
    levels
}

pub(crate) fn quantize_q4_k(x: &[f32], block: &mut [u8]) {
    let opts = AffineSearch { nmax: 15, rmin: -1.0, rdelta: 0.1, nstep: 20, use_mad: false };
    let levels = quantize_k4_common(x, block, &opts, q4_k::D, q4_k::DMIN, q4_k::SCALES);
    pack_4bit(&levels, &mut block[q4_k::QS..q4_k::QS + 128]);
}

pub(crate) fn quantize_q5_k(x: &[f32], block: &mut [u8]) {
    let opts = AffineSearch { nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, use_mad: false };
    let mut levels = quantize_k4_common(x, block, &opts, q5_k::D, q5_k::DMIN, q5_k::SCALES);
    pack_bit_plane(&mut levels, 16, &mut block[q5_k::QH..q5_k::QH + 32]);
    pack_4bit(&levels, &mut block[q5_k::QS..q5_k::QS + 128]);
}

pub(crate) fn quantize_q6_k(x: &[f32], block: &mut [u8]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0.0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        scales[j] = make_qx_quants(xs, 32, ls);
        if scales[j].abs() > max_abs_scale {
            max_abs_scale = scales[j].abs();
            max_scale = scales[j];
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        block.fill(0);
        return;
    }
    let iscale = -128.0 / max_scale;
    write_f16(block, q6_k::D, 1.0 / iscale);
    for (slot, &s) in block[q6_k::SCALES..q6_k::SCALES + 16].iter_mut().zip(&scales) {
        *slot = nearest_int(iscale * s).min(127) as i8 as u8;
    }
    let d = read_f16_bits(block, q6_k::D);
    for (j, (xs, ls)) in x.chunks_exact(16).zip(levels.chunks_exact_mut(16)).enumerate() {
        let dl = d * f32::from(block[q6_k::SCALES + j] as i8);
        if dl == 0.0 {
            continue;
        }
        for (slot, &v) in ls.iter_mut().zip(xs) {
            *slot = (nearest_int(v / dl).clamp(-32, 31) + 32) as u8;
        }
    }
    pack_q6_k(&levels, block);
}

/// Packs 256 6-bit levels into Q6_K's `ql` (low nibbles) and `qh` (top two bits).
fn pack_q6_k(levels: &[u8; QK_K], block: &mut [u8]) {
    for half in 0..2 {
        let base = 128 * half;
        for l in 0..32 {
            let q: [u8; 4] = std::array::from_fn(|k| levels[base + l + 32 * k]);
            block[q6_k::QL + 64 * half + l] = (q[0] & 0x0f) | ((q[2] & 0x0f) << 4);
            block[q6_k::QL + 64 * half + l + 32] = (q[1] & 0x0f) | ((q[3] & 0x0f) << 4);
            block[q6_k::QH + 32 * half + l] =
                (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
}

pub(crate) fn quantize_q8_k(x: &[f32], block: &mut [u8]) {
    block.fill(0);
    let (max, amax) = signed_abs_max(x);
    if amax == 0.0 {
        return;
    }
    // -127 rather than -128 keeps every quant within ±127.
    let iscale = -127.0 / max;
    let mut sums = [0i32; 16];
    for (e, &v) in x.iter().enumerate() {
        let q = nearest_int(iscale * v).min(127) as i8;
        block[q8_k::QS + e] = q as u8;
        sums[e / 16] += i32::from(q);
    }
    for (j, sum) in sums.iter().enumerate() {
        let at = q8_k::BSUMS + 2 * j;
        block[at..at + 2].copy_from_slice(&(*sum as i16).to_le_bytes());
    }
    block[q8_k::D..q8_k::D + 4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}
