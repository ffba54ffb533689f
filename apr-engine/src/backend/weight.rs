//! Weights as a backend receives them: a [`HostMatrix`] names a matrix in the
//! mapped model file (in its file dtype, never converted), and a
//! [`WeightMatrix`] is the borrowed view kernels read.

use std::ops::Range;
use std::sync::Arc;

use crate::container::ModelFile;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A row-major `[rows, cols]` weight borrowed in its file dtype.
#[derive(Debug, Clone, Copy)]
pub struct WeightMatrix<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub bytes: &'a [u8],
}

/// A matrix whose byte count does not match its dtype and shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WeightShapeError(String);

impl<'a> WeightMatrix<'a> {
    pub fn new(dtype: DType, rows: usize, cols: usize, bytes: &'a [u8]) -> Result<Self, WeightShapeError> {
        let expected = dtype.byte_size(&[rows as u64, cols as u64]).map_err(|e| WeightShapeError(e.to_string()))?;
        if expected != bytes.len() as u64 {
            return Err(WeightShapeError(format!(
                "{dtype} [{rows}, {cols}] needs {expected} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(WeightMatrix { dtype, rows, cols, bytes })
    }

    /// Bytes of one row (whole blocks: `new` checked `cols` is a multiple of the block size).
    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_elems() * self.dtype.block_bytes()
    }

    pub fn row(&self, r: usize) -> &'a [u8] {
        let n = self.row_bytes();
        &self.bytes[r * n..(r + 1) * n]
    }
}

/// Bytes a [`HostMatrix`] lives in: a mapped model file, or a buffer.
type Storage = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A weight matrix of an opened model file, kept alive with the file: what a
/// backend prepares (a host backend keeps it as it is; a device backend
/// uploads its bytes once).
#[derive(Clone)]
pub struct HostMatrix {
    storage: Storage,
    range: Range<usize>,
    pub name: String,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
}

impl std::fmt::Debug for HostMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostMatrix({} {} [{}, {}])", self.name, self.dtype, self.rows, self.cols)
    }
}

impl HostMatrix {
    /// Tensor `index` of `file` as a matrix (a 1-D tensor is one row).
    pub fn new(file: &Arc<ModelFile>, index: usize) -> Result<HostMatrix> {
        let info = &file.tensors()[index];
        let (rows, cols) = match info.shape.as_slice() {
            [rows, cols] => (*rows as usize, *cols as usize),
            [cols] => (1, *cols as usize),
            _ => (1, info.shape.iter().product::<u64>() as usize),
        };
        let start = info.offset as usize;
        let range = start..start + info.size as usize;
        WeightMatrix::new(info.dtype, rows, cols, &file.bytes()[range.clone()])
            .map_err(|e| Error::Invalid(format!("{}: tensor {}: {e}", file.path.display(), info.name)))?;
        let storage: Storage = Arc::clone(file) as Storage;
        Ok(HostMatrix { storage, range, name: info.name.clone(), dtype: info.dtype, rows, cols })
    }

    /// A matrix held in a buffer (tests of a backend's kernels on made-up weights).
    pub fn from_bytes(name: &str, dtype: DType, rows: usize, cols: usize, bytes: Vec<u8>) -> Result<HostMatrix> {
        WeightMatrix::new(dtype, rows, cols, &bytes).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        let range = 0..bytes.len();
        Ok(HostMatrix { storage: Arc::new(bytes), range, name: name.to_string(), dtype, rows, cols })
    }

    /// The bytes as kernels read them (the size was checked when it was made).
    pub fn view(&self) -> WeightMatrix<'_> {
        let bytes = &(*self.storage).as_ref()[self.range.clone()];
        WeightMatrix { dtype: self.dtype, rows: self.rows, cols: self.cols, bytes }
    }
}
