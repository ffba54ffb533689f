//! The decoder forward pass, written once against [`Backend`].

use std::sync::{Mutex, TryLockError};
use std::time::{Duration, Instant};

use crate::backend::{AttentionShape, Backend};
use crate::container::ModelFile;
use crate::error::{Error, Result};
use crate::kernels;
use crate::model::config::ModelConfig;
use crate::model::kv_cache::KvCache;
use crate::model::weights::{matrix, ModelWeights, TensorIndex};
use crate::quant;

/// A point in the forward pass where activations can be observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    Embedding,
    AttnNorm,
    Q,
    K,
    V,
    AttnOutput,
    AttnResidual,
    FfnNorm,
    FfnOutput,
    /// The layer's output.
    FfnResidual,
    FinalNorm,
    Logits,
}

/// One timed operation of the forward pass (what `--trace` and `--profile` report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Embedding,
    AttnNorm,
    QkvProjection,
    Rope,
    Attention,
    OutProjection,
    AttnResidual,
    FfnNorm,
    GateUpProjection,
    Activation,
    DownProjection,
    FfnResidual,
    FinalNorm,
    LmHead,
}

/// Sees what the forward pass does: each call's positions, the activations
/// at every boundary (`n_tokens` rows each) and, when asked, each
/// operation's duration. `layer` is `None` outside the decoder layers.
pub trait Observer {
    /// A forward call over positions `start..start + n_tokens` begins.
    fn begin(&mut self, _start: usize, _n_tokens: usize) {}
    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]);
    /// Whether [`Observer::timed`] should be called (the clock is read only then).
    fn wants_timing(&self) -> bool {
        false
    }
    fn timed(&mut self, _layer: Option<usize>, _op: Op, _elapsed: Duration) {}
    /// The forward call ends.
    fn end(&mut self) {}
}

/// The observer of an untraced run: does nothing, costs nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    #[inline]
    fn observe(&mut self, _: Option<usize>, _: Boundary, _: &[f32]) {}
}

/// Runs `f`, reporting its duration to `observer` if it keeps time.
fn timed<T>(observer: &mut dyn Observer, layer: Option<usize>, op: Op, f: impl FnOnce() -> T) -> T {
    if !observer.wants_timing() {
        return f();
    }
    let started = Instant::now();
    let result = f();
    observer.timed(layer, op, started.elapsed());
    result
}

/// Small per-layer vectors (norm gains, biases) dequantized once at load;
/// every matrix stays in the file's dtype.
#[derive(Debug, Clone)]
struct LayerVectors {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
}

/// The activations of one forward call, kept by the model between calls so
/// that decoding a token allocates nothing but its logits. Every buffer is
/// fully overwritten before it is read.
#[derive(Debug, Default)]
struct Workspace {
    /// The residual stream, `n × hidden`.
    x: Vec<f32>,
    /// The normed input of the current block, `n × hidden`.
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output before the output projection, `n × heads × head_dim`.
    attn: Vec<f32>,
    /// A block's output (out or down projection), `n × hidden`.
    block_out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    final_norm: Vec<f32>,
}

impl Workspace {
    /// Sizes every buffer for `n` tokens (capacity is kept, so steady decoding never reallocates).
    fn prepare(&mut self, c: &ModelConfig, n: usize) {
        let q_dim = c.heads * c.head_dim;
        let kv_dim = c.kv_heads * c.head_dim;
        for (buf, width) in [
            (&mut self.x, c.hidden),
            (&mut self.normed, c.hidden),
            (&mut self.q, q_dim),
            (&mut self.k, kv_dim),
            (&mut self.v, kv_dim),
            (&mut self.attn, q_dim),
            (&mut self.block_out, c.hidden),
            (&mut self.gate, c.ffn),
            (&mut self.up, c.ffn),
        ] {
            buf.resize(n * width, 0.0);
        }
    }
}

/// A loaded decoder: the mapped file, where its weights are, and a backend.
pub struct Model {
    pub file: ModelFile,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    backend: Box<dyn Backend>,
    layer_vectors: Vec<LayerVectors>,
    output_norm: Vec<f32>,
    /// Reused by forward calls; a call that finds it busy (another thread) uses a fresh one.
    workspace: Mutex<Workspace>,
}

/// Which positions of a forward call produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    Last,
    All,
}

impl Model {
    pub fn load(file: ModelFile, backend: Box<dyn Backend>) -> Result<Model> {
        let config = ModelConfig::from_metadata(file.metadata(), file.tensors())?;
        let weights = ModelWeights::locate(&file, &config)?;
        let vector = |i: TensorIndex| dequantize_vector(&file, i);
        let optional = |i: Option<TensorIndex>| i.map(vector).transpose();
        let layer_vectors = weights
            .layers
            .iter()
            .map(|l| {
                Ok(LayerVectors {
                    attn_norm: vector(l.attn_norm)?,
                    ffn_norm: vector(l.ffn_norm)?,
                    q_bias: optional(l.q_bias)?,
                    k_bias: optional(l.k_bias)?,
                    v_bias: optional(l.v_bias)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let output_norm = vector(weights.output_norm)?;
        let workspace = Mutex::default();
        Ok(Model { file, config, weights, backend, layer_vectors, output_norm, workspace })
    }

    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// A KV cache sized for `context` positions.
    pub fn new_cache(&self, context: usize) -> KvCache {
        KvCache::new(self.config.layers, self.config.kv_heads * self.config.head_dim, context)
    }

    /// Runs `tokens` at positions `cache.len()..`, appends them to the cache,
    /// and returns logits (`vocab` values per requested position).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Vec<f32>> {
        self.forward_observed(tokens, cache, logits, &mut NoObserver)
    }

    /// [`Model::forward`], showing `observer` the activations at every boundary.
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        let start = cache.len();
        if n == 0 {
            // There is no last position to produce logits for.
            return Err(Error::Invalid("forward called with no tokens".into()));
        }
        if start + n > cache.capacity() {
            return Err(Error::Invalid(format!(
                "context full: {} + {n} tokens > {} positions",
                start,
                cache.capacity()
            )));
        }
        // The buffers are overwritten before use, so a poisoned lock's contents are fine.
        let mut fresh = Workspace::default();
        let mut guard = match self.workspace.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let ws = guard.as_deref_mut().unwrap_or(&mut fresh);
        ws.prepare(c, n);
        observer.begin(start, n);
        timed(observer, None, Op::Embedding, || self.embed(tokens, &mut ws.x))?;
        observer.observe(None, Boundary::Embedding, &ws.x);
        for layer in 0..c.layers {
            self.attention_block(layer, ws, start, cache, observer);
            self.ffn_block(layer, ws, observer);
        }
        cache.advance(n);
        let rows = match logits {
            Logits::Last => &ws.x[(n - 1) * c.hidden..],
            Logits::All => &ws.x[..],
        };
        let n_rows = rows.len() / c.hidden;
        let b = &*self.backend;
        let final_norm = &mut ws.final_norm;
        final_norm.resize(rows.len(), 0.0);
        timed(observer, None, Op::FinalNorm, || b.rms_norm(rows, &self.output_norm, c.rms_eps, final_norm));
        observer.observe(None, Boundary::FinalNorm, final_norm);
        let mut out = vec![0.0; n_rows * c.vocab];
        let head = matrix(&self.file, self.weights.output);
        timed(observer, None, Op::LmHead, || b.matmul(&head, final_norm, n_rows, &mut out));
        observer.observe(None, Boundary::Logits, &out);
        observer.end();
        Ok(out)
    }

    fn embed(&self, tokens: &[u32], x: &mut [f32]) -> Result<()> {
        let table = matrix(&self.file, self.weights.embedding);
        for (&token, row) in tokens.iter().zip(x.chunks_exact_mut(self.config.hidden)) {
            if token as usize >= table.rows {
                return Err(Error::Invalid(format!("token id {token} is outside the vocabulary ({})", table.rows)));
            }
            kernels::row_f32(&table, token as usize, row);
        }
        Ok(())
    }

    /// `outs[i]` = `n` rows of `input` times weight `indices[i]`, plus bias `biases[i]`:
    /// one backend call for all the matrices (they share the activation work).
    fn project<const N: usize>(
        &self,
        indices: [TensorIndex; N],
        biases: [Option<&[f32]>; N],
        input: &[f32],
        n: usize,
        outs: [&mut [f32]; N],
    ) {
        let ws = indices.map(|i| matrix(&self.file, i));
        let mut outs = outs;
        self.backend.matmul_many(&ws, input, n, &mut outs);
        for ((out, bias), w) in outs.into_iter().zip(biases).zip(&ws) {
            if let Some(bias) = bias {
                out.chunks_exact_mut(w.rows).for_each(|row| self.backend.add(row, bias));
            }
        }
    }

    fn attention_block(
        &self,
        layer: usize,
        ws: &mut Workspace,
        start: usize,
        cache: &mut KvCache,
        observer: &mut dyn Observer,
    ) {
        let c = &self.config;
        let (w, v) = (&self.weights.layers[layer], &self.layer_vectors[layer]);
        let b = &*self.backend;
        let at = Some(layer);
        let n = ws.x.len() / c.hidden;
        let Workspace { x, normed, q, k, v: values, attn, block_out, .. } = ws;
        timed(observer, at, Op::AttnNorm, || b.rms_norm(x, &v.attn_norm, c.rms_eps, normed));
        observer.observe(at, Boundary::AttnNorm, normed);
        timed(observer, at, Op::QkvProjection, || {
            let biases = [v.q_bias.as_deref(), v.k_bias.as_deref(), v.v_bias.as_deref()];
            self.project([w.q, w.k, w.v], biases, normed, n, [q, k, values]);
        });
        observer.observe(at, Boundary::Q, q);
        observer.observe(at, Boundary::K, k);
        observer.observe(at, Boundary::V, values);
        timed(observer, at, Op::Rope, || {
            b.rope(q, c.heads, c.head_dim, start, c.rope_base, self.weights.rope);
            b.rope(k, c.kv_heads, c.head_dim, start, c.rope_base, self.weights.rope);
        });
        timed(observer, at, Op::Attention, || {
            cache.store(layer, start, k, values);
            let (keys, vals) = cache.layer(layer, start + n);
            let shape = AttentionShape {
                n_tokens: n,
                start_pos: start,
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
            };
            b.attention(q, keys, vals, shape, attn);
        });
        timed(observer, at, Op::OutProjection, || self.project([w.o], [None], attn, n, [block_out]));
        observer.observe(at, Boundary::AttnOutput, block_out);
        timed(observer, at, Op::AttnResidual, || b.add(x, block_out));
        observer.observe(at, Boundary::AttnResidual, x);
    }

    fn ffn_block(&self, layer: usize, ws: &mut Workspace, observer: &mut dyn Observer) {
        let c = &self.config;
        let (w, v) = (&self.weights.layers[layer], &self.layer_vectors[layer]);
        let b = &*self.backend;
        let at = Some(layer);
        let n = ws.x.len() / c.hidden;
        let Workspace { x, normed, gate, up, block_out, .. } = ws;
        timed(observer, at, Op::FfnNorm, || b.rms_norm(x, &v.ffn_norm, c.rms_eps, normed));
        observer.observe(at, Boundary::FfnNorm, normed);
        timed(observer, at, Op::GateUpProjection, || self.project([w.gate, w.up], [None, None], normed, n, [gate, up]));
        timed(observer, at, Op::Activation, || b.silu_mul(gate, up));
        timed(observer, at, Op::DownProjection, || self.project([w.down], [None], gate, n, [block_out]));
        observer.observe(at, Boundary::FfnOutput, block_out);
        timed(observer, at, Op::FfnResidual, || b.add(x, block_out));
        observer.observe(at, Boundary::FfnResidual, x);
    }
}

fn dequantize_vector(file: &ModelFile, index: TensorIndex) -> Result<Vec<f32>> {
    let view = file.view(&file.tensors()[index]);
    quant::dequantize_to_vec(view.dtype(), view.bytes).map_err(|e| Error::Invalid(format!("{}: {e}", view.name())))
}
