//! Decoder models: configuration and (later) the forward pass.
pub mod config;
pub use config::{Architecture, ModelConfig};
