//! The activations of one forward call, kept by the model between calls so
//! that decoding a token allocates nothing. Buffers live on the backend and
//! grow (never shrink) to the most rows a call has needed; every operation
//! reads only the rows it was told, after they were written.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Backend;
use crate::error::Result;
use crate::model::config::ModelConfig;

pub(super) struct Workspace<B: Backend> {
    /// Rows every buffer of `activations` holds.
    rows: usize,
    /// Rows of logits `activations.logits` holds.
    logit_rows: usize,
    /// Changes whenever a buffer is reallocated (unique across workspaces), so a
    /// recorded step that refers to the old buffers is never replayed.
    generation: u64,
    activations: Option<Activations<B>>,
}

/// A number no other allocation of workspace or KV cache buffers has had.
pub(super) fn next_buffer_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
    /// `logit_rows × vocab`.
    pub logits: B::Buffer,
    /// The step's token ids, each row's position, and the rows logits are taken from.
    pub tokens: B::Indices,
    pub positions: B::Indices,
    pub logit_row_ids: B::Indices,
}

impl<B: Backend> Default for Workspace<B> {
    fn default() -> Self {
        Workspace { rows: 0, logit_rows: 0, generation: 0, activations: None }
    }
}

impl<B: Backend> Workspace<B> {
    /// Buffers for `rows` rows and `logit_rows` rows of logits, reallocated
    /// only when more are needed than ever before, and their generation.
    pub fn for_rows(
        &mut self,
        backend: &B,
        c: &ModelConfig,
        rows: usize,
        logit_rows: usize,
    ) -> Result<(u64, &mut Activations<B>)> {
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
                logits: backend.alloc(logit_rows * c.vocab)?,
                tokens: backend.alloc_indices(rows)?,
                positions: backend.alloc_indices(rows)?,
                logit_row_ids: backend.alloc_indices(rows)?,
            });
            (self.rows, self.logit_rows) = (rows, logit_rows);
            self.generation = next_buffer_generation();
        }
        let activations = self.activations.as_mut().expect("allocated above");
        if logit_rows > self.logit_rows {
            activations.logits = backend.alloc(0)?; // the old buffer goes before the larger one comes
            activations.logits = backend.alloc(logit_rows * c.vocab)?;
            self.logit_rows = logit_rows;
            self.generation = next_buffer_generation();
        }
        Ok((self.generation, activations))
    }
}
