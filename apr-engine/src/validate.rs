//! `validate`: structure and value checks of a model file, one finding a line.

use rayon::prelude::*;
use serde::Serialize;

use crate::container::names::{role_of, TensorRole};
use crate::container::{Format, ModelFile, TensorView};
use crate::error::{Error, Result};
use crate::quant;
use crate::stats::{StatsAccumulator, ValueStats};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub check: &'static str,
    pub status: Status,
    pub tensor: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub schema: &'static str,
    pub path: String,
    pub findings: Vec<Finding>,
}

impl ValidationReport {
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.status == Status::Fail)
    }
}

/// Mean absolute value a norm weight is expected to have. Trained RMSNorm
/// gains start at 1 and drift, but stay within an order of magnitude or two.
const NORM_MEAN_ABS_RANGE: (f64, f64) = (0.01, 100.0);

pub fn validate(model: &ModelFile) -> Result<ValidationReport> {
    let mut findings = structure_findings(model);
    let stats: Vec<(TensorView, ValueStats)> = model
        .views()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|v| tensor_stats(&v).map(|s| (v, s)))
        .collect::<Result<_>>()?;
    findings.extend(value_findings(&stats));
    Ok(ValidationReport { schema: "apr.validate.v1", path: model.path.display().to_string(), findings })
}

fn finding(check: &'static str, status: Status, tensor: Option<&str>, detail: String) -> Finding {
    Finding { check, status, tensor: tensor.map(str::to_string), detail }
}

/// Re-checks, from the parsed layout, what the strict readers enforce.
fn structure_findings(model: &ModelFile) -> Vec<Finding> {
    let mut out = Vec::new();
    let size = model.file_size();
    let alignment = match model.format() {
        Format::Gguf { .. } => model.metadata().get_u64("general.alignment").unwrap_or(32),
        Format::Apr { .. } => 64,
        Format::SafeTensors => 1,
    };
    let mut bad = Vec::new();
    for t in model.tensors() {
        let expected = t.dtype.byte_size(&t.shape).ok();
        if t.offset.checked_add(t.size).is_none_or(|end| end > size) {
            bad.push(finding(
                "bounds",
                Status::Fail,
                Some(&t.name),
                format!("data {}..+{} past end of file ({size})", t.offset, t.size),
            ));
        }
        if expected != Some(t.size) {
            bad.push(finding(
                "size",
                Status::Fail,
                Some(&t.name),
                format!("{} bytes, {} {:?} needs {expected:?}", t.size, t.dtype, t.shape),
            ));
        }
        if t.offset % alignment != 0 {
            bad.push(finding(
                "alignment",
                Status::Fail,
                Some(&t.name),
                format!("offset {} not {alignment}-aligned", t.offset),
            ));
        }
    }
    let mut by_offset: Vec<_> = model.tensors().iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].size > pair[1].offset {
            bad.push(finding("overlap", Status::Fail, Some(&pair[1].name), format!("overlaps {}", pair[0].name)));
        }
    }
    let n = model.tensors().len();
    if bad.is_empty() {
        out.push(finding(
            "structure",
            Status::Pass,
            None,
            format!("{n} tensors: in bounds, sizes match dtype x shape, {alignment}-byte aligned, no overlaps"),
        ));
    }
    out.extend(bad);
    for (key, value) in &model.parsed.facts {
        if key.contains("checksum") {
            out.push(finding("checksum", Status::Pass, None, format!("{key}: {value}")));
        }
    }
    out
}

fn tensor_stats(view: &TensorView) -> Result<ValueStats> {
    let rows = view.shape().first().copied().unwrap_or(1).max(1) as usize;
    let row_bytes = view.bytes.len() / rows;
    let rows_per_slab = ((1 << 22) / row_bytes.max(1)).max(1);
    let mut acc = StatsAccumulator::default();
    for slab in view.bytes.chunks(rows_per_slab * row_bytes.max(1)) {
        let values = quant::dequantize_to_vec(view.dtype(), slab)
            .map_err(|e| Error::Invalid(format!("{}: {e}", view.name())))?;
        acc.add(&values);
    }
    Ok(acc.finish())
}

fn value_findings(stats: &[(TensorView, ValueStats)]) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut norms = 0;
    for (view, s) in stats {
        let name = Some(view.name());
        if s.nan + s.inf > 0 {
            out.push(finding("finite", Status::Fail, name, format!("{} NaN, {} Inf of {}", s.nan, s.inf, s.count)));
        }
        if s.zero_fraction == 1.0 && s.count > 1 {
            out.push(finding("nonzero", Status::Fail, name, "every value is zero".to_string()));
        }
        match role_of(view.name()) {
            TensorRole::Embedding if s.std == 0.0 => out.push(finding(
                "embedding",
                Status::Fail,
                name,
                format!("constant embedding (mean {:.4}, std 0)", s.mean),
            )),
            TensorRole::Norm => {
                norms += 1;
                let mean_abs = s.mean.abs();
                if mean_abs < NORM_MEAN_ABS_RANGE.0 || mean_abs > NORM_MEAN_ABS_RANGE.1 {
                    out.push(finding(
                        "norm",
                        Status::Fail,
                        name,
                        format!("mean {:.4} is far from 1 for a norm weight", s.mean),
                    ));
                }
            }
            _ => {}
        }
    }
    if !out.iter().any(|f| f.status == Status::Fail) {
        let total: u64 = stats.iter().map(|(_, s)| s.count).sum();
        out.push(finding(
            "values",
            Status::Pass,
            None,
            format!("{total} values finite; no all-zero tensor; embeddings vary; {norms} norm weights near 1"),
        ));
    }
    out
}
