//! The matrix product driver: quantize activations once, then split the weight
//! rows into chunks across rayon's threads. Each chunk loops over every token
//! while its rows are still in cache, so prefill reads each weight once.

use std::cell::RefCell;

use rayon::prelude::*;

use super::dot::{self, RowDot, Rows8K, Rows8Kernel, Rows8Path, Rows8Q8, TileDot, TILE};
use super::layout::{QK, QK_K};
use super::q8_act::{quantize_q8, quantize_q8k, BlockQ8, BlockQ8K};
use crate::backend::WeightMatrix;
use crate::quant;

/// Weight bytes a chunk should keep hot while all tokens pass over it (well inside L2).
const CHUNK_BYTES: usize = 128 * 1024;
/// Chunks per thread, so uneven progress (other work, SMT) still balances.
const CHUNKS_PER_THREAD: usize = 8;

/// `out[t * rows + r] = W[r] · x[t * cols..]` for `n_tokens` tokens.
pub fn matmul(w: &WeightMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    assert_eq!(x.len(), n_tokens * w.cols, "matmul: x has {} values, want {n_tokens} × {}", x.len(), w.cols);
    assert_eq!(out.len(), n_tokens * w.rows, "matmul: out has {} values, want {n_tokens} × {}", out.len(), w.rows);
    if w.rows == 0 || n_tokens == 0 {
        return;
    }
    if w.cols == 0 {
        out.fill(0.0);
        return;
    }
    matmul_many(std::slice::from_ref(w), x, n_tokens, &mut [out]);
}

thread_local! {
    static Q8_SCRATCH: RefCell<Vec<BlockQ8>> = const { RefCell::new(Vec::new()) };
    static Q8K_SCRATCH: RefCell<Vec<BlockQ8K>> = const { RefCell::new(Vec::new()) };
    static ROWS8_K_SCRATCH: RefCell<Vec<Rows8K>> = const { RefCell::new(Vec::new()) };
    static ROWS8_Q8_SCRATCH: RefCell<Vec<Rows8Q8>> = const { RefCell::new(Vec::new()) };
}

/// Tokens from which prefill repacks rows eight at a time: the repack costs
/// about as much as a dozen tokens' worth of the kernel, and saves half of each.
const ROWS8_MIN_TOKENS: usize = 24;

/// Runs `f` on `len` reusable blocks of this thread's scratch (a fresh buffer
/// if the scratch is already borrowed by an enclosing matmul on this thread).
fn with_scratch<B: Default + Clone>(
    key: &'static std::thread::LocalKey<RefCell<Vec<B>>>,
    len: usize,
    f: impl FnOnce(&mut [B]),
) {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.resize(len, B::default());
            f(&mut buf[..len]);
        }
        Err(_) => f(&mut vec![B::default(); len]),
    })
}

fn quantize_tokens<B: Send>(x: &[f32], acts: &mut [B], quantize: fn(&[f32], &mut [B])) {
    // Activations are a tiny fraction of the work; split only when there are many tokens.
    const PAR_MIN_VALUES: usize = 1 << 16;
    if x.len() < PAR_MIN_VALUES {
        quantize(x, acts);
    } else {
        let values_per_block = x.len() / acts.len();
        let blocks_per_task = (PAR_MIN_VALUES / 4 / values_per_block).max(1);
        acts.par_chunks_mut(blocks_per_task)
            .zip(x.par_chunks(blocks_per_task * values_per_block))
            .for_each(|(a, v)| quantize(v, a));
    }
}

/// Rows per chunk: few enough to stay in cache across tokens and to give every
/// thread several chunks, at least one.
fn rows_per_chunk(w: &WeightMatrix) -> usize {
    let by_cache = CHUNK_BYTES / w.row_bytes().max(1);
    let by_balance = w.rows.div_ceil(rayon::current_num_threads() * CHUNKS_PER_THREAD);
    by_cache.min(by_balance).max(1)
}

/// Repacked bytes a prefill chunk keeps in L2 while every token passes over it.
/// The repacked form is about twice the weights' size, and each chunk streams all
/// the tokens' activations once, so chunks are bigger than [`CHUNK_BYTES`].
const ROWS8_CHUNK_BYTES: usize = 512 * 1024;

/// Rows per repacked chunk: whole eights, within [`ROWS8_CHUNK_BYTES`], and
/// several chunks per thread.
fn rows8_per_chunk<B>(w: &WeightMatrix, blocks_per_row: usize) -> usize {
    let group_bytes = blocks_per_row * std::mem::size_of::<B>();
    let by_cache = (ROWS8_CHUNK_BYTES / group_bytes.max(1)).max(1) * 8;
    let by_balance = w.rows.div_ceil(rayon::current_num_threads() * CHUNKS_PER_THREAD).next_multiple_of(8);
    by_cache.min(by_balance)
}

/// The output, shared by chunks that each write a disjoint set of rows.
struct SharedOut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: chunks write disjoint indices (row sets don't overlap), and the
// borrow of `out` outlives the parallel loop.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn write(&self, index: usize, value: f32) {
        assert!(index < self.len);
        // SAFETY: in bounds (checked) and no other chunk writes this index.
        unsafe { *self.ptr.add(index) = value }
    }
}

/// A kernel over [`TILE`] tokens at once.
type TileFn<A> = fn(&[u8], &[&[A]; TILE]) -> [f32; TILE];

/// Runs the row chunks in parallel; within a chunk, tokens go [`TILE`] at a time
/// through `tile` (when the kernel has one) and the rest one at a time through `dot`.
fn run_chunks<A: Sync>(
    w: &WeightMatrix,
    acts: &[A],
    n_tokens: usize,
    out: &mut [f32],
    dot: fn(&[u8], &[A]) -> f32,
    tile: Option<TileFn<A>>,
) {
    let per_token = acts.len() / n_tokens;
    let token = |t: usize| &acts[t * per_token..(t + 1) * per_token];
    let tiled_tokens = if tile.is_some() { n_tokens / TILE * TILE } else { 0 };
    let chunk = rows_per_chunk(w);
    let shared = SharedOut { ptr: out.as_mut_ptr(), len: out.len() };
    (0..w.rows.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let rows = c * chunk..((c + 1) * chunk).min(w.rows);
        if let Some(tile) = tile {
            for t0 in (0..tiled_tokens).step_by(TILE) {
                let group: [&[A]; TILE] = std::array::from_fn(|k| token(t0 + k));
                for r in rows.clone() {
                    for (k, value) in tile(w.row(r), &group).into_iter().enumerate() {
                        shared.write((t0 + k) * w.rows + r, value);
                    }
                }
            }
        }
        for t in tiled_tokens..n_tokens {
            for r in rows.clone() {
                shared.write(t * w.rows + r, dot(w.row(r), token(t)));
            }
        }
    });
}

/// Prefill over rows repacked eight at a time (`dot::rows8`): each chunk repacks
/// its rows into this thread's `scratch` once, then every token runs over them;
/// rows beyond the last whole eight take the row kernel `dot`.
fn run_rows8_chunks<B: Default + Clone, A: Sync>(
    w: &WeightMatrix,
    acts: &[A],
    n_tokens: usize,
    out: &mut [f32],
    dot: fn(&[u8], &[A]) -> f32,
    kernel: Rows8Kernel<B, A>,
    scratch: &'static std::thread::LocalKey<RefCell<Vec<B>>>,
) {
    let blocks_per_row = acts.len() / n_tokens;
    let token = |t: usize| &acts[t * blocks_per_row..(t + 1) * blocks_per_row];
    let tiled_tokens = n_tokens / TILE * TILE;
    let chunk = rows8_per_chunk::<B>(w, blocks_per_row);
    let shared = SharedOut { ptr: out.as_mut_ptr(), len: out.len() };
    (0..w.rows.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let rows = c * chunk..((c + 1) * chunk).min(w.rows);
        let groups = rows.len() / 8;
        with_scratch(scratch, groups * blocks_per_row, |repacked| {
            for (g, blocks) in repacked.chunks_exact_mut(blocks_per_row).enumerate() {
                let first = rows.start + 8 * g;
                (kernel.repack)(&std::array::from_fn(|r| w.row(first + r)), blocks);
            }
            let write = |t: usize, g: usize, values: [f32; 8]| {
                for (r, value) in values.into_iter().enumerate() {
                    shared.write(t * w.rows + rows.start + 8 * g + r, value);
                }
            };
            for t0 in (0..tiled_tokens).step_by(TILE) {
                let group: [&[A]; TILE] = std::array::from_fn(|k| token(t0 + k));
                for (g, blocks) in repacked.chunks_exact(blocks_per_row).enumerate() {
                    for (k, values) in (kernel.tile)(blocks, &group).into_iter().enumerate() {
                        write(t0 + k, g, values);
                    }
                }
            }
            for t in tiled_tokens..n_tokens {
                for (g, blocks) in repacked.chunks_exact(blocks_per_row).enumerate() {
                    write(t, g, (kernel.single)(blocks, token(t)));
                }
            }
        });
        for r in rows.start + 8 * groups..rows.end {
            for t in 0..n_tokens {
                shared.write(t * w.rows + r, dot(w.row(r), token(t)));
            }
        }
    });
}

/// The slower path for dtypes without a direct kernel: dequantize each row once
/// into a per-thread buffer, then dot it with every token.
fn dequantizing_matmul(w: &WeightMatrix, x: &[f32], out: &mut [f32]) {
    let chunk = rows_per_chunk(w);
    let shared = SharedOut { ptr: out.as_mut_ptr(), len: out.len() };
    (0..w.rows.div_ceil(chunk)).into_par_iter().for_each_init(
        || vec![0.0f32; w.cols],
        |row_buf, c| {
            for r in c * chunk..((c + 1) * chunk).min(w.rows) {
                quant::dequantize(w.dtype, w.row(r), row_buf).expect("row size checked in WeightMatrix::new");
                for (t, token) in x.chunks_exact(w.cols).enumerate() {
                    shared.write(t * w.rows + r, dot::f32_dot(row_buf, token));
                }
            }
        },
    );
}

/// Several matrices over the same input (q/k/v, gate/up): `outs[i] = ws[i] · x`,
/// each equal bit for bit to [`matmul`] of that matrix. The activations are
/// quantized once per format the kernels read, and the matrices' row chunks share
/// one parallel region (no barrier between matrices). Dtypes may differ.
pub fn matmul_many(ws: &[WeightMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
    assert_eq!(ws.len(), outs.len(), "matmul_many: {} matrices, {} outputs", ws.len(), outs.len());
    let Some(cols) = ws.first().map(|w| w.cols) else { return };
    let simple = n_tokens > 0 && cols > 0 && ws.iter().all(|w| w.cols == cols && w.rows > 0);
    if !simple {
        // Degenerate or mismatched shapes: `matmul` handles (and reports) each.
        return ws.iter().zip(outs.iter_mut()).for_each(|(w, out)| matmul(w, x, n_tokens, out));
    }
    assert_eq!(x.len(), n_tokens * cols, "matmul_many: x has {} values, want {n_tokens} × {cols}", x.len());
    let reads =
        |format: fn(&RowDot) -> bool| ws.iter().any(|w| dot::best_kernel(w.dtype).is_some_and(|k| format(&k.dot)));
    let q8_len = if reads(|d| matches!(d, RowDot::Q8(_))) { n_tokens * cols / QK } else { 0 };
    let q8k_len = if reads(|d| matches!(d, RowDot::Q8K(_))) { n_tokens * cols / QK_K } else { 0 };
    with_scratch(&Q8_SCRATCH, q8_len, |q8| {
        with_scratch(&Q8K_SCRATCH, q8k_len, |q8k| {
            if q8_len > 0 {
                quantize_tokens(x, q8, quantize_q8);
            }
            if q8k_len > 0 {
                quantize_tokens(x, q8k, quantize_q8k);
            }
            let (q8, q8k) = (&*q8, &*q8k);
            ws.par_iter().zip(outs.par_iter_mut()).for_each(|(w, out)| {
                assert_eq!(out.len(), n_tokens * w.rows, "matmul_many: output of {} values", out.len());
                run_matrix(w, x, q8, q8k, n_tokens, out);
            });
        })
    });
}

/// One matrix over activations already quantized to the formats its kernel
/// reads: the repacked path for long prompts where the kernel has one, else
/// row chunks with the tile and row kernels, else dequantized rows.
fn run_matrix(w: &WeightMatrix, x: &[f32], q8: &[BlockQ8], q8k: &[BlockQ8K], n_tokens: usize, out: &mut [f32]) {
    let Some(kernel) = dot::best_kernel(w.dtype) else {
        return dequantizing_matmul(w, x, out);
    };
    let rows8 = kernel.rows8.filter(|_| n_tokens >= ROWS8_MIN_TOKENS);
    match (kernel.dot, rows8) {
        (RowDot::Q8(f), Some(Rows8Path::Q8(r))) => run_rows8_chunks(w, q8, n_tokens, out, f, r, &ROWS8_Q8_SCRATCH),
        (RowDot::Q8K(f), Some(Rows8Path::Q8K(r))) => run_rows8_chunks(w, q8k, n_tokens, out, f, r, &ROWS8_K_SCRATCH),
        (RowDot::Q8(f), _) => run_chunks(w, q8, n_tokens, out, f, q8_tile(kernel.tile)),
        (RowDot::Q8K(f), _) => run_chunks(w, q8k, n_tokens, out, f, q8k_tile(kernel.tile)),
        (RowDot::Float(f), _) => run_chunks(w, x, n_tokens, out, f, None),
    }
}

fn q8_tile(tile: Option<TileDot>) -> Option<TileFn<BlockQ8>> {
    match tile {
        Some(TileDot::Q8(t)) => Some(t),
        _ => None,
    }
}

fn q8k_tile(tile: Option<TileDot>) -> Option<TileFn<BlockQ8K>> {
    match tile {
        Some(TileDot::Q8K(t)) => Some(t),
        _ => None,
    }
}
