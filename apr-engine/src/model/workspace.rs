//! The activations of one forward call, kept by the model between calls so
//! that decoding a token allocates nothing but its logits. Buffers live on the
//! backend and grow (never shrink) to the most rows a call has needed; every
//! operation reads only the rows it was told, after they were written.

use crate::backend::Backend;
use crate::error::Result;
use crate::model::config::ModelConfig;

pub(super) struct Workspace<B: Backend> {
    /// Rows every buffer of `activations` holds.
    rows: usize,
    activations: Option<Activations<B>>,
}

/// One buffer per intermediate of the forward pass.
pub(super) struct Activations<B: Backend> {
    /// The residual stream, `rows × hidden`.
    pub x: B::Buffer,
    /// The normed input of the current block, `rows × hidden`.
    pub normed: B::Buffer,
    pub q: B::Buffer,
    pub k: B::Buffer,
    pub v: B::Buffer,
    /// Attention output before the output projection, `rows × heads × head_dim`.
    pub attn: B::Buffer,
    /// A block's output (out or down projection), `rows × hidden`.
    pub block_out: B::Buffer,
    pub gate: B::Buffer,
    pub up: B::Buffer,
    /// The rows logits are wanted for, gathered, then normed: `rows × hidden` each.
    pub last_rows: B::Buffer,
    pub final_norm: B::Buffer,
}

impl<B: Backend> Default for Workspace<B> {
    fn default() -> Self {
        Workspace { rows: 0, activations: None }
    }
}

impl<B: Backend> Workspace<B> {
    /// Buffers for `rows` rows, reallocated only when more rows are needed than ever before.
    pub fn for_rows(&mut self, backend: &B, c: &ModelConfig, rows: usize) -> Result<&mut Activations<B>> {
        if rows > self.rows || self.activations.is_none() {
            self.activations = None; // the old buffers go before the larger ones come
            let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
            let alloc = |width: usize| backend.alloc(rows * width);
            self.activations = Some(Activations {
                x: alloc(c.hidden)?,
                normed: alloc(c.hidden)?,
                q: alloc(q_dim)?,
                k: alloc(kv_dim)?,
                v: alloc(kv_dim)?,
                attn: alloc(q_dim)?,
                block_out: alloc(c.hidden)?,
                gate: alloc(c.ffn)?,
                up: alloc(c.ffn)?,
                last_rows: alloc(c.hidden)?,
                final_norm: alloc(c.hidden)?,
            });
            self.rows = rows;
        }
        Ok(self.activations.as_mut().expect("allocated above"))
    }
}
