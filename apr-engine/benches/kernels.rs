//! Matrix-vector and prefill (tile kernel) throughput per weight dtype at Qwen2.5-1.5B
//! sizes, reported as GB/s of weight bytes read. Threads: rayon's global pool
//! (set RAYON_NUM_THREADS=2 to compare with llama.cpp's `-t 2`).

use apr_engine::backend::WeightMatrix;
use apr_engine::kernels::{kernel_name, matmul};
use apr_engine::DType;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const DTYPES: &[DType] = &[
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::F16,
    DType::BF16,
    DType::F32,
];

/// (rows, cols): attention projection, FFN gate/up, FFN down.
const SHAPES: &[(usize, usize)] = &[(1536, 1536), (8960, 1536), (1536, 8960)];

/// Deterministic pseudo-random bytes with small finite f16 values at every even
/// offset, so each dtype's scale fields hold ordinary numbers.
fn weights(len: usize) -> Vec<u8> {
    let mut state = 0x2545F4914F6CDD1Du64;
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = (state >> 24) as u8;
            // 0x1?: an f16 high byte of magnitude ~1e-4..1e-3, sign and mantissa random.
            if i % 2 == 1 {
                (byte & 0x83) | 0x14
            } else {
                byte
            }
        })
        .collect()
}

fn matvec(c: &mut Criterion) {
    for &(rows, cols) in SHAPES {
        let mut group = c.benchmark_group(format!("matvec_{rows}x{cols}"));
        for &dtype in DTYPES {
            let len = dtype.byte_size(&[rows as u64, cols as u64]).unwrap() as usize;
            let bytes = weights(len);
            let w = WeightMatrix::new(dtype, rows, cols, &bytes).unwrap();
            let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
            let mut out = vec![0.0f32; rows];
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_function(BenchmarkId::new(kernel_name(dtype), ""), |b| b.iter(|| matmul(&w, &x, 1, &mut out)));
        }
        group.finish();
    }
}

fn prefill(c: &mut Criterion) {
    const TOKENS: usize = 32;
    let (rows, cols) = (8960, 1536);
    let mut group = c.benchmark_group(format!("prefill{TOKENS}_{rows}x{cols}"));
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q6_K] {
        let len = dtype.byte_size(&[rows as u64, cols as u64]).unwrap() as usize;
        let bytes = weights(len);
        let w = WeightMatrix::new(dtype, rows, cols, &bytes).unwrap();
        let x: Vec<f32> = (0..TOKENS * cols).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
        let mut out = vec![0.0f32; TOKENS * rows];
        // Weight bytes per token, so the figure compares with the matvec groups.
        group.throughput(Throughput::Bytes((len * TOKENS) as u64));
        group.bench_function(BenchmarkId::new(kernel_name(dtype), ""), |b| b.iter(|| matmul(&w, &x, TOKENS, &mut out)));
    }
    group.finish();
}

/// The same Q4_K 1536×8960 matvec cycling through copies that together exceed the
/// last-level cache, so weights stream from DRAM as in decoding a real model.
fn matvec_from_memory(c: &mut Criterion) {
    const COPIES: usize = 64; // 64 × 7.7 MB ≈ 495 MB, about twice this machine's L3
    let (rows, cols, dtype) = (1536, 8960, DType::Q4_K);
    let len = dtype.byte_size(&[rows as u64, cols as u64]).unwrap() as usize;
    let one = weights(len);
    let all: Vec<u8> = (0..COPIES).flat_map(|_| one.iter().copied()).collect();
    let matrices: Vec<WeightMatrix> =
        all.chunks_exact(len).map(|b| WeightMatrix::new(dtype, rows, cols, b).unwrap()).collect();
    let x: Vec<f32> = (0..cols).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
    let mut out = vec![0.0f32; rows];
    let mut group = c.benchmark_group(format!("matvec_dram_{rows}x{cols}"));
    group.throughput(Throughput::Bytes(len as u64));
    let mut next = 0;
    group.bench_function(BenchmarkId::new(kernel_name(dtype), ""), |b| {
        b.iter(|| {
            next = (next + 1) % COPIES;
            matmul(&matrices[next], &x, 1, &mut out)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = matvec, prefill, matvec_from_memory
}
criterion_main!(benches);
