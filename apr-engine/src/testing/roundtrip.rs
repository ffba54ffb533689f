//! dtype round trip: every (container, dtype) cell is written through the
//! project's converter and read back. A tensor whose dtype was kept must come
//! back byte for byte; a re-encoded one must stay within its dtype's error
//! bound; a container that cannot hold a dtype must refuse it.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;

use super::cache;
use super::report::{Report, RoundtripCell, Status};
use super::spec::{Container, DTypeSel, TestSpec};
use crate::container::{qk_order, Metadata, ModelFile, QkRowOrder, TensorSource, TensorSpec, WriteOptions};
use crate::convert::{write_source, ConvertOptions, ConvertingSource, DTypeChoice};
use crate::diff::stats::compare;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant;

pub fn run(spec: &TestSpec, report: &mut Report, reference: &Path, cache_dir: &Path) -> Result<()> {
    let input = ModelFile::open(reference)?;
    let selected = select(&input, spec.tensors)?;
    for &container in spec.containers {
        for &dtype in spec.dtypes {
            let cell = cell(&input, reference, &selected, container, dtype, spec.tensors, cache_dir)?;
            report.roundtrip.push(cell);
        }
    }
    let failed: Vec<String> =
        report.roundtrip.iter().filter(|c| !c.passed).map(|c| format!("{}/{}", c.container, c.dtype)).collect();
    let worst = report.roundtrip.iter().filter(|c| c.worst_nmse.is_finite()).map(|c| c.worst_nmse).fold(0.0, f64::max);
    report.key_figure =
        format!("{}/{} cells, worst nmse {worst:.2e}", report.roundtrip.len() - failed.len(), report.roundtrip.len());
    if !failed.is_empty() {
        report.status = Status::Fail;
        report.reason = Some(format!("cells failed: {}", failed.join(", ")));
    }
    Ok(())
}

/// Indices of the tensors named by `patterns` (a trailing `*` matches a prefix); all when empty.
fn select(input: &ModelFile, patterns: &[&str]) -> Result<Vec<usize>> {
    let matches = |name: &str, p: &str| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == p,
    };
    for p in patterns {
        if !input.tensors().iter().any(|t| matches(&t.name, p)) {
            return Err(Error::Invalid(format!("tensors = [..]: `{p}` matches no tensor of {}", input.path.display())));
        }
    }
    Ok((0..input.tensors().len())
        .filter(|&i| patterns.is_empty() || patterns.iter().any(|p| matches(&input.tensors()[i].name, p)))
        .collect())
}

fn cell(
    input: &ModelFile,
    reference: &Path,
    selected: &[usize],
    container: Container,
    dtype: DTypeSel,
    patterns: &[&str],
    cache_dir: &Path,
) -> Result<RoundtripCell> {
    let mut cell = RoundtripCell {
        container: container.extension().into(),
        dtype: dtype.label(),
        passed: true,
        outcome: "written".into(),
        tensors: selected.len(),
        byte_exact: 0,
        within_bound: 0,
        worst_nmse: 0.0,
        worst_tensor: None,
        stored_dtypes: Vec::new(),
        failures: Vec::new(),
        file: None,
    };
    let choice = match dtype {
        DTypeSel::Keep => DTypeChoice::Keep,
        DTypeSel::To(d) => DTypeChoice::To(d),
    };
    let options = ConvertOptions { to: container.format(), dtype: choice, force: true };
    let refusal_expected = container == Container::SafeTensors && matches!(dtype, DTypeSel::To(d) if !d.is_float());
    if let Err(e) = ConvertingSource::new(input, options) {
        cell.outcome = "refused".into();
        cell.passed = refusal_expected && matches!(e, Error::Unsupported(_));
        if !cell.passed {
            cell.failures.push(format!("the converter refused: {e}"));
        }
        return Ok(cell);
    }
    if refusal_expected {
        cell.passed = false;
        cell.failures.push(format!("SafeTensors cannot hold {} blocks, yet the converter accepted them", cell.dtype));
        return Ok(cell);
    }
    let key = format!("roundtrip to={} dtype={} tensors={patterns:?}", container.extension(), cell.dtype);
    let written = cache::cached(cache_dir, reference, &key, container.extension(), |tmp| {
        let source = ConvertingSource::new(input, options)?;
        let subset = Subset::new(&source, selected);
        write_source(container.format(), tmp, &subset, WriteOptions { force: true }, &mut |_| {})
    });
    let path = match written {
        Ok(path) => path,
        Err(e) => {
            cell.passed = false;
            cell.failures.push(format!("writing failed: {e}"));
            return Ok(cell);
        }
    };
    let back = ModelFile::open(&path)?;
    cell.file = Some(path);
    compare_back(input, &back, selected, dtype, &mut cell)?;
    cell.passed = cell.failures.is_empty();
    Ok(cell)
}

fn compare_back(
    input: &ModelFile,
    back: &ModelFile,
    selected: &[usize],
    dtype: DTypeSel,
    cell: &mut RoundtripCell,
) -> Result<()> {
    let arch = input.metadata().architecture().unwrap_or_default().to_string();
    let mut stored = BTreeSet::new();
    if back.tensors().len() != selected.len() {
        cell.failures.push(format!("{} tensors written, {} read back", selected.len(), back.tensors().len()));
    }
    for &index in selected {
        let original = &input.tensors()[index];
        let Some(view) = back.tensor(&original.name) else {
            cell.failures.push(format!("{}: missing after the round trip", original.name));
            continue;
        };
        stored.insert(view.dtype().name());
        if view.shape() != original.shape.as_slice() {
            cell.failures.push(format!(
                "{}: shape {:?} came back as {:?}",
                original.name,
                original.shape,
                view.shape()
            ));
            continue;
        }
        if let Some(expected) = expected_dtype(dtype, original.dtype, &original.shape, &original.name) {
            if view.dtype() != expected {
                cell.failures.push(format!("{}: asked for {expected}, stored as {}", original.name, view.dtype()));
            }
        }
        let mut bytes = Cow::Borrowed(view.bytes);
        let (from, to) = (back.parsed.qk_row_order, input.parsed.qk_row_order);
        if from != to && qk_order::is_permuted_tensor(&arch, &original.name) {
            let rows = original.shape.first().copied().unwrap_or(1).max(1) as usize;
            let heads = qk_order::heads_of(input.metadata(), &original.name);
            bytes = Cow::Owned(qk_order::reorder_rows(&bytes, bytes.len() / rows, heads, from, to));
        }
        let original_bytes = input.view(original).bytes;
        if view.dtype() == original.dtype {
            if *bytes == *original_bytes {
                cell.byte_exact += 1;
            } else {
                cell.failures.push(format!("{}: dtype {} kept but the bytes changed", original.name, original.dtype));
            }
            continue;
        }
        let decode = |d: DType, b: &[u8]| {
            quant::dequantize_to_vec(d, b).map_err(|e| Error::Invalid(format!("{}: {e}", original.name)))
        };
        let metrics = compare(&decode(original.dtype, original_bytes)?, &decode(view.dtype(), &bytes)?);
        let bound = nmse_bound(view.dtype());
        let ok = metrics.non_finite == 0 && metrics.nmse <= bound && (bound > 0.0 || metrics.max_abs_diff == 0.0);
        if metrics.nmse > cell.worst_nmse || cell.worst_tensor.is_none() {
            cell.worst_nmse = metrics.nmse;
            cell.worst_tensor = Some(original.name.clone());
        }
        if ok {
            cell.within_bound += 1;
        } else {
            cell.failures.push(format!(
                "{}: {} -> {} nmse {:.3e} exceeds the {} bound {bound:e} (max|d| {:.3e}, non-finite {})",
                original.name,
                original.dtype,
                view.dtype(),
                metrics.nmse,
                view.dtype(),
                metrics.max_abs_diff,
                metrics.non_finite
            ));
        }
    }
    cell.stored_dtypes = stored.into_iter().map(str::to_string).collect();
    Ok(())
}

/// The dtype a weight matrix must be stored in when the choice leaves no
/// doubt; `None` where the converter may fall back (vectors, rows that do
/// not hold whole blocks, containers without block types).
fn expected_dtype(choice: DTypeSel, from: DType, shape: &[u64], name: &str) -> Option<DType> {
    match choice {
        DTypeSel::Keep => None,
        DTypeSel::To(to) => {
            let is_matrix = shape.len() == 2 && !name.contains("norm") && !name.ends_with(".bias");
            let whole_blocks = shape.get(1).is_some_and(|&inner| (inner as usize).is_multiple_of(to.block_elems()));
            (is_matrix && whole_blocks && from != to).then_some(to)
        }
    }
}

/// NMSE a re-encoding into `dtype` may add. Plain F32 holds every decoded
/// value exactly (0 = exact); the others are generous upper bounds of each
/// format's error on real weights, far above what a correct codec reaches
/// and far below what a wrong layout or scale produces (NMSE ~ 1).
pub fn nmse_bound(dtype: DType) -> f64 {
    match dtype {
        DType::F32 | DType::F64 => 0.0,
        DType::F16 => 1e-6,
        DType::BF16 => 3e-5,
        DType::Q8_0 | DType::Q8_1 | DType::Q8_K => 2e-4,
        DType::Q6_K => 1e-3,
        DType::Q5_0 | DType::Q5_1 | DType::Q5_K => 4e-3,
        DType::Q4_K => 2e-2,
        // One scale per 32 values with no K-quant refinement: heavy-tailed
        // rows (attention Q/K) reach a few percent.
        DType::Q4_0 | DType::Q4_1 => 6e-2,
        DType::Q3_K => 8e-2,
        DType::Q2_K => 0.25,
        DType::I8 | DType::I16 | DType::I32 | DType::I64 => 0.0,
    }
}

/// Some of a source's tensors, with its metadata: a round trip of a few
/// tensors writes a small file instead of the whole model.
struct Subset<'a> {
    inner: &'a dyn TensorSource,
    keep: &'a [usize],
    specs: Vec<TensorSpec>,
}

impl<'a> Subset<'a> {
    fn new(inner: &'a dyn TensorSource, keep: &'a [usize]) -> Self {
        let specs = keep.iter().map(|&i| inner.specs()[i].clone()).collect();
        Subset { inner, keep, specs }
    }
}

impl TensorSource for Subset<'_> {
    fn metadata(&self) -> &Metadata {
        self.inner.metadata()
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        self.inner.data(self.keep[index])
    }
    fn qk_row_order(&self) -> QkRowOrder {
        self.inner.qk_row_order()
    }
}
