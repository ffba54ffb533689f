//! Decoder models: configuration, weight lookup, KV cache and the forward pass.
pub mod config;
pub mod forward;
pub mod kv_cache;
pub mod weights;

pub use config::{Architecture, ModelConfig};
pub use forward::{Boundary, Logits, Model, NoObserver, Observer, Op};
pub use kv_cache::{KvCache, KvFault};
