//! The SafeTensors reader and writer and their Hugging Face companions:
//! malformed headers are errors naming field and offset, never panics; the
//! writer's files read back tensor for tensor; GGUF metadata survives
//! GGUF -> SafeTensors (+ config.json, tokenizer.json) -> metadata on the real
//! models; Llama Q/K rows are written in Hugging Face order; and the python
//! `safetensors` package and gguf-py agree with what was written.

use std::path::{Path, PathBuf};
use std::process::Command;

use apr_engine::container::{
    qk_order, safetensors, MemorySource, MetaArray, MetaValue, Metadata, ModelFile, QkRowOrder, TensorSpec,
    WriteOptions,
};
use apr_engine::error::{Error, ParseError};
use apr_engine::testing::models::{QWEN_0_5B, SMOLLM2};
use apr_engine::{DType, Format};
use half::{bf16, f16};
use proptest::prelude::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers

fn spec(name: &str, dtype: DType, shape: &[u64]) -> TensorSpec {
    TensorSpec { name: name.to_string(), dtype, shape: shape.to_vec() }
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn f16_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| f16::from_f32(v).to_le_bytes()).collect()
}

fn bf16_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(|v| bf16::from_f32(v).to_le_bytes()).collect()
}

/// Writes `source` to `dir/model.safetensors`, counting progress.
fn write_model(dir: &Path, source: &MemorySource) -> PathBuf {
    let path = dir.join("model.safetensors");
    let mut reported = 0u64;
    safetensors::write(&path, source, WriteOptions::default(), &mut |n| reported += n).unwrap();
    let expected: usize = source.data.iter().map(Vec::len).sum();
    assert_eq!(reported, expected as u64, "progress reports every tensor byte");
    path
}

/// A file from a header (as JSON text) and a data section, as the specification lays it out.
fn assemble(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn parse_error(bytes: &[u8]) -> ParseError {
    match safetensors::parse(bytes) {
        Ok(parsed) => panic!("parsed {} tensors from a malformed file", parsed.tensors.len()),
        Err(e) => e,
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts").join(name)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// Writer and reader on synthetic tensors

fn mixed_source() -> MemorySource {
    let mut source = MemorySource::new(Metadata::default());
    let ramp = |n: usize, scale: f32| (0..n).map(move |i| (i as f32 - n as f32 / 2.0) * scale);
    source.push(spec("token_embd.weight", DType::BF16, &[6, 4]), bf16_bytes(ramp(24, 0.25))).unwrap();
    source.push(spec("blk.0.attn_norm.weight", DType::F32, &[4]), f32_bytes(ramp(4, 1.5))).unwrap();
    source.push(spec("blk.0.attn_q.weight", DType::F16, &[4, 4]), f16_bytes(ramp(16, 0.125))).unwrap();
    source.push(spec("blk.0.attn_q.bias", DType::F32, &[4]), f32_bytes(ramp(4, -0.5))).unwrap();
    source.push(spec("output_norm.weight", DType::F32, &[4]), f32_bytes([1.0, 2.0, 3.0, 4.0])).unwrap();
    source.push(spec("custom.scale", DType::F16, &[3]), f16_bytes([0.5, -2.0, 65504.0])).unwrap();
    source.push(spec("blk.0.ffn_up.weight", DType::F32, &[0, 4]), Vec::new()).unwrap();
    source
}

#[test]
fn memory_source_round_trips_f32_f16_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let source = mixed_source();
    let path = write_model(dir.path(), &source);
    let model = ModelFile::open(&path).unwrap();
    assert_eq!(model.format(), Format::SafeTensors);
    assert_eq!(model.parsed.qk_row_order, QkRowOrder::HuggingFace);
    assert_eq!(model.tensors().len(), source.specs.len());
    for (spec, bytes) in source.specs.iter().zip(&source.data) {
        let view = model.tensor(&spec.name).unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!(view.info.stored_name, apr_engine::container::names::to_hf(&spec.name));
        assert_eq!((view.dtype(), view.shape()), (spec.dtype, spec.shape.as_slice()), "{}", spec.name);
        assert_eq!(view.bytes, bytes.as_slice(), "{}", spec.name);
    }
    assert_eq!(model.tensor("model.layers.0.self_attn.q_proj.weight").unwrap().name(), "blk.0.attn_q.weight");
    // The file's own metadata, and no companions: there was no metadata to describe.
    assert_eq!(model.metadata().get_str("safetensors.format"), Some("pt"));
    assert_eq!(model.metadata().len(), 1);
    assert!(!dir.path().join("config.json").exists());
}

#[test]
fn header_is_space_padded_and_tensors_are_laid_out_by_width_then_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), &mixed_source());
    let bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!((8 + header_len).is_multiple_of(8), "data section starts 8-aligned");
    let header = std::str::from_utf8(&bytes[8..8 + header_len]).unwrap();
    assert!(header.starts_with('{'));
    let trimmed = header.trim_end_matches(' ');
    assert!(trimmed.ends_with('}') && header.len() - trimmed.len() < 8, "padding is spaces only, fewer than 8");
    let header: Value = serde_json::from_str(header).unwrap();
    assert_eq!(header["__metadata__"], json!({"format": "pt"}));
    let mut placed: Vec<(u64, u64, String, String)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(name, t)| {
            let offsets = t["data_offsets"].as_array().unwrap();
            (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap(), t["dtype"].to_string(), name.clone())
        })
        .collect();
    placed.sort();
    let order: Vec<&str> = placed.iter().map(|p| p.3.as_str()).collect();
    assert_eq!(
        order,
        [
            // F32 (4 bytes wide) first, then F16/BF16 (2), each by name; the empty one takes no room.
            "model.layers.0.input_layernorm.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.layers.0.self_attn.q_proj.bias",
            "model.norm.weight",
            "custom.scale",
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ]
    );
    // No holes: each tensor starts where the previous ended, and the last ends the file.
    let mut end = 0;
    for (begin, stop, _, name) in &placed {
        assert_eq!(*begin, end, "{name}");
        end = *stop;
    }
    assert_eq!(8 + header_len as u64 + end, bytes.len() as u64);
}

#[test]
fn quantized_tensor_is_refused_naming_tensor_and_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = mixed_source();
    source.push(spec("blk.0.ffn_down.weight", DType::Q4_K, &[1, 256]), vec![0; 144]).unwrap();
    let path = dir.path().join("model.safetensors");
    let err = safetensors::write(&path, &source, WriteOptions::default(), &mut |_| {}).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Unsupported(_)), "{message}");
    assert!(message.contains("blk.0.ffn_down.weight") && message.contains("Q4_K"), "{message}");
    assert!(!path.exists(), "nothing is written");
}

#[test]
fn existing_files_are_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = mixed_source();
    source.metadata.insert("general.architecture", MetaValue::String("qwen2".into()));
    let path = dir.path().join("model.safetensors");
    let write = |force| safetensors::write(&path, &source, WriteOptions { force }, &mut |_| {});

    // A companion in the way stops the whole write before the model is written.
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    assert!(matches!(write(false), Err(Error::WouldOverwrite(p)) if p.ends_with("config.json")));
    assert!(!path.exists());
    write(true).unwrap();
    assert_eq!(read_json(&dir.path().join("config.json"))["model_type"], "qwen2");

    let before = std::fs::read(&path).unwrap();
    assert!(matches!(write(false), Err(Error::WouldOverwrite(p)) if p.ends_with("model.safetensors")));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    write(true).unwrap();
}

#[cfg(unix)]
#[test]
fn output_gets_the_mode_of_any_new_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut source = mixed_source();
    source.metadata.insert("general.architecture", MetaValue::String("qwen2".into()));
    let path = write_model(dir.path(), &source);
    let plain = dir.path().join("plain");
    std::fs::File::create(&plain).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_ne!(mode(&plain), 0o600, "umask is unusually strict; the test cannot tell the modes apart");
    assert_eq!(mode(&path), mode(&plain));
    assert_eq!(mode(&dir.path().join("config.json")), mode(&plain));
}

#[test]
fn llama_qk_rows_are_written_in_hf_order() {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("llama".into()));
    meta.insert("llama.attention.head_count", MetaValue::U32(2));
    meta.insert("llama.attention.head_count_kv", MetaValue::U32(1));
    // GGUF rows interleave each head's halves: HF [a0 a1 b0 b1] is GGUF [a0 b0 a1 b1].
    let gguf_q = [0.0, 2.0, 1.0, 3.0, 10.0, 12.0, 11.0, 13.0];
    let gguf_k = [20.0, 22.0, 21.0, 23.0];
    let build = |order| {
        let mut source = MemorySource::new(meta.clone());
        source.qk_row_order = Some(order);
        source.push(spec("blk.0.attn_q.weight", DType::F32, &[8, 1]), f32_bytes(gguf_q)).unwrap();
        source.push(spec("blk.0.attn_k.weight", DType::F32, &[4, 1]), f32_bytes(gguf_k)).unwrap();
        source.push(spec("blk.0.attn_v.weight", DType::F32, &[4, 1]), f32_bytes(gguf_k)).unwrap();
        source
    };
    let dir = tempfile::tempdir().unwrap();
    let model = ModelFile::open(write_model(dir.path(), &build(QkRowOrder::Gguf))).unwrap();
    let bytes = |name| model.tensor(name).unwrap().bytes.to_vec();
    assert_eq!(bytes("blk.0.attn_q.weight"), f32_bytes([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]));
    assert_eq!(bytes("blk.0.attn_k.weight"), f32_bytes([20.0, 21.0, 22.0, 23.0]));
    assert_eq!(bytes("blk.0.attn_v.weight"), f32_bytes(gguf_k), "V is never permuted");

    // A source already in HF order is written as it is.
    let dir = tempfile::tempdir().unwrap();
    let model = ModelFile::open(write_model(dir.path(), &build(QkRowOrder::HuggingFace))).unwrap();
    assert_eq!(model.tensor("blk.0.attn_q.weight").unwrap().bytes, f32_bytes(gguf_q).as_slice());
}

// ---------------------------------------------------------------------------
// Malformed headers

const GOOD_HEADER: &str =
    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]}}"#;

fn good_file() -> Vec<u8> {
    assemble(GOOD_HEADER, &[0u8; 12])
}

#[test]
fn the_hand_assembled_file_parses() {
    let parsed = safetensors::parse(&good_file()).unwrap();
    let names: Vec<&str> = parsed.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let data_start = 8 + GOOD_HEADER.len() as u64;
    assert_eq!(parsed.tensors[1].offset, data_start + 8);
}

/// Offset of `needle`'s first occurrence in the assembled file (header starts at 8).
fn at(header: &str, needle: &str) -> u64 {
    8 + header.find(needle).unwrap_or_else(|| panic!("{needle} not in {header}")) as u64
}

#[test]
fn truncated_and_oversized_headers_are_errors() {
    for len in [0, 3, 7] {
        let e = parse_error(&good_file()[..len]);
        assert_eq!((e.field.as_str(), e.offset), ("header_length", 0), "{e}");
    }
    let file = good_file();
    let e = parse_error(&file[..20]);
    assert_eq!((e.field.as_str(), e.offset), ("header_length", 0), "{e}");
    assert!(e.reason.contains("does not fit"), "{e}");
    for huge in [u64::MAX, 1 << 40, file.len() as u64] {
        let mut bytes = file.clone();
        bytes[..8].copy_from_slice(&huge.to_le_bytes());
        let e = parse_error(&bytes);
        assert_eq!(e.field, "header_length", "{e}");
    }
}

#[test]
fn bad_json_is_an_error_at_its_offset() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},,}"#;
    let e = parse_error(&assemble(header, &[0; 8]));
    assert_eq!(e.field, "header");
    assert_eq!(e.offset, at(header, ",,") + 1, "{e}");

    let e = parse_error(&assemble("[1, 2]  ", &[]));
    assert_eq!((e.field.as_str(), e.offset), ("header", 8), "{e}");

    let mut bytes = assemble(r#"{"a":{}}"#, &[]);
    bytes[10] = 0xff;
    let e = parse_error(&bytes);
    assert_eq!((e.field.as_str(), e.offset), ("header", 10), "{e}");
    assert!(e.reason.contains("UTF-8"), "{e}");

    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let e = parse_error(&assemble(header, &[0; 8]));
    assert!(e.reason.contains("appears twice"), "{e}");
}

#[test]
fn bad_tensor_entries_name_the_tensor_and_field() {
    // (header, field, what the reason says)
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}"#,
            r#"header.tensors["w"].data_offsets"#,
            "needs 8",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            r#"header.tensors["w"].data_offsets"#,
            "after end",
        ),
        (
            r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            r#"header.tensors["w"].data_offsets"#,
            "past the 12-byte",
        ),
        (r#"{"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, r#"header.tensors["w"].dtype"#, "U8"),
        (
            r#"{"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}"#,
            r#"header.tensors["w"].dtype"#,
            "no engine dtype",
        ),
        (r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,2]}}"#, r#"header.tensors["w"].dtype"#, "unknown dtype"),
        (
            r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
            r#"header.tensors["w"].shape"#,
            "overflows",
        ),
        (r#"{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, r#"header.tensors["w"]"#, "invalid"),
        (r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}"#, r#"header.tensors["w"]"#, "invalid"),
        (r#"{"w":{"dtype":"F32","shape":[2]}}"#, r#"header.tensors["w"]"#, "data_offsets"),
        (r#"{"__metadata__":{"format":1}}"#, "header.__metadata__", "invalid"),
    ];
    for (header, field, reason) in cases {
        let e = parse_error(&assemble(header, &[0; 12]));
        assert_eq!(e.field, *field, "{header}: {e}");
        assert!(e.reason.contains(reason), "{header}: {e}");
        let entry = if field.contains("__metadata__") { "{\"format\"" } else { "{\"dtype\"" };
        assert!(e.offset >= at(header, entry) && e.offset < 8 + header.len() as u64, "{header}: {e}");
    }
}

#[test]
fn overlapping_and_aliased_tensors_are_errors() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let e = parse_error(&assemble(header, &[0; 12]));
    assert_eq!(e.field, r#"header.tensors["b"].data_offsets"#, "{e}");
    assert_eq!(e.offset, 8 + header.len() as u64 + 4, "offset of the overlapping data");
    assert!(e.reason.contains("\"a\""), "{e}");

    // Two stored names for one canonical tensor.
    let header = r#"{"model.norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"output_norm.weight":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let e = parse_error(&assemble(header, &[0; 8]));
    assert!(e.reason.contains("output_norm.weight"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random edits to a valid file never panic; whatever parses stays in bounds.
    #[test]
    fn mutated_files_never_panic(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
    ) {
        let mut bytes = good_file();
        let header_end = 8 + GOOD_HEADER.len();
        for (index, byte) in edits {
            bytes[index.index(header_end)] = byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        if let Ok(parsed) = safetensors::parse(&bytes) {
            for t in &parsed.tensors {
                prop_assert!(t.offset + t.size <= bytes.len() as u64);
                prop_assert_eq!(Some(t.size), t.dtype.byte_size(&t.shape).ok());
            }
        }
    }

    /// The writer's own files, cut anywhere, are errors or parse in bounds.
    #[test]
    fn truncated_writer_output_never_panics(cut in 0usize..2000) {
        static FILE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let file = FILE.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::read(write_model(dir.path(), &mixed_source())).unwrap()
        });
        let bytes = &file[..cut.min(file.len())];
        match safetensors::parse(bytes) {
            Ok(parsed) => prop_assert_eq!(bytes.len(), file.len(), "only the whole file parses ({} tensors)", parsed.tensors.len()),
            Err(e) => prop_assert!(e.offset <= file.len() as u64),
        }
    }
}

// ---------------------------------------------------------------------------
// Hugging Face companions: import of transformers-style files

#[test]
fn transformers_style_companions_become_gguf_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = MemorySource::new(Metadata::default());
    source.push(spec("model.norm.weight", DType::F32, &[4]), f32_bytes([1.0; 4])).unwrap();
    write_model(dir.path(), &source);
    // As Qwen2's files on the Hub have it: added tokens outside the vocab, merges as pairs,
    // the BOS id only in config.json, several EOS ids, padding to vocab_size.
    let config = json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 4,
        "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32,
        "vocab_size": 8, "bos_token_id": 4, "eos_token_id": [5, 4],
    });
    let tokenizer = json!({
        "added_tokens": [
            {"id": 4, "content": "<|endoftext|>", "special": true},
            {"id": 5, "content": "<|im_end|>", "special": true},
            {"id": 6, "content": "<tool_call>", "special": false},
        ],
        "pre_tokenizer": {"type": "ByteLevel", "use_regex": true},
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3}, "merges": [["a", "b"]]},
    });
    let tokenizer_config = json!({
        "bos_token": null, "eos_token": "<|im_end|>", "pad_token": {"content": "<|endoftext|>"},
        "add_bos_token": false, "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}],
    });
    for (name, value) in
        [("config.json", config), ("tokenizer.json", tokenizer), ("tokenizer_config.json", tokenizer_config)]
    {
        std::fs::write(dir.path().join(name), value.to_string()).unwrap();
    }
    let model = ModelFile::open(dir.path()).unwrap();
    let meta = model.metadata();
    let strings = |key| meta.get(key).unwrap().as_array().unwrap().as_strings().unwrap().to_vec();
    assert_eq!(meta.get_str("general.architecture"), Some("qwen2"));
    assert_eq!(meta.get("qwen2.block_count"), Some(&MetaValue::U32(1)));
    assert_eq!(meta.get("qwen2.attention.head_count_kv"), Some(&MetaValue::U32(2)), "defaults to head_count");
    assert_eq!(meta.get("qwen2.attention.layer_norm_rms_epsilon"), Some(&MetaValue::F32(1e-6)));
    assert_eq!(meta.get("qwen2.rope.freq_base"), Some(&MetaValue::F32(1e6)));
    assert_eq!(meta.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(meta.get_str("tokenizer.ggml.pre"), Some("qwen2"));
    assert_eq!(
        strings("tokenizer.ggml.tokens"),
        ["a", "b", "ab", "Ġ", "<|endoftext|>", "<|im_end|>", "<tool_call>", "[PAD7]"]
    );
    let types: Vec<u64> = meta
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_array()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(types, [1, 1, 1, 1, 3, 3, 4, 5]);
    assert_eq!(strings("tokenizer.ggml.merges"), ["a b"]);
    assert_eq!(meta.get("tokenizer.ggml.bos_token_id"), Some(&MetaValue::U32(4)));
    assert_eq!(meta.get("tokenizer.ggml.eos_token_id"), Some(&MetaValue::U32(5)));
    assert_eq!(meta.get("tokenizer.ggml.padding_token_id"), Some(&MetaValue::U32(4)));
    assert_eq!(meta.get("tokenizer.ggml.add_bos_token"), Some(&MetaValue::Bool(false)));
    assert_eq!(meta.get_str("tokenizer.chat_template"), Some("D"));
    assert_eq!(meta.get_str("safetensors.format"), Some("pt"));
}

#[test]
fn bad_companions_are_errors_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = MemorySource::new(Metadata::default());
    source.push(spec("model.norm.weight", DType::F32, &[4]), f32_bytes([1.0; 4])).unwrap();
    write_model(dir.path(), &source);
    let config = dir.path().join("config.json");
    let text = "{\"model_type\": \"llama\",\n \"num_hidden_layers\": \"thirty\"}";
    std::fs::write(&config, text).unwrap();
    match ModelFile::open(dir.path()) {
        Err(Error::Format { path, source }) => {
            assert_eq!(path, config);
            assert_eq!(source.field, "config.json: num_hidden_layers");
            assert_eq!(source.offset, text.find("\"num_hidden_layers\"").unwrap() as u64);
        }
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
    let text = "{\"model_type\": \"llama\",\n  ]";
    std::fs::write(&config, text).unwrap();
    match ModelFile::open(dir.path()) {
        Err(Error::Format { path, source }) => {
            assert_eq!(path, config);
            assert_eq!(source.offset, text.find(']').unwrap() as u64, "{source}");
        }
        other => panic!("expected a format error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn metadata_without_hf_fields_round_trips_typed() {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("llama".into()));
    // A key of an unusual type: config.json has the count, gguf_metadata keeps the u64.
    meta.insert("llama.block_count", MetaValue::U64(2));
    meta.insert("llama.attention.head_count", MetaValue::U32(2));
    meta.insert("llama.rope.scaling.factor", MetaValue::F32(0.1));
    meta.insert("llama.nested", MetaValue::Array(MetaArray::Array(vec![MetaArray::I8(vec![-1])])));
    // A SentencePiece vocabulary: tokenizer.json expresses byte-level BPE only, so it travels typed.
    meta.insert("tokenizer.ggml.model", MetaValue::String("llama".into()));
    meta.insert("tokenizer.ggml.tokens", MetaValue::string_array(["<unk>", "<s>", "▁a"].map(String::from)));
    meta.insert("tokenizer.ggml.scores", MetaValue::Array(MetaArray::F32(vec![0.0, 0.0, -1.5])));
    meta.insert("tokenizer.ggml.bos_token_id", MetaValue::U32(1));
    let mut source = MemorySource::new(meta.clone());
    source.push(spec("output_norm.weight", DType::F32, &[2]), f32_bytes([1.0, 2.0])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &source);
    assert!(!dir.path().join("tokenizer.json").exists(), "no byte-level BPE vocabulary to write");
    let config = read_json(&dir.path().join("config.json"));
    assert_eq!(config["num_hidden_layers"], 2);
    assert_eq!(config["gguf_metadata"]["llama.block_count"], json!({"type": "u64", "value": 2}));
    let back = ModelFile::open(dir.path()).unwrap();
    // head_count_kv is filled in as transformers defaults it.
    assert_metadata_round_trips(&meta, back.metadata(), &["safetensors.format", "llama.attention.head_count_kv"]);
}

// ---------------------------------------------------------------------------
// Real models

/// The real file's F32 tensors, with two of them stored as F16 and BF16 instead.
fn float_tensors_of(model: &ModelFile) -> MemorySource {
    let mut source = MemorySource::new(model.metadata().clone());
    source.qk_row_order = Some(model.parsed.qk_row_order);
    for view in model.views().filter(|v| v.dtype() == DType::F32) {
        let values = view.bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()));
        let (dtype, bytes) = match view.name() {
            "blk.0.attn_norm.weight" => (DType::F16, f16_bytes(values)),
            "blk.1.attn_norm.weight" => (DType::BF16, bf16_bytes(values)),
            _ => (DType::F32, view.bytes.to_vec()),
        };
        source.push(spec(view.name(), dtype, view.shape()), bytes).unwrap();
    }
    source
}

/// Every source key comes back with its type and value; extra keys must be listed.
fn assert_metadata_round_trips(source: &Metadata, back: &Metadata, allowed_extra: &[&str]) {
    let mut problems = Vec::new();
    for (key, value) in &source.entries {
        match back.get(key) {
            Some(v) if v == value => {}
            Some(v) => problems.push(format!("{key}: {} became {}", describe(value), describe(v))),
            None => problems.push(format!("{key}: missing")),
        }
    }
    for key in back.entries.keys().filter(|k| source.get(k).is_none()) {
        if !allowed_extra.contains(&key.as_str()) {
            problems.push(format!("{key}: not in the source"));
        }
    }
    assert!(problems.is_empty(), "metadata differs:\n{}", problems.join("\n"));
}

fn describe(value: &MetaValue) -> String {
    match value {
        MetaValue::Array(array) => format!("array of {} {:?}", array.len(), array.elem_type()),
        other => format!("{other:?}"),
    }
}

/// Writes the float tensors of a real model, reads them back, checks tensors and
/// metadata, and returns the output directory and config.json.
fn round_trip_real(model: &ModelFile, source: &MemorySource) -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), source);
    let back = ModelFile::open(dir.path()).unwrap();
    assert_eq!(back.tensors().len(), source.specs.len());
    for (spec, bytes) in source.specs.iter().zip(&source.data) {
        let view = back.tensor(&spec.name).unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!((view.dtype(), view.shape()), (spec.dtype, spec.shape.as_slice()), "{}", spec.name);
        if !qk_order::is_permuted_tensor(model.metadata().architecture().unwrap(), &spec.name) {
            assert_eq!(view.bytes, bytes.as_slice(), "{}", spec.name);
        }
    }
    // Only the file's own `safetensors.format` is new.
    assert_metadata_round_trips(model.metadata(), back.metadata(), &["safetensors.format"]);
    let config = read_json(&dir.path().join("config.json"));
    // The tokenizer and the hyper-parameters travel in the Hugging Face fields, not the typed fallback.
    let kept = config["gguf_metadata"].as_object().unwrap();
    for key in model.metadata().entries.keys() {
        let carried_by_hf = key.starts_with("tokenizer.ggml.") && key != "tokenizer.ggml.add_space_prefix"
            || key == "tokenizer.chat_template"
            || key == "general.architecture";
        assert!(!(carried_by_hf && kept.contains_key(key)), "{key} needed the gguf_metadata fallback");
    }
    (dir, config)
}

fn run_readback(model: &Path, gguf: &Path, qk_rows: &[&str]) -> String {
    let mut command = Command::new("python3");
    command.arg(script("safetensors_readback.py")).arg("--model").arg(model).arg("--gguf").arg(gguf);
    for pair in qk_rows {
        command.arg("--qk-rows").arg(pair);
    }
    let output = command.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "readback failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn kept_keys(config: &Value) -> Vec<String> {
    let mut keys: Vec<String> = config["gguf_metadata"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

#[test]
fn qwen_0_5b_float_tensors_and_metadata_round_trip() {
    let path = QWEN_0_5B.require();
    let model = ModelFile::open(&path).unwrap();
    let source = float_tensors_of(&model);
    assert_eq!(source.specs.len(), 24 * 5 + 1, "norms and Q/K/V biases of 24 layers, and the output norm");
    let (dir, config) = round_trip_real(&model, &source);
    assert_eq!(
        kept_keys(&config),
        [
            "general.basename",
            "general.file_type",
            "general.finetune",
            "general.name",
            "general.quantization_version",
            "general.size_label",
            "general.type",
        ],
        "only keys without a Hugging Face field are kept typed"
    );
    let report = run_readback(&dir.path().join("model.safetensors"), &path, &[]);
    assert!(report.contains("ok: 121 tensors, vocab 151665, merges 151387, added tokens 22"), "{report}");
}

#[test]
fn smollm2_float_tensors_metadata_and_qk_rows_round_trip() {
    let path = SMOLLM2.require();
    let model = ModelFile::open(&path).unwrap();
    assert_eq!(model.metadata().architecture(), Some("llama"));
    let mut source = float_tensors_of(&model);
    // Q4_1 rows of Q and K, carried as F16 rows of the same bytes: the writer must
    // put the rows (whole quantized rows) into Hugging Face order.
    let mut originals = Vec::new();
    for name in ["blk.0.attn_q.weight", "blk.0.attn_k.weight"] {
        let view = model.tensor(name).unwrap();
        assert_eq!(view.dtype(), DType::Q4_1);
        let rows = view.shape()[0];
        let row_bytes = view.bytes.len() as u64 / rows;
        source.push(spec(name, DType::F16, &[rows, row_bytes / 2]), view.bytes.to_vec()).unwrap();
        originals.push((name, view.bytes.to_vec(), row_bytes as usize));
    }
    assert_eq!(source.qk_row_order, Some(QkRowOrder::Gguf));
    let (dir, config) = round_trip_real(&model, &source);
    let back = ModelFile::open(dir.path()).unwrap();
    for (name, original, row_bytes) in &originals {
        let written = back.tensor(name).unwrap().bytes;
        assert_ne!(written, original.as_slice(), "{name}: rows were reordered");
        let heads = qk_order::heads_of(model.metadata(), name);
        let regained = qk_order::reorder_rows(written, *row_bytes, heads, QkRowOrder::HuggingFace, QkRowOrder::Gguf);
        assert_eq!(&regained, original, "{name}: HF order converted back gives the GGUF bytes");
    }
    assert_eq!(
        kept_keys(&config),
        [
            "general.basename",
            "general.file_type",
            "general.finetune",
            "general.languages",
            "general.license",
            "general.name",
            "general.organization",
            "general.quantization_version",
            "general.size_label",
            "general.type",
            "llama.rope.dimension_count",
            "llama.vocab_size",
            "tokenizer.ggml.add_space_prefix",
        ]
    );
    let report = run_readback(
        &dir.path().join("model.safetensors"),
        &path,
        &[
            "model.layers.0.self_attn.q_proj.weight=blk.0.attn_q.weight",
            "model.layers.0.self_attn.k_proj.weight=blk.0.attn_k.weight",
        ],
    );
    assert!(report.contains("ok: 63 tensors, vocab 49152, merges 48900, added tokens 17"), "{report}");
}

#[test]
fn a_gap_between_tensors_is_refused() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
    let bytes = assemble(header, &[0; 20]);
    let e = parse_error(&bytes);
    assert_eq!(e.field, r#"header.tensors["b"].data_offsets"#);
    assert_eq!(e.offset, 8 + header.len() as u64 + 12);
    assert!(e.reason.contains("4 bytes unused") && e.reason.contains("\"a\""), "{e}");
}

#[test]
fn trailing_bytes_after_the_last_tensor_are_refused() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}"#;
    let exact = assemble(header, &[0; 8]);
    assert_eq!(safetensors::parse(&exact).unwrap().tensors.len(), 2);
    let bytes = assemble(header, &[0; 11]);
    let e = parse_error(&bytes);
    assert_eq!((e.field.as_str(), e.offset), ("data section", 8 + header.len() as u64 + 8));
    assert!(e.reason.contains("3 bytes after the last tensor \"b\""), "{e}");
}

#[test]
fn a_sharded_checkpoint_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"] {
        std::fs::write(dir.path().join(shard), assemble(header, &[0; 8])).unwrap();
    }
    let index = json!({"metadata": {"total_size": 16}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}});
    let index_path = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index_path, index.to_string()).unwrap();
    for path in [dir.path(), index_path.as_path()] {
        let error = ModelFile::open(path).err().expect("a sharded checkpoint opened");
        assert!(matches!(error, Error::Unsupported(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("sharded checkpoint (2 shards)") && message.contains("model.safetensors"),
            "{message}"
        );
    }
}
