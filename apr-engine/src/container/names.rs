//! The one naming scheme (DESIGN.md decision 3).
//!
//! Inside the engine a tensor is known by its GGUF name (`blk.0.attn_q.weight`).
//! This table maps those to Hugging Face names
//! (`model.layers.0.self_attn.q_proj.weight`) and back. Shapes are kept
//! outermost first everywhere in the engine; GGUF files list dimensions
//! innermost first, and only the GGUF reader and writer reverse them.

/// Per-layer tensors: GGUF suffix, Hugging Face suffix.
const LAYER_TENSORS: &[(&str, &str)] = &[
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Model-level tensors: GGUF base name, Hugging Face base name.
const GLOBAL_TENSORS: &[(&str, &str)] = &[
    ("token_embd", "model.embed_tokens"),
    ("output_norm", "model.norm"),
    ("output", "lm_head"),
    ("rope_freqs", "model.rope_freqs"),
];

/// Splits `stem.weight` / `stem.bias` into stem and the parameter kind.
fn split_param(name: &str) -> Option<(&str, &str)> {
    let (stem, kind) = name.rsplit_once('.')?;
    matches!(kind, "weight" | "bias").then_some((stem, kind))
}

/// The Hugging Face name of a canonical (GGUF) name; unknown names pass through.
pub fn to_hf(gguf_name: &str) -> String {
    let Some((stem, kind)) = split_param(gguf_name) else { return gguf_name.to_string() };
    if let Some((_, hf)) = GLOBAL_TENSORS.iter().find(|(g, _)| *g == stem) {
        return format!("{hf}.{kind}");
    }
    if let Some((layer, suffix)) = stem.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        if let Some((_, hf)) = LAYER_TENSORS.iter().find(|(g, _)| *g == suffix) {
            return format!("model.layers.{layer}.{hf}.{kind}");
        }
    }
    gguf_name.to_string()
}

/// The canonical (GGUF) name of a Hugging Face or GGUF name; unknown names pass through.
pub fn to_canonical(name: &str) -> String {
    let Some((stem, kind)) = split_param(name) else { return name.to_string() };
    if let Some((g, _)) = GLOBAL_TENSORS.iter().find(|(_, h)| *h == stem) {
        return format!("{g}.{kind}");
    }
    if let Some((layer, suffix)) = stem.strip_prefix("model.layers.").and_then(|r| r.split_once('.')) {
        if let Some((g, _)) = LAYER_TENSORS.iter().find(|(_, h)| *h == suffix) {
            return format!("blk.{layer}.{g}.{kind}");
        }
    }
    name.to_string()
}

/// The layer a canonical name belongs to, if any.
pub fn layer_of(canonical: &str) -> Option<usize> {
    canonical.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// What a tensor does, for validation and diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    Embedding,
    Norm,
    Projection,
    Bias,
    Output,
    Other,
}

/// The role of a tensor from its canonical name.
pub fn role_of(canonical: &str) -> TensorRole {
    let Some((stem, kind)) = split_param(canonical) else { return TensorRole::Other };
    let last = stem.rsplit('.').next().unwrap_or(stem);
    match (last, kind) {
        ("token_embd", _) => TensorRole::Embedding,
        ("output", _) => TensorRole::Output,
        (_, "bias") => TensorRole::Bias,
        (s, _) if s.ends_with("norm") => TensorRole::Norm,
        ("attn_q" | "attn_k" | "attn_v" | "attn_output" | "ffn_gate" | "ffn_up" | "ffn_down", _) => {
            TensorRole::Projection
        }
        _ => TensorRole::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in
            ["token_embd.weight", "output.weight", "output_norm.weight", "blk.3.attn_q.bias", "blk.27.ffn_down.weight"]
        {
            let hf = to_hf(name);
            assert_ne!(hf, name);
            assert_eq!(to_canonical(&hf), name);
            assert_eq!(to_canonical(name), name, "GGUF names are accepted as they are");
        }
        assert_eq!(to_hf("blk.0.attn_k.weight"), "model.layers.0.self_attn.k_proj.weight");
    }

    #[test]
    fn roles() {
        assert_eq!(role_of("blk.0.attn_norm.weight"), TensorRole::Norm);
        assert_eq!(role_of("blk.0.ffn_norm.weight"), TensorRole::Norm);
        assert_eq!(role_of("output_norm.weight"), TensorRole::Norm);
        assert_eq!(role_of("token_embd.weight"), TensorRole::Embedding);
        assert_eq!(role_of("blk.1.attn_q.bias"), TensorRole::Bias);
        assert_eq!(layer_of("blk.12.ffn_up.weight"), Some(12));
    }
}
