//! Typed errors of the library. Malformed input is a [`ParseError`] that names
//! the field and the byte offset; [`Error::Format`] adds the file.

use std::path::PathBuf;

/// Something wrong at a known place in a byte buffer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} at offset {offset}: {reason}")]
pub struct ParseError {
    /// What was being read (`header.tensor_count`, `tensor 'blk.0.attn_q.weight' dtype`).
    pub field: String,
    /// Byte offset of that field from the start of the file.
    pub offset: u64,
    pub reason: String,
}

impl ParseError {
    pub fn new(field: impl Into<String>, offset: u64, reason: impl Into<String>) -> Self {
        ParseError { field: field.into(), offset, reason: reason.into() }
    }

    /// Attaches the file the bytes came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> Error {
        Error::Format { path: path.into(), source: self }
    }
}

/// Every error the library returns. Callers that branch on a kind of failure
/// match its variant (never its text); more variants may come.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Format { path: PathBuf, source: ParseError },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: already exists (pass --force to overwrite)", .0.display())]
    WouldOverwrite(PathBuf),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    /// A forward call would write past the KV cache's positions.
    #[error("context full: {used} + {requested} tokens > {capacity} positions")]
    ContextFull { used: usize, requested: usize, capacity: usize },
    /// A weight the architecture needs is not in the file.
    #[error("{}: tensor {name} is missing", path.display())]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor's shape is not the one the configuration implies.
    #[error("{}: tensor {name} has shape {actual:?}, the configuration needs {expected:?}{}", path.display(), if actual.iter().rev().eq(expected.iter()) { " (transposed)" } else { "" })]
    ShapeMismatch { path: PathBuf, name: String, actual: Vec<u64>, expected: Vec<u64> },
    /// A backend could not do what was asked (a device out of memory, a failed launch).
    #[error("backend {backend}: {message}")]
    Backend { backend: &'static str, message: String },
    /// Bytes that are not a whole number of a dtype's blocks, or a dtype without a codec.
    #[error(transparent)]
    Quant(#[from] crate::quant::QuantError),
    /// A model's tokenizer metadata is missing, malformed or of an unsupported kind.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// A weight matrix whose bytes do not match its dtype and shape.
    #[error(transparent)]
    WeightShape(#[from] crate::backend::WeightShapeError),
    /// A shape that is not a whole number of its dtype's blocks, or overflows.
    #[error(transparent)]
    Size(#[from] crate::dtype::SizeError),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// The error with the file it is about named in front, where it does not
    /// name one already (checks of a parsed model's values know no path).
    pub fn about_file(self, path: &std::path::Path) -> Error {
        let shown = path.display().to_string();
        match self {
            Error::Invalid(why) if !why.contains(&shown) => Error::Invalid(format!("{shown}: {why}")),
            Error::Unsupported(why) if !why.contains(&shown) => Error::Unsupported(format!("{shown}: {why}")),
            named => named,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
