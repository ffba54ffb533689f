//! Every tensor of the real Qwen models dequantizes to exactly what gguf-py
//! gives: the sha256 of our float32 values must equal the sha256 of
//! `gguf.quants.dequantize`'s, tensor by tensor.
//!
//! `scripts/gguf_py_digests.py` lists each tensor's type, absolute data
//! offset, size and digest; its JSON is cached under `target/apr/cache/`,
//! keyed by model file name and size. The tensor bytes are read straight from
//! the file at those offsets (no GGUF reader of ours is involved).

use apr_engine::dtype::DType;
use apr_engine::quant;
use apr_engine::testing::models::{ReferenceModel, QWEN_0_5B, QWEN_1_5B};
use rayon::prelude::*;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Deserialize)]
struct Digests {
    file: String,
    size: u64,
    tensors: Vec<TensorDigest>,
}

#[derive(Debug, Clone, Deserialize)]
struct TensorDigest {
    name: String,
    ggml_type: u32,
    offset: u64,
    n_bytes: u64,
    n_elements: u64,
    sha256: String,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    target.join("apr/cache")
}

fn digest_script() -> PathBuf {
    repo_root().join("scripts/gguf_py_digests.py")
}

/// gguf-py's digests for the model, from the cache or by running the script.
fn gguf_py_digests(model: &Path) -> Digests {
    let file_name = model.file_name().unwrap().to_string_lossy().into_owned();
    let size = std::fs::metadata(model).unwrap().len();
    let cached = cache_dir().join(format!("gguf_py_digests-{file_name}-{size}.json"));
    if let Ok(text) = std::fs::read_to_string(&cached) {
        match serde_json::from_str::<Digests>(&text) {
            Ok(d) if d.file == file_name && d.size == size => return d,
            _ => eprintln!("ignoring unreadable cache {}", cached.display()),
        }
    }
    let started = Instant::now();
    let output = Command::new("python3")
        .arg(digest_script())
        .arg(model)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", digest_script().display()));
    assert!(
        output.status.success(),
        "{} {} failed ({}):\n{}",
        digest_script().display(),
        model.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("gguf-py digests of {file_name} took {:.1}s", started.elapsed().as_secs_f64());
    let digests: Digests = serde_json::from_slice(&output.stdout).expect("digest script printed JSON");
    std::fs::create_dir_all(cache_dir()).unwrap();
    let partial = cached.with_extension("json.partial");
    std::fs::write(&partial, &output.stdout).unwrap();
    std::fs::rename(&partial, &cached).unwrap();
    digests
}

/// Dequantizes `bytes` slice by slice (whole blocks), feeding the float32
/// little-endian bytes to `sink`.
fn dequantize_in_slices(dtype: DType, bytes: &[u8], mut sink: impl FnMut(&[f32])) {
    const SLICE_ELEMENTS: usize = 1 << 20;
    let blocks_per_slice = (SLICE_ELEMENTS / dtype.block_elems()).max(1);
    let mut values = vec![0.0f32; blocks_per_slice * dtype.block_elems()];
    for chunk in bytes.chunks(blocks_per_slice * dtype.block_bytes()) {
        let n = chunk.len() / dtype.block_bytes() * dtype.block_elems();
        quant::dequantize(dtype, chunk, &mut values[..n]).unwrap_or_else(|e| panic!("{e}"));
        sink(&values[..n]);
    }
}

fn sha256_of_dequantized(dtype: DType, bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    let mut le = Vec::new();
    dequantize_in_slices(dtype, bytes, |values| {
        le.clear();
        le.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        hasher.update(&le);
    });
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The tensor's bytes in the file, after checking the listed sizes agree with its dtype.
fn tensor_bytes<'a>(file: &'a [u8], t: &TensorDigest) -> (DType, &'a [u8]) {
    let dtype = DType::from_id(t.ggml_type).unwrap_or_else(|e| panic!("{}: {e}", t.name));
    let blocks = t.n_elements / dtype.block_elems() as u64;
    assert_eq!(blocks * dtype.block_elems() as u64, t.n_elements, "{}: partial block", t.name);
    assert_eq!(blocks * dtype.block_bytes() as u64, t.n_bytes, "{}: {dtype} size", t.name);
    let end = t.offset.checked_add(t.n_bytes).filter(|&end| end <= file.len() as u64);
    let end = end.unwrap_or_else(|| panic!("{}: data {}+{} runs past the file", t.name, t.offset, t.n_bytes));
    (dtype, &file[t.offset as usize..end as usize])
}

/// For a mismatching tensor: the first index where our value differs from gguf-py's, with both values.
fn first_difference(model: &Path, t: &TensorDigest, dtype: DType, bytes: &[u8]) -> String {
    let dump = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new("python3")
        .arg(digest_script())
        .arg(model)
        .args(["--dump", &t.name])
        .arg(dump.path())
        .status()
        .expect("python3 runs");
    assert!(status.success(), "dumping {} failed", t.name);
    let theirs: Vec<f32> = std::fs::read(dump.path())
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let ours = quant::dequantize_to_vec(dtype, bytes).unwrap();
    let index = ours.iter().zip(&theirs).position(|(a, b)| a.to_bits() != b.to_bits());
    match index {
        Some(i) => format!(
            "{} ({dtype}): first difference at element {i} of {}: ours {} ({:#010x}), gguf-py {} ({:#010x})",
            t.name,
            ours.len(),
            ours[i],
            ours[i].to_bits(),
            theirs[i],
            theirs[i].to_bits()
        ),
        None => format!(
            "{} ({dtype}): digest differs but values agree (ours {}, gguf-py {})",
            t.name,
            ours.len(),
            theirs.len()
        ),
    }
}

fn check_model(model: ReferenceModel) {
    let path = model.require();
    let digests = gguf_py_digests(&path);
    let file = std::fs::File::open(&path).unwrap();
    // SAFETY: the model file is read-only test data that nothing modifies while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    assert!(!digests.tensors.is_empty(), "{}: no tensors listed", model.file);

    let started = Instant::now();
    let mismatches: Vec<&TensorDigest> = digests
        .tensors
        .par_iter()
        .filter(|t| {
            let (dtype, bytes) = tensor_bytes(&map, t);
            sha256_of_dequantized(dtype, bytes) != t.sha256
        })
        .collect();
    let elapsed = started.elapsed().as_secs_f64();

    let mut by_dtype: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in &digests.tensors {
        let entry = by_dtype.entry(DType::from_id(t.ggml_type).unwrap().name().to_owned()).or_default();
        entry.0 += 1;
        entry.1 += t.n_elements;
    }
    let total: u64 = digests.tensors.iter().map(|t| t.n_elements).sum();
    println!(
        "{}: {} tensors, {total} elements, dequantized and hashed in {elapsed:.1}s; by dtype (tensors, elements): {by_dtype:?}",
        model.file,
        digests.tensors.len()
    );
    if !mismatches.is_empty() {
        let reports: Vec<String> = mismatches
            .iter()
            .take(3)
            .map(|t| {
                let (dtype, bytes) = tensor_bytes(&map, t);
                first_difference(&path, t, dtype, bytes)
            })
            .collect();
        panic!(
            "{}: {} of {} tensors differ from gguf-py:\n{}",
            model.file,
            mismatches.len(),
            digests.tensors.len(),
            reports.join("\n")
        );
    }
}

#[test]
fn qwen_0_5b_dequantizes_exactly_like_gguf_py() {
    check_model(QWEN_0_5B);
}

#[test]
fn qwen_1_5b_dequantizes_exactly_like_gguf_py() {
    check_model(QWEN_1_5B);
}
