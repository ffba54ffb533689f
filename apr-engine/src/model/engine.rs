//! A model prepared on one backend: every weight made ready once at load
//! (matrices through [`Backend::prepare`], norm gains and biases uploaded as
//! buffers) and the reusable activation workspace. [`Runner`] is the same
//! thing with the backend type erased, which [`super::Model`] holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::config::ModelConfig;
use super::forward::Sequence;
use super::observer::Observer;
use super::weights::{ModelWeights, TensorIndex};
use super::KvCache;
use crate::backend::{Backend, HostMatrix, RopeStyle};
use crate::container::ModelFile;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant;

/// One decoder layer's weights on the backend.
pub(super) struct LayerParams<B: Backend> {
    pub attn_norm: B::Buffer,
    pub ffn_norm: B::Buffer,
    pub q_bias: Option<B::Buffer>,
    pub k_bias: Option<B::Buffer>,
    pub v_bias: Option<B::Buffer>,
    pub q: Arc<B::Matrix>,
    pub k: Arc<B::Matrix>,
    pub v: Arc<B::Matrix>,
    pub o: Arc<B::Matrix>,
    pub gate: Arc<B::Matrix>,
    pub up: Arc<B::Matrix>,
    pub down: Arc<B::Matrix>,
}

pub(super) struct Engine<B: Backend> {
    pub backend: B,
    pub config: ModelConfig,
    pub rope: RopeStyle,
    pub embedding: Arc<B::Matrix>,
    pub layers: Vec<LayerParams<B>>,
    pub output_norm: B::Buffer,
    /// `output.weight`, or the embedding's own prepared matrix when tied.
    pub output: Arc<B::Matrix>,
    /// Reused by forward calls; a call that finds it busy (another thread) uses a fresh one.
    pub workspace: Mutex<super::workspace::Workspace<B>>,
}

/// A prepared model with its backend type erased.
pub(super) trait Runner: Send + Sync {
    fn backend_name(&self) -> &'static str;
    fn backend_description(&self) -> String;
    fn kernel_name(&self, dtype: DType) -> &'static str;
    fn device_memory_in_use(&self) -> Option<u64>;
    fn forward(&self, sequences: &mut [Sequence<'_>], observer: &mut dyn Observer) -> Result<Vec<Vec<f32>>>;
}

impl<B: Backend> Runner for Engine<B> {
    fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
    fn backend_description(&self) -> String {
        self.backend.description()
    }
    fn kernel_name(&self, dtype: DType) -> &'static str {
        self.backend.kernel_name(dtype)
    }
    fn device_memory_in_use(&self) -> Option<u64> {
        self.backend.device_memory_in_use()
    }
    fn forward(&self, sequences: &mut [Sequence<'_>], observer: &mut dyn Observer) -> Result<Vec<Vec<f32>>> {
        self.run(sequences, observer)
    }
}

impl<B: Backend> Engine<B> {
    /// Prepares every weight of `weights` on `backend`; a matrix used twice
    /// (tied embedding and output) is prepared once.
    pub fn prepare(backend: B, file: &Arc<ModelFile>, config: &ModelConfig, weights: &ModelWeights) -> Result<Self> {
        let mut matrices: HashMap<TensorIndex, Arc<B::Matrix>> = HashMap::new();
        let mut matrix = |index: TensorIndex| -> Result<Arc<B::Matrix>> {
            if let Some(prepared) = matrices.get(&index) {
                return Ok(Arc::clone(prepared));
            }
            let prepared = Arc::new(backend.prepare(&HostMatrix::new(file, index)?)?);
            matrices.insert(index, Arc::clone(&prepared));
            Ok(prepared)
        };
        let vector = |index: TensorIndex| backend.upload(&dequantize_vector(file, index)?);
        let optional = |index: Option<TensorIndex>| index.map(vector).transpose();
        let mut layers = Vec::with_capacity(weights.layers.len());
        for l in &weights.layers {
            layers.push(LayerParams {
                attn_norm: vector(l.attn_norm)?,
                ffn_norm: vector(l.ffn_norm)?,
                q_bias: optional(l.q_bias)?,
                k_bias: optional(l.k_bias)?,
                v_bias: optional(l.v_bias)?,
                q: matrix(l.q)?,
                k: matrix(l.k)?,
                v: matrix(l.v)?,
                o: matrix(l.o)?,
                gate: matrix(l.gate)?,
                up: matrix(l.up)?,
                down: matrix(l.down)?,
            });
        }
        let embedding = matrix(weights.embedding)?;
        let output = matrix(weights.output)?;
        let output_norm = vector(weights.output_norm)?;
        Ok(Engine {
            workspace: Mutex::default(),
            backend,
            config: config.clone(),
            rope: weights.rope,
            embedding,
            layers,
            output_norm,
            output,
        })
    }

    /// The buffers of `cache` on this engine's backend.
    pub fn cache_buffers<'c>(&self, cache: &'c mut KvCache) -> Result<&'c mut super::kv_cache::LayerBuffers<B>> {
        let c = &self.config;
        cache.buffers(&self.backend, c.layers, c.kv_heads * c.head_dim)
    }
}

fn dequantize_vector(file: &ModelFile, index: TensorIndex) -> Result<Vec<f32>> {
    let view = file.view(&file.tensors()[index]);
    quant::dequantize_to_vec(view.dtype(), view.bytes).map_err(|e| Error::Invalid(format!("{}: {e}", view.name())))
}
