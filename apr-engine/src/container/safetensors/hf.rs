//! Hugging Face companions: config.json and tokenizer.json (to be written).
use crate::container::ModelFile;
use crate::error::Result;

pub fn read_companions(_model: &mut ModelFile) -> Result<()> {
    Ok(())
}
