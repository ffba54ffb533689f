//! Corrupted copies of a real model, written through the project's own
//! writers: the fault-injection suite proves each trace-diff classification
//! on them, and users can reproduce a class of bug on purpose.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::container::{
    qk_order, FileSource, MetaArray, MetaValue, Metadata, ModelFile, QkRowOrder, TensorSource, TensorSpec, WriteOptions,
};
use crate::convert::{format_for_extension, write_source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant;

/// One corruption of a model file.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Every value zero.
    ZeroTensor(String),
    /// Every value multiplied by `factor`.
    ScaleTensor { name: String, factor: f32 },
    /// Values replaced with Gaussian noise of the same standard deviation.
    NoiseTensor { name: String, seed: u64 },
    /// Two tensors' contents exchanged (same shape and dtype).
    SwapTensors(String, String),
    /// The first block's scale (or the first value) becomes NaN.
    NanInTensor(String),
    /// Values written as `written_as` bytes but labelled `labelled` (same element size).
    RelabelDType { name: String, written_as: DType, labelled: DType },
    /// A square matrix written transposed.
    TransposeTensor(String),
    /// Every `tokenizer.*` metadata key removed.
    StripTokenizer,
    /// Control tokens marked as normal text, so special parsing no longer sees them.
    SpecialTokensNotAtomic,
    /// A metadata key set (or replaced).
    SetMetadata(String, MetaValue),
    /// Every layer's Q and K rows (and their biases) permuted within each head
    /// the way Llama converters do (halves to interleaved pairs), while the file
    /// goes on recording its old row order: a converter bug that loads fine.
    PermuteQkRows,
}

/// Writes `model` to `output` (format from the extension) with `faults` applied.
pub fn write_faulty_copy(model: &ModelFile, output: &Path, faults: &[Fault], force: bool) -> Result<()> {
    let format = format_for_extension(output).ok_or_else(|| {
        Error::Invalid(format!("{}: extension must be .gguf, .apr or .safetensors", output.display()))
    })?;
    let source = FaultySource::new(model, faults)?;
    write_source(format, output, &source, WriteOptions { force }, &mut |_| {})
}

/// A file's tensors with some replaced.
struct FaultySource<'a> {
    inner: FileSource<'a>,
    metadata: Metadata,
    specs: Vec<TensorSpec>,
    replaced: BTreeMap<usize, Vec<u8>>,
}

impl<'a> FaultySource<'a> {
    fn new(model: &'a ModelFile, faults: &[Fault]) -> Result<Self> {
        let inner = FileSource::new(model);
        let mut source = FaultySource {
            metadata: model.metadata().clone(),
            specs: inner.specs().to_vec(),
            inner,
            replaced: BTreeMap::new(),
        };
        for fault in faults {
            source.apply(fault)?;
        }
        Ok(source)
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.specs.iter().position(|s| s.name == name).ok_or_else(|| Error::Invalid(format!("no tensor named {name}")))
    }

    /// The tensor's current values (after earlier faults), dequantized.
    fn values(&self, index: usize) -> Result<Vec<f32>> {
        let bytes = self.data(index)?;
        quant::dequantize_to_vec(self.specs[index].dtype, &bytes).map_err(|e| invalid(&self.specs[index].name, e))
    }

    /// Stores new values in the tensor's own dtype.
    fn store(&mut self, index: usize, values: &[f32]) -> Result<()> {
        let spec = &self.specs[index];
        let bytes = quant::quantize(spec.dtype, values).map_err(|e| invalid(&spec.name, e))?;
        self.replaced.insert(index, bytes);
        Ok(())
    }

    fn apply(&mut self, fault: &Fault) -> Result<()> {
        match fault {
            Fault::ZeroTensor(name) => self.map_values(name, |v| v.fill(0.0)),
            Fault::ScaleTensor { name, factor } => self.map_values(name, |v| v.iter_mut().for_each(|x| *x *= factor)),
            Fault::NoiseTensor { name, seed } => {
                let mut rng = StdRng::seed_from_u64(*seed);
                self.map_values(name, |v| {
                    let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len().max(1) as f32).sqrt();
                    v.iter_mut().for_each(|x| *x = gaussian(&mut rng) * std);
                })
            }
            Fault::SwapTensors(a, b) => {
                let (ia, ib) = (self.index(a)?, self.index(b)?);
                if self.specs[ia].shape != self.specs[ib].shape {
                    return Err(Error::Invalid(format!("{a} and {b} differ in shape: cannot swap")));
                }
                let (da, db) = (self.data(ia)?.into_owned(), self.data(ib)?.into_owned());
                self.replaced.insert(ia, db);
                self.replaced.insert(ib, da);
                let (ta, tb) = (self.specs[ia].dtype, self.specs[ib].dtype);
                (self.specs[ia].dtype, self.specs[ib].dtype) = (tb, ta);
                Ok(())
            }
            Fault::NanInTensor(name) => self.nan_in(name),
            Fault::RelabelDType { name, written_as, labelled } => {
                let index = self.index(name)?;
                let values = self.values(index)?;
                let bytes = quant::quantize(*written_as, &values).map_err(|e| invalid(name, e))?;
                self.specs[index].dtype = *labelled;
                self.replaced.insert(index, bytes);
                Ok(())
            }
            Fault::TransposeTensor(name) => {
                let index = self.index(name)?;
                let &[rows, cols] = &self.specs[index].shape[..] else {
                    return Err(Error::Invalid(format!("{name} is not a matrix")));
                };
                if rows != cols {
                    return Err(Error::Invalid(format!(
                        "{name} is {rows}x{cols}: only a square matrix keeps its shape"
                    )));
                }
                self.map_values(name, |v| transpose_square(v, rows as usize))
            }
            Fault::StripTokenizer => {
                self.metadata.entries.retain(|key, _| !key.starts_with("tokenizer."));
                Ok(())
            }
            Fault::SpecialTokensNotAtomic => {
                let Some(MetaValue::Array(MetaArray::I32(types))) =
                    self.metadata.entries.get_mut("tokenizer.ggml.token_type")
                else {
                    return Err(Error::Invalid(
                        "tokenizer.ggml.token_type is missing or not i32: nothing to make non-atomic".into(),
                    ));
                };
                // 3 = control, 4 = user-defined: both are matched whole; 1 = normal text.
                types.iter_mut().filter(|t| matches!(t, 3 | 4)).for_each(|t| *t = 1);
                Ok(())
            }
            Fault::SetMetadata(key, value) => {
                self.metadata.insert(key.clone(), value.clone());
                Ok(())
            }
            Fault::PermuteQkRows => self.permute_qk_rows(),
        }
    }

    fn permute_qk_rows(&mut self) -> Result<()> {
        let projections = [".attn_q.weight", ".attn_k.weight", ".attn_q.bias", ".attn_k.bias"];
        for index in 0..self.specs.len() {
            let name = self.specs[index].name.clone();
            if !projections.iter().any(|p| name.ends_with(p)) {
                continue;
            }
            let heads = qk_order::heads_of(&self.metadata, &name.replace(".bias", ".weight"));
            let bytes = self.data(index)?.into_owned();
            let rows = self.specs[index].shape.first().copied().unwrap_or(1).max(1) as usize;
            let permuted =
                qk_order::reorder_rows(&bytes, bytes.len() / rows, heads, QkRowOrder::HuggingFace, QkRowOrder::Gguf);
            self.replaced.insert(index, permuted);
        }
        Ok(())
    }

    fn map_values(&mut self, name: &str, f: impl FnOnce(&mut Vec<f32>)) -> Result<()> {
        let index = self.index(name)?;
        let mut values = self.values(index)?;
        f(&mut values);
        self.store(index, &values)
    }

    /// NaN where the dtype can hold it without re-quantizing the rest: the
    /// first value of a float tensor, or the f16 scale of the first block.
    fn nan_in(&mut self, name: &str) -> Result<()> {
        let index = self.index(name)?;
        let dtype = self.specs[index].dtype;
        let mut bytes = self.data(index)?.into_owned();
        match dtype {
            DType::F32 => bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes()),
            _ => {
                let offset = block_scale_offset(dtype).ok_or_else(|| {
                    Error::Unsupported(format!("{name}: NaN injection into {dtype} is not supported"))
                })?;
                bytes[offset..offset + 2].copy_from_slice(&half::f16::NAN.to_le_bytes());
            }
        }
        self.replaced.insert(index, bytes);
        Ok(())
    }
}

impl TensorSource for FaultySource<'_> {
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        match self.replaced.get(&index) {
            Some(bytes) => Ok(Cow::Borrowed(bytes)),
            None => self.inner.data(index),
        }
    }
    fn qk_row_order(&self) -> QkRowOrder {
        self.inner.qk_row_order()
    }
}

/// Byte offset of the f16 super-scale `d` in the first block of a block dtype
/// (F16 itself: the first value).
fn block_scale_offset(dtype: DType) -> Option<usize> {
    Some(match dtype {
        DType::F16
        | DType::Q4_0
        | DType::Q4_1
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q8_0
        | DType::Q4_K
        | DType::Q5_K => 0,
        DType::Q2_K => 80,
        DType::Q3_K => 108,
        DType::Q6_K => 208,
        _ => return None,
    })
}

fn transpose_square(v: &mut [f32], n: usize) {
    for r in 0..n {
        for c in r + 1..n {
            v.swap(r * n + c, c * n + r);
        }
    }
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

fn invalid(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{name}: {e}"))
}
