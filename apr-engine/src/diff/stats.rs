//! Streaming comparison metrics between two f32 sequences.

use serde::Serialize;

/// Accumulates max abs diff, NMSE and cosine over chunks, in f64.
#[derive(Debug, Clone, Default)]
pub struct DiffAccumulator {
    max_abs: f64,
    sq_err: f64,
    sq_ref: f64,
    dot: f64,
    sq_cand: f64,
    count: u64,
    non_finite: u64,
}

/// Summary of how far a candidate is from a reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiffMetrics {
    pub max_abs_diff: f64,
    /// Sum of squared errors over sum of squared reference values.
    pub nmse: f64,
    pub cosine: f64,
    pub count: u64,
    /// Positions where either side is NaN or infinite (left out of the other metrics).
    pub non_finite: u64,
}

impl DiffAccumulator {
    pub fn add(&mut self, reference: &[f32], candidate: &[f32]) {
        for (&r, &c) in reference.iter().zip(candidate) {
            if !r.is_finite() || !c.is_finite() {
                self.non_finite += 1;
                continue;
            }
            let (r, c) = (r as f64, c as f64);
            let d = r - c;
            self.max_abs = self.max_abs.max(d.abs());
            self.sq_err += d * d;
            self.sq_ref += r * r;
            self.sq_cand += c * c;
            self.dot += r * c;
            self.count += 1;
        }
    }

    pub fn finish(&self) -> DiffMetrics {
        let nmse = if self.sq_ref > 0.0 {
            self.sq_err / self.sq_ref
        } else if self.sq_err == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let norms = (self.sq_ref * self.sq_cand).sqrt();
        let cosine = if norms > 0.0 {
            self.dot / norms
        } else if self.sq_ref == self.sq_cand {
            1.0
        } else {
            0.0
        };
        DiffMetrics { max_abs_diff: self.max_abs, nmse, cosine, count: self.count, non_finite: self.non_finite }
    }
}

pub fn compare(reference: &[f32], candidate: &[f32]) -> DiffMetrics {
    let mut acc = DiffAccumulator::default();
    acc.add(reference, candidate);
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics() {
        let m = compare(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!((m.max_abs_diff, m.nmse, m.cosine), (0.0, 0.0, 1.0));
        let m = compare(&[1.0, 0.0], &[0.0, 1.0]);
        assert_eq!((m.max_abs_diff, m.nmse, m.cosine), (1.0, 2.0, 0.0));
    }
}
