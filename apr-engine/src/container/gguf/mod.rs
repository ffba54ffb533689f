//! gguf container (to be written).
use crate::container::Parsed;
use crate::error::ParseError;

pub fn parse(_bytes: &[u8]) -> Result<Parsed, ParseError> {
    Err(ParseError::new("magic", 0, "gguf reader not written yet"))
}
