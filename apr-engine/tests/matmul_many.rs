//! `matmul_many` (one activation quantization and one parallel region for
//! several matrices over the same input) equals one `matmul` per matrix bit
//! for bit: on the projections of the real models (q/k/v mixing Q4_K with
//! Q6_K or Q5_0 with Q8_0, gate/up) and on a synthetic mix that takes every
//! kernel family at once (Q8 blocks, Q8_K blocks, float, dequantize-a-row).

use apr_engine::backend::WeightMatrix;
use apr_engine::kernels::{matmul, matmul_many};
use apr_engine::testing::models::{QWEN_0_5B, QWEN_1_5B, SMOLLM2};
use apr_engine::{quant, DType, ModelFile};

fn input(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| (((i + seed) * 7919 % 1009) as f32 / 504.5 - 1.0) * 2.5).collect()
}

/// Runs `matmul_many` and one `matmul` per matrix; asserts equal bits.
fn assert_same(ws: &[WeightMatrix], n_tokens: usize, what: &str) {
    let x = input(n_tokens * ws[0].cols, n_tokens);
    let mut fused: Vec<Vec<f32>> = ws.iter().map(|w| vec![f32::NAN; n_tokens * w.rows]).collect();
    let mut outs: Vec<&mut [f32]> = fused.iter_mut().map(|v| v.as_mut_slice()).collect();
    matmul_many(ws, &x, n_tokens, &mut outs);
    for (w, got) in ws.iter().zip(&fused) {
        let mut want = vec![f32::NAN; n_tokens * w.rows];
        matmul(w, &x, n_tokens, &mut want);
        let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{what}: {} [{}, {}] over {n_tokens} tokens differs", w.dtype, w.rows, w.cols);
    }
}

fn matrix<'a>(file: &'a ModelFile, name: &str) -> WeightMatrix<'a> {
    let view = file.views().find(|v| v.name() == name).unwrap_or_else(|| panic!("no tensor {name}"));
    let &[rows, cols] = view.shape() else { panic!("{name} is not 2-D") };
    WeightMatrix::new(view.dtype(), rows as usize, cols as usize, view.bytes).unwrap()
}

#[test]
fn real_projections_equal_separate_matmuls() {
    let mut dtypes = Vec::new();
    for model in [QWEN_0_5B, QWEN_1_5B, SMOLLM2] {
        let file = ModelFile::open(model.require()).unwrap();
        for layer in [0, 1] {
            let name = |t: &str| format!("blk.{layer}.{t}.weight");
            let qkv = [matrix(&file, &name("attn_q")), matrix(&file, &name("attn_k")), matrix(&file, &name("attn_v"))];
            let gate_up = [matrix(&file, &name("ffn_gate")), matrix(&file, &name("ffn_up"))];
            dtypes.extend(qkv.iter().chain(&gate_up).map(|w| w.dtype));
            // 1 token (decode), 8 (one whole tile) and 11 (a tile and a remainder).
            for n_tokens in [1, 8, 11] {
                assert_same(&qkv, n_tokens, &format!("{} layer {layer} q/k/v", model.file));
                assert_same(&gate_up, n_tokens, &format!("{} layer {layer} gate/up", model.file));
            }
        }
    }
    // The mixes this test is for: Q4_K with Q6_K (1.5B) and Q5_0 with Q8_0 (0.5B).
    for dtype in [DType::Q4_K, DType::Q6_K, DType::Q5_0, DType::Q8_0, DType::Q4_1] {
        assert!(dtypes.contains(&dtype), "no {dtype} projection among {dtypes:?}");
    }
}

#[test]
fn every_kernel_family_in_one_call() {
    let (rows, cols) = (37, 512);
    let dtypes = [DType::Q4_K, DType::Q8_0, DType::Q6_K, DType::Q3_K, DType::F16, DType::Q4_1, DType::F32];
    let bytes: Vec<Vec<u8>> = dtypes
        .iter()
        .enumerate()
        .map(|(i, &dtype)| quant::quantize(dtype, &input(rows * cols, 31 * i)).unwrap())
        .collect();
    let ws: Vec<WeightMatrix> =
        dtypes.iter().zip(&bytes).map(|(&dtype, b)| WeightMatrix::new(dtype, rows, cols, b).unwrap()).collect();
    for n_tokens in [1, 3, 8, 17] {
        assert_same(&ws, n_tokens, "mixed dtypes");
    }
    assert_same(&ws[..1], 2, "a single matrix");
}
