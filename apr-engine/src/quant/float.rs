//! Plain element types: half-precision conversions and the scalar codecs.
//!
//! Conversions here are bit-exact with numpy (what gguf-py uses): half to
//! single is exact and keeps a NaN's payload as it is; single to half and to
//! bfloat16 round to nearest, ties to even.

/// IEEE half (as its bits) to f32, exactly. A NaN keeps its payload unquieted,
/// as numpy's `astype(np.float32)` does.
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from(bits >> 10) & 0x1f;
    let mantissa = u32::from(bits & 0x03ff);
    match exponent {
        0 => {
            // Zero or subnormal: mantissa * 2^-24 is exact in f32.
            let magnitude = mantissa as f32 * f32::from_bits(0x3380_0000);
            f32::from_bits(sign | magnitude.to_bits())
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (mantissa << 13)),
        _ => f32::from_bits(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13)),
    }
}

/// f32 to IEEE half bits, rounding to nearest even; overflow gives infinity.
#[inline]
pub fn f32_to_f16(value: f32) -> u16 {
    half::f16::from_f32(value).to_bits()
}

/// Reads the little-endian half at `bytes[at..at + 2]` as f32.
#[inline]
pub fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// bfloat16 bits to f32 (the upper half of an f32).
#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bfloat16 bits as ggml does: round to nearest even, and a NaN stays a
/// (quiet) NaN rather than rounding into infinity.
#[inline]
pub fn f32_to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return ((bits >> 16) | 0x40) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000.
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// Decodes little-endian scalars of `N` bytes each into f32s.
pub(crate) fn decode_scalars<const N: usize>(bytes: &[u8], out: &mut [f32], to_f32: impl Fn([u8; N]) -> f32) {
    for (chunk, slot) in bytes.chunks_exact(N).zip(out) {
        *slot = to_f32(chunk.try_into().expect("chunks_exact gives N bytes"));
    }
}

/// Dequantizes a run of F32 values (a copy of the bits).
pub(crate) fn dequantize_f32(bytes: &[u8], out: &mut [f32]) {
    decode_scalars::<4>(bytes, out, f32::from_le_bytes);
}

pub(crate) fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    decode_scalars::<2>(bytes, out, |b| f16_to_f32(u16::from_le_bytes(b)));
}

pub(crate) fn dequantize_bf16(bytes: &[u8], out: &mut [f32]) {
    decode_scalars::<2>(bytes, out, |b| bf16_to_f32(u16::from_le_bytes(b)));
}

pub(crate) fn quantize_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(crate) fn quantize_f16(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| f32_to_f16(v).to_le_bytes()).collect()
}

pub(crate) fn quantize_bf16(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| f32_to_bf16(v).to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_to_single_is_exact_for_every_half() {
        for bits in 0..=u16::MAX {
            let ours = f16_to_f32(bits);
            let reference = half::f16::from_bits(bits).to_f32();
            if reference.is_nan() {
                assert!(ours.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(ours.to_bits(), reference.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn half_nan_payload_is_kept_unquieted() {
        // numpy: 0x7c01 -> 0x7f802000 (signalling payload kept).
        assert_eq!(f16_to_f32(0x7c01).to_bits(), 0x7f80_2000);
        assert_eq!(f16_to_f32(0x0001).to_bits(), 0x3380_0000);
        assert_eq!(f16_to_f32(0x8001).to_bits(), 0xb380_0000);
    }

    #[test]
    fn single_to_half_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and the next half; ties go to even (1.0).
        assert_eq!(f32_to_f16(1.0 + f32::EPSILON * 1024.0), 0x3c00);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie, even below
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82); // tie, even above
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7f80_0001)), 0x7fc0); // NaN stays NaN
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80); // rounds up to infinity, like ggml
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }
}
