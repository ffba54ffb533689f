//! The decoder forward pass, written once against [`Backend`] and run over a
//! batch of sequences: every row of every sequence goes through the norms and
//! projections together; RoPE, the KV cache and attention take each sequence
//! at its own positions in its own cache.

use std::borrow::Cow;
use std::sync::TryLockError;

use super::engine::Engine;
use super::observer::{Boundary, Observer, Op};
use super::workspace::{Activations, Workspace};
use super::KvCache;
use crate::backend::{AttentionShape, Backend, StepKey};
use crate::error::{Error, Result};
use crate::model::KvFault;

/// Which positions of a forward call produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

/// One sequence of a batched forward call: `tokens` run at positions
/// `cache.len()..` of its own cache, and the logits it wants.
pub struct Sequence<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub logits: Logits,
}

/// One sequence's rows within a batch: `n_tokens` rows from `first_row`, at
/// positions `start_pos..start_pos + n_tokens` of its own KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeqSpan {
    first_row: usize,
    n_tokens: usize,
    start_pos: usize,
}

/// Steps that add at most this many tokens to each sequence may be recorded
/// and replayed (decode steps, of one request or a server's batch); a prompt
/// runs call by call.
const REPLAYABLE_TOKENS: usize = 4;

impl<B: Backend> Engine<B> {
    /// Runs every sequence's tokens, appends them to its cache, and returns
    /// each sequence's logits (`vocab` values per requested position).
    pub(super) fn run(&self, sequences: &mut [Sequence<'_>], observer: &mut dyn Observer) -> Result<Vec<Vec<f32>>> {
        let spans = plan(sequences)?;
        self.check_token_ids(sequences)?;
        let n = spans.iter().map(|s| s.n_tokens).sum::<usize>();
        let logit_rows = logit_rows(&spans, sequences);
        // The buffers are overwritten before use, so a poisoned lock's contents are fine.
        let mut fresh = Workspace::default();
        let mut guard = match self.workspace.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let workspace = guard.as_deref_mut().unwrap_or(&mut fresh);
        let (generation, a) = workspace.for_rows(&self.backend, &self.config, n, logit_rows.len())?;
        self.write_step(a, &spans, sequences, &logit_rows)?;
        let key = self.step_key(generation, &spans, sequences, &*observer)?;
        observer.begin(spans[0].start_pos, n);
        self.backend.run_step(key.as_ref(), &mut || {
            self.timed(observer, None, Op::Embedding, || self.backend.embed(&self.embedding, &a.tokens, n, &mut a.x))?;
            self.show(observer, None, Boundary::Embedding, &mut a.x, n * self.config.hidden)?;
            for layer in 0..self.config.layers {
                self.attention_block(layer, a, &spans, sequences, observer)?;
                self.ffn_block(layer, a, n, observer)?;
            }
            self.lm_head(a, logit_rows.len(), observer)
        })?;
        for sequence in sequences.iter_mut() {
            sequence.cache.advance(sequence.tokens.len());
        }
        let logits = self.backend.read(&a.logits, logit_rows.len() * self.config.vocab)?.into_owned();
        observer.end();
        Ok(split_logits(logits, sequences, self.config.vocab))
    }

    /// An id outside the embedding table is the caller's error, named before any work.
    fn check_token_ids(&self, sequences: &[Sequence<'_>]) -> Result<()> {
        let vocab = self.config.vocab;
        match sequences.iter().flat_map(|s| s.tokens).find(|&&t| t as usize >= vocab) {
            Some(bad) => Err(Error::Invalid(format!("token id {bad} is outside the vocabulary ({vocab})"))),
            None => Ok(()),
        }
    }

    /// The step's token ids, each row's position and the logit rows, into the workspace.
    fn write_step(
        &self,
        a: &mut Activations<B>,
        spans: &[SeqSpan],
        sequences: &[Sequence<'_>],
        logit_rows: &[u32],
    ) -> Result<()> {
        let b = &self.backend;
        // One sequence (every decode step of run and chat) writes its own slice; a batch, the concatenation.
        let tokens: Cow<[u32]> = match sequences {
            [one] => Cow::Borrowed(one.tokens),
            _ => Cow::Owned(sequences.iter().flat_map(|s| s.tokens.iter().copied()).collect()),
        };
        let positions: Vec<u32> =
            spans.iter().flat_map(|s| (s.start_pos..s.start_pos + s.n_tokens).map(|p| p as u32)).collect();
        b.write_indices(&mut a.tokens, &tokens)?;
        b.write_indices(&mut a.positions, &positions)?;
        b.write_indices(&mut a.logit_row_ids, logit_rows)
    }

    /// What a recording of this step would bake in, or `None` when the step
    /// must run call by call: an observer that watches, a cache with a test
    /// fault, a prompt.
    fn step_key(
        &self,
        workspace_generation: u64,
        spans: &[SeqSpan],
        sequences: &mut [Sequence<'_>],
        observer: &dyn Observer,
    ) -> Result<Option<StepKey>> {
        let watched = !observer.ignores_steps();
        let prompt = spans.iter().any(|s| s.n_tokens > REPLAYABLE_TOKENS);
        if watched || prompt || sequences.iter().any(|s| s.cache.fault.is_some()) {
            return Ok(None);
        }
        let mut key = vec![workspace_generation];
        for (span, sequence) in spans.iter().zip(sequences.iter_mut()) {
            let wants_all = u64::from(sequence.logits == Logits::All);
            let cache = self.cache_buffers(sequence.cache)?.id;
            key.extend([span.n_tokens as u64, wants_all, cache]);
        }
        Ok(Some(key))
    }

    fn attention_block(
        &self,
        layer: usize,
        a: &mut Activations<B>,
        spans: &[SeqSpan],
        sequences: &mut [Sequence<'_>],
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let c = &self.config;
        let (w, b, at) = (&self.layers[layer], &self.backend, Some(layer));
        let n = spans.iter().map(|s| s.n_tokens).sum::<usize>();
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        self.timed(observer, at, Op::AttnNorm, || {
            b.rms_norm(&a.x, &w.attn_norm, c.hidden, c.rms_eps, n, &mut a.normed)
        })?;
        self.show(observer, at, Boundary::AttnNorm, &mut a.normed, n * c.hidden)?;
        self.timed(observer, at, Op::QkvProjection, || {
            let biases = [w.q_bias.as_ref(), w.k_bias.as_ref(), w.v_bias.as_ref()];
            let outs = [&mut a.q, &mut a.k, &mut a.v];
            self.project([&*w.q, &*w.k, &*w.v], biases, [q_dim, kv_dim, kv_dim], &a.normed, n, outs)
        })?;
        self.show(observer, at, Boundary::Q, &mut a.q, n * q_dim)?;
        self.show(observer, at, Boundary::K, &mut a.k, n * kv_dim)?;
        self.show(observer, at, Boundary::V, &mut a.v, n * kv_dim)?;
        self.timed(observer, at, Op::Rope, || {
            let shape = (c.heads, c.kv_heads, c.head_dim);
            b.rope_pair(&mut a.q, &mut a.k, &a.positions, n, shape, c.rope_base, self.rope)
        })?;
        self.timed(observer, at, Op::Attention, || {
            for (sequence, span) in sequences.iter_mut().zip(spans) {
                let fault = sequence.cache.fault;
                let kv = self.cache_buffers(sequence.cache)?;
                let (keys, values) = (&mut kv.keys[layer], &mut kv.values[layer]);
                if fault == Some(KvFault::ForgetEarlierPositions) && span.start_pos > 0 {
                    b.zero(keys, 0, span.start_pos * kv_dim)?;
                }
                let kv = (&a.k, &a.v);
                b.kv_store_pair((&mut *keys, &mut *values), &a.positions, kv, span.first_row, span.n_tokens, kv_dim)?;
                let shape = AttentionShape {
                    n_tokens: span.n_tokens,
                    start_pos: span.start_pos,
                    heads: c.heads,
                    kv_heads: c.kv_heads,
                    head_dim: c.head_dim,
                };
                b.attention(&a.q, keys, values, &a.positions, shape, span.first_row, &mut a.attn)?;
            }
            Ok(())
        })?;
        if observer.ignores_steps() {
            // Nobody sees the projection before the residual sum: one pass for both.
            return b.matmul_add(&w.o, &a.attn, n, c.hidden, &mut a.block_out, &mut a.x);
        }
        let out_projection = || self.project([&*w.o], [None], [c.hidden], &a.attn, n, [&mut a.block_out]);
        self.timed(observer, at, Op::OutProjection, out_projection)?;
        self.show(observer, at, Boundary::AttnOutput, &mut a.block_out, n * c.hidden)?;
        self.timed(observer, at, Op::AttnResidual, || b.add(&mut a.x, &a.block_out, n * c.hidden))?;
        self.show(observer, at, Boundary::AttnResidual, &mut a.x, n * c.hidden)
    }

    fn ffn_block(&self, layer: usize, a: &mut Activations<B>, n: usize, observer: &mut dyn Observer) -> Result<()> {
        let c = &self.config;
        let (w, b, at) = (&self.layers[layer], &self.backend, Some(layer));
        self.timed(observer, at, Op::FfnNorm, || b.rms_norm(&a.x, &w.ffn_norm, c.hidden, c.rms_eps, n, &mut a.normed))?;
        self.show(observer, at, Boundary::FfnNorm, &mut a.normed, n * c.hidden)?;
        if observer.ignores_steps() {
            // Nobody sees the products, the activation or the sum apart: fused where the backend can.
            b.matmul_silu_gate(&w.gate, &w.up, &a.normed, n, c.ffn, &mut a.gate, &mut a.up)?;
            return b.matmul_add(&w.down, &a.gate, n, c.hidden, &mut a.block_out, &mut a.x);
        }
        self.timed(observer, at, Op::GateUpProjection, || {
            self.project([&*w.gate, &*w.up], [None, None], [c.ffn, c.ffn], &a.normed, n, [&mut a.gate, &mut a.up])
        })?;
        self.timed(observer, at, Op::Activation, || b.silu_mul(&mut a.gate, &a.up, n * c.ffn))?;
        let down = || self.project([&*w.down], [None], [c.hidden], &a.gate, n, [&mut a.block_out]);
        self.timed(observer, at, Op::DownProjection, down)?;
        self.show(observer, at, Boundary::FfnOutput, &mut a.block_out, n * c.hidden)?;
        self.timed(observer, at, Op::FfnResidual, || b.add(&mut a.x, &a.block_out, n * c.hidden))?;
        self.show(observer, at, Boundary::FfnResidual, &mut a.x, n * c.hidden)
    }

    /// The final norm and LM head over the rows each sequence wants logits
    /// for (`a.logit_row_ids`), into `a.logits`.
    fn lm_head(&self, a: &mut Activations<B>, n: usize, observer: &mut dyn Observer) -> Result<()> {
        let (c, b) = (&self.config, &self.backend);
        self.timed(observer, None, Op::FinalNorm, || {
            b.gather_rows(&a.x, &a.logit_row_ids, n, c.hidden, &mut a.last_rows)?;
            b.rms_norm(&a.last_rows, &self.output_norm, c.hidden, c.rms_eps, n, &mut a.final_norm)
        })?;
        self.show(observer, None, Boundary::FinalNorm, &mut a.final_norm, n * c.hidden)?;
        self.timed(observer, None, Op::LmHead, || b.matmul(&[&*self.output], &a.final_norm, n, &mut [&mut a.logits]))?;
        self.show(observer, None, Boundary::Logits, &mut a.logits, n * c.vocab)
    }

    /// `outs[i]` = `n` rows of `input` times `ws[i]`, plus bias `biases[i]` (of
    /// width `widths[i]`): one backend call for all the matrices.
    fn project<const N: usize>(
        &self,
        ws: [&B::Matrix; N],
        biases: [Option<&B::Buffer>; N],
        widths: [usize; N],
        input: &B::Buffer,
        n: usize,
        mut outs: [&mut B::Buffer; N],
    ) -> Result<()> {
        self.backend.matmul_bias(&ws, &biases, &widths, input, n, &mut outs)
    }

    /// Runs `f`, reporting its duration to `observer` if it keeps time (after
    /// the backend has finished the work, for a backend that runs ahead).
    fn timed<T>(
        &self,
        observer: &mut dyn Observer,
        layer: Option<usize>,
        op: Op,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if !observer.wants_timing() {
            return f();
        }
        let mut f = Some(f);
        let mut result = None;
        let elapsed = self.backend.time(&mut || {
            result = Some(f.take().expect("timed work runs once")()?);
            Ok(())
        })?;
        observer.timed(layer, op, elapsed);
        Ok(result.expect("timed work ran"))
    }

    /// Tells `observer` a boundary was reached, reading the values back only
    /// if it wants them, and continues with its replacement values if it has any.
    fn show(
        &self,
        observer: &mut dyn Observer,
        layer: Option<usize>,
        boundary: Boundary,
        buffer: &mut B::Buffer,
        len: usize,
    ) -> Result<()> {
        if !observer.wants_values() {
            observer.observe(layer, boundary, &[]);
            return Ok(());
        }
        observer.observe(layer, boundary, &self.backend.read(buffer, len)?);
        match observer.replacement(layer, boundary) {
            Some(values) if values.len() != len => Err(Error::Invalid(format!(
                "replacement for {boundary:?} has {} values, the boundary {len}",
                values.len()
            ))),
            Some(values) => self.backend.write(buffer, values),
            None => Ok(()),
        }
    }
}

/// The batch rows each sequence wants logits for, in order.
fn logit_rows(spans: &[SeqSpan], sequences: &[Sequence<'_>]) -> Vec<u32> {
    let rows = spans.iter().zip(sequences).flat_map(|(span, sequence)| match sequence.logits {
        Logits::Last => span.first_row + span.n_tokens - 1..span.first_row + span.n_tokens,
        Logits::All => span.first_row..span.first_row + span.n_tokens,
    });
    rows.map(|r| r as u32).collect()
}

/// Each sequence's share of the logits, in order.
fn split_logits(mut all: Vec<f32>, sequences: &[Sequence<'_>], vocab: usize) -> Vec<Vec<f32>> {
    if let [_] = sequences {
        return vec![all]; // a decode step of run or chat: no second copy
    }
    // Last first, so each split is a cheap tail.
    let mut per_sequence = Vec::with_capacity(sequences.len());
    for sequence in sequences.iter().rev() {
        let rows = match sequence.logits {
            Logits::Last => 1,
            Logits::All => sequence.tokens.len(),
        };
        per_sequence.push(all.split_off(all.len() - rows * vocab));
    }
    per_sequence.reverse();
    per_sequence
}

/// Each sequence's rows in the batch; refuses an empty sequence or one that
/// does not fit its cache.
fn plan(sequences: &[Sequence<'_>]) -> Result<Vec<SeqSpan>> {
    if sequences.is_empty() {
        return Err(Error::Invalid("forward called with no sequences".into()));
    }
    let mut first_row = 0;
    let mut spans = Vec::with_capacity(sequences.len());
    for sequence in sequences {
        let (n, start) = (sequence.tokens.len(), sequence.cache.len());
        if n == 0 {
            // There is no last position to produce logits for.
            return Err(Error::Invalid("forward called with no tokens".into()));
        }
        if start + n > sequence.cache.capacity() {
            return Err(Error::ContextFull { used: start, requested: n, capacity: sequence.cache.capacity() });
        }
        spans.push(SeqSpan { first_row, n_tokens: n, start_pos: start });
        first_row += n;
    }
    Ok(spans)
}
