//! `synth`: a model file with another's exact layout and random weights.
//!
//! The output keeps the model's header as it is (metadata, tokenizer, tensor
//! names, dtypes and shapes, so the same byte sizes and offsets); only the
//! tensor data is new: random values at scales that keep a forward pass
//! finite through every layer, quantized to each tensor's dtype with the
//! project's own quantizers, so every block is valid. The layout can come
//! from a header-only prefix of a GGUF file ([`write_header_prefix`]): a few
//! megabytes shipped where a full-size model is wanted for benchmarks or tests.
//!
//! The weights are a pure function of (seed, tensor index, chunk index), each
//! chunk drawn from its own generator: the file is the same byte for byte for
//! a seed, however many threads fill it.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;
use rayon::prelude::*;
use serde::Serialize;

use crate::container::{
    self, detect_format, gguf, FormatKind, Metadata, Parsed, Progress, TensorSource, TensorSpec, WriteOptions,
};
use crate::dtype::element_count;
use crate::error::{Error, Result};
use crate::quant;

/// Values generated and quantized in one piece: big enough for the
/// quantizers' threads, small enough that a large embedding is never held in
/// f32 all at once.
const CHUNK_ELEMS: u64 = 1 << 20;

/// Spread of per-channel gains around 1 and of biases around 0.
const VECTOR_STD: f32 = 0.02;

/// What a synthesis wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SynthReport {
    pub tensors: usize,
    /// Elements over all tensors.
    pub parameters: u64,
    pub bytes_written: u64,
    pub seed: u64,
}

/// A GGUF file's layout, read from the whole file or from a header-only prefix
/// of it. Other containers are refused: `synth` writes the container it read.
pub fn read_layout(path: &Path) -> Result<gguf::HeaderOnly> {
    let map = map_file(path)?;
    require_gguf(path, &map)?;
    gguf::parse_header(&map).map_err(|e| e.in_file(path))
}

/// Writes a file at `output` with `layout`'s header and random weights drawn from `seed`.
pub fn synthesize(
    layout: &Parsed,
    output: &Path,
    seed: u64,
    options: WriteOptions,
    progress: Progress,
) -> Result<SynthReport> {
    let source = SynthSource::new(layout, seed)?;
    container::gguf::write(output, &source, options, progress)?;
    let parameters = source.specs.iter().filter_map(|s| element_count(&s.shape)).sum();
    let bytes_written = std::fs::metadata(output).map_err(|e| Error::io(output, e))?.len();
    Ok(SynthReport { tensors: source.specs.len(), parameters, bytes_written, seed })
}

/// Writes the header of the GGUF file `model` (metadata and tensor table with
/// their padding, no tensor data) to `output`: what [`read_layout`] needs.
/// Returns the header's length in bytes.
pub fn write_header_prefix(model: &Path, output: &Path, options: WriteOptions) -> Result<u64> {
    let map = map_file(model)?;
    require_gguf(model, &map)?;
    let header = gguf::parse_header(&map).map_err(|e| e.in_file(model))?;
    // A prefix cut inside the padding is read, and passed on, as it is.
    let prefix = &map[..header.data_offset.min(map.len() as u64) as usize];
    container::write_atomically(output, options, |out| out.write_all(prefix).map_err(|e| Error::io(output, e)))?;
    Ok(prefix.len() as u64)
}

fn map_file(path: &Path) -> Result<Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: a read-only map; a file changed underneath by another process is
    // outside what any reader can defend against (as in `ModelFile::open`).
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

fn require_gguf(path: &Path, bytes: &[u8]) -> Result<()> {
    match detect_format(bytes) {
        Some(FormatKind::Gguf) => Ok(()),
        Some(other) => Err(Error::Unsupported(format!(
            "{}: synth reads and writes GGUF, this is {other:?}; convert it first (cargo apr convert {} OUT.gguf)",
            path.display(),
            path.display()
        ))),
        None => Err(Error::Unsupported(format!("{}: not a GGUF file (no GGUF magic)", path.display()))),
    }
}

/// The layout's tensors with random data, one tensor at a time.
struct SynthSource<'a> {
    metadata: &'a Metadata,
    specs: Vec<TensorSpec>,
    seed: u64,
}

impl<'a> SynthSource<'a> {
    fn new(layout: &'a Parsed, seed: u64) -> Result<Self> {
        let mut specs = Vec::with_capacity(layout.tensors.len());
        for tensor in &layout.tensors {
            if !quant::can_quantize(tensor.dtype) {
                return Err(Error::Unsupported(format!(
                    "tensor '{}' is {}: synth fills only float and block-quantized dtypes",
                    tensor.name,
                    tensor.dtype.name()
                )));
            }
            specs.push(TensorSpec { name: tensor.name.clone(), dtype: tensor.dtype, shape: tensor.shape.clone() });
        }
        Ok(SynthSource { metadata: &layout.metadata, specs, seed })
    }
}

impl TensorSource for SynthSource<'_> {
    fn metadata(&self) -> &Metadata {
        self.metadata
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        Ok(Cow::Owned(random_tensor(&self.specs[index], self.seed, index)?))
    }
}

/// One tensor's bytes: rows of random values in chunks, each chunk from its
/// own generator, quantized to the tensor's dtype. Blocks run along rows, so
/// chunks of whole rows quantize independently.
fn random_tensor(spec: &TensorSpec, seed: u64, index: usize) -> Result<Vec<u8>> {
    let cols = spec.shape.last().copied().unwrap_or(1).max(1);
    let elements = element_count(&spec.shape)
        .ok_or_else(|| Error::Invalid(format!("tensor '{}': element count overflows", spec.name)))?;
    let rows = elements / cols;
    let rows_per_chunk = (CHUNK_ELEMS / cols).max(1);
    let scale = Scale::of(&spec.name, &spec.shape);
    // At most one chunk per row; the count is a usize on the 64-bit targets apr builds for.
    let chunk_count = rows.div_ceil(rows_per_chunk) as usize;
    let chunks: Vec<Vec<u8>> = (0..chunk_count)
        .into_par_iter()
        .map(|chunk| {
            let first_row = chunk as u64 * rows_per_chunk;
            let chunk_rows = rows_per_chunk.min(rows - first_row);
            let mut rng = SplitMix64::new(stream_seed(seed, index as u64, chunk as u64));
            let values: Vec<f32> = (0..chunk_rows * cols).map(|_| scale.mean + scale.std * rng.normal()).collect();
            quant::quantize(spec.dtype, &values).map_err(|e| Error::Invalid(format!("tensor '{}': {e}", spec.name)))
        })
        .collect::<Result<_>>()?;
    Ok(chunks.concat())
}

/// The distribution of one tensor's values: trained models' typical scales.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scale {
    mean: f32,
    std: f32,
}

impl Scale {
    fn of(name: &str, shape: &[u64]) -> Scale {
        match shape {
            // A matrix (embeddings and output included) keeps a unit-variance
            // input at unit variance: std 1/sqrt(inputs), about 0.02 for an
            // embedding as wide as a small model's hidden state.
            [.., cols] if shape.len() >= 2 => Scale { mean: 0.0, std: 1.0 / (*cols as f32).sqrt() },
            _ if name.ends_with(".bias") => Scale { mean: 0.0, std: VECTOR_STD },
            // Norm gains and other per-channel factors (RoPE frequency factors):
            // near 1, so that each norm hands on unit-scale activations.
            _ => Scale { mean: 1.0, std: VECTOR_STD },
        }
    }
}

/// SplitMix64's increment (2^64 divided by the golden ratio).
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The seed of one chunk's generator, mixed so nearby inputs give unrelated streams.
fn stream_seed(seed: u64, tensor: u64, chunk: u64) -> u64 {
    let mix = |z: u64| scramble(z.wrapping_add(GOLDEN_GAMMA));
    mix(mix(mix(seed) ^ tensor) ^ chunk)
}

/// SplitMix64's output function: a bijection that scatters every input bit.
fn scramble(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: small, fast and fully specified here, so a seed's file does not
/// change with a dependency's version.
struct SplitMix64 {
    state: u64,
    /// Box-Muller makes normals in pairs; the second waits here.
    spare: Option<f32>,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        scramble(self.state)
    }

    /// Uniform in (0, 1]: never 0, so its logarithm is finite.
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal value (Box-Muller).
    fn normal(&mut self) -> f32 {
        if let Some(value) = self.spare.take() {
            return value;
        }
        let radius = (-2.0 * self.unit().ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * self.unit()).sin_cos();
        self.spare = Some((radius * sin) as f32);
        (radius * cos) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{MemorySource, MetaValue, ModelFile};
    use crate::DType;

    /// A small GGUF file: a few tensors of assorted dtypes.
    fn tiny_model(dir: &Path) -> std::path::PathBuf {
        let mut metadata = Metadata::default();
        metadata.insert("general.architecture", MetaValue::String("llama".into()));
        let mut source = MemorySource::new(metadata);
        let tensors = [
            ("token_embd.weight", DType::Q4_K, vec![8, 256]),
            ("blk.0.attn_norm.weight", DType::F32, vec![256]),
            ("blk.0.attn_q.bias", DType::F32, vec![256]),
            ("blk.0.ffn_down.weight", DType::Q8_0, vec![4, 64]),
            ("output.weight", DType::F16, vec![3, 5]),
        ];
        for (name, dtype, shape) in tensors {
            let values = vec![0.5f32; element_count(&shape).unwrap() as usize];
            let bytes = quant::quantize(dtype, &values).unwrap();
            source.push(TensorSpec { name: name.into(), dtype, shape }, bytes).unwrap();
        }
        let path = dir.join("tiny.gguf");
        gguf::write(&path, &source, WriteOptions::default(), &mut |_| {}).unwrap();
        path
    }

    fn synth_bytes(layout: &Parsed, dir: &Path, name: &str, seed: u64) -> Vec<u8> {
        let out = dir.join(name);
        synthesize(layout, &out, seed, WriteOptions::default(), &mut |_| {}).unwrap();
        std::fs::read(out).unwrap()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let layout = read_layout(&tiny_model(dir.path())).unwrap().parsed;
        let a = synth_bytes(&layout, dir.path(), "a.gguf", 7);
        assert_eq!(a, synth_bytes(&layout, dir.path(), "b.gguf", 7));
        assert_ne!(a, synth_bytes(&layout, dir.path(), "c.gguf", 8));
    }

    #[test]
    fn the_header_is_kept_and_the_data_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let header = read_layout(&model).unwrap();
        let synthetic = synth_bytes(&header.parsed, dir.path(), "s.gguf", 1);
        let original = std::fs::read(&model).unwrap();
        let data_at = header.data_offset as usize;
        assert_eq!(synthetic.len(), original.len());
        assert_eq!(synthetic[..data_at], original[..data_at]);
        let file = ModelFile::open(dir.path().join("s.gguf")).unwrap();
        let original = ModelFile::open(&model).unwrap();
        for (new, old) in file.views().zip(original.views()) {
            assert_ne!(new.bytes, old.bytes, "{}", new.name());
        }
    }

    #[test]
    fn a_header_prefix_reads_as_the_layout_and_a_cut_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny_model(dir.path());
        let prefix = dir.path().join("prefix.gguf");
        let written = write_header_prefix(&model, &prefix, WriteOptions::default()).unwrap();
        let full = read_layout(&model).unwrap();
        assert_eq!(written, full.data_offset);
        assert_eq!(read_layout(&prefix).unwrap().parsed.tensors, full.parsed.tensors);
        // The normal reader keeps its strictness: a prefix is not a model file.
        assert!(ModelFile::open(&prefix).is_err());
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &std::fs::read(&prefix).unwrap()[..written as usize - 40]).unwrap();
        let error = read_layout(&cut).unwrap_err().to_string();
        assert!(
            error.contains("cut.gguf")
                && (error.contains("tensor '") || error.contains("tensor["))
                && error.contains("at offset"),
            "{error}"
        );
    }

    #[test]
    fn scales_follow_the_kind_of_tensor() {
        assert_eq!(Scale::of("blk.0.attn_norm.weight", &[576]), Scale { mean: 1.0, std: VECTOR_STD });
        assert_eq!(Scale::of("blk.0.attn_q.bias", &[576]), Scale { mean: 0.0, std: VECTOR_STD });
        assert_eq!(Scale::of("blk.0.ffn_down.weight", &[576, 1536]).std, 1.0 / 1536f32.sqrt());
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut rng = SplitMix64::new(3);
        let values: Vec<f64> = (0..100_000).map(|_| f64::from(rng.normal())).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean}, variance {var}");
    }
}
