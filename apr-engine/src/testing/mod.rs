//! The testing runtime: what `#[model_test]` generates calls into, and what
//! the project's own tests use.
//!
//! - `spec`: the constant description of a test the macro emits.
//! - `runner`: resolves models, runs the test's kind, writes its report.
//! - `manifest`: models declared in `[package.metadata.apr.models]`.
//! - `cache`: `target/apr/` locations and the conversion cache.
//! - `compare`, `roundtrip`, `golden`: the three kinds of check.
//! - `report`: the per-test JSON report and its rendering.
//! - `models`, `faults`: the reference models and corrupted copies of them;
//!   `broken_backend`: a backend with one wrong operation.
pub mod broken_backend;
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

/// `len` deterministic pseudo-random bytes for `seed` (xorshift64): stand-ins for
/// file contents in tests, the same on every run so that failures reproduce.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
