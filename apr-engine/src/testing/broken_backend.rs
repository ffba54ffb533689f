//! A backend with one deliberately wrong operation, wrapped around a working
//! one: the fault-injection cases of the backend seam. trace-diff must name the
//! layer and the operation of each, as it names a corrupted tensor in a file.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::backend::{AttentionShape, Backend, HostMatrix, RopeStyle, StepKey};
use crate::dtype::DType;
use crate::error::Result;

/// The one thing the wrapped backend gets wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpFault {
    /// RoPE of this layer leaves Q and K unrotated.
    SkipRope { layer: usize },
    /// The attention of this layer comes out with `offset` added to every value.
    OffsetAttention { layer: usize, offset: f32 },
    /// Every RMSNorm uses this epsilon instead of the model's.
    RmsEps(f32),
}

impl std::str::FromStr for OpFault {
    type Err = String;

    /// `skip-rope:LAYER`, `offset-attention:LAYER:VALUE` or `rms-eps:VALUE`.
    fn from_str(text: &str) -> std::result::Result<OpFault, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let number = |s: &str| s.parse::<f32>().map_err(|_| format!("`{s}` is not a number"));
        let layer = |s: &str| s.parse::<usize>().map_err(|_| format!("`{s}` is not a layer index"));
        match parts.as_slice() {
            ["skip-rope", l] => Ok(OpFault::SkipRope { layer: layer(l)? }),
            ["offset-attention", l, v] => Ok(OpFault::OffsetAttention { layer: layer(l)?, offset: number(v)? }),
            ["rms-eps", v] => Ok(OpFault::RmsEps(number(v)?)),
            _ => Err(format!("`{text}`: expected skip-rope:LAYER, offset-attention:LAYER:VALUE or rms-eps:VALUE")),
        }
    }
}

/// `inner` with `fault`. It counts calls within a forward pass (the pass makes
/// two RoPE calls and, for one sequence, one attention call per layer, in
/// layer order) to know the layer; one sequence at a time.
pub struct BrokenOp<B: Backend> {
    pub inner: B,
    pub fault: OpFault,
    rope_calls: AtomicUsize,
    attention_calls: AtomicUsize,
}

impl<B: Backend> BrokenOp<B> {
    pub fn new(inner: B, fault: OpFault) -> Self {
        BrokenOp { inner, fault, rope_calls: AtomicUsize::new(0), attention_calls: AtomicUsize::new(0) }
    }
}

impl<B: Backend> Backend for BrokenOp<B> {
    type Buffer = B::Buffer;
    type Indices = B::Indices;
    type Matrix = B::Matrix;

    fn name(&self) -> &'static str {
        "broken"
    }
    fn kernel_name(&self, dtype: DType) -> &'static str {
        self.inner.kernel_name(dtype)
    }
    fn alloc(&self, len: usize) -> Result<B::Buffer> {
        self.inner.alloc(len)
    }
    fn upload(&self, values: &[f32]) -> Result<B::Buffer> {
        self.inner.upload(values)
    }
    fn write(&self, buffer: &mut B::Buffer, values: &[f32]) -> Result<()> {
        self.inner.write(buffer, values)
    }
    fn read<'a>(&self, buffer: &'a B::Buffer, len: usize) -> Result<Cow<'a, [f32]>> {
        self.inner.read(buffer, len)
    }
    fn prepare(&self, matrix: &HostMatrix) -> Result<B::Matrix> {
        self.inner.prepare(matrix)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn time(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<Duration> {
        self.inner.time(work)
    }

    fn alloc_indices(&self, len: usize) -> Result<B::Indices> {
        self.inner.alloc_indices(len)
    }
    fn write_indices(&self, indices: &mut B::Indices, values: &[u32]) -> Result<()> {
        self.inner.write_indices(indices, values)
    }
    /// Never replays a recording: the fault needs every call, to count layers.
    fn run_step(&self, _key: Option<&StepKey>, work: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        work()
    }

    /// A forward pass starts with the embedding: the layer counts start over.
    fn embed(&self, table: &B::Matrix, tokens: &B::Indices, n: usize, out: &mut B::Buffer) -> Result<()> {
        self.rope_calls.store(0, Ordering::Relaxed);
        self.attention_calls.store(0, Ordering::Relaxed);
        self.inner.embed(table, tokens, n, out)
    }
    fn matmul(&self, ws: &[&B::Matrix], x: &B::Buffer, n_rows: usize, outs: &mut [&mut B::Buffer]) -> Result<()> {
        self.inner.matmul(ws, x, n_rows, outs)
    }
    fn add_bias(&self, x: &mut B::Buffer, bias: &B::Buffer, bias_len: usize, n_rows: usize) -> Result<()> {
        self.inner.add_bias(x, bias, bias_len, n_rows)
    }
    fn rms_norm(
        &self,
        x: &B::Buffer,
        w: &B::Buffer,
        width: usize,
        eps: f32,
        n: usize,
        out: &mut B::Buffer,
    ) -> Result<()> {
        let eps = match self.fault {
            OpFault::RmsEps(wrong) => wrong,
            _ => eps,
        };
        self.inner.rms_norm(x, w, width, eps, n, out)
    }
    fn rope(
        &self,
        x: &mut B::Buffer,
        positions: &B::Indices,
        n_rows: usize,
        heads: usize,
        dim: usize,
        base: f32,
        style: RopeStyle,
    ) -> Result<()> {
        let layer = self.rope_calls.fetch_add(1, Ordering::Relaxed) / 2;
        if self.fault == (OpFault::SkipRope { layer }) {
            return Ok(());
        }
        self.inner.rope(x, positions, n_rows, heads, dim, base, style)
    }
    fn kv_store(
        &self,
        cache: &mut B::Buffer,
        positions: &B::Indices,
        src: &B::Buffer,
        row: usize,
        n: usize,
        w: usize,
    ) -> Result<()> {
        self.inner.kv_store(cache, positions, src, row, n, w)
    }
    fn zero(&self, buffer: &mut B::Buffer, start: usize, len: usize) -> Result<()> {
        self.inner.zero(buffer, start, len)
    }
    fn attention(
        &self,
        q: &B::Buffer,
        keys: &B::Buffer,
        values: &B::Buffer,
        positions: &B::Indices,
        shape: AttentionShape,
        first_row: usize,
        out: &mut B::Buffer,
    ) -> Result<()> {
        let layer = self.attention_calls.fetch_add(1, Ordering::Relaxed);
        self.inner.attention(q, keys, values, positions, shape, first_row, out)?;
        match self.fault {
            OpFault::OffsetAttention { layer: broken, offset } if broken == layer => {
                let width = shape.heads * shape.head_dim;
                let rows = first_row * width..(first_row + shape.n_tokens) * width;
                let mut values = self.inner.read(out, rows.end)?.into_owned();
                values[rows].iter_mut().for_each(|v| *v += offset);
                self.inner.write(out, &values)
            }
            _ => Ok(()),
        }
    }
    fn silu_mul(&self, gate: &mut B::Buffer, up: &B::Buffer, len: usize) -> Result<()> {
        self.inner.silu_mul(gate, up, len)
    }
    fn add(&self, x: &mut B::Buffer, y: &B::Buffer, len: usize) -> Result<()> {
        self.inner.add(x, y, len)
    }
    fn gather_rows(&self, x: &B::Buffer, rows: &B::Indices, n: usize, width: usize, out: &mut B::Buffer) -> Result<()> {
        self.inner.gather_rows(x, rows, n, width, out)
    }
}
