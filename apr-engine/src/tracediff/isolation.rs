//! Isolation: the candidate runs with every boundary's values replaced by the
//! reference's, so each operation starts from the reference's input and its
//! error is its own, not the sum of everything before it (the way llama.cpp's
//! test-backend-ops checks one op at a time). A backend is then judged per
//! operation against bounds on the normalized mean squared error, NMSE =
//! Σ(c − r)² / Σr² per row.
//!
//! Where the bounds come from: the fast CPU backend differs from exact math
//! only in its matrix products, which quantize the activations to 8 bits per
//! block (Q8_0 blocks of 32 or Q8_K blocks of 256: a rounding error of at most
//! half a step of max|x|/127 per value). Measured on both reference models
//! (`cpu` against `cpu-reference`, the prompts of `backend_diff.rs`), the
//! largest isolated NMSE per operation kind is written beside each bound; the
//! bound leaves an order of magnitude for other inputs, other CPUs and a GPU's
//! different summation order, while an operation that is wrong (a skipped
//! RoPE, a wrong norm epsilon, an offset of 1e-2) lands orders of magnitude above.

use serde::Serialize;

use super::{BoundaryDiff, Tolerance};
use crate::backend::HostMatrix;
use crate::kernels;
use crate::model::Boundary;
use crate::quant;

/// What produced a boundary's values from the previous boundary's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// The token's row of the embedding table.
    Embedding,
    /// RMSNorm (attention, FFN and final norms).
    Norm,
    /// A projection with its bias (Q, K, V).
    Projection,
    /// RoPE, attention over the KV cache and the output projection.
    Attention,
    /// Gate and up projections, SiLU and the down projection.
    FeedForward,
    /// Adding a block's output to the residual stream.
    Residual,
    /// The LM head's projection.
    LmHead,
}

impl OpKind {
    pub fn of(boundary: Boundary) -> OpKind {
        match boundary {
            Boundary::Embedding => OpKind::Embedding,
            Boundary::AttnNorm | Boundary::FfnNorm | Boundary::FinalNorm => OpKind::Norm,
            Boundary::Q | Boundary::K | Boundary::V => OpKind::Projection,
            Boundary::AttnOutput => OpKind::Attention,
            Boundary::FfnOutput => OpKind::FeedForward,
            Boundary::AttnResidual | Boundary::FfnResidual => OpKind::Residual,
            Boundary::Logits => OpKind::LmHead,
        }
    }

    /// The largest NMSE of a row this kind of operation may show, isolated
    /// (for a projection: without asking [`projection_within`]).
    pub fn nmse_bound(self) -> f64 {
        match self {
            // Exact on every backend: a copy, and f32 arithmetic without a
            // reduction a backend could reorder beyond rounding.
            OpKind::Embedding | OpKind::Residual => 1e-10,
            // One f32 sum of squares per row: reordering moves the last bits.
            OpKind::Norm => 1e-8,
            // 8-bit activations in the products (measured at most 1e-3 for
            // attention and the FFN block on both models).
            OpKind::Attention | OpKind::FeedForward => PRODUCT_NMSE,
            OpKind::Projection | OpKind::LmHead => PROJECTION_FLOOR,
        }
    }
}

/// The bound of an operation whose result passes through a matrix product
/// with 8-bit activations.
const PRODUCT_NMSE: f64 = 5e-3;

/// Below this NMSE a projection passes without asking how much of it 8-bit rounding explains.
const PROJECTION_FLOOR: f64 = 1e-3;

/// A projection (Q, K, V or the LM head) is within bounds when its NMSE is at
/// most [`PROJECTION_FLOOR`] or twice what rounding its input to 8-bit blocks
/// causes through these very weights: `‖W (x̃ − x)‖² / ‖y‖²`, with `x̃` the
/// input as the CPU kernel for the matrix's dtype rounds it. A row whose input
/// holds a massive activation (the first token's) rounds its block-mates
/// coarsely, and a weight matrix that cancels to a small output amplifies that;
/// both are real and both are in this figure.
pub fn projection_within(nmse: f64, weight: &HostMatrix, input: &[f32], reference_output: &[f32]) -> bool {
    if nmse <= PROJECTION_FLOOR {
        return true;
    }
    nmse <= 2.0 * rounding_nmse(weight, input, reference_output)
}

/// `‖W (x̃ − x)‖² / ‖y‖²` in f64.
fn rounding_nmse(weight: &HostMatrix, input: &[f32], reference_output: &[f32]) -> f64 {
    let w = weight.view();
    let seen = kernels::activations_as_seen(w.dtype, input);
    let delta: Vec<f64> = seen.iter().zip(input).map(|(&a, &b)| a as f64 - b as f64).collect();
    let mut row = vec![0.0f32; w.cols];
    let mut noise = 0.0;
    for r in 0..w.rows {
        if quant::dequantize(w.dtype, w.row(r), &mut row).is_err() {
            return 0.0;
        }
        let e: f64 = row.iter().zip(&delta).map(|(&a, &d)| a as f64 * d).sum();
        noise += e * e;
    }
    let signal: f64 = reference_output.iter().map(|&y| y as f64 * y as f64).sum();
    if signal > 0.0 {
        noise / signal
    } else {
        0.0
    }
}

/// The tolerance a boundary is judged by in isolation: its operation's NMSE
/// bound (a projection's is checked apart, by [`projection_within`]); no
/// cosine bound (rows of tiny norm make it noisy and NMSE says the same); the
/// logits keep the user's absolute bound as well.
pub fn tolerance(boundary: Boundary, user: &Tolerance) -> Tolerance {
    let nmse = match OpKind::of(boundary) {
        OpKind::Projection | OpKind::LmHead => f64::INFINITY,
        kind => kind.nmse_bound(),
    };
    Tolerance { logits_max_abs: user.logits_max_abs, nmse, cosine: -1.0 }
}

/// The divergence in words: which operation of which layer, by how much.
pub fn evidence(first: &BoundaryDiff) -> String {
    let kind = OpKind::of(first.boundary);
    let at = first.layer.map_or("outside the layers".to_string(), |l| format!("layer {l}"));
    format!(
        "isolated (every operation fed the reference's input): {at}, {} ({kind:?}) at position {}: NMSE {:.3e}, {}",
        boundary_name(first.boundary),
        first.position,
        first.metrics.nmse,
        match kind {
            OpKind::Projection | OpKind::LmHead => {
                "more than twice what rounding its input to 8 bits explains through its weights".to_string()
            }
            _ => format!("beyond the bound {:.0e} of this kind of operation", kind.nmse_bound()),
        }
    )
}

fn boundary_name(boundary: Boundary) -> &'static str {
    match boundary {
        Boundary::Embedding => "the embedding",
        Boundary::AttnNorm => "the attention norm",
        Boundary::Q => "the Q projection",
        Boundary::K => "the K projection",
        Boundary::V => "the V projection",
        Boundary::AttnOutput => "RoPE + attention + output projection",
        Boundary::AttnResidual => "the attention residual add",
        Boundary::FfnNorm => "the FFN norm",
        Boundary::FfnOutput => "the feed-forward block (gate/up, SiLU, down)",
        Boundary::FfnResidual => "the FFN residual add",
        Boundary::FinalNorm => "the final norm",
        Boundary::Logits => "the LM head",
    }
}
