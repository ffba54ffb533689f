//! Quantization error against llama.cpp's `test-quantize-fns` bounds, error
//! reporting, and layout round trips. Bit-exactness against gguf-py is in
//! `tests/quant_fixtures.rs` and `tests/dequant_real_models.rs`.

use super::*;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// Every dtype `quantize` accepts besides F32.
const QUANTIZABLE: &[DType] = &[
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q8_1,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::Q8_K,
];

/// llama.cpp's bounds (MAX_QUANTIZATION_TOTAL_ERROR[_2BITS|_3BITS]).
fn max_total_error(dtype: DType) -> f64 {
    match dtype {
        DType::Q2_K => 0.0075,
        DType::Q3_K => 0.0040,
        _ => 0.002,
    }
}

/// `test-quantize-fns`'s "array_rmse": sqrt(sum of squared differences) / n.
/// Despite its name it is the RMSE divided by sqrt(n), so it only means
/// something at that test's size (n = 4096).
fn llama_total_error(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    sum.sqrt() / a.len() as f64
}

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2)).sum();
    (sum / a.len() as f64).sqrt()
}

/// The test's size: 32 * 128 elements.
const TEST_SIZE: usize = 32 * 128;

/// `test-quantize-fns`'s synthetic signal `0.1 + 2*cosf(i + offset)` (float
/// cosine, double sum, stored as float).
fn synthetic_signal(offset: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| (0.1 + f64::from(2.0 * (i as f32 + offset).cos())) as f32).collect()
}

fn round_trip(dtype: DType, values: &[f32]) -> Vec<f32> {
    let bytes = quantize(dtype, values).unwrap();
    assert_eq!(bytes.len(), values.len() / dtype.block_elems() * dtype.block_bytes(), "{dtype}");
    dequantize_to_vec(dtype, &bytes).unwrap()
}

#[test]
fn synthetic_signal_error_is_within_llama_cpp_bounds() {
    let data = synthetic_signal(0.0, TEST_SIZE);
    for &dtype in QUANTIZABLE {
        let back = round_trip(dtype, &data);
        let total = llama_total_error(&data, &back);
        println!(
            "{:>5}: test-quantize-fns error {total:.6} (bound {}), rmse {:.6}",
            dtype,
            max_total_error(dtype),
            rmse(&data, &back)
        );
        assert!(total < max_total_error(dtype), "{dtype}: error {total} >= {}", max_total_error(dtype));
    }
}

#[test]
fn more_bits_give_less_error_on_the_synthetic_signal() {
    let data = synthetic_signal(0.0, TEST_SIZE);
    let error = |dtype| rmse(&data, &round_trip(dtype, &data));
    // Each K-quant must beat the one with a bit less; Q8 beats every 4/5/6-bit type.
    let ladder = [DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_0];
    for pair in ladder.windows(2) {
        assert!(error(pair[1]) < error(pair[0]), "{} should beat {}", pair[1], pair[0]);
    }
    assert!(error(DType::Q4_K) < error(DType::Q4_0), "Q4_K should beat Q4_0");
}

/// Uniform values in `[-2.1, 2.1]`, the synthetic signal's range.
fn random_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-2.1f32..2.1)).collect()
}

#[test]
fn random_data_error_is_within_llama_cpp_bounds() {
    for seed in 0..4 {
        let data = random_values(seed, TEST_SIZE);
        for &dtype in QUANTIZABLE {
            let back = round_trip(dtype, &data);
            let total = llama_total_error(&data, &back);
            if seed == 0 {
                println!("{dtype:>5} random: test-quantize-fns error {total:.6}, rmse {:.6}", rmse(&data, &back));
            }
            assert!(total < max_total_error(dtype), "{dtype} seed {seed}: error {total}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn arbitrary_data_error_is_within_llama_cpp_bounds(
        data in proptest::collection::vec(-2.1f32..2.1, TEST_SIZE),
        dtype_index in 0..QUANTIZABLE.len(),
    ) {
        let dtype = QUANTIZABLE[dtype_index];
        let back = round_trip(dtype, &data);
        let total = llama_total_error(&data, &back);
        prop_assert!(total < max_total_error(dtype), "{} error {} rmse {}", dtype, total, rmse(&data, &back));
    }

    #[test]
    fn q8_0_round_trip_is_within_half_a_step(block in proptest::collection::vec(-1000.0f32..1000.0, 32)) {
        let back = round_trip(DType::Q8_0, &block);
        let amax = block.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let step = f16_to_f32(f32_to_f16(amax / 127.0));
        for (x, y) in block.iter().zip(&back) {
            // Half a step, plus what rounding d to f16 moves the largest quant (127 * d * 2^-11).
            prop_assert!((x - y).abs() <= step * 0.5 + amax / 2048.0 + 1e-6, "{} -> {}", x, y);
        }
    }
}

#[test]
fn constant_and_zero_blocks_survive() {
    for &dtype in QUANTIZABLE {
        let n = dtype.block_elems().max(32) * 2;
        let zeros = vec![0.0f32; n];
        assert!(round_trip(dtype, &zeros).iter().all(|&v| v == 0.0), "{dtype}: zeros");
        let ones = vec![1.0f32; n];
        let back = round_trip(dtype, &ones);
        assert!(back.iter().all(|v| (v - 1.0).abs() < 0.02), "{dtype}: ones came back as {:?}", &back[..4]);
    }
}

#[test]
fn errors_name_the_problem_and_the_numbers() {
    let err = dequantize_to_vec(DType::Q4_K, &[0u8; 145]).unwrap_err();
    assert_eq!(err, QuantError::PartialBlock { dtype: DType::Q4_K, bytes: 145, block_bytes: 144 });
    assert_eq!(err.to_string(), "Q4_K: 145 bytes is not a whole number of 144-byte blocks");

    let mut out = vec![0.0f32; 255];
    let err = dequantize(DType::Q4_K, &[0u8; 144], &mut out).unwrap_err();
    assert_eq!(err.to_string(), "Q4_K: 144 bytes hold 256 elements but the output has room for 255");

    let err = quantize(DType::Q8_0, &[0.0; 33]).unwrap_err();
    assert_eq!(err.to_string(), "Q8_0: 33 values is not a whole number of 32-element blocks");

    let err = quantize(DType::I32, &[0.0; 4]).unwrap_err();
    assert_eq!(err.to_string(), "quantization is not supported for dtype I32");
    assert!(!can_quantize(DType::I8) && !can_quantize(DType::F64));
    assert!(QUANTIZABLE.iter().all(|&d| can_quantize(d)) && can_quantize(DType::F32));
}

#[test]
fn every_dtype_dequantizes() {
    for &dtype in DType::ALL {
        let bytes = vec![0u8; dtype.block_bytes() * 3];
        let values = dequantize_to_vec(dtype, &bytes).unwrap();
        assert_eq!(values.len(), dtype.block_elems() * 3, "{dtype}");
        assert!(values.iter().all(|&v| v == 0.0), "{dtype}");
    }
}

#[test]
fn plain_integer_and_f64_types_convert_by_value() {
    let i16s: Vec<u8> = [-3i16, 7, i16::MAX].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize_to_vec(DType::I16, &i16s).unwrap(), vec![-3.0, 7.0, 32767.0]);
    let i8s = [0xffu8, 0x05];
    assert_eq!(dequantize_to_vec(DType::I8, &i8s).unwrap(), vec![-1.0, 5.0]);
    let f64s: Vec<u8> = [1.5f64, -0.25].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(dequantize_to_vec(DType::F64, &f64s).unwrap(), vec![1.5, -0.25]);
}

#[test]
fn parallel_and_serial_dequantization_agree() {
    // Large enough to take the parallel path; the serial path is per block, so compare block by block.
    let data = random_values(7, 256 * 512);
    for dtype in [DType::Q4_K, DType::Q6_K, DType::Q5_0, DType::F16] {
        let bytes = quantize(dtype, &data).unwrap();
        let whole = dequantize_to_vec(dtype, &bytes).unwrap();
        let (bb, be) = (dtype.block_bytes(), dtype.block_elems());
        for (i, block) in bytes.chunks(bb * 16).enumerate() {
            let part = dequantize_to_vec(dtype, block).unwrap();
            assert_eq!(part[..], whole[i * be * 16..i * be * 16 + part.len()], "{dtype} chunk {i}");
        }
    }
}

#[test]
fn k4_scales_pack_and_unpack() {
    // Bytes built by hand from the layout: scale j / min j for j < 4 in the low six
    // bits of bytes j / j+4; for j >= 4, low nibbles in byte j+4 and top bits in the
    // spare top bits of bytes j-4 (scale) and j (min).
    let scales: [u8; 8] = [1, 2, 3, 63, 17, 33, 48, 62];
    let mins: [u8; 8] = [5, 0, 63, 9, 16, 31, 32, 47];
    let mut packed = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            packed[j] |= scales[j];
            packed[j + 4] |= mins[j];
        } else {
            packed[j + 4] = (scales[j] & 15) | ((mins[j] & 15) << 4);
            packed[j - 4] |= (scales[j] >> 4) << 6;
            packed[j] |= (mins[j] >> 4) << 6;
        }
    }
    for j in 0..8 {
        assert_eq!(k4_scale_min(&packed, j), (scales[j], mins[j]), "sub-block {j}");
    }
}

#[test]
fn q3_k_scales_unpack_signed() {
    // All low nibbles 0xF and top bits 0b11 give 63 - 32 = 31; zeros give -32.
    assert_eq!(q3_k_scales(&[0xff; 12]), [31; 16]);
    assert_eq!(q3_k_scales(&[0; 12]), [-32; 16]);
    // Scale 9 alone: low nibble in the high half of byte 1, top bits at bits 4..6 of byte 8 + 9 % 4.
    let mut packed = [0u8; 12];
    packed[1] = 0x50;
    packed[9] = 0b10 << 4;
    let scales = q3_k_scales(&packed);
    assert_eq!(scales[9], (0x5 | (0b10 << 4)) - 32);
    assert_eq!(scales[1], -32);
}

#[test]
fn nearest_int_rounds_ties_to_even() {
    use quantize::nearest_int;
    assert_eq!([0.5, 1.5, 2.5, -0.5, -1.5, 3.49, -3.51].map(nearest_int), [0, 2, 2, 0, -2, 3, -4]);
}

/// Random block bytes with a finite f16 at each of `scale_offsets`.
fn random_block(rng: &mut rand::rngs::StdRng, dtype: DType, scale_offsets: &[usize]) -> Vec<u8> {
    let mut block: Vec<u8> = (0..dtype.block_bytes()).map(|_| rng.random()).collect();
    for &at in scale_offsets {
        let scale = f32_to_f16(rng.random_range(-0.05f32..0.05));
        block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
    }
    block
}

#[test]
fn per_element_layout_helpers_agree_with_the_decoders() {
    use kquants::{bit_plane, q2_k, q2_k_quant, q3_k, q4_k, q4_k_quant, q5_k, q6_k, q6_k_quant};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..20 {
        let b = random_block(&mut rng, DType::Q2_K, &[q2_k::D, q2_k::DMIN]);
        let (d, dmin) = (float::read_f16(&b, q2_k::D), float::read_f16(&b, q2_k::DMIN));
        let ours = dequantize_to_vec(DType::Q2_K, &b).unwrap();
        for (e, &v) in ours.iter().enumerate() {
            let sc = b[q2_k::SCALES + e / 16];
            let q = f32::from(q2_k_quant(&b[q2_k::QS..], e));
            assert_eq!(v, d * f32::from(sc & 15) * q - dmin * f32::from(sc >> 4), "Q2_K element {e}");
        }

        let b = random_block(&mut rng, DType::Q3_K, &[q3_k::D]);
        let d = float::read_f16(&b, q3_k::D);
        let scales = q3_k_scales(&b[q3_k::SCALES..]);
        let ours = dequantize_to_vec(DType::Q3_K, &b).unwrap();
        for (e, &v) in ours.iter().enumerate() {
            let q = q2_k_quant(&b[q3_k::QS..], e) as i8 - if bit_plane(&b[q3_k::HMASK..], e) == 1 { 0 } else { 4 };
            assert_eq!(v, d * f32::from(scales[e / 16]) * f32::from(q), "Q3_K element {e}");
        }

        for (dtype, qs_at) in [(DType::Q4_K, q4_k::QS), (DType::Q5_K, q5_k::QS)] {
            let b = random_block(&mut rng, dtype, &[q4_k::D, q4_k::DMIN]);
            let (d, dmin) = (float::read_f16(&b, q4_k::D), float::read_f16(&b, q4_k::DMIN));
            let ours = dequantize_to_vec(dtype, &b).unwrap();
            for (e, &v) in ours.iter().enumerate() {
                let (sc, m) = k4_scale_min(&b[q4_k::SCALES..], e / 32);
                let high = if dtype == DType::Q5_K { bit_plane(&b[q5_k::QH..], e) << 4 } else { 0 };
                let q = f32::from(q4_k_quant(&b[qs_at..], e) | high);
                assert_eq!(v, d * f32::from(sc) * q - dmin * f32::from(m), "{dtype} element {e}");
            }
        }

        let b = random_block(&mut rng, DType::Q6_K, &[q6_k::D]);
        let d = float::read_f16(&b, q6_k::D);
        let ours = dequantize_to_vec(DType::Q6_K, &b).unwrap();
        for (e, &v) in ours.iter().enumerate() {
            let q = q6_k_quant(&b[q6_k::QL..], &b[q6_k::QH..], e) as i8 - 32;
            assert_eq!(v, d * f32::from(b[q6_k::SCALES + e / 16] as i8) * f32::from(q), "Q6_K element {e}");
        }

        for dtype in [DType::Q5_0, DType::Q5_1] {
            let b = random_block(&mut rng, dtype, &[0, 2]);
            let (qh_at, qs_at) = if dtype == DType::Q5_0 {
                (legacy::q5_0::QH, legacy::q5_0::QS)
            } else {
                (legacy::q5_1::QH, legacy::q5_1::QS)
            };
            let qh = u32::from_le_bytes(b[qh_at..qh_at + 4].try_into().unwrap());
            let d = float::read_f16(&b, 0);
            let ours = dequantize_to_vec(dtype, &b).unwrap();
            for (j, &v) in ours.iter().enumerate() {
                let q = legacy::five_bit(&b[qs_at..], qh, j);
                let expected = if dtype == DType::Q5_0 {
                    d * f32::from(q as i8 - 16)
                } else {
                    d * f32::from(q) + float::read_f16(&b, legacy::q5_1::M)
                };
                assert_eq!(v.to_bits(), expected.to_bits(), "{dtype} element {j}");
            }
        }
    }
}
