//! The key/value cache: one preallocated buffer per layer, written in place.

/// A fault the test-only engine hook injects into a cache, so that the
/// trace-diff suite can prove it recognises KV cache bugs.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFault {
    /// Every call after the first sees the earlier positions' keys zeroed,
    /// as if the cache were not carried over from the prefill.
    ForgetEarlierPositions,
}

/// Keys and values for every layer, `[position][kv_head * head_dim]`, F32.
#[derive(Debug, Clone)]
pub struct KvCache {
    #[doc(hidden)]
    pub fault: Option<KvFault>,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    kv_dim: usize,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> Self {
        KvCache {
            fault: None,
            keys: vec![vec![0.0; kv_dim * capacity]; layers],
            values: vec![vec![0.0; kv_dim * capacity]; layers],
            kv_dim,
            capacity,
            len: 0,
        }
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
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Writes keys and values for positions `start..start + n` of a layer.
    pub fn store(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        if self.fault == Some(KvFault::ForgetEarlierPositions) && start > 0 {
            self.keys[layer][..start * self.kv_dim].fill(0.0);
        }
        let range = start * self.kv_dim..start * self.kv_dim + k.len();
        self.keys[layer][range.clone()].copy_from_slice(k);
        self.values[layer][range].copy_from_slice(v);
    }

    /// Keys and values of a layer for positions `0..end`.
    pub fn layer(&self, layer: usize, end: usize) -> (&[f32], &[f32]) {
        let n = end * self.kv_dim;
        (&self.keys[layer][..n], &self.values[layer][..n])
    }
}
