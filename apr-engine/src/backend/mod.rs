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

/// One sequence's rows within a batch: `n_tokens` rows from `first_row`, at
/// positions `start_pos..start_pos + n_tokens` of its own KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    pub first_row: usize,
    pub n_tokens: usize,
    pub start_pos: usize,
}

/// Geometry of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub n_tokens: usize,
    /// Position of the first of the `n_tokens` queries.
    pub start_pos: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// What a backend implements. Buffers are flat `f32` arrays of at least the
/// length an operation names; each operation reads and writes only the prefix
/// it is told (`n_rows × width`), so a workspace sized for a long prompt is
/// reused by one-token steps. Every operation returns `Result`: a device can
/// fail at any call.
pub trait Backend: Send + Sync + 'static {
    /// Activations, KV cache and small vectors, where this backend computes.
    type Buffer: Send + Sync + 'static;
    /// A weight matrix in the form this backend's kernels read.
    type Matrix: Send + Sync + 'static;

    fn name(&self) -> &'static str;

    /// The name and, for a device, what it is (`cuda: NVIDIA H200 (sm_90, 139.8 GiB)`).
    fn description(&self) -> String {
        self.name().to_string()
    }

    /// The kernel a matrix of `dtype` runs on, as `--trace` and `profile` name it.
    fn kernel_name(&self, dtype: DType) -> &'static str;

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
    /// Waits until every operation issued so far has finished (for timing).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // ---- operations

    /// Row `tokens[i]` of `table` into row `i` of `out`; an id outside the table is an error.
    fn embed(&self, table: &Self::Matrix, tokens: &[u32], out: &mut Self::Buffer) -> Result<()>;

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

    /// Rotates each head of each row of `x` (`rows × heads × head_dim`) in
    /// place, each sequence's rows at its own positions.
    fn rope(
        &self,
        x: &mut Self::Buffer,
        spans: &[SeqSpan],
        heads: usize,
        head_dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()>;

    /// Copies `n` rows of width `width` of `src`, from row `first_row`, into
    /// rows `position..position + n` of a KV cache buffer.
    fn kv_store(
        &self,
        cache: &mut Self::Buffer,
        position: usize,
        src: &Self::Buffer,
        first_row: usize,
        n: usize,
        width: usize,
    ) -> Result<()>;

    /// Zeroes `len` values of a buffer from `start` (fault injection: a cache that forgets).
    fn zero(&self, buffer: &mut Self::Buffer, start: usize, len: usize) -> Result<()>;

    /// Causal grouped-query attention of the queries in rows
    /// `first_row..first_row + shape.n_tokens` of `q` against cached
    /// `keys`/`values` (positions `0..start_pos + n_tokens`), into the same rows of `out`.
    fn attention(
        &self,
        q: &Self::Buffer,
        keys: &Self::Buffer,
        values: &Self::Buffer,
        shape: AttentionShape,
        first_row: usize,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// `gate = silu(gate) * up` over the first `len` values.
    fn silu_mul(&self, gate: &mut Self::Buffer, up: &Self::Buffer, len: usize) -> Result<()>;

    /// `x += y` over the first `len` values.
    fn add(&self, x: &mut Self::Buffer, y: &Self::Buffer, len: usize) -> Result<()>;

    /// Rows `rows[i]` (of width `width`) of `x` into row `i` of `out`.
    fn gather_rows(&self, x: &Self::Buffer, rows: &[usize], width: usize, out: &mut Self::Buffer) -> Result<()>;
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
