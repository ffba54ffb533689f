//! Comparisons between two models: tensors (and later traces).
pub mod stats;
pub mod tensors;
