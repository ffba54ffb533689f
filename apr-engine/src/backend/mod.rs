//! Backends: the operations the forward pass is written against (DESIGN.md
//! decision 4). The forward pass never does arithmetic itself, and never
//! touches activation memory: every buffer it uses is a backend's
//! [`Backend::Buffer`] (host memory for the CPU, device memory for a GPU),
//! every weight a [`Backend::Matrix`] prepared once at load, and values cross
//! to the host only through [`Backend::read`], when an observer asks or the
//! logits are returned.

mod attention;
pub mod cpu;
pub mod cuda;
pub mod reference;
mod weight;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use crate::dtype::DType;
use crate::error::{Error, Result};

pub use weight::{HostMatrix, WeightMatrix, WeightShapeError};

/// How RoPE pairs a head's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): Qwen2 everywhere, Llama in Hugging Face row order.
    Halves,
    /// Pairs (2i, 2i + 1): Llama in GGUF row order.
    Interleaved,
}

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_tokens: usize,
    /// Position of the first of the `n_tokens` queries: the host's copy of
    /// `positions[first_row]`, for bounds. A backend that replays recorded
    /// steps must read the positions buffer instead, as this changes per step.
    pub start_pos: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// Identifies the device work of one forward step by everything its
/// recording would bake in (rows per sequence, which caches and workspace,
/// which logits), but not the values that change from step to step (token
/// ids and positions, which reach the operations through [`Backend::Indices`]).
pub type StepKey = Vec<u64>;

/// What a backend implements. Buffers are flat `f32` arrays of at least the
/// length an operation names; each operation reads and writes only the prefix
/// it is told (`n_rows × width`), so a workspace sized for a long prompt is
/// reused by one-token steps. Every operation returns `Result`: a device can
/// fail at any call.
///
/// The values of a step that change from one decode step to the next (token
/// ids, each row's position, the rows logits are taken from) reach the
/// operations as [`Backend::Indices`] buffers written before the step, never
/// as launch arguments: so a device backend can record a step once and replay
/// it ([`Backend::run_step`]).
pub trait Backend: Send + Sync + 'static {
    /// Activations, KV cache and small vectors, where this backend computes.
    type Buffer: Send + Sync + 'static;
    /// `u32` values where this backend computes: token ids, positions, row numbers.
    type Indices: Send + Sync + 'static;
    /// A weight matrix in the form this backend's kernels read.
    type Matrix: Send + Sync + 'static;

    fn name(&self) -> &'static str;

    /// The name and, for a device, what it is (`cuda: NVIDIA H200 (sm_90, 139.8 GiB)`).
    fn description(&self) -> String {
        self.name().to_string()
    }

    /// The kernel a matrix of `dtype` runs on, as `--trace` and `profile` name it.
    fn kernel_name(&self, dtype: DType) -> &'static str;

    /// Bytes of device memory in use now (by every process on the device),
    /// for a backend that computes on a device; `None` for host memory.
    fn device_memory_in_use(&self) -> Option<u64> {
        None
    }

    // ---- memory

    /// A zeroed buffer of `len` values.
    fn alloc(&self, len: usize) -> Result<Self::Buffer>;
    /// A buffer holding `values`.
    fn upload(&self, values: &[f32]) -> Result<Self::Buffer>;
    /// Overwrites the first `values.len()` values of `buffer` from the host.
    fn write(&self, buffer: &mut Self::Buffer, values: &[f32]) -> Result<()>;
    /// The first `len` values of `buffer`, on the host (a host backend lends them).
    fn read<'a>(&self, buffer: &'a Self::Buffer, len: usize) -> Result<Cow<'a, [f32]>>;
    /// The first `len` values of a buffer that is no longer needed, on the host.
    fn download(&self, buffer: Self::Buffer, len: usize) -> Result<Vec<f32>> {
        self.read(&buffer, len).map(Cow::into_owned)
    }
    /// Prepares a weight once, at load (a device backend uploads it in its file dtype).
    fn prepare(&self, matrix: &HostMatrix) -> Result<Self::Matrix>;
    /// Waits until every operation issued so far has finished.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    /// How long the work `work` issues takes: by default the host's clock
    /// around it and a [`Backend::synchronize`]; a device times it on itself.
    fn time(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<Duration> {
        let started = Instant::now();
        work()?;
        self.synchronize()?;
        Ok(started.elapsed())
    }
    /// A buffer of `len` indices (zero).
    fn alloc_indices(&self, len: usize) -> Result<Self::Indices>;
    /// Overwrites the first `values.len()` indices of `indices` from the host.
    fn write_indices(&self, indices: &mut Self::Indices, values: &[u32]) -> Result<()>;

    /// Runs `work`, the operations of one forward step. With a `key`, a
    /// backend may record the work the second time it sees the key and replay
    /// the recording from then on instead of calling `work` (a CUDA graph);
    /// the forward pass gives a key only when nothing but the indices buffers
    /// changes between steps of that key and nobody watches the operations.
    fn run_step(&self, key: Option<&StepKey>, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let _ = key;
        work()
    }

    // ---- operations

    /// Row `tokens[i]` of `table` into row `i` of `out`, for `n` tokens (the
    /// forward pass has checked every id against the table).
    fn embed(&self, table: &Self::Matrix, tokens: &Self::Indices, n: usize, out: &mut Self::Buffer) -> Result<()>;

    /// `outs[i][t][r] = ws[i][r] · x[t]` for `n_rows` rows of `x`; one call for
    /// matrices that share their input, so a backend can share the work (the
    /// CPU quantizes `x` once). Results must not depend on the grouping.
    fn matmul(
        &self,
        ws: &[&Self::Matrix],
        x: &Self::Buffer,
        n_rows: usize,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<()>;

    /// `outs[i] = ws[i] · x + biases[i]` (`widths[i]` = rows of `ws[i]`): one
    /// product per matrix, then its bias, which a backend may fuse into one pass.
    fn matmul_bias(
        &self,
        ws: &[&Self::Matrix],
        biases: &[Option<&Self::Buffer>],
        widths: &[usize],
        x: &Self::Buffer,
        n_rows: usize,
        outs: &mut [&mut Self::Buffer],
    ) -> Result<()> {
        self.matmul(ws, x, n_rows, outs)?;
        for ((out, bias), &width) in outs.iter_mut().zip(biases).zip(widths) {
            if let Some(bias) = bias {
                self.add_bias(out, bias, width, n_rows)?;
            }
        }
        Ok(())
    }

    /// `out += w · x` (a residual connection; `width` = rows of `w`), through
    /// `scratch` unless the backend fuses the sum into the product.
    #[allow(clippy::too_many_arguments)]
    fn matmul_add(
        &self,
        w: &Self::Matrix,
        x: &Self::Buffer,
        n_rows: usize,
        width: usize,
        scratch: &mut Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()> {
        self.matmul(&[w], x, n_rows, &mut [&mut *scratch])?;
        self.add(out, scratch, n_rows * width)
    }

    /// `gate_out = silu(gate · x) * (up · x)` (a gated FFN; `width` = rows of
    /// each), through `up_out` unless the backend fuses it into one pass.
    #[allow(clippy::too_many_arguments)]
    fn matmul_silu_gate(
        &self,
        gate: &Self::Matrix,
        up: &Self::Matrix,
        x: &Self::Buffer,
        n_rows: usize,
        width: usize,
        gate_out: &mut Self::Buffer,
        up_out: &mut Self::Buffer,
    ) -> Result<()> {
        self.matmul(&[gate, up], x, n_rows, &mut [&mut *gate_out, &mut *up_out])?;
        self.silu_mul(gate_out, up_out, n_rows * width)
    }

    /// `x[t] += bias` for each of `n_rows` rows of width `bias_len`.
    fn add_bias(&self, x: &mut Self::Buffer, bias: &Self::Buffer, bias_len: usize, n_rows: usize) -> Result<()>;

    /// RMSNorm of each of `n_rows` rows of width `width`, scaled by `weight`.
    fn rms_norm(
        &self,
        x: &Self::Buffer,
        weight: &Self::Buffer,
        width: usize,
        eps: f32,
        n_rows: usize,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// Rotates each head of each of `n_rows` rows of `x` (`rows × heads ×
    /// head_dim`) in place, row `r` at position `positions[r]`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buffer,
        positions: &Self::Indices,
        n_rows: usize,
        heads: usize,
        head_dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()>;

    /// [`Backend::rope`] of the queries (`heads`) and the keys (`kv_heads`) of
    /// the same rows, which a backend may do in one pass.
    #[allow(clippy::too_many_arguments)]
    fn rope_pair(
        &self,
        q: &mut Self::Buffer,
        k: &mut Self::Buffer,
        positions: &Self::Indices,
        n_rows: usize,
        (heads, kv_heads, head_dim): (usize, usize, usize),
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        self.rope(q, positions, n_rows, heads, head_dim, base, style)?;
        self.rope(k, positions, n_rows, kv_heads, head_dim, base, style)
    }

    /// [`Backend::kv_store`] of a sequence's keys and values, which a backend may do in one pass.
    #[allow(clippy::too_many_arguments)]
    fn kv_store_pair(
        &self,
        (keys, values): (&mut Self::Buffer, &mut Self::Buffer),
        positions: &Self::Indices,
        (k, v): (&Self::Buffer, &Self::Buffer),
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()> {
        self.kv_store(keys, positions, k, first_row, n, width)?;
        self.kv_store(values, positions, v, first_row, n, width)
    }

    /// Copies `n` rows of width `width` of `src`, from row `first_row`, into
    /// a KV cache buffer, row `r` at row `positions[r]` of the cache.
    #[allow(clippy::too_many_arguments)]
    fn kv_store(
        &self,
        cache: &mut Self::Buffer,
        positions: &Self::Indices,
        src: &Self::Buffer,
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()>;

    /// Zeroes `len` values of a buffer from `start` (fault injection: a cache that forgets).
    fn zero(&self, buffer: &mut Self::Buffer, start: usize, len: usize) -> Result<()>;

    /// Causal grouped-query attention of the queries in rows
    /// `first_row..first_row + shape.n_tokens` of `q` (row `r` at position
    /// `positions[r]`, attending to cached positions `0..=positions[r]`)
    /// against cached `keys`/`values`, into the same rows of `out`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Buffer,
        keys: &Self::Buffer,
        values: &Self::Buffer,
        positions: &Self::Indices,
        shape: AttentionShape,
        first_row: usize,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// `gate = silu(gate) * up` over the first `len` values.
    fn silu_mul(&self, gate: &mut Self::Buffer, up: &Self::Buffer, len: usize) -> Result<()>;

    /// `x += y` over the first `len` values.
    fn add(&self, x: &mut Self::Buffer, y: &Self::Buffer, len: usize) -> Result<()>;

    /// Rows `rows[i]` (of width `width`) of `x` into row `i` of `out`, for `n` rows.
    fn gather_rows(
        &self,
        x: &Self::Buffer,
        rows: &Self::Indices,
        n: usize,
        width: usize,
        out: &mut Self::Buffer,
    ) -> Result<()>;
}

/// The backends a model can run on: the one name used by `#[model_test]`,
/// the test runner, the library and every command's `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// SIMD kernels over quantized blocks (the default).
    Cpu,
    /// Dequantize-and-dot in f64: the slow reference the fast kernels are diffed against.
    CpuReference,
    /// NVIDIA GPUs: kernels compiled at run time for the device.
    Cuda,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [BackendKind::Cpu, BackendKind::CpuReference, BackendKind::Cuda];

    /// The name on the command line, in `#[model_test(backends = [...])]` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::CpuReference => "cpu-reference",
            BackendKind::Cuda => "cuda",
        }
    }

    /// Why this backend cannot run here, or `None` when it can.
    pub fn unavailable(self) -> Option<String> {
        match self {
            BackendKind::Cpu | BackendKind::CpuReference => None,
            BackendKind::Cuda => cuda::unavailable(),
        }
    }

    /// [`BackendKind::unavailable`] as an error.
    pub fn check_available(self) -> Result<()> {
        match self.unavailable() {
            None => Ok(()),
            Some(why) => Err(Error::Unsupported(format!("backend {}: {why}", self.name()))),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        BackendKind::ALL.into_iter().find(|kind| kind.name() == name).ok_or_else(|| {
            let known: Vec<&str> = BackendKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown backend `{name}` (known: {})", known.join(", "))
        })
    }
}
