//! [`Model`]: a model file loaded on a backend, what every command and test drives.

use std::sync::Arc;

use super::config::ModelConfig;
use super::engine::{Engine, Runner};
use super::forward::{Logits, Sequence};
use super::observer::{NoObserver, Observer};
use super::weights::ModelWeights;
use super::KvCache;
use crate::backend::cpu::Cpu;
use crate::backend::cuda::Cuda;
use crate::backend::reference::CpuReference;
use crate::backend::{Backend, BackendKind};
use crate::container::ModelFile;
use crate::dtype::DType;
use crate::error::Result;

/// A loaded decoder: the mapped file, where its weights are, and the weights
/// prepared on a backend.
pub struct Model {
    pub file: Arc<ModelFile>,
    pub config: ModelConfig,
    pub weights: ModelWeights,
    runner: Box<dyn Runner>,
}

impl Model {
    /// Loads `file` on the backend `kind` names; an unavailable backend is an error saying why.
    pub fn load(file: ModelFile, kind: BackendKind) -> Result<Model> {
        match kind {
            BackendKind::Cpu => Model::load_on(file, Cpu),
            BackendKind::CpuReference => Model::load_on(file, CpuReference),
            BackendKind::Cuda => Model::load_on(file, Cuda::new()?),
        }
    }

    /// Loads `file` on a backend value (a test can wrap a backend to break one operation).
    pub fn load_on<B: Backend>(file: ModelFile, backend: B) -> Result<Model> {
        let config = ModelConfig::from_metadata(file.metadata(), file.tensors())?;
        let weights = ModelWeights::locate(&file, &config)?;
        let file = Arc::new(file);
        let engine = Engine::prepare(backend, &file, &config, &weights)?;
        Ok(Model { file, config, weights, runner: Box::new(engine) })
    }

    /// The backend the model runs on (`cpu`, `cpu-reference`, ...), as reports name it.
    pub fn backend_name(&self) -> &'static str {
        self.runner.backend_name()
    }

    /// Bytes of device memory in use (device-wide), on a device backend.
    pub fn device_memory_in_use(&self) -> Option<u64> {
        self.runner.device_memory_in_use()
    }

    /// The backend and, for a device, which one (`--verbose` prints it).
    pub fn backend_description(&self) -> String {
        self.runner.backend_description()
    }

    /// The kernel a matrix of `dtype` runs on, on this model's backend.
    pub fn kernel_name(&self, dtype: DType) -> &'static str {
        self.runner.kernel_name(dtype)
    }

    /// A KV cache for `context` positions; its memory is taken on the backend
    /// at the first forward call that uses it.
    pub fn new_cache(&self, context: usize) -> KvCache {
        KvCache::new(self.config.layers, self.config.kv_heads * self.config.head_dim, context)
    }

    /// Runs `tokens` at positions `cache.len()..`, appends them to the cache,
    /// and returns logits (`vocab` values per requested position).
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Vec<f32>> {
        self.forward_observed(tokens, cache, logits, &mut NoObserver)
    }

    /// [`Model::forward`], showing `observer` every boundary.
    pub fn forward_observed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        observer: &mut dyn Observer,
    ) -> Result<Vec<f32>> {
        let mut one = [Sequence { tokens, cache, logits }];
        let mut out = self.runner.forward(&mut one, observer)?;
        Ok(out.pop().expect("one sequence in, one out"))
    }

    /// One pass over several sequences, each at its own positions in its own
    /// cache (how a server decodes all its requests at once); the logits of
    /// each, in order. Results equal separate [`Model::forward`] calls up to
    /// the order of floating-point sums in the shared matrix products.
    pub fn forward_batch(&self, sequences: &mut [Sequence<'_>]) -> Result<Vec<Vec<f32>>> {
        self.runner.forward(sequences, &mut NoObserver)
    }
}
