//! Properties of the CPU matrix kernels:
//! - every AVX2 row dot equals the scalar reference on random blocks, within
//!   `1e-5 · M` where `M = Σ (|w_i| + 2|offset_i|) · |x̂_i|` (offset_i: the block's
//!   value with its quant bits zeroed, the part SIMD may sum separately);
//! - a kernel's result (activations quantized) is within the activation rounding
//!   bound of the exact f32 dot: `|got − Σ w_i x_i| ≤ Σ |w_i| · e_i + 1e-5 · M`,
//!   `e_i` = (½ + 127/2048) · amax/127 for Q8 blocks (their scale is stored as f16),
//!   ½ · amax/127 · (1 + 1e-6) for Q8_K;
//! - the scalar reference reads the blocks as `quant::dequantize` does (within
//!   `1e-6 · (|w_i| + 2|offset_i|)`: float products may round in another order);
//! - every AVX-VNNI kernel equals its AVX2 kernel bit for bit;
//! - every multi-token (tile) kernel (AVX2 and AVX-VNNI) is, per token, within the same bound of the
//!   scalar reference and bit-equal to its single-token kernel;
//! - `matmul` over n tokens equals n single-token matmuls bit for bit, including
//!   the dequantizing path of Q2_K/Q3_K;
//! - on tensors of the real models every dtype they use meets the exact-dot bound.

use apr_engine::backend::WeightMatrix;
use apr_engine::kernels::dot::{self, Kernel, RowDot, Rows8Kernel, Rows8Path, TileDot, TILE};
use apr_engine::kernels::matmul;
use apr_engine::kernels::q8_act::{quantize_q8, quantize_q8k, BlockQ8, BlockQ8K};
use apr_engine::testing::models::{QWEN_0_5B, QWEN_1_5B, SMOLLM2};
use apr_engine::{quant, DType, ModelFile};
use proptest::prelude::*;

/// Where a block keeps its f16 scales, and which bytes are quantized values.
struct Layout {
    dtype: DType,
    f16_scales: &'static [usize],
    quant_bits: std::ops::Range<usize>,
}

const QUANT_LAYOUTS: &[Layout] = &[
    Layout { dtype: DType::Q4_0, f16_scales: &[0], quant_bits: 2..18 },
    Layout { dtype: DType::Q4_1, f16_scales: &[0, 2], quant_bits: 4..20 },
    Layout { dtype: DType::Q5_0, f16_scales: &[0], quant_bits: 2..22 },
    Layout { dtype: DType::Q5_1, f16_scales: &[0, 2], quant_bits: 4..24 },
    Layout { dtype: DType::Q8_0, f16_scales: &[0], quant_bits: 2..34 },
    Layout { dtype: DType::Q4_K, f16_scales: &[0, 2], quant_bits: 16..144 },
    Layout { dtype: DType::Q5_K, f16_scales: &[0, 2], quant_bits: 16..176 },
    Layout { dtype: DType::Q6_K, f16_scales: &[208], quant_bits: 0..192 },
];

/// Types that take `matmul`'s dequantize-a-row path.
const DEQUANT_LAYOUTS: &[Layout] = &[
    Layout { dtype: DType::Q2_K, f16_scales: &[80, 82], quant_bits: 16..80 },
    Layout { dtype: DType::Q3_K, f16_scales: &[108], quant_bits: 0..96 },
];

const FLOAT_TYPES: &[DType] = &[DType::F32, DType::F16, DType::BF16];

fn layout(dtype: DType) -> &'static Layout {
    QUANT_LAYOUTS.iter().chain(DEQUANT_LAYOUTS).find(|l| l.dtype == dtype).expect("quantized dtype under test")
}

/// Random bytes for `n_blocks` blocks with finite f16 scales drawn from `scales`.
fn random_blocks(dtype: DType, noise: &[u8], scales: &[f32]) -> Vec<u8> {
    let l = layout(dtype);
    let mut bytes = noise.to_vec();
    let mut scale = scales.iter().cycle();
    for block in bytes.chunks_exact_mut(dtype.block_bytes()) {
        for &at in l.f16_scales {
            block[at..at + 2].copy_from_slice(&half::f16::from_f32(*scale.next().unwrap()).to_le_bytes());
        }
    }
    bytes
}

fn float_row(dtype: DType, values: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        DType::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect(),
        _ => unreachable!("float dtype"),
    }
}

/// Activations in the format a kernel consumes, and their dequantized values x̂.
enum Acts {
    Q8(Vec<BlockQ8>),
    Q8K(Vec<BlockQ8K>),
    F32(Vec<f32>),
}

impl Acts {
    fn for_kernel(kernel: &Kernel, x: &[f32]) -> Acts {
        match kernel.dot {
            RowDot::Q8(_) => {
                let mut b = vec![BlockQ8::default(); x.len() / 32];
                quantize_q8(x, &mut b);
                Acts::Q8(b)
            }
            RowDot::Q8K(_) => {
                let mut b = vec![BlockQ8K::default(); x.len() / 256];
                quantize_q8k(x, &mut b);
                Acts::Q8K(b)
            }
            RowDot::Float(_) => Acts::F32(x.to_vec()),
        }
    }

    fn dequantized(&self) -> Vec<f32> {
        match self {
            Acts::Q8(b) => b.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect(),
            Acts::Q8K(b) => b.iter().flat_map(|b| b.qs.map(|q| b.d * q as f32)).collect(),
            Acts::F32(x) => x.clone(),
        }
    }

    /// Per-element bound on |x_i − x̂_i|.
    fn rounding_bound(&self, x: &[f32]) -> Vec<f32> {
        let (block, factor) = match self {
            Acts::Q8(_) => (32, 0.5 + 127.0 / 2048.0),
            Acts::Q8K(_) => (256, 0.5 * (1.0 + 1e-6)),
            Acts::F32(_) => return vec![0.0; x.len()],
        };
        x.chunks(block)
            .flat_map(|c| {
                let step = c.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
                std::iter::repeat_n(step * factor, c.len())
            })
            .collect()
    }
}

fn call(dot: RowDot, row: &[u8], acts: &Acts) -> f32 {
    match (dot, acts) {
        (RowDot::Q8(f), Acts::Q8(a)) => f(row, a),
        (RowDot::Q8K(f), Acts::Q8K(a)) => f(row, a),
        (RowDot::Float(f), Acts::F32(a)) => f(row, a),
        _ => panic!("activation format does not match kernel"),
    }
}

/// The weights a block row encodes, read through the scalar kernel: the dot with
/// a one-hot activation (scale 1) is exactly the dequantized element.
fn dequantize_via_scalar(dtype: DType, row: &[u8]) -> Vec<f32> {
    let kernel = dot::scalar_kernel(dtype).unwrap();
    let n = row.len() / dtype.block_bytes() * dtype.block_elems();
    let elems = dtype.block_elems();
    (0..n)
        .map(|i| {
            let block = &row[i / elems * dtype.block_bytes()..][..dtype.block_bytes()];
            let acts = match kernel.dot {
                RowDot::Q8(_) => {
                    let mut b = BlockQ8 { d: 1.0, s: 1.0, qs: [0; 32], sum: 1 };
                    b.qs[i % 32] = 1;
                    Acts::Q8(vec![b])
                }
                RowDot::Q8K(_) => {
                    let mut b = BlockQ8K { d: 1.0, qs: [0; 256], bsums: [0; 16] };
                    b.qs[i % 256] = 1;
                    b.bsums[i % 256 / 16] = 1;
                    Acts::Q8K(vec![b])
                }
                RowDot::Float(_) => {
                    let mut x = vec![0.0; 1];
                    x[0] = 1.0;
                    return call(kernel.dot, &row[i * row.len() / n..(i + 1) * row.len() / n], &Acts::F32(x));
                }
            };
            call(kernel.dot, block, &acts)
        })
        .collect()
}

fn dequantize(dtype: DType, row: &[u8]) -> Vec<f32> {
    quant::dequantize_to_vec(dtype, row).expect("whole blocks")
}

/// Each element's part that does not depend on its quant bits (the block with them zeroed).
fn offsets(dtype: DType, row: &[u8]) -> Vec<f32> {
    match QUANT_LAYOUTS.iter().chain(DEQUANT_LAYOUTS).find(|l| l.dtype == dtype) {
        Some(l) => {
            let mut zeroed = row.to_vec();
            for block in zeroed.chunks_exact_mut(dtype.block_bytes()) {
                block[l.quant_bits.clone()].fill(0);
            }
            dequantize(dtype, &zeroed)
        }
        None => vec![0.0; row.len() / dtype.block_bytes()],
    }
}

/// `M = Σ (|w_i| + 2|offset_i|) |x̂_i|`, the scale of f32 rounding in any summation order.
fn magnitude(dtype: DType, row: &[u8], x_hat: &[f32]) -> f32 {
    let w = dequantize(dtype, row);
    w.iter().zip(&offsets(dtype, row)).zip(x_hat).map(|((w, o), x)| (w.abs() + 2.0 * o.abs()) * x.abs()).sum()
}

fn assert_scalar_reads_like_quant(dtype: DType, row: &[u8]) -> Result<(), TestCaseError> {
    let (ours, theirs) = (dequantize_via_scalar(dtype, row), dequantize(dtype, row));
    for (i, ((a, b), o)) in ours.iter().zip(&theirs).zip(offsets(dtype, row)).enumerate() {
        let bound = 1e-6 * (b.abs() + 2.0 * o.abs());
        prop_assert!((a - b).abs() <= bound, "{dtype} element {i}: scalar kernel reads {a}, quant {b}");
    }
    Ok(())
}

fn assert_simd_matches_scalar(dtype: DType, row: &[u8], x: &[f32]) -> Result<(), TestCaseError> {
    let scalar = dot::scalar_kernel(dtype).unwrap();
    let simd = dot::avx2_kernel(dtype);
    #[cfg(target_arch = "x86_64")]
    prop_assert!(simd.is_some(), "this x86_64 CPU lacks AVX2/FMA/F16C: the SIMD kernels go untested");
    let Some(simd) = simd else { return Ok(()) };
    let acts = Acts::for_kernel(&scalar, x);
    let (want, got) = (call(scalar.dot, row, &acts), call(simd.dot, row, &acts));
    let bound = 1e-5 * magnitude(dtype, row, &acts.dequantized());
    prop_assert!((want - got).abs() <= bound, "{}: scalar {want} simd {got} bound {bound}", simd.name);
    // The VNNI kernel, where this CPU has one, sums the same integers in one instruction.
    if let Some(vnni) = dot::vnni_kernel(dtype) {
        prop_assert_eq!(call(vnni.dot, row, &acts).to_bits(), got.to_bits(), "{} vs {}", vnni.name, simd.name);
    }
    // The AVX-512 kernel sums the same exact integers but in 16 float lanes, not 8.
    if let Some(wide) = dot::avx512_kernel(dtype) {
        let wide_got = call(wide.dot, row, &acts);
        prop_assert!((want - wide_got).abs() <= bound, "{}: scalar {want} simd {wide_got} bound {bound}", wide.name);
    }
    Ok(())
}

fn assert_near_exact_dot(dtype: DType, row: &[u8], x: &[f32]) -> Result<(), TestCaseError> {
    let kernel = dot::best_kernel(dtype).unwrap();
    let acts = Acts::for_kernel(&kernel, x);
    let w = dequantize(dtype, row);
    let exact: f64 = w.iter().zip(x).map(|(&w, &x)| w as f64 * x as f64).sum();
    let rounding: f32 = w.iter().zip(acts.rounding_bound(x)).map(|(w, e)| w.abs() * e).sum();
    let bound = rounding + 1e-5 * magnitude(dtype, row, &acts.dequantized());
    let got = call(kernel.dot, row, &acts);
    prop_assert!((got as f64 - exact).abs() <= bound as f64, "{}: got {got} exact {exact} bound {bound}", kernel.name);
    Ok(())
}

/// (dtype, random bytes, scales, activations) for 1..=max_blocks blocks.
fn quant_case(dtype: DType, max_blocks: usize) -> impl Strategy<Value = (Vec<u8>, Vec<f32>)> {
    (1..=max_blocks).prop_flat_map(move |n| {
        let bytes = prop::collection::vec(any::<u8>(), n * dtype.block_bytes());
        let scales = prop::collection::vec(-2.0f32..2.0, 2 * n);
        let x = prop::collection::vec(-4.0f32..4.0, n * dtype.block_elems());
        (bytes, scales, x).prop_map(move |(b, s, x)| (random_blocks(dtype, &b, &s), x))
    })
}

fn float_case(dtype: DType) -> impl Strategy<Value = (Vec<u8>, Vec<f32>)> {
    (1usize..300).prop_flat_map(move |n| {
        let w = prop::collection::vec(-4.0f32..4.0, n);
        let x = prop::collection::vec(-4.0f32..4.0, n);
        (w, x).prop_map(move |(w, x)| (float_row(dtype, &w), x))
    })
}

macro_rules! per_dtype {
    ($($test:ident: $dtype:expr, $case:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $test((row, x) in $case) {
                    assert_scalar_reads_like_quant($dtype, &row)?;
                    assert_simd_matches_scalar($dtype, &row, &x)?;
                    assert_near_exact_dot($dtype, &row, &x)?;
                }
            )*
        }
    };
}

per_dtype! {
    q4_0_dot: DType::Q4_0, quant_case(DType::Q4_0, 12);
    q4_1_dot: DType::Q4_1, quant_case(DType::Q4_1, 12);
    q5_0_dot: DType::Q5_0, quant_case(DType::Q5_0, 12);
    q5_1_dot: DType::Q5_1, quant_case(DType::Q5_1, 12);
    q8_0_dot: DType::Q8_0, quant_case(DType::Q8_0, 12);
    q4_k_dot: DType::Q4_K, quant_case(DType::Q4_K, 4);
    q5_k_dot: DType::Q5_K, quant_case(DType::Q5_K, 4);
    q6_k_dot: DType::Q6_K, quant_case(DType::Q6_K, 4);
    f32_dot: DType::F32, float_case(DType::F32);
    f16_dot: DType::F16, float_case(DType::F16);
    bf16_dot: DType::BF16, float_case(DType::BF16);
}

/// Each token's result of a kernel's [`TileDot`] is within the SIMD bound of the
/// scalar reference on that token, and bit-equal to the kernel's own row dot.
fn assert_tile_matches_scalar(dtype: DType, row: &[u8], xs: &[Vec<f32>]) -> Result<(), TestCaseError> {
    let kernels = [dot::avx2_kernel(dtype), dot::vnni_kernel(dtype), dot::avx512_kernel(dtype)];
    for kernel in kernels.into_iter().flatten() {
        assert_one_tile_matches_scalar(&kernel, dtype, row, xs)?;
    }
    Ok(())
}

fn assert_one_tile_matches_scalar(
    kernel: &Kernel,
    dtype: DType,
    row: &[u8],
    xs: &[Vec<f32>],
) -> Result<(), TestCaseError> {
    let Some(tile) = kernel.tile else { return Ok(()) };
    let scalar = dot::scalar_kernel(dtype).unwrap();
    let acts: Vec<Acts> = xs.iter().map(|x| Acts::for_kernel(kernel, x)).collect();
    let got = match tile {
        TileDot::Q8(f) => f(
            row,
            &std::array::from_fn(|t| match &acts[t] {
                Acts::Q8(a) => &a[..],
                _ => unreachable!("Q8 tile kernel"),
            }),
        ),
        TileDot::Q8K(f) => f(
            row,
            &std::array::from_fn(|t| match &acts[t] {
                Acts::Q8K(a) => &a[..],
                _ => unreachable!("Q8_K tile kernel"),
            }),
        ),
    };
    for (t, a) in acts.iter().enumerate() {
        let want = call(scalar.dot, row, a);
        let bound = 1e-5 * magnitude(dtype, row, &a.dequantized());
        prop_assert!(
            (want - got[t]).abs() <= bound,
            "{} tile token {t}: scalar {want} tile {} bound {bound}",
            kernel.name,
            got[t]
        );
        prop_assert_eq!(got[t].to_bits(), call(kernel.dot, row, a).to_bits(), "{} tile token {}", kernel.name, t);
    }
    Ok(())
}

/// A row of `dtype` and [`TILE`] tokens of activations for it.
fn tile_case(dtype: DType, max_blocks: usize) -> impl Strategy<Value = (Vec<u8>, Vec<Vec<f32>>)> {
    (1..=max_blocks).prop_flat_map(move |n| {
        let bytes = prop::collection::vec(any::<u8>(), n * dtype.block_bytes());
        let scales = prop::collection::vec(-2.0f32..2.0, 2 * n);
        let x = prop::collection::vec(prop::collection::vec(-4.0f32..4.0, n * dtype.block_elems()), TILE);
        (bytes, scales, x).prop_map(move |(b, s, x)| (random_blocks(dtype, &b, &s), x))
    })
}

macro_rules! per_tile_dtype {
    ($($test:ident: $dtype:expr, $blocks:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $test((row, xs) in tile_case($dtype, $blocks)) {
                    assert_tile_matches_scalar($dtype, &row, &xs)?;
                }
            )*
        }
    };
}

per_tile_dtype! {
    q4_0_tile: DType::Q4_0, 12;
    q4_1_tile: DType::Q4_1, 12;
    q5_0_tile: DType::Q5_0, 12;
    q5_1_tile: DType::Q5_1, 12;
    q8_0_tile: DType::Q8_0, 12;
    q4_k_tile: DType::Q4_K, 4;
    q5_k_tile: DType::Q5_K, 4;
    q6_k_tile: DType::Q6_K, 4;
}

/// The repacked path (`Rows8K` / `Rows8Q8`), where this CPU has it: each of eight
/// rows × [`TILE`] tokens is within the SIMD bound of the scalar reference, and
/// the one-token form equals the tile's result for that token bit for bit.
fn assert_rows8_matches_scalar(dtype: DType, rows: &[Vec<u8>], xs: &[Vec<f32>]) -> Result<(), TestCaseError> {
    let Some(kernel) = dot::best_kernel(dtype) else { return Ok(()) };
    let n_blocks = rows[0].len() / dtype.block_bytes();
    let (tiled, singles) = match kernel.rows8 {
        None => return Ok(()),
        Some(Rows8Path::Q8K(k)) => rows8_results(k, rows, xs, n_blocks, quantize_q8k),
        Some(Rows8Path::Q8(k)) => rows8_results(k, rows, xs, n_blocks, quantize_q8),
    };
    let scalar = dot::scalar_kernel(dtype).unwrap();
    for (t, x) in xs.iter().enumerate() {
        let a = Acts::for_kernel(&scalar, x);
        for (r, row) in rows.iter().enumerate() {
            let (want, got) = (call(scalar.dot, row, &a), tiled[t][r]);
            let bound = 1e-5 * magnitude(dtype, row, &a.dequantized());
            prop_assert!(
                (want - got).abs() <= bound,
                "{} rows8 row {r} token {t}: scalar {want} got {got} bound {bound}",
                kernel.name
            );
        }
        prop_assert_eq!(singles[t].map(f32::to_bits), tiled[t].map(f32::to_bits), "{} rows8 token {}", kernel.name, t);
    }
    Ok(())
}

/// Repacks `rows` and runs the tile and, token by token, the one-token form.
fn rows8_results<B: Default + Clone, A: Default + Clone>(
    kernel: Rows8Kernel<B, A>,
    rows: &[Vec<u8>],
    xs: &[Vec<f32>],
    n_blocks: usize,
    quantize: fn(&[f32], &mut [A]),
) -> ([[f32; 8]; TILE], Vec<[f32; 8]>) {
    let mut repacked = vec![B::default(); n_blocks];
    (kernel.repack)(&std::array::from_fn(|r| &rows[r][..]), &mut repacked);
    let acts: Vec<Vec<A>> = xs
        .iter()
        .map(|x| {
            let mut blocks = vec![A::default(); n_blocks];
            quantize(x, &mut blocks);
            blocks
        })
        .collect();
    let tiled = (kernel.tile)(&repacked, &std::array::from_fn(|t| &acts[t][..]));
    (tiled, acts.iter().map(|a| (kernel.single)(&repacked, a)).collect())
}

/// Eight rows of `dtype` and [`TILE`] tokens of activations for them.
fn rows8_case(dtype: DType, max_blocks: usize) -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<Vec<f32>>)> {
    (1..=max_blocks).prop_flat_map(move |n| {
        let bytes = prop::collection::vec(prop::collection::vec(any::<u8>(), n * dtype.block_bytes()), 8);
        let scales = prop::collection::vec(-2.0f32..2.0, 2 * n);
        let x = prop::collection::vec(prop::collection::vec(-4.0f32..4.0, n * dtype.block_elems()), TILE);
        (bytes, scales, x).prop_map(move |(b, s, x)| (b.iter().map(|b| random_blocks(dtype, b, &s)).collect(), x))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn q4_k_rows8((rows, xs) in rows8_case(DType::Q4_K, 4)) {
        assert_rows8_matches_scalar(DType::Q4_K, &rows, &xs)?;
    }

    #[test]
    fn q6_k_rows8((rows, xs) in rows8_case(DType::Q6_K, 4)) {
        assert_rows8_matches_scalar(DType::Q6_K, &rows, &xs)?;
    }

    #[test]
    fn q4_0_rows8((rows, xs) in rows8_case(DType::Q4_0, 12)) {
        assert_rows8_matches_scalar(DType::Q4_0, &rows, &xs)?;
    }

    #[test]
    fn q5_0_rows8((rows, xs) in rows8_case(DType::Q5_0, 12)) {
        assert_rows8_matches_scalar(DType::Q5_0, &rows, &xs)?;
    }

    #[test]
    fn q8_0_rows8((rows, xs) in rows8_case(DType::Q8_0, 12)) {
        assert_rows8_matches_scalar(DType::Q8_0, &rows, &xs)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30, failure_persistence: None, ..ProptestConfig::default() })]
    /// Long prompts take the repacked path (from 24 tokens): any
    /// row count, whole eights or not, gives each token's matvec result within the
    /// SIMD bound.
    #[test]
    fn long_prefill_is_within_bound_of_per_token_matvec(
        dtype in prop::sample::select(vec![DType::Q4_K, DType::Q6_K, DType::Q4_0, DType::Q5_0, DType::Q8_0]),
        rows in 1usize..40,
        blocks in 1usize..3,
        n_tokens in 24usize..34,
        seed in any::<u64>(),
    ) {
        let cols = blocks * dtype.block_elems();
        let bytes = random_matrix(dtype, rows, blocks, seed);
        let w = WeightMatrix::new(dtype, rows, cols, &bytes).unwrap();
        let x: Vec<f32> = (0..n_tokens * cols).map(|i| ((seed.wrapping_add(i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 40) as f32 / (1u64 << 23) as f32) - 1.0).collect();
        let mut batched = vec![f32::NAN; n_tokens * rows];
        matmul(&w, &x, n_tokens, &mut batched);
        let kernel = dot::best_kernel(dtype).unwrap();
        for t in 0..n_tokens {
            let token = &x[t * cols..(t + 1) * cols];
            let mut single = vec![f32::NAN; rows];
            matmul(&w, token, 1, &mut single);
            let acts = Acts::for_kernel(&kernel, token);
            for r in 0..rows {
                let row = &bytes[r * bytes.len() / rows..(r + 1) * bytes.len() / rows];
                let bound = 1e-5 * magnitude(dtype, row, &acts.dequantized());
                let (got, want) = (batched[t * rows + r], single[r]);
                prop_assert!((got - want).abs() <= bound, "{} row {r} token {t}: {got} vs {want} bound {bound}", kernel.name);
            }
        }
    }
}

#[test]
fn the_reference_models_dtypes_have_tile_kernels() {
    if !dot::has_avx2() {
        return;
    }
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
        assert!(dot::best_kernel(dtype).unwrap().tile.is_some(), "{dtype} has no tile kernel");
    }
}

/// A random `rows × cols` matrix of `dtype` (cols a multiple of its block).
fn random_matrix(dtype: DType, rows: usize, blocks_per_row: usize, seed: u64) -> Vec<u8> {
    let mut runner = proptest::test_runner::TestRunner::new_with_rng(
        ProptestConfig::default(),
        proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let n = rows * blocks_per_row;
    let strategy = if FLOAT_TYPES.contains(&dtype) {
        prop::collection::vec(-2.0f32..2.0, n).prop_map(move |w| float_row(dtype, &w)).boxed()
    } else {
        let bytes = prop::collection::vec(any::<u8>(), n * dtype.block_bytes());
        let scales = prop::collection::vec(-0.1f32..0.1, 2 * n);
        (bytes, scales).prop_map(move |(b, s)| random_blocks(dtype, &b, &s)).boxed()
    };
    strategy.new_tree(&mut runner).unwrap().current()
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&seed.to_le_bytes());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn prefill_equals_per_token_matvec(
        which in 0..QUANT_LAYOUTS.len() + DEQUANT_LAYOUTS.len() + FLOAT_TYPES.len(),
        rows in 1usize..70,
        blocks in 1usize..4,
        n_tokens in 2usize..7,
        seed in any::<u64>(),
        x_seed in any::<u64>(),
    ) {
        let all: Vec<DType> = QUANT_LAYOUTS.iter().chain(DEQUANT_LAYOUTS).map(|l| l.dtype).chain(FLOAT_TYPES.iter().copied()).collect();
        let dtype = all[which];
        let cols = blocks * if dtype.block_elems() == 1 { 37 } else { dtype.block_elems() };
        let bytes = random_matrix(dtype, rows, cols / dtype.block_elems(), seed);
        let w = WeightMatrix::new(dtype, rows, cols, &bytes).unwrap();
        let x: Vec<f32> = (0..n_tokens * cols)
            .map(|i| ((x_seed.wrapping_add(i as u64).wrapping_mul(0x9E3779B97F4A7C15) >> 40) as f32 / (1u64 << 23) as f32) - 1.0)
            .collect();
        let mut batched = vec![f32::NAN; n_tokens * rows];
        matmul(&w, &x, n_tokens, &mut batched);
        let kernel = dot::best_kernel(dtype);
        let name = apr_engine::kernels::kernel_name(dtype);
        for t in 0..n_tokens {
            let token = &x[t * cols..(t + 1) * cols];
            let mut single = vec![f32::NAN; rows];
            matmul(&w, token, 1, &mut single);
            prop_assert_eq!(&batched[t * rows..(t + 1) * rows], &single[..], "{} token {}", name, t);
            let Some(kernel) = kernel else { continue };
            let acts = Acts::for_kernel(&kernel, token);
            for (r, &got) in single.iter().enumerate() {
                let row = &bytes[r * bytes.len() / rows..(r + 1) * bytes.len() / rows];
                prop_assert_eq!(got.to_bits(), call(kernel.dot, row, &acts).to_bits());
            }
        }
    }
}

#[test]
fn kernel_names_say_what_runs() {
    let name = apr_engine::kernels::kernel_name(DType::Q4_K);
    let expected = match (dot::has_avx512_vnni(), dot::has_avx2()) {
        (true, _) => "Q4_K×Q8_K avx512-vnni",
        (false, true) => "Q4_K×Q8_K avx2",
        _ => "Q4_K×Q8_K scalar",
    };
    assert_eq!(name, expected);
    let name = apr_engine::kernels::kernel_name(DType::Q8_0);
    let expected = match (dot::has_avx512_vnni(), dot::has_avx_vnni(), dot::has_avx2()) {
        (true, true, _) => "Q8_0×Q8_0 avx-vnni, prefill avx512-vnni",
        (true, false, _) => "Q8_0×Q8_0 avx2, prefill avx512-vnni",
        (false, true, _) => "Q8_0×Q8_0 avx-vnni",
        (false, false, true) => "Q8_0×Q8_0 avx2",
        _ => "Q8_0×Q8_0 scalar",
    };
    assert_eq!(name, expected);
    assert!(apr_engine::kernels::kernel_name(DType::Q3_K).contains("dequant"));
}

/// Every dtype of the reference models, on the first up-to-256 rows of each
/// tensor's first 2-D weight of that dtype, against the exact-dot bound.
#[test]
fn real_model_tensors_meet_the_exact_dot_bound() {
    let mut seen = Vec::new();
    for model in [QWEN_0_5B, QWEN_1_5B, SMOLLM2] {
        let file = ModelFile::open(model.require()).unwrap();
        for view in file.views() {
            let &[rows, cols] = view.shape() else { continue };
            let (dtype, rows, cols) = (view.dtype(), rows as usize, cols as usize);
            if seen.contains(&(model.file, dtype)) || dot::best_kernel(dtype).is_none() {
                continue;
            }
            seen.push((model.file, dtype));
            let rows = rows.min(256);
            let row_bytes = view.bytes.len() / view.shape()[0] as usize;
            let w = WeightMatrix::new(dtype, rows, cols, &view.bytes[..rows * row_bytes]).unwrap();
            let x: Vec<f32> = (0..cols).map(|i| ((i * 7919 % 1009) as f32 / 504.5 - 1.0) * 3.0).collect();
            let mut out = vec![0.0; rows];
            matmul(&w, &x, 1, &mut out);
            let kernel = dot::best_kernel(dtype).unwrap();
            let acts = Acts::for_kernel(&kernel, &x);
            let mut worst = 0.0f64;
            for (r, &got) in out.iter().enumerate() {
                let row = w.row(r);
                let weights = dequantize(dtype, row);
                let exact: f64 = weights.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
                let scale: f64 = weights.iter().zip(&x).map(|(&w, &x)| (w as f64 * x as f64).abs()).sum();
                let rounding: f32 = weights.iter().zip(acts.rounding_bound(&x)).map(|(w, e)| w.abs() * e).sum();
                let bound = rounding + 1e-5 * magnitude(dtype, row, &acts.dequantized());
                assert!(
                    (got as f64 - exact).abs() <= bound as f64,
                    "{} {} row {r}: got {got} exact {exact} bound {bound}",
                    model.file,
                    view.name()
                );
                worst = worst.max((got as f64 - exact).abs() / scale.max(f64::MIN_POSITIVE));
            }
            eprintln!("{} {} ({}): max |err| / Σ|w·x| = {worst:.2e}", model.file, view.name(), kernel.name);
        }
    }
    // (Their F32 tensors are 1-D norms and biases; the F32 kernel is covered above.)
    for dtype in [DType::Q4_1, DType::Q5_0, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
        assert!(seen.iter().any(|&(_, d)| d == dtype), "no {dtype} matrix found in the reference models");
    }
}
