//! End-to-end tests of `#[model_test]` live in `tests/`; this crate has no code of its own.
