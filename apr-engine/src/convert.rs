//! Conversion between containers and dtypes, one tensor at a time.
//!
//! A [`ConvertingSource`] wraps an opened file and presents, for each tensor,
//! the dtype and row order the target needs; bytes are carried unchanged
//! wherever the target can hold them, so GGUF <-> APR is byte for byte.

use std::borrow::Cow;
use std::path::Path;

use serde::Serialize;

use crate::container::{
    self, qk_order, FormatKind, MetaValue, Metadata, ModelFile, Progress, QkRowOrder, TensorSource, TensorSpec,
    WriteOptions,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant;

/// What the converted tensors' dtype should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeChoice {
    /// Each tensor keeps its dtype where the target can hold it.
    Keep,
    /// Weight matrices become this dtype; norms and biases stay F32 (as llama.cpp does).
    To(DType),
}

#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub to: FormatKind,
    pub dtype: DTypeChoice,
    pub force: bool,
}

/// What a conversion did, for the CLI and the tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConvertReport {
    pub tensors: usize,
    /// Tensors whose bytes were copied unchanged.
    pub carried: usize,
    /// Tensors dequantized and/or requantized.
    pub converted: usize,
    /// Tensors whose Q/K rows were reordered.
    pub reordered: usize,
    pub bytes_written: u64,
    /// Things a user should know (dtype fallbacks, formats that cannot hold a dtype).
    pub notes: Vec<String>,
}

/// The target format for an output path's extension, if it names one.
pub fn format_for_extension(path: &Path) -> Option<FormatKind> {
    match path.extension()?.to_str()? {
        "gguf" => Some(FormatKind::Gguf),
        "apr" => Some(FormatKind::Apr),
        "safetensors" => Some(FormatKind::SafeTensors),
        _ => None,
    }
}

/// Converts `input` into `output`.
pub fn convert(input: &ModelFile, output: &Path, options: ConvertOptions, progress: Progress) -> Result<ConvertReport> {
    let source = ConvertingSource::new(input, options)?;
    // The writer removes these too; doing it first lets the report say so.
    let stale = container::remove_stale_temp_files(output)?;
    write_source(options.to, output, &source, WriteOptions { force: options.force }, progress)?;
    let mut report = source.report;
    report.notes.extend(
        stale.iter().map(|p| format!("removed {}, left by an earlier conversion that did not finish", p.display())),
    );
    report.bytes_written = std::fs::metadata(output).map_err(|e| Error::io(output, e))?.len();
    Ok(report)
}

/// Writes `source` to `output` with the writer of `format`.
pub fn write_source(
    format: FormatKind,
    output: &Path,
    source: &dyn TensorSource,
    options: WriteOptions,
    progress: Progress,
) -> Result<()> {
    match format {
        FormatKind::Gguf => container::gguf::write(output, source, options, progress),
        FormatKind::Apr => container::apr::write(output, source, options, progress),
        FormatKind::SafeTensors => container::safetensors::write(output, source, options, progress),
    }
}

/// One tensor's plan: where it comes from and what it becomes.
struct Plan {
    source_index: usize,
    reorder: Option<(usize, QkRowOrder, QkRowOrder)>,
}

/// The input file seen as the target wants it.
pub struct ConvertingSource<'a> {
    input: &'a ModelFile,
    metadata: Metadata,
    specs: Vec<TensorSpec>,
    plans: Vec<Plan>,
    row_order: QkRowOrder,
    report: ConvertReport,
}

impl<'a> ConvertingSource<'a> {
    pub fn new(input: &'a ModelFile, options: ConvertOptions) -> Result<Self> {
        if let DTypeChoice::To(dtype) = options.dtype {
            check_target_dtype(options.to, dtype)?;
        }
        let arch = input.metadata().architecture().unwrap_or_default().to_string();
        let from_order = input.parsed.qk_row_order;
        // GGUF readers assume GGUF order; SafeTensors readers assume HF order;
        // APR records the order, so it keeps what it is given.
        let row_order = match options.to {
            FormatKind::Gguf => QkRowOrder::Gguf,
            FormatKind::SafeTensors => QkRowOrder::HuggingFace,
            FormatKind::Apr => from_order,
        };
        let mut report = ConvertReport::default();
        let mut specs = Vec::new();
        let mut plans = Vec::new();
        for (index, info) in input.tensors().iter().enumerate() {
            let dtype = target_dtype(options, &info.name, info.dtype, &info.shape, &mut report.notes);
            if dtype == info.dtype {
                report.carried += 1;
            } else {
                report.converted += 1;
            }
            let reorder = (qk_order::is_permuted_tensor(&arch, &info.name) && from_order != row_order).then(|| {
                report.reordered += 1;
                (qk_order::heads_of(input.metadata(), &info.name), from_order, row_order)
            });
            specs.push(TensorSpec { name: info.name.clone(), dtype, shape: info.shape.clone() });
            plans.push(Plan { source_index: index, reorder });
        }
        report.tensors = specs.len();
        if options.to == FormatKind::SafeTensors && input.tensors().iter().any(|t| t.dtype.is_quantized()) {
            let how = match options.dtype {
                DTypeChoice::Keep => "to F32 (pass --dtype f16|bf16 for a smaller file)".to_string(),
                DTypeChoice::To(dtype) => format!("to {dtype} (vectors to F32)"),
            };
            report.notes.push(format!("SafeTensors has no block dtypes: quantized tensors were dequantized {how}"));
        }
        let mut metadata = input.metadata().clone();
        if let DTypeChoice::To(dtype) = options.dtype {
            if let Some(file_type) = gguf_file_type(dtype) {
                metadata.insert("general.file_type", MetaValue::U32(file_type));
            }
        }
        Ok(ConvertingSource { input, metadata, specs, plans, row_order, report })
    }

    pub fn report(&self) -> &ConvertReport {
        &self.report
    }
}

impl TensorSource for ConvertingSource<'_> {
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        let plan = &self.plans[index];
        let spec = &self.specs[index];
        let view = self.input.view(&self.input.tensors()[plan.source_index]);
        let mut bytes = if spec.dtype == view.dtype() {
            Cow::Borrowed(view.bytes)
        } else {
            let values = quant::dequantize_to_vec(view.dtype(), view.bytes)
                .map_err(|e| Error::Invalid(format!("{}: {e}", spec.name)))?;
            Cow::Owned(quant::quantize(spec.dtype, &values).map_err(|e| Error::Invalid(format!("{}: {e}", spec.name)))?)
        };
        if let Some((heads, from, to)) = plan.reorder {
            let rows = spec.shape.first().copied().unwrap_or(1).max(1) as usize;
            bytes = Cow::Owned(qk_order::reorder_rows(&bytes, bytes.len() / rows, heads, from, to));
        }
        Ok(bytes)
    }

    fn qk_row_order(&self) -> QkRowOrder {
        self.row_order
    }
}

/// SafeTensors holds only plain types; GGUF and APR hold every dtype we can write.
fn check_target_dtype(to: FormatKind, dtype: DType) -> Result<()> {
    if to == FormatKind::SafeTensors && !dtype.is_float() {
        return Err(Error::Unsupported(format!(
            "SafeTensors cannot hold {dtype} blocks; choose --dtype f32, f16 or bf16 (or keep)"
        )));
    }
    if !quant::can_quantize(dtype) {
        return Err(Error::Unsupported(format!("cannot quantize to {dtype}")));
    }
    Ok(())
}

/// The dtype a tensor becomes under `options`.
fn target_dtype(options: ConvertOptions, name: &str, from: DType, shape: &[u64], notes: &mut Vec<String>) -> DType {
    let dequantized_if_blocks = |d: DType| if d.is_quantized() { DType::F32 } else { d };

    match options.dtype {
        DTypeChoice::Keep if options.to == FormatKind::SafeTensors => dequantized_if_blocks(from),
        DTypeChoice::Keep => from,
        DTypeChoice::To(to) if to.is_quantized() => {
            let is_matrix = shape.len() == 2 && !name.contains("norm") && !name.ends_with(".bias");
            if !is_matrix {
                return if from.is_quantized() { DType::F32 } else { from };
            }
            let inner = shape[1] as usize;
            if inner.is_multiple_of(to.block_elems()) {
                return to;
            }
            // K-quant blocks are 256 wide; a row that does not hold whole blocks
            // falls back to a 32-wide type, as llama.cpp's quantizer does.
            let fallback = if inner.is_multiple_of(DType::Q8_0.block_elems()) { DType::Q8_0 } else { DType::F16 };
            notes.push(format!(
                "{name}: row of {inner} is not a multiple of {to}'s block {}: stored as {fallback}",
                to.block_elems()
            ));
            fallback
        }
        // Vectors (norms, biases) stay F32, as llama.cpp keeps them.
        DTypeChoice::To(to) if shape.len() >= 2 => to,
        DTypeChoice::To(_) => dequantized_if_blocks(from),
    }
}

/// `general.file_type` (llama_ftype) for a whole-model dtype.
fn gguf_file_type(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q8_0 => 7,
        DType::Q4_K => 15,
        DType::Q5_K => 17,
        DType::Q6_K => 18,
        DType::BF16 => 32,
        _ => return None,
    })
}
