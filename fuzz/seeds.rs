//! Writes the seed corpora into `fuzz/seeds/<target>/`: small valid files
//! from our own writers, plus the head (header and leading metadata) of the
//! real Qwen 0.5B GGUF. The fuzzer reads them as a second corpus directory and
//! writes its own finds to the (ignored) `fuzz/corpus/<target>/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (from the repo root).

use std::io::Read;
use std::path::{Path, PathBuf};

use apr_engine::container::{apr, gguf, safetensors, MemorySource, MetaArray, MetaValue, Metadata, TensorSpec};
use apr_engine::container::{Progress, TensorSource, WriteOptions};
use apr_engine::testing::models::QWEN_0_5B;
use apr_engine::DType;

type Writer = fn(&Path, &dyn TensorSource, WriteOptions, Progress) -> apr_engine::Result<()>;

/// How much of the real GGUF to keep: its header and the first part of its
/// metadata (the tokenizer vocabulary alone runs to megabytes).
const REAL_HEAD_BYTES: usize = 64 * 1024;

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let writers: [(&str, &str, Writer); 3] =
        [("gguf", "gguf", gguf::write), ("apr", "apr", apr::write), ("safetensors", "safetensors", safetensors::write)];
    for (target, ext, write) in writers {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (name, source) in sources(target) {
            // Written apart and copied: the SafeTensors writer adds Hugging Face
            // JSON companions beside its file, which are no seeds for the reader.
            let scratch = tempfile::tempdir().expect("temporary directory");
            let written = scratch.path().join(format!("model.{ext}"));
            write(&written, &source, WriteOptions::default(), &mut |_| {}).expect("writer accepts the seed");
            let path = dir.join(format!("seed-{name}.{ext}"));
            let len = std::fs::copy(&written, &path).expect("seed copied");
            check_seed(target, &path, source.specs.len());
            println!("{} ({len} bytes)", path.display());
        }
    }
    let head = real_gguf_head();
    let path = corpus.join("gguf").join("seed-qwen0.5b-head.gguf");
    std::fs::write(&path, head).expect("seed written");
    println!("{} ({REAL_HEAD_BYTES} bytes)", path.display());
}

/// The seeds for one target. SafeTensors holds only plain dtypes; the GGUF
/// and APR seeds add block-quantized ones.
fn sources(target: &str) -> Vec<(&'static str, MemorySource)> {
    let mut tiny = MemorySource::new(llama_metadata());
    push(&mut tiny, "token_embd.weight", DType::F16, &[6, 32], 1);
    push(&mut tiny, "blk.0.attn_norm.weight", DType::F32, &[32], 2);
    push(&mut tiny, "blk.0.attn_q.weight", DType::BF16, &[8, 32], 3);
    if target != "safetensors" {
        push(&mut tiny, "blk.0.attn_k.weight", DType::Q8_0, &[4, 32], 4);
        push(&mut tiny, "blk.0.ffn_down.weight", DType::Q4_K, &[1, 256], 5);
        push(&mut tiny, "output.weight", DType::Q6_K, &[1, 256], 6);
    }
    push(&mut tiny, "output_norm.weight", DType::F32, &[], 7);
    let mut empty = MemorySource::new(llama_metadata());
    if target == "gguf" {
        empty.metadata = every_type_metadata();
    }
    vec![("tiny", tiny), ("no-tensors", empty)]
}

fn push(source: &mut MemorySource, name: &str, dtype: DType, shape: &[u64], seed: u8) {
    let len = dtype.byte_size(shape).expect("valid shape");
    // Zero bytes would make f16 scales of quantized blocks zero; a pattern is more varied.
    let bytes = (0..len).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed)).collect();
    let spec = TensorSpec { name: name.into(), dtype, shape: shape.to_vec() };
    source.push(spec, bytes).expect("bytes match the shape");
}

fn strings(items: &[&str]) -> MetaValue {
    MetaValue::string_array(items.iter().map(|s| s.to_string()))
}

/// Enough of a llama model's metadata for the APR writer's model fields and tokenizer.
fn llama_metadata() -> Metadata {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("llama".into()));
    meta.insert("general.name", MetaValue::String("seed".into()));
    meta.insert("llama.block_count", MetaValue::U32(1));
    meta.insert("llama.embedding_length", MetaValue::U32(32));
    meta.insert("llama.attention.head_count", MetaValue::U32(4));
    meta.insert("llama.attention.head_count_kv", MetaValue::U32(2));
    meta.insert("llama.rope.freq_base", MetaValue::F32(10000.0));
    meta.insert("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
    meta.insert("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    meta.insert("tokenizer.ggml.tokens", strings(&["<s>", "</s>", "a", "b", "ab", "\u{120}c"]));
    meta.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(vec![3, 3, 1, 1, 1, 1])));
    meta.insert("tokenizer.ggml.merges", strings(&["a b"]));
    meta.insert("tokenizer.ggml.bos_token_id", MetaValue::U32(0));
    meta.insert("tokenizer.ggml.eos_token_id", MetaValue::U32(1));
    meta
}

/// One key of every GGUF value type, nested arrays included.
fn every_type_metadata() -> Metadata {
    use MetaValue as V;
    let mut m = llama_metadata();
    m.insert("general.alignment", V::U32(64));
    m.insert("t.u8", V::U8(255));
    m.insert("t.i8", V::I8(-128));
    m.insert("t.u16", V::U16(65535));
    m.insert("t.i16", V::I16(-32768));
    m.insert("t.i32", V::I32(i32::MIN));
    m.insert("t.bool", V::Bool(true));
    m.insert("t.u64", V::U64(u64::MAX));
    m.insert("t.i64", V::I64(i64::MIN));
    m.insert("t.f64", V::F64(std::f64::consts::PI));
    let nested = MetaArray::Array(vec![MetaArray::U8(vec![1]), MetaArray::String(vec!["x".into()])]);
    m.insert("a.nested", V::Array(nested));
    m
}

/// A seed is only useful if the reader accepts it whole.
fn check_seed(target: &str, path: &Path, tensors: usize) {
    let bytes = std::fs::read(path).expect("seed readable");
    let parsed = match target {
        "gguf" => gguf::parse(&bytes),
        "apr" => apr::parse(&bytes),
        _ => safetensors::parse(&bytes),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(parsed.tensors.len(), tensors, "{}", path.display());
    apr_fuzz::check_invariants(reader(target), &bytes, &parsed);
}

fn reader(target: &str) -> apr_fuzz::Reader {
    match target {
        "gguf" => apr_fuzz::Reader::Gguf,
        "apr" => apr_fuzz::Reader::Apr,
        _ => apr_fuzz::Reader::SafeTensors,
    }
}

fn real_gguf_head() -> Vec<u8> {
    let path: PathBuf = QWEN_0_5B.require();
    let mut head = vec![0u8; REAL_HEAD_BYTES];
    let mut file = std::fs::File::open(&path).expect("real model readable");
    file.read_exact(&mut head).expect("real model longer than the head");
    head
}
