//! Backends: the operations the forward pass is written against (DESIGN.md
//! decision 4). The forward pass never does arithmetic itself.

mod attention;
pub mod cpu;
pub mod reference;

use crate::error::{Error, Result};
use crate::kernels::WeightMatrix;
use crate::model::weights::RopeStyle;

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

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// `out[t][r] = W[r] . x[t]` for `n_tokens` rows of `x`.
    fn matmul(&self, w: &WeightMatrix, x: &[f32], n_tokens: usize, out: &mut [f32]);

    /// [`Backend::matmul`] of several matrices over the same `x` (`outs[i]` for
    /// `ws[i]`); a backend may share work between them, results must not change.
    fn matmul_many(&self, ws: &[WeightMatrix], x: &[f32], n_tokens: usize, outs: &mut [&mut [f32]]) {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, n_tokens, out);
        }
    }

    /// RMSNorm of each `weight.len()`-wide row of `x`, scaled by `weight`.
    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]);

    /// Rotates each head of each token of `x` (`n_tokens x heads x head_dim`) in place.
    fn rope(&self, x: &mut [f32], heads: usize, head_dim: usize, start_pos: usize, base: f32, style: RopeStyle);

    /// Causal grouped-query attention of `q` against cached `keys`/`values`
    /// (positions `0..start_pos + n_tokens`), writing `n_tokens x heads x head_dim`.
    fn attention(&self, q: &[f32], keys: &[f32], values: &[f32], shape: AttentionShape, out: &mut [f32]);

    /// `gate = silu(gate) * up`, elementwise.
    fn silu_mul(&self, gate: &mut [f32], up: &[f32]);

    /// `x += y`, elementwise.
    fn add(&self, x: &mut [f32], y: &[f32]);
}

/// The backends a command line can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// SIMD kernels over quantized blocks (the default).
    Cpu,
    /// Dequantize-and-dot in f64: the slow reference the fast kernels are diffed against.
    CpuReference,
    /// Not built into this binary yet.
    Cuda,
}

impl BackendKind {
    pub fn create(self) -> Result<Box<dyn Backend>> {
        match self {
            BackendKind::Cpu => Ok(Box::new(cpu::Cpu)),
            BackendKind::CpuReference => Ok(Box::new(reference::CpuReference)),
            BackendKind::Cuda => Err(Error::Unsupported("the CUDA backend is not built into this binary".into())),
        }
    }
}
