//! Accuracy measured as figures: an engine's distance to exact math
//! (`kld`), and the files other engines write for the same measurement
//! (`llama_kld_base`).

pub mod kld;
pub mod llama_kld_base;
