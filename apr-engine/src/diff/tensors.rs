//! `diff-tensors`: two model files compared tensor by tensor, matched through
//! the canonical name table so that GGUF, SafeTensors and APR files compare.

use std::borrow::Cow;

use serde::Serialize;

use super::stats::{DiffAccumulator, DiffMetrics};
use crate::container::{qk_order, ModelFile, TensorInfo, TensorView};
use crate::error::{Error, Result};
use crate::quant;

#[derive(Debug, Clone, Serialize)]
pub struct TensorDiffReport {
    pub schema: &'static str,
    pub a: String,
    pub b: String,
    /// In A, not in B.
    pub missing: Vec<String>,
    /// In B, not in A.
    pub extra: Vec<String>,
    pub tensors: Vec<TensorComparison>,
    pub summary: DiffSummary,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DiffSummary {
    pub compared: usize,
    pub identical: usize,
    pub value_diffs: usize,
    pub shape_mismatches: usize,
    pub dtype_mismatches: usize,
    pub missing: usize,
    pub extra: usize,
}

impl DiffSummary {
    /// True when any difference was found.
    pub fn mismatch(&self) -> bool {
        self.value_diffs + self.shape_mismatches + self.missing + self.extra + self.dtype_mismatches > 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorComparison {
    pub name: String,
    pub dtype_a: String,
    pub dtype_b: String,
    pub shape_a: Vec<u64>,
    pub shape_b: Vec<u64>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Verdict {
    /// Same dtype, shape and bytes.
    Identical,
    /// Values compared after dequantization (dtypes may differ).
    Values {
        dtype_differs: bool,
        metrics: DiffMetrics,
    },
    /// B's shape is A's reversed: one side stores GGML `[in, out]`, the other `[out, in]`.
    Transposed {
        fix: String,
    },
    ShapeMismatch,
}

/// Options for [`diff_tensors`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Only tensors whose canonical name contains this.
    pub filter: Option<String>,
}

pub fn diff_tensors(a: &ModelFile, b: &ModelFile, options: &DiffOptions) -> Result<TensorDiffReport> {
    let wanted = |t: &&TensorInfo| options.filter.as_ref().is_none_or(|f| t.name.contains(f.as_str()));
    let find_b = |name: &str| b.tensors().iter().find(|t| t.name == name);
    let mut report = TensorDiffReport {
        schema: "apr.diff-tensors.v1",
        a: a.path.display().to_string(),
        b: b.path.display().to_string(),
        missing: Vec::new(),
        extra: Vec::new(),
        tensors: Vec::new(),
        summary: DiffSummary::default(),
    };
    for ta in a.tensors().iter().filter(wanted) {
        match find_b(&ta.name) {
            None => report.missing.push(ta.name.clone()),
            Some(tb) => report.tensors.push(compare_tensor(a, b, a.view(ta), b.view(tb))?),
        }
    }
    report.extra = b
        .tensors()
        .iter()
        .filter(wanted)
        .filter(|tb| !a.tensors().iter().any(|ta| ta.name == tb.name))
        .map(|t| t.name.clone())
        .collect();
    report.summary = summarize(&report);
    Ok(report)
}

fn summarize(report: &TensorDiffReport) -> DiffSummary {
    let mut s = DiffSummary {
        compared: report.tensors.len(),
        missing: report.missing.len(),
        extra: report.extra.len(),
        ..Default::default()
    };
    for t in &report.tensors {
        match &t.verdict {
            Verdict::Identical => s.identical += 1,
            Verdict::Values { dtype_differs, metrics } => {
                if *dtype_differs {
                    s.dtype_mismatches += 1;
                }
                if metrics.max_abs_diff > 0.0 || metrics.non_finite > 0 {
                    s.value_diffs += 1;
                } else if !dtype_differs {
                    s.identical += 1;
                }
            }
            Verdict::Transposed { .. } | Verdict::ShapeMismatch => s.shape_mismatches += 1,
        }
    }
    s
}

pub fn compare_tensor(a: &ModelFile, b: &ModelFile, va: TensorView, vb: TensorView) -> Result<TensorComparison> {
    let verdict = if va.shape() != vb.shape() {
        let reversed: Vec<u64> = vb.shape().iter().rev().copied().collect();
        if va.shape().len() > 1 && reversed == va.shape() {
            Verdict::Transposed {
                fix: format!(
                    "B stores {:?} where A stores {:?}: one side wrote GGML's innermost-first dims as outermost-first; reverse the dims (and transpose the data if it was written transposed)",
                    vb.shape(),
                    va.shape()
                ),
            }
        } else {
            Verdict::ShapeMismatch
        }
    } else if va.dtype() == vb.dtype() && va.bytes == vb.bytes && same_row_order(a, b, va.name()) {
        Verdict::Identical
    } else {
        Verdict::Values { dtype_differs: va.dtype() != vb.dtype(), metrics: compare_values(a, b, va, vb)? }
    };
    Ok(TensorComparison {
        name: va.name().to_string(),
        dtype_a: va.dtype().name().to_string(),
        dtype_b: vb.dtype().name().to_string(),
        shape_a: va.shape().to_vec(),
        shape_b: vb.shape().to_vec(),
        verdict,
    })
}

fn same_row_order(a: &ModelFile, b: &ModelFile, name: &str) -> bool {
    let arch = a.metadata().architecture().unwrap_or_default();
    !qk_order::is_permuted_tensor(arch, name) || a.parsed.qk_row_order == b.parsed.qk_row_order
}

/// The bytes of `vb` (a tensor of `b`) with its rows in the order `a` records:
/// Q/K rows of a Llama model move between GGUF and Hugging Face order.
pub(crate) fn rows_in_order_of<'b>(a: &ModelFile, b: &ModelFile, vb: &TensorView<'b>) -> Cow<'b, [u8]> {
    if same_row_order(a, b, vb.name()) {
        return Cow::Borrowed(vb.bytes);
    }
    let rows = vb.shape().first().copied().unwrap_or(1).max(1) as usize;
    let heads = qk_order::heads_of(a.metadata(), vb.name());
    Cow::Owned(qk_order::reorder_rows(
        vb.bytes,
        vb.bytes.len() / rows,
        heads,
        b.parsed.qk_row_order,
        a.parsed.qk_row_order,
    ))
}

/// Dequantizes both sides a slab of rows at a time (bounded memory) and
/// accumulates the metrics. Q/K rows of a Llama model are brought into A's order.
fn compare_values(a: &ModelFile, b: &ModelFile, va: TensorView, vb: TensorView) -> Result<DiffMetrics> {
    let rows = va.shape().first().copied().unwrap_or(1).max(1) as usize;
    let b_bytes = rows_in_order_of(a, b, &vb);
    let row_a = va.bytes.len() / rows;
    let row_b = b_bytes.len() / rows;
    let row_elems = (va.info.shape.iter().product::<u64>() as usize) / rows;
    let slab = (1 << 20) / row_elems.max(1) + 1;
    let mut acc = DiffAccumulator::default();
    let dequant = |view: &TensorView, bytes: &[u8]| {
        quant::dequantize_to_vec(view.dtype(), bytes).map_err(|e| Error::Invalid(format!("{}: {e}", view.name())))
    };
    for start in (0..rows).step_by(slab) {
        let end = (start + slab).min(rows);
        let xa = dequant(&va, &va.bytes[start * row_a..end * row_a])?;
        let xb = dequant(&vb, &b_bytes[start * row_b..end * row_b])?;
        acc.add(&xa, &xb);
    }
    Ok(acc.finish())
}
