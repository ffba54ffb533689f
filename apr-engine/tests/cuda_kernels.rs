//! The CUDA backend's kernels against the CPU backends on made-up data: every
//! weight dtype it reads, odd row counts, one and many tokens (both matrix
//! kernels), the embedding lookup, and the element-wise, norm, RoPE and
//! attention operations. Where CUDA cannot run here, creating the backend is
//! an error that says why, and that is what these tests check instead.

use apr_engine::backend::cpu::Cpu;
use apr_engine::backend::cuda::{self, Cuda};
use apr_engine::backend::reference::CpuReference;
use apr_engine::backend::{AttentionShape, Backend, BackendKind, HostMatrix, RopeStyle, SeqSpan};
use apr_engine::diff::stats::compare;
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

fn nmse(reference: &[f32], candidate: &[f32]) -> f64 {
    assert_eq!(reference.len(), candidate.len());
    compare(reference, candidate).nmse
}

#[test]
fn every_dtype_multiplies_as_the_exact_backend_for_one_and_many_tokens() {
    let Some(gpu) = cuda_or_reason() else { return };
    let (rows, cols) = (67, 512);
    for dtype in cuda::supported_dtypes() {
        let bytes = quant::quantize(dtype, &values(dtype as u64, rows * cols)).unwrap();
        let matrix = HostMatrix::from_bytes("w", dtype, rows, cols, bytes).unwrap();
        for n in [1, 5, 40] {
            let x = values(100 + n as u64, n * cols);
            let mut want = vec![0.0; n * rows];
            CpuReference.matmul(&[&matrix], &x, n, &mut [&mut want]).unwrap();
            let w = gpu.prepare(&matrix).unwrap();
            let gx = gpu.upload(&x).unwrap();
            let mut out = gpu.alloc(n * rows).unwrap();
            gpu.matmul(&[&w], &gx, n, &mut [&mut out]).unwrap();
            let got = gpu.read(&out, n * rows).unwrap();
            // f32 sums against f64 sums over the same dequantized weights.
            assert!(nmse(&want, &got) < 1e-10, "{dtype} n={n}: NMSE {}", nmse(&want, &got));
        }
        // The embedding lookup dequantizes the same rows.
        let tokens = [0u32, 66, 7];
        let mut want = vec![0.0; tokens.len() * cols];
        Cpu.embed(&matrix, &tokens, &mut want).unwrap();
        let w = gpu.prepare(&matrix).unwrap();
        let mut out = gpu.alloc(tokens.len() * cols).unwrap();
        gpu.embed(&w, &tokens, &mut out).unwrap();
        // Equal up to the GPU fusing `d * q + m` into one rounding.
        assert!(nmse(&want, &gpu.read(&out, want.len()).unwrap()) < 1e-13, "{dtype} embedding");
        assert!(gpu.embed(&w, &[67], &mut out).is_err(), "an id outside the table is an error");
    }
}

#[test]
fn norms_rope_attention_and_elementwise_ops_match_the_cpu() {
    let Some(gpu) = cuda_or_reason() else { return };
    let (heads, kv_heads, head_dim, n) = (4, 2, 64, 9);
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
    let spans =
        [SeqSpan { first_row: 0, n_tokens: 4, start_pos: 10 }, SeqSpan { first_row: 4, n_tokens: 5, start_pos: 0 }];
    for style in [RopeStyle::Halves, RopeStyle::Interleaved] {
        let (mut want, mut got) = (x.clone(), gpu.upload(&x).unwrap());
        Cpu.rope(&mut want, &spans, heads, head_dim, 10000.0, style).unwrap();
        gpu.rope(&mut got, &spans, heads, head_dim, 10000.0, style).unwrap();
        assert!(nmse(&want, &gpu.read(&got, n * width).unwrap()) < 1e-10, "rope {style:?}");
    }

    // Attention of 3 new queries at positions 6..9 over 9 cached positions.
    let kv_width = kv_heads * head_dim;
    let (keys, vals) = (values(3, 9 * kv_width), values(4, 9 * kv_width));
    let shape = AttentionShape { n_tokens: 3, start_pos: 6, heads, kv_heads, head_dim };
    let mut want = vec![0.0; n * width];
    Cpu.attention(&x, &keys, &vals, shape, 2, &mut want).unwrap();
    let (gk, gv) = (gpu.upload(&keys).unwrap(), gpu.upload(&vals).unwrap());
    let mut got = gpu.upload(&vec![0.0; n * width]).unwrap();
    gpu.attention(&gx, &gk, &gv, shape, 2, &mut got).unwrap();
    let rows = 2 * width..5 * width;
    assert!(nmse(&want[rows.clone()], &gpu.read(&got, n * width).unwrap()[rows]) < 1e-10, "attention");

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
