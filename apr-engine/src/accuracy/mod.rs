//! Accuracy measured against references outside apr: files other engines write.

pub mod llama_kld_base;
