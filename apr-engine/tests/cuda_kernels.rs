//! The CUDA backend's kernels against the CPU backends on made-up data: every
//! weight dtype it reads, odd row counts, one and many tokens (both matrix
//! kernels), the embedding lookup, and the element-wise, norm, RoPE and
//! attention operations. Where CUDA cannot run here, creating the backend is
//! an error that says why, and that is what these tests check instead.

use apr_engine::backend::cpu::Cpu;
use apr_engine::backend::cuda::{self, Cuda};
use apr_engine::backend::reference::CpuReference;
use apr_engine::backend::{AttentionShape, Backend, BackendKind, HostMatrix, RopeStyle};
use apr_engine::diff::stats::compare;
use apr_engine::dtype::DType;
use apr_engine::quant;
use apr_engine::testing::pseudo_random_bytes;

/// The CUDA backend, or `None` after checking that its absence is reported.
fn cuda_or_reason() -> Option<Cuda> {
    match BackendKind::Cuda.unavailable() {
        Some(why) => {
            let err = Cuda::new().err().expect("CUDA unavailable, yet it started").to_string();
            assert!(err.contains("backend cuda") && err.contains(&why), "{err}");
            eprintln!("CUDA is not available here ({why}): checked that asking for it says so");
            None
        }
        None => Some(Cuda::new().expect("CUDA is available")),
    }
}

/// `len` values in about [-1, 1), deterministic for `seed`.
fn values(seed: u64, len: usize) -> Vec<f32> {
    pseudo_random_bytes(seed, 2 * len)
        .chunks_exact(2)
        .map(|b| (u16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0) - 1.0)
        .collect()
}

fn indices(gpu: &Cuda, values: &[u32]) -> <Cuda as Backend>::Indices {
    let mut buffer = gpu.alloc_indices(values.len()).unwrap();
    gpu.write_indices(&mut buffer, values).unwrap();
    buffer
}

fn nmse(reference: &[f32], candidate: &[f32]) -> f64 {
    assert_eq!(reference.len(), candidate.len());
    compare(reference, candidate).nmse
}

/// A `rows × cols` matrix of `dtype` with made-up values.
fn matrix(dtype: DType, rows: usize, cols: usize, seed: u64) -> HostMatrix {
    let bytes = quant::quantize(dtype, &values(seed, rows * cols)).unwrap();
    HostMatrix::from_bytes("w", dtype, rows, cols, bytes).unwrap()
}

/// NMSE of the GPU's product against the exact backend's for `n` tokens.
fn matmul_nmse(gpu: &Cuda, matrix: &HostMatrix, n: usize) -> f64 {
    let (rows, cols) = (matrix.view().rows, matrix.view().cols);
    let x = values(100 + n as u64, n * cols);
    let mut want = vec![0.0; n * rows];
    CpuReference.matmul(&[matrix], &x, n, &mut [&mut want]).unwrap();
    let w = gpu.prepare(matrix).unwrap();
    let gx = gpu.upload(&x).unwrap();
    let mut out = gpu.alloc(n * rows).unwrap();
    gpu.matmul(&[&w], &gx, n, &mut [&mut out]).unwrap();
    nmse(&want, &gpu.read(&out, n * rows).unwrap())
}

#[test]
fn every_dtype_multiplies_as_the_exact_backend_for_one_and_many_tokens() {
    let Some(gpu) = cuda_or_reason() else { return };
    let tiled = Cuda::new().unwrap().without_tensor_cores();
    let (rows, cols) = (67, 512);
    for dtype in cuda::supported_dtypes() {
        let matrix = matrix(dtype, rows, cols, dtype as u64);
        // Decode products (1 and 5 tokens) quantize the input to 8 bit for
        // quantized weights: the bound of llama.cpp's test-backend-ops for
        // MUL_MAT (max NMSE 5e-4) there; f32 sums against f64 sums over the
        // same weights otherwise, and for 64×64 tiles (40 tokens, tensor cores off).
        let decode_bound = if [DType::F32, DType::F16, DType::BF16].contains(&dtype) { 1e-10 } else { 5e-4 };
        for (backend, n, bound) in [(&gpu, 1, decode_bound), (&gpu, 5, decode_bound), (&tiled, 40, 1e-10)] {
            let error = matmul_nmse(backend, &matrix, n);
            assert!(error < bound, "{dtype} n={n}: NMSE {error} (bound {bound})");
            eprintln!("{dtype} n={n}: NMSE {error:.2e}");
        }
        // Tensor cores round weights and inputs to bf16 (8-bit mantissa: a
        // relative error of at most 2^-9 each, an NMSE near 3e-6 on such data).
        let error = matmul_nmse(&gpu, &matrix, 40);
        assert!(error < 2e-5, "{dtype} n=40 on tensor cores: NMSE {error}");
        // The embedding lookup dequantizes the same rows.
        let tokens = vec![0u32, 66, 7];
        let mut want = vec![0.0; tokens.len() * cols];
        Cpu.embed(&matrix, &tokens, 3, &mut want).unwrap();
        let w = gpu.prepare(&matrix).unwrap();
        let mut out = gpu.alloc(tokens.len() * cols).unwrap();
        gpu.embed(&w, &indices(&gpu, &tokens), 3, &mut out).unwrap();
        // Equal up to the GPU fusing `d * q + m` into one rounding.
        assert!(nmse(&want, &gpu.read(&out, want.len()).unwrap()) < 1e-13, "{dtype} embedding");
    }
}

#[test]
fn fused_products_equal_the_plain_ones_bit_for_bit() {
    let Some(gpu) = cuda_or_reason() else { return };
    let cols = 256;
    // q/k/v of a Q4_K_M file: dtypes and row counts differ, one input.
    let host = [matrix(DType::Q4_K, 40, cols, 1), matrix(DType::Q6_K, 8, cols, 2), matrix(DType::Q8_0, 8, cols, 3)];
    let ws: Vec<_> = host.iter().map(|m| gpu.prepare(m).unwrap()).collect();
    let widths = [40, 8, 8];
    let biases: Vec<_> = widths.iter().map(|&w| gpu.upload(&values(w as u64, w)).unwrap()).collect();
    for n in [1, 3] {
        let x = gpu.upload(&values(7, n * cols)).unwrap();
        let read_all = |outs: &[<Cuda as Backend>::Buffer]| -> Vec<Vec<f32>> {
            outs.iter().zip(widths).map(|(o, w)| gpu.read(o, n * w).unwrap().into_owned()).collect()
        };
        let mut plain: Vec<_> = widths.iter().map(|&w| gpu.alloc(n * w).unwrap()).collect();
        let mut fused: Vec<_> = widths.iter().map(|&w| gpu.alloc(n * w).unwrap()).collect();
        let refs: Vec<_> = ws.iter().collect();
        gpu.matmul(&refs, &x, n, &mut plain.iter_mut().collect::<Vec<_>>()).unwrap();
        for ((out, bias), w) in plain.iter_mut().zip(&biases).zip(widths) {
            gpu.add_bias(out, bias, w, n).unwrap();
        }
        let bias_refs: Vec<_> = biases.iter().map(Some).collect();
        gpu.matmul_bias(&refs, &bias_refs, &widths, &x, n, &mut fused.iter_mut().collect::<Vec<_>>()).unwrap();
        assert_eq!(read_all(&plain), read_all(&fused), "q/k/v with biases, {n} tokens");

        // A residual sum, and a gated FFN (gate and up of 40 rows).
        let base = values(9, n * 40);
        let (mut plain, mut fused) = (gpu.upload(&base).unwrap(), gpu.upload(&base).unwrap());
        let mut scratch = gpu.alloc(n * 40).unwrap();
        gpu.matmul(&[&ws[0]], &x, n, &mut [&mut scratch]).unwrap();
        gpu.add(&mut plain, &scratch, n * 40).unwrap();
        gpu.matmul_add(&ws[0], &x, n, 40, &mut scratch, &mut fused).unwrap();
        assert_eq!(gpu.read(&plain, n * 40).unwrap(), gpu.read(&fused, n * 40).unwrap(), "residual, {n} tokens");
        let up = gpu.prepare(&matrix(DType::Q4_K, 40, cols, 4)).unwrap();
        let (mut gate, mut up_out) = (gpu.alloc(n * 40).unwrap(), gpu.alloc(n * 40).unwrap());
        gpu.matmul(&[&ws[0], &up], &x, n, &mut [&mut gate, &mut up_out]).unwrap();
        gpu.silu_mul(&mut gate, &up_out, n * 40).unwrap();
        let mut fused_gate = gpu.alloc(n * 40).unwrap();
        gpu.matmul_silu_gate(&ws[0], &up, &x, n, 40, &mut fused_gate, &mut up_out).unwrap();
        assert_eq!(gpu.read(&gate, n * 40).unwrap(), gpu.read(&fused_gate, n * 40).unwrap(), "silu gate, {n} tokens");

        // A norm quantizes its output for the product that follows it; the
        // product then equals one that quantizes the input itself.
        let (weight, mut normed) = (gpu.upload(&values(11, cols)).unwrap(), gpu.alloc(n * cols).unwrap());
        gpu.rms_norm(&x, &weight, cols, 1e-6, n, &mut normed).unwrap();
        let (mut after_norm, mut alone) = (gpu.alloc(n * 40).unwrap(), gpu.alloc(n * 40).unwrap());
        gpu.matmul(&[&ws[0]], &normed, n, &mut [&mut after_norm]).unwrap();
        gpu.matmul(&[&ws[0]], &normed, n, &mut [&mut alone]).unwrap();
        assert_eq!(gpu.read(&after_norm, n * 40).unwrap(), gpu.read(&alone, n * 40).unwrap(), "norm, {n} tokens");
    }
}

#[test]
fn norms_rope_and_kv_store_match_the_cpu() {
    let Some(gpu) = cuda_or_reason() else { return };
    let (heads, head_dim, n) = (4, 64, 9);
    let width = heads * head_dim;
    let x = values(1, n * width);
    let weight = values(2, width);
    let (gx, gw) = (gpu.upload(&x).unwrap(), gpu.upload(&weight).unwrap());

    let mut want = vec![0.0; n * width];
    Cpu.rms_norm(&x, &weight, width, 1e-6, n, &mut want).unwrap();
    let mut out = gpu.alloc(n * width).unwrap();
    gpu.rms_norm(&gx, &gw, width, 1e-6, n, &mut out).unwrap();
    assert!(nmse(&want, &gpu.read(&out, n * width).unwrap()) < 1e-12, "rms_norm");

    // Two sequences in one batch: rows 0..4 at positions 10.., rows 4..9 at 0...
    let positions: Vec<u32> = vec![10, 11, 12, 13, 0, 1, 2, 3, 4];
    let gpu_positions = indices(&gpu, &positions);
    for style in [RopeStyle::Halves, RopeStyle::Interleaved] {
        let (mut want, mut got) = (x.clone(), gpu.upload(&x).unwrap());
        Cpu.rope(&mut want, &positions, n, heads, head_dim, 10000.0, style).unwrap();
        gpu.rope(&mut got, &gpu_positions, n, heads, head_dim, 10000.0, style).unwrap();
        assert!(nmse(&want, &gpu.read(&got, n * width).unwrap()) < 1e-10, "rope {style:?}");
    }

    // Queries and keys (half as many heads) rotated in one pass.
    let (k, kv_width) = (values(6, n * width / 2), width / 2);
    let (mut want_q, mut want_k) = (x.clone(), k.clone());
    Cpu.rope_pair(&mut want_q, &mut want_k, &positions, n, (heads, heads / 2, head_dim), 1e6, RopeStyle::Halves)
        .unwrap();
    let (mut got_q, mut got_k) = (gpu.upload(&x).unwrap(), gpu.upload(&k).unwrap());
    let shape = (heads, heads / 2, head_dim);
    gpu.rope_pair(&mut got_q, &mut got_k, &gpu_positions, n, shape, 1e6, RopeStyle::Halves).unwrap();
    assert!(nmse(&want_q, &gpu.read(&got_q, n * width).unwrap()) < 1e-10, "rope_pair queries");
    assert!(nmse(&want_k, &gpu.read(&got_k, n * kv_width).unwrap()) < 1e-10, "rope_pair keys");

    // Rows 1..4 into a cache at their positions 11..14; keys and values in one pass.
    let mut want = vec![0.0; 16 * width];
    Cpu.kv_store(&mut want, &positions, &x, 1, 3, width).unwrap();
    let mut got = gpu.alloc(16 * width).unwrap();
    gpu.kv_store(&mut got, &gpu_positions, &gx, 1, 3, width).unwrap();
    assert_eq!(want, gpu.read(&got, 16 * width).unwrap().as_ref(), "kv_store");
    let (mut keys, mut vals) = (gpu.alloc(16 * width).unwrap(), gpu.alloc(16 * width).unwrap());
    let gy = gpu.upload(&values(8, n * width)).unwrap();
    gpu.kv_store_pair((&mut keys, &mut vals), &gpu_positions, (&gx, &gy), 1, 3, width).unwrap();
    let mut want_values = vec![0.0; 16 * width];
    Cpu.kv_store(&mut want_values, &positions, &values(8, n * width), 1, 3, width).unwrap();
    assert_eq!(want, gpu.read(&keys, 16 * width).unwrap().as_ref(), "kv_store_pair keys");
    assert_eq!(want_values, gpu.read(&vals, 16 * width).unwrap().as_ref(), "kv_store_pair values");
}

/// Attention of `n` queries, rows 2.. of the batch at positions `start..start + n`,
/// over a cache of `capacity` positions, on the GPU and the CPU.
fn attention_nmse(gpu: &Cuda, n: usize, start: usize, capacity: usize) -> f64 {
    let (heads, kv_heads, head_dim) = (4, 2, 64);
    let (width, kv_width) = (heads * head_dim, kv_heads * head_dim);
    let rows = n + 2;
    let x = values(1, rows * width);
    let (keys, vals) = (values(3, capacity * kv_width), values(4, capacity * kv_width));
    let mut positions = vec![0u32; rows];
    (0..n).for_each(|t| positions[2 + t] = (start + t) as u32);
    let shape = AttentionShape { n_tokens: n, start_pos: start, heads, kv_heads, head_dim };
    let mut want = vec![0.0; rows * width];
    Cpu.attention(&x, &keys, &vals, &positions, shape, 2, &mut want).unwrap();
    let (gx, gk, gv) = (gpu.upload(&x).unwrap(), gpu.upload(&keys).unwrap(), gpu.upload(&vals).unwrap());
    let mut got = gpu.alloc(rows * width).unwrap();
    gpu.attention(&gx, &gk, &gv, &indices(gpu, &positions), shape, 2, &mut got).unwrap();
    let span = 2 * width..rows * width;
    nmse(&want[span.clone()], &gpu.read(&got, rows * width).unwrap()[span])
}

#[test]
fn attention_matches_the_cpu_for_prompts_and_split_decode_steps_past_12k_positions() {
    let Some(gpu) = cuda_or_reason() else { return };
    // A prompt's queries (one block per query and head), then single queries
    // whose positions are split over blocks and merged: short, past a tile, past 12k.
    for (n, start, capacity) in [(3, 6, 9), (40, 200, 300), (1, 0, 4096), (1, 300, 4096), (1, 20_000, 20_001)] {
        let error = attention_nmse(&gpu, n, start, capacity);
        assert!(error < 1e-10, "{n} queries from position {start} (capacity {capacity}): NMSE {error}");
    }
}

#[test]
fn elementwise_ops_match_the_cpu() {
    let Some(gpu) = cuda_or_reason() else { return };
    let (n, width) = (9, 256);
    let x = values(1, n * width);
    let y = values(5, n * width);
    let gy = gpu.upload(&y).unwrap();
    for op in ["silu_mul", "add"] {
        let (mut want, mut got) = (x.clone(), gpu.upload(&x).unwrap());
        if op == "add" {
            Cpu.add(&mut want, &y, n * width).unwrap();
            gpu.add(&mut got, &gy, n * width).unwrap();
        } else {
            Cpu.silu_mul(&mut want, &y, n * width).unwrap();
            gpu.silu_mul(&mut got, &gy, n * width).unwrap();
        }
        assert!(nmse(&want, &gpu.read(&got, n * width).unwrap()) < 1e-12, "{op}");
    }
}
