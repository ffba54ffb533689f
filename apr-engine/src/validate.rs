//! `validate`: structure and value checks of a model file, one finding a line.

use rayon::prelude::*;
use serde::Serialize;

use crate::container::names::{role_of, TensorRole};
use crate::container::{Format, ModelFile, TensorView};
use crate::error::{Error, Result};
use crate::model::weights::ModelWeights;
use crate::model::ModelConfig;
use crate::quant;
use crate::stats::{StatsAccumulator, ValueStats};
use crate::tokenizer::Tokenizer;

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

/// Root mean square a norm gain is expected to have. Trained RMSNorm gains
/// start at 1 and drift a long way: across the three reference models the RMS
/// of a norm vector runs from 0.040 (SmolLM2-135M's blk.0.attn_norm, whose
/// mean is 0.001) to 7.3 (Qwen2.5-0.5B's blk.0.attn_norm). The range leaves a
/// factor of ten on each side, and still fails a zeroed or blown-up norm.
const NORM_RMS_RANGE: (f64, f64) = (0.004, 75.0);

pub fn validate(model: &ModelFile) -> Result<ValidationReport> {
    let mut findings = structure_findings(model);
    findings.extend(load_findings(model));
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

/// What loading the file as a decoder checks (configuration values, every
/// tensor's shape and dtype, no tensor left over, the tokenizer), as findings:
/// a file that `run` would refuse fails here too. An architecture the engine
/// does not run is a warning, not a failure of the file.
fn load_findings(model: &ModelFile) -> Vec<Finding> {
    let fail = |check, e: Error| {
        let status = if matches!(e, Error::Unsupported(_)) { Status::Warn } else { Status::Fail };
        vec![finding(check, status, None, e.to_string())]
    };
    let config = match ModelConfig::from_metadata(model.metadata(), model.tensors()) {
        Ok(config) => config,
        Err(e) => return fail("config", e),
    };
    if let Err(e) = ModelWeights::locate(model, &config) {
        return fail("weights", e);
    }
    let has_tokenizer = model.metadata().get("tokenizer.ggml.model").is_some();
    if has_tokenizer {
        if let Err(e) = Tokenizer::from_metadata(model.metadata()) {
            return fail("tokenizer", Error::Invalid(format!("tokenizer: {e}")));
        }
    }
    let what = if has_tokenizer { " and tokenizer" } else { " (no tokenizer)" };
    vec![finding(
        "load",
        Status::Pass,
        None,
        format!(
            "{} decoder of {} layers: configuration, every tensor's shape and dtype{what} check out",
            config.architecture, config.layers
        ),
    )]
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
                let rms = (s.mean * s.mean + s.std * s.std).sqrt();
                if !(NORM_RMS_RANGE.0..=NORM_RMS_RANGE.1).contains(&rms) {
                    out.push(finding(
                        "norm",
                        Status::Fail,
                        name,
                        format!(
                            "root mean square {rms:.4} is outside {:?}, the range of trained norm gains",
                            NORM_RMS_RANGE
                        ),
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
            format!("{total} values finite; no all-zero tensor; embeddings vary; {norms} norm gains in range"),
        ));
    }
    out
}
