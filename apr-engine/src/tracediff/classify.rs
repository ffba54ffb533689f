//! Naming the bug behind a divergence. Each rule states the evidence it saw;
//! the rules run from the most specific cause (the tokenizer, the file's
//! tensor table) to the most general (a layer's output differs).

use serde::Serialize;

use super::{BoundaryDiff, Findings, Side};
use crate::container::{names, qk_order, ModelFile, QkRowOrder, TensorInfo, TensorView};
use crate::diff::stats::compare;
use crate::diff::tensors::{compare_tensor, rows_in_order_of, Verdict as TensorVerdict};
use crate::model::Boundary;
use crate::quant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Classification {
    /// The candidate's weights carry no information (constant or non-finite logits everywhere, e.g. all PAD).
    WeightLoadFailure,
    /// The embedding output is zero, constant or wrong.
    EmbeddingFailure,
    /// NaN or Inf appears first inside attention.
    AttentionOverflow,
    /// The first divergent boundary is inside this layer.
    LayerCorrupted(usize),
    /// Only the first position, or only positions read back from the KV cache, diverge.
    KvCacheInitBug,
    /// Fine up to a position, then wrong: the candidate cannot go past its
    /// context length, or its output turns to garbage after some position (a
    /// RoPE or position bug: position 0 agrees, later positions do not).
    ContextOverflow,
    /// The prompt tokenizes differently, or the candidate has no tokenizer.
    TokenizerMismatch,
    /// A tensor's dtype differs between the files and its values decode to garbage.
    DTypeMismatch,
    /// A tensor is stored in another layout: transposed, or its rows (or the
    /// activations they produce) reordered, e.g. Q/K rotary pairs interleaved
    /// against half-split. The evidence names the tensor and the order.
    LayoutMismatch,
    Unknown,
}

impl std::fmt::Display for Classification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Classification::LayerCorrupted(n) => write!(f, "LayerCorrupted({n})"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// NMSE above which a tensor's values differ by more than quantization noise.
const MATERIAL_NMSE: f64 = 0.05;

pub(crate) fn classify(reference: &Side, candidate: &Side, f: &Findings) -> (Classification, Vec<String>) {
    let (ref_file, cand_file) = (&reference.model.file, &candidate.model.file);
    if let Some(evidence) = &f.tokenizer_evidence {
        return (Classification::TokenizerMismatch, vec![evidence.clone()]);
    }
    if let Some(failure) = &f.candidate_error {
        let (position, error) = (failure.position, &failure.message);
        let context = candidate.model.config.context_length;
        if position + 1 >= context || failure.context_full {
            return (
                Classification::ContextOverflow,
                vec![format!(
                    "the candidate stopped at position {position}: {error} (its context length is {context})"
                )],
            );
        }
        return (Classification::Unknown, vec![format!("the candidate failed at position {position}: {error}")]);
    }
    if f.positions_compared > 0 && f.dead_logit_positions == f.positions_compared {
        return (
            Classification::WeightLoadFailure,
            vec![format!(
                "the candidate's logits are constant or non-finite at all {} positions: its weights carry no information",
                f.positions_compared
            )],
        );
    }
    let Some(first) = &f.first else {
        return (
            Classification::Unknown,
            vec!["the generated tokens differ while every compared value is within tolerance".into()],
        );
    };
    let mut evidence = vec![describe(first)];
    let class = match (first.boundary, first.layer) {
        (Boundary::Embedding, _) => embedding(first, ref_file, cand_file, &mut evidence),
        (b, Some(layer)) if introduces_non_finite(first) && is_attention(b) => {
            evidence.push(format!(
                "NaN/Inf first appears in layer {layer} at {b:?}: reference {} NaN {} Inf, candidate {} NaN {} Inf",
                first.reference.nan, first.reference.inf, first.candidate.nan, first.candidate.inf
            ));
            evidence.extend(named_tensor_evidence(ref_file, cand_file, &layer_tensors(ref_file, layer)).1);
            Classification::AttentionOverflow
        }
        _ if kv_pattern(f, &mut evidence) => Classification::KvCacheInitBug,
        (_, Some(layer)) => layer_cause(f, first, layer, ref_file, cand_file, &mut evidence),
        (_, None) => {
            let (class, found) = named_tensor_evidence(ref_file, cand_file, &["output_norm.weight", "output.weight"]);
            evidence.extend(found);
            class.unwrap_or(Classification::Unknown)
        }
    };
    (class, evidence)
}

/// A candidate that could not even be loaded: a transposed shape is a layout
/// bug; anything else means its weights did not load.
pub(crate) fn unloadable(
    reference: &ModelFile,
    candidate: Option<&ModelFile>,
    error: &str,
) -> (Classification, Vec<String>) {
    let mut evidence = vec![format!("the candidate could not be loaded: {error}")];
    if let Some(candidate) = candidate {
        for t in reference.tensors() {
            let Some(c) = candidate.tensors().iter().find(|c| c.name == t.name) else { continue };
            if c.shape.len() == 2 && c.shape.iter().rev().eq(t.shape.iter()) && c.shape != t.shape {
                evidence.push(format!(
                    "{} is {:?} in the candidate, {:?} in the reference (transposed)",
                    t.name, c.shape, t.shape
                ));
                return (Classification::LayoutMismatch, evidence);
            }
        }
    }
    (Classification::WeightLoadFailure, evidence)
}

fn describe(d: &BoundaryDiff) -> String {
    let layer = d.layer.map_or(String::new(), |l| format!(" layer {l}"));
    format!(
        "first divergence at position {}{layer} {:?}: max abs diff {:.4e}, NMSE {:.4e}, cosine {:.6}; reference mean {:.4e} std {:.4e}, candidate mean {:.4e} std {:.4e}",
        d.position,
        d.boundary,
        d.metrics.max_abs_diff,
        d.metrics.nmse,
        d.metrics.cosine,
        d.reference.mean,
        d.reference.std,
        d.candidate.mean,
        d.candidate.std
    )
}

fn is_attention(b: Boundary) -> bool {
    matches!(b, Boundary::Q | Boundary::K | Boundary::V | Boundary::AttnOutput)
}

fn introduces_non_finite(d: &BoundaryDiff) -> bool {
    d.candidate.nan + d.candidate.inf > 0 && d.reference.nan + d.reference.inf == 0
}

fn embedding(first: &BoundaryDiff, r: &ModelFile, c: &ModelFile, evidence: &mut Vec<String>) -> Classification {
    let s = &first.candidate;
    if s.std == 0.0 {
        evidence
            .push(format!("the candidate's embedding output is constant (value {}), the reference's is not", s.mean));
    }
    let (class, found) = named_tensor_evidence(r, c, &["token_embd.weight"]);
    evidence.extend(found);
    match class {
        Some(c @ (Classification::DTypeMismatch | Classification::LayoutMismatch)) => c,
        _ => Classification::EmbeddingFailure,
    }
}

/// Prefill positions (computed in one call) agree but positions read back
/// from the cache do not; or only the very first position is wrong.
fn kv_pattern(f: &Findings, evidence: &mut Vec<String>) -> bool {
    let Some(&first) = f.diverged_positions.first() else { return false };
    if first >= f.prompt_len && f.prompt_len > 1 {
        evidence.push(format!(
            "all {} prompt positions, computed in one call, agree; position {first}, the first that reads earlier positions back from the KV cache, diverges",
            f.prompt_len
        ));
        return true;
    }
    if f.diverged_positions == [0] && f.positions_compared > 1 {
        evidence.push("only position 0 diverges; every later position agrees".into());
        return true;
    }
    false
}

/// Why layer `layer` diverged: a tensor of the layer that differs (and how),
/// else activations that hold the reference's values in another order, else a
/// divergence that starts after position 0 (RoPE/position), else the layer's
/// computation itself.
fn layer_cause(
    f: &Findings,
    first: &BoundaryDiff,
    layer: usize,
    r: &ModelFile,
    c: &ModelFile,
    evidence: &mut Vec<String>,
) -> Classification {
    let (class, found) = named_tensor_evidence(r, c, &layer_tensors(r, layer));
    let tensors_differ = !found.is_empty();
    evidence.extend(found);
    if let Some(class) = class {
        return class;
    }
    if !tensors_differ && same_values_reordered(first) {
        evidence.push(format!(
            "the candidate's {:?} of layer {layer} holds the reference's values in another order (same count, mean, std, min and max): its rows, or the RoPE pairing of its dimensions, are laid out differently",
            first.boundary
        ));
        return Classification::LayoutMismatch;
    }
    if !tensors_differ {
        if let Some(found) = position_dependent(f, first, r, c) {
            evidence.extend(found);
            return Classification::ContextOverflow;
        }
        evidence.push(format!(
            "no tensor of layer {layer} differs beyond quantization noise: the layer's computation (kernel or backend) is the suspect"
        ));
    }
    Classification::LayerCorrupted(layer)
}

fn layer_tensors(file: &ModelFile, layer: usize) -> Vec<&str> {
    let prefix = format!("blk.{layer}.");
    file.tensors().iter().filter(|t| t.name.starts_with(&prefix)).map(|t| t.name.as_str()).collect()
}

/// Two rows with equal statistics but different values: a permutation.
fn same_values_reordered(d: &BoundaryDiff) -> bool {
    let (a, b) = (&d.reference, &d.candidate);
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()).max(1e-12);
    a.count == b.count
        && a.count > 1
        && d.metrics.max_abs_diff > 0.0
        && close(a.mean, b.mean)
        && close(a.std, b.std)
        && close(f64::from(a.min), f64::from(b.min))
        && close(f64::from(a.max), f64::from(b.max))
}

/// Every boundary of position 0 agrees and the divergence starts at a later
/// position: what only the position can change (RoPE, the position's place in
/// the cache) is wrong. Names the position and any RoPE metadata that differs.
fn position_dependent(f: &Findings, first: &BoundaryDiff, r: &ModelFile, c: &ModelFile) -> Option<Vec<String>> {
    let agreeing_before = f.diverged_positions.first().is_some_and(|&p| p == first.position);
    if first.position == 0 || !agreeing_before {
        return None;
    }
    let mut evidence = vec![format!(
        "positions 0..{} agree at every boundary; from position {} on the output diverges (first at {:?} of layer {}): a position-dependent (RoPE) bug",
        first.position,
        first.position,
        first.boundary,
        first.layer.map_or("-".into(), |l| l.to_string())
    )];
    evidence.extend(rope_metadata_differences(r, c));
    Some(evidence)
}

/// RoPE-related keys whose values differ between the files.
fn rope_metadata_differences(r: &ModelFile, c: &ModelFile) -> Vec<String> {
    let (rm, cm) = (r.metadata(), c.metadata());
    let arch = rm.architecture().unwrap_or_default();
    let keys = rm.entries.keys().chain(cm.entries.keys()).filter(|k| k.starts_with(&format!("{arch}.rope")));
    let mut out: Vec<String> = keys
        .filter(|k| rm.get(k).map(|v| format!("{v:?}")) != cm.get(k).map(|v| format!("{v:?}")))
        .map(|k| format!("metadata {k}: reference {:?}, candidate {:?}", rm.get(k), cm.get(k)))
        .collect();
    out.dedup();
    if r.parsed.qk_row_order != c.parsed.qk_row_order {
        out.push(format!(
            "the files record different Q/K row orders: reference {:?}, candidate {:?}",
            r.parsed.qk_row_order, c.parsed.qk_row_order
        ));
    }
    out
}

/// The strongest finding among the named tensors: a transposed layout, then a
/// dtype that decodes to garbage, then plain value differences (as evidence).
fn named_tensor_evidence(r: &ModelFile, c: &ModelFile, names: &[&str]) -> (Option<Classification>, Vec<String>) {
    let mut evidence = Vec::new();
    let mut class = None;
    for name in names {
        let (Some(vr), Some(vc)) = (r.tensor(name), c.tensor(name)) else { continue };
        let Ok(cmp) = compare_tensor(r, c, vr, vc) else { continue };
        match cmp.verdict {
            TensorVerdict::Identical => {}
            TensorVerdict::Transposed { .. } | TensorVerdict::ShapeMismatch => {
                evidence
                    .push(format!("{name} is {:?} in the candidate, {:?} in the reference", cmp.shape_b, cmp.shape_a));
                class = Some(Classification::LayoutMismatch);
            }
            TensorVerdict::Values { dtype_differs, metrics }
                if metrics.nmse > MATERIAL_NMSE || metrics.non_finite > 0 =>
            {
                if let Some(order) = row_permutation(r, c, &vr, &vc) {
                    evidence
                        .push(format!("{name}: the candidate holds the reference's rows in another order: {order}"));
                    class = Some(Classification::LayoutMismatch);
                } else if transposed_values(vr.info, vr.bytes, vc.info, vc.bytes) {
                    evidence.push(format!(
                        "{name}: the candidate holds the reference's values transposed (shape {:?} is square, so the shape alone cannot show it)",
                        vr.shape()
                    ));
                    class = Some(Classification::LayoutMismatch);
                } else if dtype_differs && class.is_none() {
                    evidence.push(format!(
                        "{name} is {} in the candidate, {} in the reference, and its values decode to NMSE {:.3e}: the bytes were written as one dtype and labelled another",
                        cmp.dtype_b, cmp.dtype_a, metrics.nmse
                    ));
                    class = Some(Classification::DTypeMismatch);
                } else {
                    evidence.push(format!(
                        "{name} differs: NMSE {:.3e}, max abs diff {:.3e}, {} non-finite{}",
                        metrics.nmse,
                        metrics.max_abs_diff,
                        metrics.non_finite,
                        same_as_other_layer(r, c, name)
                            .map_or(String::new(), |o| format!("; it equals the reference's {o}"))
                    ));
                }
            }
            TensorVerdict::Values { .. } => {}
        }
    }
    (class, evidence)
}

/// How the candidate's rows are the reference's rows reordered, if they are:
/// the rotary-pair permutation of Q/K projections (interleaved pairs against
/// half-split halves, what Llama converters apply), or any other order.
fn row_permutation(r: &ModelFile, c: &ModelFile, vr: &TensorView, vc: &TensorView) -> Option<String> {
    let rows = *vr.shape().first()? as usize;
    if vr.dtype() != vc.dtype() || vr.shape() != vc.shape() || rows < 2 || !vr.bytes.len().is_multiple_of(rows) {
        return None;
    }
    let row_bytes = vr.bytes.len() / rows;
    // The reference's rows as the candidate's file says they are ordered.
    let expected = rows_in_order_of(c, r, vr);
    let projection = vr.name().replace(".bias", ".weight");
    if projection.ends_with(".attn_q.weight") || projection.ends_with(".attn_k.weight") {
        let heads = qk_order::heads_of(r.metadata(), &projection);
        use QkRowOrder::{Gguf, HuggingFace};
        for (from, to, order) in [
            (HuggingFace, Gguf, "half-split rotary halves interleaved into pairs (the Hugging Face -> GGUF permutation of Llama converters)"),
            (Gguf, HuggingFace, "interleaved rotary pairs split into halves (the GGUF -> Hugging Face permutation)"),
        ] {
            if qk_order::reorder_rows(&expected, row_bytes, heads, from, to) == vc.bytes {
                return Some(format!("{order}, which the file does not record: RoPE now rotates the wrong pairs"));
            }
        }
    }
    let sorted = |bytes: &[u8]| {
        let mut rows: Vec<&[u8]> = bytes.chunks_exact(row_bytes).collect();
        rows.sort_unstable();
        rows.into_iter().flatten().copied().collect::<Vec<u8>>()
    };
    (sorted(&expected) == sorted(vc.bytes)).then(|| "the same rows in another order".to_string())
}

/// Whether a square matrix in the candidate equals the reference's transpose.
fn transposed_values(r: &TensorInfo, r_bytes: &[u8], c: &TensorInfo, c_bytes: &[u8]) -> bool {
    let [rows, cols] = r.shape[..] else { return false };
    if rows != cols || c.shape != r.shape {
        return false;
    }
    let (Ok(a), Ok(b)) = (quant::dequantize_to_vec(r.dtype, r_bytes), quant::dequantize_to_vec(c.dtype, c_bytes))
    else {
        return false;
    };
    let n = rows as usize;
    let transposed: Vec<f32> = (0..n * n).map(|i| b[(i % n) * n + i / n]).collect();
    compare(&a, &transposed).nmse < MATERIAL_NMSE
}

/// The reference tensor of another layer whose bytes equal this candidate tensor (a swap).
fn same_as_other_layer(r: &ModelFile, c: &ModelFile, name: &str) -> Option<String> {
    let layer = names::layer_of(name)?;
    let suffix = name.split_once(&format!("blk.{layer}."))?.1;
    let candidate = c.tensor(name)?;
    r.tensors()
        .iter()
        .filter(|t| t.name.ends_with(suffix) && t.name != name && names::layer_of(&t.name).is_some())
        .find(|t| r.view(t).bytes == candidate.bytes)
        .map(|t| t.name.clone())
}
