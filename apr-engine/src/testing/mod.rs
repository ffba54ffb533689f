//! The testing runtime: what `#[model_test]` and the project's own tests call.
pub mod faults;
pub mod models;
