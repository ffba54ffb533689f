//! Ready-made [`TensorSource`]s: tensors held in memory (tests, synthetic
//! models) and an opened file's tensors passed through unchanged.

use std::borrow::Cow;

use super::{Metadata, ModelFile, QkRowOrder, TensorSource, TensorSpec};
use crate::error::{Error, Result};

/// Tensors owned in memory.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    pub metadata: Metadata,
    pub specs: Vec<TensorSpec>,
    pub data: Vec<Vec<u8>>,
    pub qk_row_order: Option<QkRowOrder>,
}

impl MemorySource {
    pub fn new(metadata: Metadata) -> Self {
        MemorySource { metadata, ..Default::default() }
    }

    /// Adds a tensor; `bytes` must be `dtype.byte_size(shape)` long.
    pub fn push(&mut self, spec: TensorSpec, bytes: Vec<u8>) -> Result<()> {
        let expected = spec.dtype.byte_size(&spec.shape).map_err(|e| Error::Invalid(format!("{}: {e}", spec.name)))?;
        if bytes.len() as u64 != expected {
            return Err(Error::Invalid(format!(
                "{}: {} bytes given, {} {:?} needs {expected}",
                spec.name,
                bytes.len(),
                spec.dtype,
                spec.shape
            )));
        }
        self.specs.push(spec);
        self.data.push(bytes);
        Ok(())
    }
}

impl TensorSource for MemorySource {
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(&self.data[index]))
    }
    fn qk_row_order(&self) -> QkRowOrder {
        self.qk_row_order.unwrap_or(QkRowOrder::Gguf)
    }
}

/// An opened file's tensors and metadata, passed through byte for byte.
pub struct FileSource<'a> {
    model: &'a ModelFile,
    specs: Vec<TensorSpec>,
}

impl<'a> FileSource<'a> {
    pub fn new(model: &'a ModelFile) -> Self {
        let specs = model
            .tensors()
            .iter()
            .map(|t| TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
            .collect();
        FileSource { model, specs }
    }
}

impl TensorSource for FileSource<'_> {
    fn metadata(&self) -> &Metadata {
        self.model.metadata()
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Borrowed(self.model.view(&self.model.tensors()[index]).bytes))
    }
    fn qk_row_order(&self) -> QkRowOrder {
        self.model.parsed.qk_row_order
    }
}
