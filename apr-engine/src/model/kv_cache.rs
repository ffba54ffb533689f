//! The key/value cache of one sequence. Its buffers belong to the backend of
//! the model that made it (device memory for a GPU): they are allocated on the
//! first forward call, one keys and one values buffer per layer, and written
//! in place after that.

use std::any::Any;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// A fault the test-only engine hook injects into a cache, so that the
/// trace-diff suite can prove it recognises KV cache bugs.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFault {
    /// Every call after the first sees the earlier positions' keys zeroed,
    /// as if the cache were not carried over from the prefill.
    ForgetEarlierPositions,
}

/// Keys and values for every layer, `[position][kv_head * head_dim]`.
pub struct KvCache {
    #[doc(hidden)]
    pub fault: Option<KvFault>,
    layers: usize,
    kv_dim: usize,
    capacity: usize,
    len: usize,
    /// A `LayerBuffers<B>` of the backend that first ran on the cache.
    storage: Option<Box<dyn Any + Send + Sync>>,
}

/// The backend buffers behind a [`KvCache`].
pub(crate) struct LayerBuffers<B: Backend> {
    pub keys: Vec<B::Buffer>,
    pub values: Vec<B::Buffer>,
    /// Unique to this allocation: a recorded step names the caches it wrote.
    pub id: u64,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KvCache({}/{} positions, {} layers × {})", self.len, self.capacity, self.layers, self.kv_dim)
    }
}

impl KvCache {
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> Self {
        KvCache { fault: None, layers, kv_dim, capacity, len: 0, storage: None }
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets positions from `len` on (so a chat can reuse a common prefix).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Marks `n` more positions as filled (after every layer wrote them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// The buffers on `backend`, allocated on first use. A cache made for
    /// another model's shape, or already holding another backend's buffers, is refused.
    pub(crate) fn buffers<B: Backend>(
        &mut self,
        backend: &B,
        layers: usize,
        kv_dim: usize,
    ) -> Result<&mut LayerBuffers<B>> {
        if (layers, kv_dim) != (self.layers, self.kv_dim) {
            return Err(Error::Invalid(format!(
                "a KV cache of {} layers × {} is not for this model ({layers} × {kv_dim})",
                self.layers, self.kv_dim
            )));
        }
        if self.storage.is_none() {
            let len = self.kv_dim * self.capacity;
            let alloc = || (0..layers).map(|_| backend.alloc(len)).collect::<Result<Vec<_>>>();
            let id = super::workspace::next_buffer_generation();
            self.storage = Some(Box::new(LayerBuffers::<B> { keys: alloc()?, values: alloc()?, id }));
        }
        self.storage.as_mut().and_then(|s| s.downcast_mut::<LayerBuffers<B>>()).ok_or_else(|| {
            Error::Invalid(format!("a KV cache holding another backend's buffers given to backend {}", backend.name()))
        })
    }
}
