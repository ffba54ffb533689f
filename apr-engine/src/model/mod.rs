//! Decoder models: configuration, weight lookup, KV cache and the forward
//! pass, run on a backend (`crate::backend`).
pub mod config;
mod engine;
mod forward;
pub mod kv_cache;
mod loaded;
mod observer;
pub mod weights;
mod workspace;

pub use config::{Architecture, ModelConfig};
pub use forward::{Logits, Sequence};
pub use kv_cache::{KvCache, KvFault};
pub use loaded::Model;
pub use observer::{Boundary, NoObserver, Observer, Op};
