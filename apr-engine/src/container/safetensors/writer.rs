//! Writing a SafeTensors file as Hugging Face transformers expects it: HF
//! tensor names, `[out, in]` shapes, Q/K rows in HF order, a space-padded
//! header, and the configuration and tokenizer files beside it.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{dtype_name, hf, METADATA_KEY, METADATA_PREFIX};
use crate::container::{
    names, qk_order, write_atomically, write_model_atomically, Progress, QkRowOrder, TensorSource, TensorSpec,
    WriteOptions,
};
use crate::error::{Error, Result};

/// The data section starts at a multiple of this, so every tensor of a
/// dtype up to 8 bytes wide is aligned.
const HEADER_ALIGN: usize = 8;

/// Writes `source` to `path` and its Hugging Face companions beside it.
/// Nothing is written if any target exists and `options.force` is not set.
pub fn write(path: &Path, source: &dyn TensorSource, options: WriteOptions, progress: Progress) -> Result<()> {
    let layout = Layout::plan(source)?;
    let dir = directory_of(path);
    let companions = hf::export_companions(source)?;
    if !options.force {
        let targets = std::iter::once(path.to_path_buf()).chain(companions.iter().map(|c| dir.join(c.file_name)));
        if let Some(existing) = targets.into_iter().find(|p| p.exists()) {
            return Err(Error::WouldOverwrite(existing));
        }
    }
    let header = layout.header(source)?;
    write_model_atomically(path, options, |out| {
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(|e| Error::io(path, e))?;
        out.write_all(&header).map_err(|e| Error::io(path, e))?;
        for placed in &layout.tensors {
            let bytes = tensor_bytes(source, placed)?;
            out.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            progress(bytes.len() as u64);
        }
        Ok(())
    })?;
    for companion in companions {
        let target = dir.join(companion.file_name);
        write_atomically(&target, options, |out| out.write_all(&companion.bytes).map_err(|e| Error::io(&target, e)))?;
    }
    Ok(())
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// One tensor's place in the data section.
struct Placed {
    index: usize,
    hf_name: String,
    dtype: &'static str,
    begin: u64,
    end: u64,
    /// Heads to regroup Q/K rows by, when the source's rows are in GGUF order.
    unpermute_heads: Option<usize>,
}

/// Where each tensor goes: widest dtypes first (so each stays aligned), then by name.
struct Layout {
    tensors: Vec<Placed>,
}

impl Layout {
    fn plan(source: &dyn TensorSource) -> Result<Layout> {
        let meta = source.metadata();
        let arch = meta.architecture().unwrap_or_default();
        let gguf_rows = source.qk_row_order() == QkRowOrder::Gguf;
        let mut names_seen = HashSet::new();
        let mut tensors = Vec::with_capacity(source.specs().len());
        for (index, spec) in source.specs().iter().enumerate() {
            let dtype = writable_dtype(spec)?;
            let hf_name = names::to_hf(&spec.name);
            if hf_name == METADATA_KEY || !names_seen.insert(hf_name.clone()) {
                return Err(Error::Invalid(format!(
                    "tensor name {hf_name:?} (from {:?}) is reserved or repeated",
                    spec.name
                )));
            }
            let size = spec.dtype.byte_size(&spec.shape).map_err(|e| Error::Invalid(format!("{}: {e}", spec.name)))?;
            let unpermute_heads = (gguf_rows && qk_order::is_permuted_tensor(arch, &spec.name))
                .then(|| qk_order::heads_of(meta, &spec.name));
            tensors.push(Placed { index, hf_name, dtype, begin: 0, end: size, unpermute_heads });
        }
        tensors.sort_by(|a, b| {
            let width = |p: &Placed| source.specs()[p.index].dtype.block_bytes();
            width(b).cmp(&width(a)).then_with(|| a.hf_name.cmp(&b.hf_name))
        });
        let mut offset = 0u64;
        for placed in &mut tensors {
            let size = placed.end;
            placed.begin = offset;
            placed.end = offset + size;
            offset = placed.end;
        }
        Ok(Layout { tensors })
    }

    /// The JSON header, padded with spaces so the data section starts aligned.
    fn header(&self, source: &dyn TensorSource) -> Result<Vec<u8>> {
        let mut header = serde_json::Map::new();
        header.insert(METADATA_KEY.to_string(), serde_json::Value::Object(file_metadata(source)));
        for placed in &self.tensors {
            let spec = &source.specs()[placed.index];
            header.insert(
                placed.hf_name.clone(),
                serde_json::json!({
                    "dtype": placed.dtype,
                    "shape": spec.shape,
                    "data_offsets": [placed.begin, placed.end],
                }),
            );
        }
        let mut bytes = serde_json::to_vec(&header).map_err(|e| Error::Invalid(format!("header: {e}")))?;
        let padded = (HEADER_START + bytes.len()).next_multiple_of(HEADER_ALIGN) - HEADER_START;
        bytes.resize(padded, b' ');
        Ok(bytes)
    }
}

const HEADER_START: usize = 8;

/// `__metadata__`: `format: pt` (transformers checks it), plus any string
/// metadata an imported SafeTensors file carried.
fn file_metadata(source: &dyn TensorSource) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("format".to_string(), "pt".into());
    for (key, value) in &source.metadata().entries {
        if let (Some(name), Some(text)) = (key.strip_prefix(METADATA_PREFIX), value.as_str()) {
            if name != "format" {
                map.insert(name.to_string(), text.into());
            }
        }
    }
    map
}

/// SafeTensors holds plain element types only; block-quantized tensors must
/// be dequantized by the caller first.
fn writable_dtype(spec: &TensorSpec) -> Result<&'static str> {
    dtype_name(spec.dtype).ok_or_else(|| {
        Error::Unsupported(format!(
            "tensor {}: SafeTensors cannot hold {} (convert it to F32, F16 or BF16 first)",
            spec.name, spec.dtype
        ))
    })
}

/// A tensor's bytes as they go into the file, Q/K rows in HF order.
fn tensor_bytes<'a>(source: &'a dyn TensorSource, placed: &Placed) -> Result<std::borrow::Cow<'a, [u8]>> {
    let spec = &source.specs()[placed.index];
    let bytes = source.data(placed.index)?;
    let expected = placed.end - placed.begin;
    if bytes.len() as u64 != expected {
        return Err(Error::Invalid(format!(
            "tensor {}: source gave {} bytes, {} {:?} needs {expected}",
            spec.name,
            bytes.len(),
            spec.dtype,
            spec.shape
        )));
    }
    let Some(heads) = placed.unpermute_heads else { return Ok(bytes) };
    let rows = spec.shape.first().copied().unwrap_or(1).max(1) as usize;
    if heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(Error::Invalid(format!(
            "tensor {}: {rows} rows do not split into {heads} heads of an even size",
            spec.name
        )));
    }
    let row_bytes = bytes.len() / rows;
    Ok(qk_order::reorder_rows(&bytes, row_bytes, heads, QkRowOrder::Gguf, QkRowOrder::HuggingFace).into())
}
