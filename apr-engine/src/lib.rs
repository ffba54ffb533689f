//! apr-engine: model containers, dtypes, tokenizer, model, backends, tracing
//! and the testing runtime behind `#[model_test]` and `cargo apr`.

pub mod accuracy;
pub mod backend;
pub mod bench;
pub mod container;
pub mod dtype;
pub mod error;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod testing;
pub mod tokenizer;
pub mod trace;
pub mod tracediff;

/// `#[model_test(...)]`: see [`testing`].
pub use apr_macros::model_test;
pub use container::{Format, ModelFile, TensorInfo, TensorView};
pub use dtype::DType;
pub use error::{Error, ParseError, Result};
pub mod check;
pub mod convert;
pub mod diff;
pub mod generate;
pub mod inspect;
pub mod isolate;
pub mod pipeline;
pub mod stats;
pub mod synth;
pub mod validate;
