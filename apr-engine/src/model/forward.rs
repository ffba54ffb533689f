//! The decoder forward pass, written once against [`Backend`].

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

/// Sees activations as the forward pass produces them (`n_tokens` rows each).
/// `layer` is `None` outside the decoder layers.
pub trait Observer {
    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]);
}

/// The observer of an untraced run: does nothing, costs nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    #[inline]
    fn observe(&mut self, _: Option<usize>, _: Boundary, _: &[f32]) {}
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

/// A loaded decoder: the mapped file, where its weights are, and a backend.
pub struct Model {
    pub file: ModelFile,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    backend: Box<dyn Backend>,
    layer_vectors: Vec<LayerVectors>,
    output_norm: Vec<f32>,
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
        Ok(Model { file, config, weights, backend, layer_vectors, output_norm })
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
        if start + n > cache.capacity() {
            return Err(Error::Invalid(format!(
                "context full: {} + {n} tokens > {} positions",
                start,
                cache.capacity()
            )));
        }
        let mut x = self.embed(tokens)?;
        observer.observe(None, Boundary::Embedding, &x);
        let mut normed = vec![0.0; n * c.hidden];
        for layer in 0..c.layers {
            self.attention_block(layer, &mut x, &mut normed, start, cache, observer);
            self.ffn_block(layer, &mut x, &mut normed, observer);
        }
        cache.advance(n);
        let rows = match logits {
            Logits::Last => &x[(n - 1) * c.hidden..],
            Logits::All => &x[..],
        };
        let n_rows = rows.len() / c.hidden;
        let mut final_norm = vec![0.0; rows.len()];
        self.backend.rms_norm(rows, &self.output_norm, c.rms_eps, &mut final_norm);
        observer.observe(None, Boundary::FinalNorm, &final_norm);
        let mut out = vec![0.0; n_rows * c.vocab];
        self.backend.matmul(&matrix(&self.file, self.weights.output), &final_norm, n_rows, &mut out);
        observer.observe(None, Boundary::Logits, &out);
        Ok(out)
    }

    fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let hidden = self.config.hidden;
        let table = matrix(&self.file, self.weights.embedding);
        let mut x = vec![0.0; tokens.len() * hidden];
        for (&token, row) in tokens.iter().zip(x.chunks_exact_mut(hidden)) {
            if token as usize >= table.rows {
                return Err(Error::Invalid(format!("token id {token} is outside the vocabulary ({})", table.rows)));
            }
            kernels::row_f32(&table, token as usize, row);
        }
        Ok(x)
    }

    fn attention_block(
        &self,
        layer: usize,
        x: &mut [f32],
        normed: &mut [f32],
        start: usize,
        cache: &mut KvCache,
        observer: &mut dyn Observer,
    ) {
        let mut see = |boundary, values: &[f32]| observer.observe(Some(layer), boundary, values);
        let c = &self.config;
        let (w, v) = (&self.weights.layers[layer], &self.layer_vectors[layer]);
        let b = &*self.backend;
        let n = x.len() / c.hidden;
        let (q_dim, kv_dim) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        b.rms_norm(x, &v.attn_norm, c.rms_eps, normed);
        see(Boundary::AttnNorm, normed);
        let project = |index, bias: &Option<Vec<f32>>, width| {
            let mut out = vec![0.0; n * width];
            b.matmul(&matrix(&self.file, index), normed, n, &mut out);
            if let Some(bias) = bias {
                out.chunks_exact_mut(width).for_each(|row| b.add(row, bias));
            }
            out
        };
        let mut q = project(w.q, &v.q_bias, q_dim);
        let mut k = project(w.k, &v.k_bias, kv_dim);
        let values = project(w.v, &v.v_bias, kv_dim);
        see(Boundary::Q, &q);
        see(Boundary::K, &k);
        see(Boundary::V, &values);
        b.rope(&mut q, c.heads, c.head_dim, start, c.rope_base, self.weights.rope);
        b.rope(&mut k, c.kv_heads, c.head_dim, start, c.rope_base, self.weights.rope);
        cache.store(layer, start, &k, &values);
        let (keys, vals) = cache.layer(layer, start + n);
        let mut attn = vec![0.0; n * q_dim];
        let shape = AttentionShape {
            n_tokens: n,
            start_pos: start,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
        };
        b.attention(&q, keys, vals, shape, &mut attn);
        let mut projected = vec![0.0; n * c.hidden];
        b.matmul(&matrix(&self.file, w.o), &attn, n, &mut projected);
        see(Boundary::AttnOutput, &projected);
        b.add(x, &projected);
        see(Boundary::AttnResidual, x);
    }

    fn ffn_block(&self, layer: usize, x: &mut [f32], normed: &mut [f32], observer: &mut dyn Observer) {
        let mut see = |boundary, values: &[f32]| observer.observe(Some(layer), boundary, values);
        let c = &self.config;
        let (w, v) = (&self.weights.layers[layer], &self.layer_vectors[layer]);
        let b = &*self.backend;
        let n = x.len() / c.hidden;
        b.rms_norm(x, &v.ffn_norm, c.rms_eps, normed);
        see(Boundary::FfnNorm, normed);
        let mut gate = vec![0.0; n * c.ffn];
        let mut up = vec![0.0; n * c.ffn];
        b.matmul(&matrix(&self.file, w.gate), normed, n, &mut gate);
        b.matmul(&matrix(&self.file, w.up), normed, n, &mut up);
        b.silu_mul(&mut gate, &up);
        let mut down = vec![0.0; n * c.hidden];
        b.matmul(&matrix(&self.file, w.down), &gate, n, &mut down);
        see(Boundary::FfnOutput, &down);
        b.add(x, &down);
        see(Boundary::FfnResidual, x);
    }
}

fn dequantize_vector(file: &ModelFile, index: TensorIndex) -> Result<Vec<f32>> {
    let view = file.view(&file.tensors()[index]);
    quant::dequantize_to_vec(view.dtype(), view.bytes).map_err(|e| Error::Invalid(format!("{}: {e}", view.name())))
}
