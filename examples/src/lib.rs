//! A crate written the way a downstream user writes one: its `tests/` hold
//! `#[model_test]` suites on the real 0.5B model, its `examples/` show the
//! library API (open and inspect, generate, trace, diff). Run the suites with
//! `cargo apr test -p apr-examples`, the examples with
//! `cargo run -p apr-examples --example inspect -- MODEL.gguf`.

/// The model every example and suite uses, as named in this crate's Cargo.toml.
pub const MODEL: &str = "qwen2.5-coder-0.5b-instruct";

/// The model file given on the command line, else the 0.5B reference model.
pub fn model_path_from_args() -> std::path::PathBuf {
    match std::env::args_os().nth(1) {
        Some(path) => path.into(),
        None => apr_engine::testing::models::QWEN_0_5B.require(),
    }
}
