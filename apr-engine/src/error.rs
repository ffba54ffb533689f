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

/// Every error the library returns.
#[derive(Debug, thiserror::Error)]
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
