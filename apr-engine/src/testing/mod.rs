//! The testing runtime: what `#[model_test]` generates calls into, and what
//! the project's own tests use.
//!
//! - `spec`: the constant description of a test the macro emits.
//! - `runner`: resolves models, runs the test's kind, writes its report.
//! - `manifest`: models declared in `[package.metadata.apr.models]`.
//! - `cache`: `target/apr/` locations and the conversion cache.
//! - `compare`, `roundtrip`, `golden`: the three kinds of check.
//! - `report`: the per-test JSON report and its rendering.
//! - `models`, `faults`: the reference models and corrupted copies of them.
pub mod cache;
pub mod compare;
pub mod faults;
pub mod golden;
pub mod manifest;
pub mod models;
pub mod report;
pub mod roundtrip;
pub mod runner;
pub mod spec;

pub use report::{Report, Status};
