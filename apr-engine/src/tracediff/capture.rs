//! Capturing every boundary of a forward call, and comparing two captures
//! position by position.

use serde::Serialize;

use crate::container::{qk_order, QkRowOrder};
use crate::diff::stats::{compare, DiffMetrics};
use crate::model::{Boundary, Observer};
use crate::stats::{stats_of, ValueStats};

/// The activations of one forward call, in the order the pass produced them.
#[derive(Default)]
pub struct Capture {
    /// Whether to keep activations (otherwise only the call's logits are kept by the caller).
    pub keep: bool,
    pub start: usize,
    pub n_tokens: usize,
    pub records: Vec<Record>,
    /// Isolation: another side's records of the same call, whose values the
    /// forward pass continues with after each boundary (see [`Observer::replacement`]).
    pub feed: Option<Vec<Record>>,
    /// Boundaries observed in this call (the index into `feed`).
    seen: usize,
}

pub struct Record {
    pub layer: Option<usize>,
    pub boundary: Boundary,
    pub values: Vec<f32>,
}

impl Capture {
    pub fn new(keep: bool) -> Self {
        Capture { keep, ..Default::default() }
    }

    /// Brings the Q and K activations from one row order into the other.
    pub fn reorder_qk(&mut self, head_dim: usize, from: QkRowOrder, to: QkRowOrder) {
        for record in self.records.iter_mut().filter(|r| matches!(r.boundary, Boundary::Q | Boundary::K)) {
            record.values = qk_order::reorder_activations(&record.values, head_dim, from, to);
        }
    }
}

impl Observer for Capture {
    fn begin(&mut self, start: usize, n_tokens: usize) {
        self.start = start;
        self.n_tokens = n_tokens;
        self.records.clear();
        self.seen = 0;
    }

    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]) {
        // Logits are compared from the forward call's return value.
        if boundary == Boundary::Logits {
            return;
        }
        self.seen += 1;
        if self.keep {
            self.records.push(Record { layer, boundary, values: values.to_vec() });
        }
    }

    fn replacement(&mut self, layer: Option<usize>, boundary: Boundary) -> Option<&[f32]> {
        let fed = self.feed.as_ref()?.get(self.seen.checked_sub(1)?)?;
        (fed.layer == layer && fed.boundary == boundary).then_some(fed.values.as_slice())
    }
}

/// How far apart two models may be and still count as equivalent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Largest allowed absolute difference of any logit.
    pub logits_max_abs: f64,
    /// Largest allowed NMSE of any activation row (and of each logits row).
    pub nmse: f64,
    /// Smallest allowed cosine similarity of any activation row.
    pub cosine: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { logits_max_abs: 1.0, nmse: 1e-2, cosine: 0.99 }
    }
}

/// One boundary at one position, compared.
#[derive(Debug, Clone, Serialize)]
pub struct BoundaryDiff {
    pub position: usize,
    pub layer: Option<usize>,
    pub boundary: Boundary,
    pub reference: ValueStats,
    pub candidate: ValueStats,
    pub metrics: DiffMetrics,
    /// The least tolerance under which this boundary would have passed.
    pub smallest_passing: Tolerance,
}

impl BoundaryDiff {
    pub fn compare(position: usize, layer: Option<usize>, boundary: Boundary, r: &[f32], c: &[f32]) -> Self {
        let metrics = compare(r, c);
        BoundaryDiff {
            position,
            layer,
            boundary,
            reference: stats_of(r),
            candidate: stats_of(c),
            smallest_passing: Tolerance {
                logits_max_abs: if boundary == Boundary::Logits { metrics.max_abs_diff } else { 0.0 },
                nmse: metrics.nmse,
                cosine: metrics.cosine,
            },
            metrics,
        }
    }

    /// Whether this boundary is within `tol`. Non-finite values on one side
    /// only, or a length mismatch, never are.
    pub fn within(&self, tol: &Tolerance) -> bool {
        let nonfinite_r = self.reference.nan + self.reference.inf;
        let nonfinite_c = self.candidate.nan + self.candidate.inf;
        if nonfinite_r != nonfinite_c || self.reference.count != self.candidate.count {
            return false;
        }
        let m = &self.metrics;
        let logits_ok = self.boundary != Boundary::Logits || m.max_abs_diff <= tol.logits_max_abs;
        logits_ok && m.nmse <= tol.nmse && m.cosine >= tol.cosine
    }

    pub fn is_exact(&self) -> bool {
        self.metrics.max_abs_diff == 0.0 && self.metrics.non_finite == 0 && self.reference.count == self.candidate.count
    }
}

/// Compares two captures of the same call row by row: every boundary of
/// every position, in position order, then pass order.
pub fn compare_captures(
    reference: &Capture,
    candidate: &Capture,
    widths: impl Fn(Boundary) -> usize,
) -> Vec<BoundaryDiff> {
    let mut out = Vec::new();
    for i in 0..reference.n_tokens {
        let position = reference.start + i;
        for (r, c) in reference.records.iter().zip(&candidate.records) {
            let w = widths(r.boundary);
            let rows = r.values.len() / w.max(1);
            // Rows cover the last `rows` positions of the call.
            let Some(row) = (i + rows).checked_sub(reference.n_tokens) else { continue };
            let rv = &r.values[row * w..(row + 1) * w];
            let cv = c.values.get(row * w..(row + 1) * w).unwrap_or(&[]);
            out.push(BoundaryDiff::compare(position, r.layer, r.boundary, rv, cv));
        }
    }
    out
}
