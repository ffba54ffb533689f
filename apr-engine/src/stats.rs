//! Summary statistics of tensor values: for validation, and for traces.

use serde::{Deserialize, Serialize};

/// Mean, spread, extremes, L2 norm and the counts that reveal broken data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueStats {
    pub count: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f32,
    pub max: f32,
    pub l2: f64,
    pub nan: u64,
    pub inf: u64,
    pub zero_fraction: f64,
}

/// Accumulates [`ValueStats`] over chunks; non-finite values are counted and
/// left out of the moments.
#[derive(Debug, Clone)]
pub struct StatsAccumulator {
    count: u64,
    finite: u64,
    sum: f64,
    sum_sq: f64,
    min: f32,
    max: f32,
    nan: u64,
    inf: u64,
    zeros: u64,
}

impl Default for StatsAccumulator {
    fn default() -> Self {
        StatsAccumulator {
            count: 0,
            finite: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            nan: 0,
            inf: 0,
            zeros: 0,
        }
    }
}

impl StatsAccumulator {
    pub fn add(&mut self, values: &[f32]) {
        self.count += values.len() as u64;
        for &v in values {
            if v.is_nan() {
                self.nan += 1;
            } else if v.is_infinite() {
                self.inf += 1;
            } else {
                let x = v as f64;
                self.finite += 1;
                self.sum += x;
                self.sum_sq += x * x;
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.zeros += (v == 0.0) as u64;
            }
        }
    }

    pub fn finish(&self) -> ValueStats {
        let n = self.finite.max(1) as f64;
        let mean = self.sum / n;
        let variance = (self.sum_sq / n - mean * mean).max(0.0);
        let (min, max) = if self.finite == 0 { (f32::NAN, f32::NAN) } else { (self.min, self.max) };
        ValueStats {
            count: self.count,
            mean,
            std: variance.sqrt(),
            min,
            max,
            l2: self.sum_sq.sqrt(),
            nan: self.nan,
            inf: self.inf,
            zero_fraction: self.zeros as f64 / self.count.max(1) as f64,
        }
    }
}

pub fn stats_of(values: &[f32]) -> ValueStats {
    let mut acc = StatsAccumulator::default();
    acc.add(values);
    acc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_moments() {
        let s = stats_of(&[1.0, -1.0, 0.0, f32::NAN, f32::INFINITY]);
        assert_eq!((s.count, s.nan, s.inf), (5, 1, 1));
        assert_eq!((s.min, s.max, s.mean), (-1.0, 1.0, 0.0));
        assert!((s.std - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((s.zero_fraction - 0.2).abs() < 1e-12);
    }
}
