//! APR v2 container: the byte layout against an independent assembler, both
//! checksums, hostile input (truncation, absurd counts, unsorted index,
//! unknown dtypes, random mutation), round trips of every dtype, Q/K row
//! order, determinism, and real models read by gguf-py.

use std::borrow::Cow;
use std::path::Path;

use apr_engine::container::{
    apr, MemorySource, MetaArray, MetaType, MetaValue, Metadata, ModelFile, QkRowOrder, TensorSource, TensorSpec,
    WriteOptions,
};
use apr_engine::error::{ParseError, Result};
use apr_engine::DType;
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

/// Deterministic pseudo-random bytes, so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    apr_engine::testing::pseudo_random_bytes(seed, len)
}

fn strings(items: &[&str]) -> MetaValue {
    MetaValue::string_array(items.iter().map(|s| s.to_string()))
}

/// A small llama: hidden 32, 4 query heads and 2 KV heads of 8, a tokenizer.
fn llama_metadata() -> Metadata {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("llama".into()));
    meta.insert("general.name", MetaValue::String("tiny".into()));
    meta.insert("llama.block_count", MetaValue::U32(1));
    meta.insert("llama.embedding_length", MetaValue::U32(32));
    meta.insert("llama.attention.head_count", MetaValue::U32(4));
    meta.insert("llama.attention.head_count_kv", MetaValue::U32(2));
    meta.insert("llama.rope.freq_base", MetaValue::F32(10000.0));
    meta.insert("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5));
    meta.insert("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
    meta.insert("tokenizer.ggml.pre", MetaValue::String("smollm".into()));
    meta.insert("tokenizer.ggml.tokens", strings(&["<s>", "</s>", "a", "b", "ab", "\u{120}c"]));
    meta.insert("tokenizer.ggml.token_type", MetaValue::Array(MetaArray::I32(vec![3, 3, 1, 1, 1, 1])));
    meta.insert("tokenizer.ggml.merges", strings(&["a b"]));
    meta.insert("tokenizer.ggml.bos_token_id", MetaValue::U32(0));
    meta.insert("tokenizer.ggml.eos_token_id", MetaValue::U32(1));
    meta.insert(
        "tokenizer.chat_template",
        MetaValue::String("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
    );
    meta
}

fn push(source: &mut MemorySource, name: &str, dtype: DType, shape: &[u64], seed: u64) {
    let len = dtype.byte_size(shape).unwrap() as usize;
    let spec = TensorSpec { name: name.into(), dtype, shape: shape.to_vec() };
    source.push(spec, noise(len, seed)).unwrap();
}

/// A few KB: small enough to truncate at every offset.
fn small_source() -> MemorySource {
    let mut source = MemorySource::new(llama_metadata());
    push(&mut source, "token_embd.weight", DType::F16, &[6, 32], 1);
    push(&mut source, "blk.0.attn_q.weight", DType::F32, &[32, 32], 2);
    push(&mut source, "blk.0.attn_k.weight", DType::Q8_0, &[16, 32], 3);
    push(&mut source, "blk.0.attn_norm.weight", DType::F32, &[32], 4);
    push(&mut source, "output_norm.weight", DType::F32, &[32], 5);
    source
}

fn write_bytes(source: &dyn TensorSource) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.apr");
    apr::write(&path, source, WriteOptions::default(), &mut |_| {}).unwrap();
    std::fs::read(&path).unwrap()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Recomputes both checksums, so that a mutation reaches the structural checks.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= 64 {
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..40]);
        h.update(&bytes[44..64]);
        bytes[40..44].copy_from_slice(&h.finalize().to_le_bytes());
    }
    if bytes.len() >= 68 {
        let body = bytes.len() - 4;
        let crc = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Where one index entry's fields sit, found by walking the index independently.
#[derive(Debug)]
struct EntryAt {
    name: String,
    name_at: usize,
    dtype_at: usize,
    rank_at: usize,
    offset_at: usize,
}

fn index_entries(bytes: &[u8]) -> Vec<EntryAt> {
    let count = u32_at(bytes, 8) as usize;
    let mut at = u64_at(bytes, 24) as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        let name_len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        let name = String::from_utf8(bytes[at + 2..at + 2 + name_len].to_vec()).unwrap();
        let dtype_at = at + 2 + name_len;
        let rank = bytes[dtype_at + 1] as usize;
        let offset_at = dtype_at + 2 + 8 * rank;
        out.push(EntryAt { name, name_at: at + 2, dtype_at, rank_at: dtype_at + 1, offset_at });
        at = offset_at + 16;
    }
    out
}

fn parse_err(bytes: &[u8]) -> ParseError {
    match apr::parse(bytes) {
        Ok(_) => panic!("parse accepted a bad file"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------- layout

/// Builds a file from the format description alone, as a second opinion on the writer.
fn assemble(flags: u16, json: &[u8], tensors: &[(&str, u8, &[u64], &[u8])]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(64) {
            out.push(0);
        }
    }
    let mut index = Vec::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        index.extend_from_slice(&(name.len() as u16).to_le_bytes());
        index.extend_from_slice(name.as_bytes());
        index.push(*dtype);
        index.push(shape.len() as u8);
        shape.iter().for_each(|d| index.extend_from_slice(&d.to_le_bytes()));
        index.extend_from_slice(&(data.len() as u64).to_le_bytes());
        index.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        data.extend_from_slice(bytes);
        pad(&mut data);
    }
    let mut out = vec![0u8; 64];
    out.extend_from_slice(json);
    pad(&mut out);
    let index_offset = out.len() as u64;
    out.extend_from_slice(&index);
    pad(&mut out);
    let data_offset = out.len() as u64;
    out.extend_from_slice(&data);
    out[0..4].copy_from_slice(b"APR\0");
    out[4] = 2;
    out[5] = 0;
    out[6..8].copy_from_slice(&flags.to_le_bytes());
    out[8..12].copy_from_slice(&(tensors.len() as u32).to_le_bytes());
    out[12..20].copy_from_slice(&64u64.to_le_bytes());
    out[20..24].copy_from_slice(&(json.len() as u32).to_le_bytes());
    out[24..32].copy_from_slice(&index_offset.to_le_bytes());
    out[32..40].copy_from_slice(&data_offset.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    reseal(&mut out);
    out
}

#[test]
fn writer_output_matches_the_format_description_byte_for_byte() {
    let mut source = MemorySource::new(llama_metadata());
    // HF order already, so the bytes are stored as given.
    source.qk_row_order = Some(QkRowOrder::HuggingFace);
    push(&mut source, "output_norm.weight", DType::F32, &[3], 7);
    push(&mut source, "blk.0.attn_q.weight", DType::Q4_K, &[8, 256], 8);
    let file = write_bytes(&source);
    let json = &file[64..64 + u32_at(&file, 20) as usize];
    let flags = 0x0400 | 0x0200 | 0x0020; // LAYOUT_ROW_MAJOR | HAS_VOCAB | QUANTIZED
    let expected = assemble(
        flags,
        json,
        &[
            // Sorted by stored (Hugging Face) name.
            ("model.layers.0.self_attn.q_proj.weight", 12, &[8, 256], &source.data[1]),
            ("model.norm.weight", 0, &[3], &source.data[0]),
        ],
    );
    assert_eq!(file.len(), expected.len());
    assert!(file == expected, "writer and the independent assembler disagree");
    let parsed = apr::parse(&file).unwrap();
    let norm = parsed.tensors.iter().find(|t| t.name == "output_norm.weight").unwrap();
    assert_eq!((norm.stored_name.as_str(), norm.offset % 64), ("model.norm.weight", 0));
}

#[test]
fn header_fields_sit_where_the_format_says() {
    let file = write_bytes(&small_source());
    assert_eq!(&file[0..4], b"APR\0");
    assert_eq!((file[4], file[5]), (2, 0));
    assert_eq!(u16::from_le_bytes([file[6], file[7]]), 0x0400 | 0x0200 | 0x0020);
    assert_eq!(u32_at(&file, 8), 5);
    assert_eq!(u64_at(&file, 12), 64);
    let (index_offset, data_offset) = (u64_at(&file, 24), u64_at(&file, 32));
    assert_eq!(index_offset, (64 + u64::from(u32_at(&file, 20))).div_ceil(64) * 64);
    assert_eq!((index_offset % 64, data_offset % 64), (0, 0));
    assert!(file[44..64].iter().all(|&b| b == 0), "reserved bytes are zero");
    let names: Vec<String> = index_entries(&file).into_iter().map(|e| e.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "index sorted by name");
    assert!(names.contains(&"model.embed_tokens.weight".to_string()), "{names:?}");
    let json: serde_json::Value = serde_json::from_slice(&file[64..64 + u32_at(&file, 20) as usize]).unwrap();
    for key in ["architecture", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size"] {
        assert!(json.get(key).is_some(), "aprender field {key} present");
    }
    assert_eq!(json["tokenizer.vocabulary"].as_array().unwrap().len(), 6);
    assert_eq!(json["tokenizer.merges"], serde_json::json!(["a b"]));
}

// ---------------------------------------------------------------- checksums

#[test]
fn a_flipped_header_byte_is_a_header_checksum_error() {
    let file = write_bytes(&small_source());
    for at in 4..64 {
        let mut bad = file.clone();
        bad[at] ^= 0x01;
        let err = parse_err(&bad);
        assert_eq!(err.field, "header.checksum", "byte {at}: {err}");
        assert_eq!(err.offset, 40);
        let stored = u32_at(&bad, 40);
        assert!(err.reason.contains("header checksum mismatch"), "{err}");
        assert!(err.reason.contains(&format!("expected 0x{stored:08x}")), "{err}");
        assert!(err.reason.contains("found 0x"), "{err}");
    }
}

#[test]
fn a_flipped_byte_after_the_header_is_a_footer_checksum_error() {
    let file = write_bytes(&small_source());
    let index_at = u64_at(&file, 24) as usize;
    let data_at = u64_at(&file, 32) as usize;
    let footer_at = file.len() - 4;
    for (region, at) in [("metadata", 70), ("index", index_at + 3), ("data", data_at + 5), ("footer", footer_at + 1)] {
        let mut bad = file.clone();
        bad[at] ^= 0x80;
        let err = parse_err(&bad);
        assert_eq!(err.field, "footer.checksum", "{region}: {err}");
        assert_eq!(err.offset, footer_at as u64);
        let stored = u32_at(&bad, footer_at);
        let computed = crc32fast::hash(&bad[..footer_at]);
        assert!(err.reason.contains("footer checksum mismatch"), "{err}");
        assert!(err.reason.contains(&format!("expected 0x{stored:08x}")), "{region}: {err}");
        assert!(err.reason.contains(&format!("found 0x{computed:08x}")), "{region}: {err}");
    }
}

// ---------------------------------------------------------------- hostile input

#[test]
fn truncation_at_every_offset_is_an_error() {
    let file = write_bytes(&small_source());
    assert!(apr::parse(&file).is_ok());
    for len in 0..file.len() {
        assert!(apr::parse(&file[..len]).is_err(), "truncated to {len} bytes");
        // With both checksums recomputed the truncation must still be caught by the layout checks.
        let mut resealed = file[..len].to_vec();
        reseal(&mut resealed);
        assert!(apr::parse(&resealed).is_err(), "truncated to {len} bytes and resealed");
    }
}

/// Patches bytes, reseals, and returns the error.
fn patched(file: &[u8], at: usize, bytes: &[u8]) -> ParseError {
    let mut bad = file.to_vec();
    bad[at..at + bytes.len()].copy_from_slice(bytes);
    reseal(&mut bad);
    parse_err(&bad)
}

#[test]
fn absurd_counts_and_offsets_are_errors_naming_the_field() {
    let file = write_bytes(&small_source());
    let entry = &index_entries(&file)[0];
    let cases: Vec<(usize, Vec<u8>, &str)> = vec![
        (8, u32::MAX.to_le_bytes().to_vec(), "header.tensor_count"),
        (20, u32::MAX.to_le_bytes().to_vec(), "header.metadata_length"),
        (12, u64::MAX.to_le_bytes().to_vec(), "header.metadata_offset"),
        (24, u64::MAX.to_le_bytes().to_vec(), "header.index_offset"),
        (32, u64::MAX.to_le_bytes().to_vec(), "header.data_offset"),
        (32, (u64_at(&file, 32) + 64).to_le_bytes().to_vec(), "header.data_offset"),
        (entry.rank_at, vec![255], "rank"),
        (entry.rank_at + 1, u64::MAX.to_le_bytes().to_vec(), "shape"),
        (entry.offset_at, u64::MAX.to_le_bytes().to_vec(), "offset"),
        (entry.offset_at + 8, u64::MAX.to_le_bytes().to_vec(), "size"),
        (entry.name_at - 2, u16::MAX.to_le_bytes().to_vec(), "tensor"),
        (entry.name_at - 2, 0u16.to_le_bytes().to_vec(), "tensor[0].name_length"),
    ];
    for (at, bytes, field) in cases {
        let err = patched(&file, at, &bytes);
        assert!(err.field.contains(field), "patch at {at} should name {field}: {err}");
    }
}

#[test]
fn tensor_count_beyond_the_index_is_refused_before_allocating() {
    let file = write_bytes(&small_source());
    let err = patched(&file, 8, &0x0100_0000u32.to_le_bytes());
    assert_eq!(err.field, "header.tensor_count");
    assert!(err.reason.contains("cannot fit"), "{err}");
}

/// Two tensors whose stored names differ only in their first byte.
fn twins() -> Vec<u8> {
    let mut source = MemorySource::new(Metadata::default());
    push(&mut source, "a.weight", DType::F32, &[4], 1);
    push(&mut source, "b.weight", DType::F32, &[4], 2);
    write_bytes(&source)
}

#[test]
fn unsorted_or_duplicate_index_entries_are_errors() {
    let file = twins();
    let entries = index_entries(&file);
    assert_eq!((entries[0].name.as_str(), entries[1].name.as_str()), ("a.weight", "b.weight"));
    let mut swapped = file.clone();
    swapped[entries[0].name_at] = b'b';
    swapped[entries[1].name_at] = b'a';
    reseal(&mut swapped);
    let err = parse_err(&swapped);
    assert_eq!(err.field, "tensor[1].name");
    assert_eq!(err.offset, entries[1].name_at as u64 - 2);
    assert!(err.reason.contains("sorted") && err.reason.contains("out of order"), "{err}");
    let err = patched(&file, entries[1].name_at, b"a");
    assert!(err.reason.contains("duplicate"), "{err}");
}

#[test]
fn overlapping_or_gapped_tensors_are_errors() {
    let file = twins();
    let second = &index_entries(&file)[1];
    let err = patched(&file, second.offset_at, &0u64.to_le_bytes());
    assert!(err.field.contains("offset") && err.reason.contains("overlap"), "{err}");
    let err = patched(&file, second.offset_at, &128u64.to_le_bytes());
    assert!(err.field.contains("offset"), "{err}");
}

#[test]
fn an_unknown_dtype_byte_names_id_tensor_and_offset() {
    let file = twins();
    let entry = &index_entries(&file)[0];
    let err = patched(&file, entry.dtype_at, &[99]);
    assert_eq!(err.field, "tensor 'a.weight' dtype");
    assert_eq!(err.offset, entry.dtype_at as u64);
    assert!(err.reason.contains("unknown dtype id 99"), "{err}");
    assert!(err.to_string().contains(&format!("at offset {}", entry.dtype_at)), "{err}");
    let err = patched(&file, entry.dtype_at, &[16]);
    assert!(err.reason.contains("IQ2_XXS"), "{err}");
    let err = patched(&file, entry.dtype_at, &[128]);
    assert!(err.reason.contains("aprender"), "{err}");
    // A known dtype whose size disagrees with the stored size is also an error, not a reinterpretation.
    let err = patched(&file, entry.dtype_at, &[DType::F16.id() as u8]);
    assert!(err.field.contains("size"), "{err}");
}

#[test]
fn vocab_flag_and_tokenizer_must_agree() {
    let file = write_bytes(&small_source());
    let flags = u16::from_le_bytes([file[6], file[7]]);
    let err = patched(&file, 6, &(flags & !0x0200).to_le_bytes());
    assert!(err.field == "header.flags" && err.reason.contains("HAS_VOCAB is not set"), "{err}");
    let bare = twins();
    let err = patched(&bare, 6, &(0x0400u16 | 0x0200).to_le_bytes());
    assert!(err.field == "header.flags" && err.reason.contains("no tokenizer.vocabulary"), "{err}");
}

#[test]
fn nonzero_padding_and_reserved_bytes_are_errors() {
    let file = twins();
    let err = patched(&file, 50, &[1]);
    assert_eq!(err.field, "header.reserved");
    let json_end = 64 + u32_at(&file, 20) as usize;
    assert!(!json_end.is_multiple_of(64), "the fixture's metadata is followed by padding");
    assert_eq!(patched(&file, json_end, b" ").field, "metadata padding");
    let data_at = u64_at(&file, 32) as usize;
    assert_eq!(patched(&file, data_at + 16, &[7]).field, "tensor padding");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_files_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                 reseal_after in any::<bool>(), cut in any::<prop::sample::Index>()) {
        let file = SMALL_FILE.with(|f| f.clone());
        let mut bad = file[..file.len() - cut.index(file.len() / 8)].to_vec();
        for (at, byte) in &edits {
            let i = at.index(bad.len());
            bad[i] = *byte;
        }
        if reseal_after {
            reseal(&mut bad);
        }
        let _ = apr::parse(&bad);
    }
}

thread_local! {
    static SMALL_FILE: Vec<u8> = write_bytes(&small_source());
}

// ---------------------------------------------------------------- round trips

#[test]
fn every_dtype_round_trips_with_bytes_names_and_metadata() {
    let mut source = MemorySource::new(llama_metadata());
    for (i, &dtype) in DType::ALL.iter().enumerate() {
        let name = format!("blk.{i}.ffn_up.weight");
        push(&mut source, &name, dtype, &[3, 512], i as u64 + 10);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.apr");
    let mut reported = Vec::new();
    apr::write(&path, &source, WriteOptions::default(), &mut |n| reported.push(n)).unwrap();
    assert_eq!(reported.len(), DType::ALL.len(), "progress once per tensor");
    assert_eq!(reported.iter().sum::<u64>(), source.data.iter().map(|d| d.len() as u64).sum::<u64>());
    let model = ModelFile::open(&path).unwrap();
    assert_eq!(model.format().to_string(), "APR v2.0");
    assert_eq!(model.parsed.qk_row_order, QkRowOrder::Gguf, "llama rows as the source holds them");
    assert_eq!(model.metadata(), &source.metadata, "metadata identical: keys, order, types, values");
    for (i, spec) in source.specs.iter().enumerate() {
        let view = model.tensor(&spec.name).unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!(view.info.stored_name, format!("model.layers.{i}.mlp.up_proj.weight"));
        assert_eq!((view.dtype(), view.shape()), (spec.dtype, spec.shape.as_slice()));
        assert!(view.bytes == source.data[i].as_slice(), "{}: bytes differ", spec.name);
        assert_eq!(view.info.offset % 64, 0);
    }
}

#[test]
fn output_is_deterministic_whatever_the_spec_order() {
    let source = small_source();
    let first = write_bytes(&source);
    assert!(first == write_bytes(&source), "same source, same bytes");
    let mut reversed = MemorySource::new(source.metadata.clone());
    for (spec, data) in source.specs.iter().zip(&source.data).rev() {
        reversed.push(spec.clone(), data.clone()).unwrap();
    }
    assert!(first == write_bytes(&reversed), "spec order does not change the file");
}

/// Q/K rows are stored exactly as the source holds them, and the file records
/// their order (`rope_type`), so a llama GGUF's blocks are carried byte for byte
/// and read back in the order they were written.
#[test]
fn q_and_k_rows_keep_the_sources_order_and_the_file_records_it() {
    let mut hf = small_source();
    hf.qk_row_order = Some(QkRowOrder::HuggingFace);
    let mut qwen = small_source();
    qwen.metadata.insert("general.architecture", MetaValue::String("qwen2".into()));
    let cases = [(small_source(), QkRowOrder::Gguf), (hf, QkRowOrder::HuggingFace), (qwen, QkRowOrder::HuggingFace)];
    for (source, recorded) in cases {
        let bytes = write_bytes(&source);
        let parsed = apr::parse(&bytes).unwrap();
        assert_eq!(parsed.qk_row_order, recorded, "{:?}", source.metadata.architecture());
        for (name, index) in [("blk.0.attn_q.weight", 1), ("blk.0.attn_k.weight", 2)] {
            let info = parsed.tensors.iter().find(|t| t.name == name).unwrap();
            let stored = &bytes[info.offset as usize..(info.offset + info.size) as usize];
            assert!(stored == source.data[index].as_slice(), "{name}: stored as given");
        }
    }
}

#[test]
fn gguf_style_stored_names_are_accepted_and_canonical() {
    let json = br#"{"architecture":"qwen2"}"#;
    let data = noise(16, 3);
    let file = assemble(0x0400, json, &[("blk.0.attn_norm.weight", 0, &[4], &data)]);
    let parsed = apr::parse(&file).unwrap();
    assert_eq!(parsed.tensors[0].name, "blk.0.attn_norm.weight");
    assert_eq!(parsed.tensors[0].stored_name, "blk.0.attn_norm.weight");
    assert_eq!(parsed.metadata.architecture(), Some("qwen2"));
    // The same tensor under both naming schemes is ambiguous.
    let both = assemble(
        0x0400,
        json,
        &[("blk.0.attn_norm.weight", 0, &[4], &data), ("model.layers.0.input_layernorm.weight", 0, &[4], &data)],
    );
    assert!(parse_err(&both).reason.contains("same tensor"));
}

#[test]
fn aprender_style_files_read_with_gguf_keys() {
    let json = br#"{"model_type":"qwen2","name":"m","architecture":"qwen2","hidden_size":8,"num_layers":1,
        "num_heads":2,"num_kv_heads":1,"vocab_size":3,"intermediate_size":16,"max_position_embeddings":64,
        "rope_theta":1000000.0,"rope_type":2,"rms_norm_eps":1e-6,
        "tokenizer.vocabulary":["a","b","c"],"tokenizer.merges":["a b"],"tokenizer.bos_token_id":0,
        "tokenizer.eos_token_id":2,"tokenizer.token_type":[1,1,3],"chat_template":"{{ messages }}"}"#;
    let data = noise(12, 9);
    let file = assemble(0x0400 | 0x0200, json, &[("model.norm.weight", 0, &[3], &data)]);
    let parsed = apr::parse(&file).unwrap();
    let meta = &parsed.metadata;
    assert_eq!(meta.get("qwen2.embedding_length"), Some(&MetaValue::U32(8)));
    assert_eq!(meta.get("qwen2.context_length"), Some(&MetaValue::U32(64)));
    assert_eq!(meta.get("qwen2.rope.freq_base"), Some(&MetaValue::F32(1e6)));
    assert_eq!(meta.get("tokenizer.ggml.tokens"), Some(&strings(&["a", "b", "c"])));
    assert_eq!(meta.get("tokenizer.ggml.eos_token_id"), Some(&MetaValue::U32(2)));
    assert_eq!(meta.get_str("tokenizer.chat_template"), Some("{{ messages }}"));
    assert_eq!(parsed.tensors[0].name, "output_norm.weight");
    assert_eq!(parsed.qk_row_order, QkRowOrder::HuggingFace);
}

#[test]
fn bad_sources_fail_without_leaving_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut twice = MemorySource::new(Metadata::default());
    push(&mut twice, "blk.0.attn_q.weight", DType::F32, &[4, 4], 1);
    push(&mut twice, "model.layers.0.self_attn.q_proj.weight", DType::F32, &[4, 4], 2);
    let path = dir.path().join("twice.apr");
    let err = apr::write(&path, &twice, WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("both be stored as"), "{err}");
    assert!(!path.exists());

    struct ShortSource(MemorySource);
    impl TensorSource for ShortSource {
        fn metadata(&self) -> &Metadata {
            &self.0.metadata
        }
        fn specs(&self) -> &[TensorSpec] {
            &self.0.specs
        }
        fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
            Ok(Cow::Borrowed(&self.0.data[index][1..]))
        }
    }
    let path = dir.path().join("short.apr");
    let err = apr::write(&path, &ShortSource(small_source()), WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("source gave"), "{err}");
    assert!(!path.exists(), "no partial file");
    std::fs::write(&path, b"keep").unwrap();
    let err = apr::write(&path, &small_source(), WriteOptions::default(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"keep");
}

// ---------------------------------------------------------------- real models, read by gguf-py

/// Reads a GGUF with gguf-py: typed metadata in file order and each tensor's
/// type, GGUF-order shape and absolute data range.
const GGUF_PY_DUMP: &str = r#"
import json, sys
from gguf import GGUFReader
r = GGUFReader(sys.argv[1])
meta = []
for f in r.fields.values():
    if f.name.startswith("GGUF."):
        continue
    v = f.contents()
    meta.append({"key": f.name, "types": [int(t) for t in f.types], "value": v})
tensors = [{"name": t.name, "type": int(t.tensor_type), "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset), "size": int(t.n_bytes)} for t in r.tensors]
json.dump({"metadata": meta, "tensors": tensors}, sys.stdout)
"#;

fn meta_value(types: &[u64], json: &serde_json::Value) -> MetaValue {
    let ty = MetaType::from_id(types[0] as u32).unwrap();
    match ty {
        MetaType::U8 => MetaValue::U8(json.as_u64().unwrap() as u8),
        MetaType::I8 => MetaValue::I8(json.as_i64().unwrap() as i8),
        MetaType::U16 => MetaValue::U16(json.as_u64().unwrap() as u16),
        MetaType::I16 => MetaValue::I16(json.as_i64().unwrap() as i16),
        MetaType::U32 => MetaValue::U32(json.as_u64().unwrap() as u32),
        MetaType::I32 => MetaValue::I32(json.as_i64().unwrap() as i32),
        MetaType::U64 => MetaValue::U64(json.as_u64().unwrap()),
        MetaType::I64 => MetaValue::I64(json.as_i64().unwrap()),
        MetaType::F32 => MetaValue::F32(json.as_f64().unwrap() as f32),
        MetaType::F64 => MetaValue::F64(json.as_f64().unwrap()),
        MetaType::Bool => MetaValue::Bool(json.as_bool().unwrap()),
        MetaType::String => MetaValue::String(json.as_str().unwrap().to_string()),
        MetaType::Array => {
            let elem_type = MetaType::from_id(types[1] as u32).unwrap();
            let values = json.as_array().unwrap().iter().map(|v| meta_value(&types[1..], v));
            MetaValue::Array(MetaArray::from_values(elem_type, values).unwrap())
        }
    }
}

/// A GGUF file as gguf-py sees it: a tensor source over the file's bytes.
struct GgufPySource {
    bytes: Vec<u8>,
    metadata: Metadata,
    specs: Vec<TensorSpec>,
    ranges: Vec<(usize, usize)>,
}

impl GgufPySource {
    fn open(path: &Path) -> GgufPySource {
        let out = std::process::Command::new("python3").arg("-c").arg(GGUF_PY_DUMP).arg(path).output().unwrap();
        assert!(out.status.success(), "gguf-py: {}", String::from_utf8_lossy(&out.stderr));
        let dump: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut metadata = Metadata::default();
        for entry in dump["metadata"].as_array().unwrap() {
            let types: Vec<u64> = entry["types"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
            metadata.insert(entry["key"].as_str().unwrap(), meta_value(&types, &entry["value"]));
        }
        let mut specs = Vec::new();
        let mut ranges = Vec::new();
        for t in dump["tensors"].as_array().unwrap() {
            let dtype = DType::from_id(t["type"].as_u64().unwrap() as u32).unwrap();
            // GGUF lists dimensions innermost first.
            let shape = t["shape"].as_array().unwrap().iter().rev().map(|d| d.as_u64().unwrap()).collect();
            specs.push(TensorSpec { name: t["name"].as_str().unwrap().into(), dtype, shape });
            ranges.push((t["offset"].as_u64().unwrap() as usize, t["size"].as_u64().unwrap() as usize));
        }
        GgufPySource { bytes: std::fs::read(path).unwrap(), metadata, specs, ranges }
    }
}

impl TensorSource for GgufPySource {
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> Result<Cow<'_, [u8]>> {
        let (start, len) = self.ranges[index];
        Ok(Cow::Borrowed(&self.bytes[start..start + len]))
    }
}

/// GGUF -> APR, then the APR read back: same tensors, same bytes, same
/// metadata, the GGUF's Q/K row order; returns the APR file.
fn convert_and_compare(gguf: &Path, dir: &Path) -> (GgufPySource, ModelFile) {
    let source = GgufPySource::open(gguf);
    let path = dir.join("model.apr");
    apr::write(&path, &source, WriteOptions::default(), &mut |_| {}).unwrap();
    let model = ModelFile::open(&path).unwrap();
    assert_eq!(model.metadata(), &source.metadata, "metadata identical to gguf-py's reading");
    assert_eq!(model.tensors().len(), source.specs.len());
    for (i, spec) in source.specs.iter().enumerate() {
        let view = model.tensor(&spec.name).unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!((view.dtype(), view.shape()), (spec.dtype, spec.shape.as_slice()), "{}", spec.name);
        assert!(view.bytes == &*source.data(i).unwrap(), "{}: bytes differ", spec.name);
    }
    (source, model)
}

#[test]
fn qwen_0_5b_gguf_to_apr_keeps_every_byte_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (source, model) = convert_and_compare(&apr_engine::testing::models::QWEN_0_5B.require(), dir.path());
    assert_eq!(source.specs.len(), 291);
    let tokens = model.metadata().get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).unwrap();
    assert_eq!(tokens.len(), 151936);
    assert!(model.parsed.facts.iter().any(|(k, v)| k == "flags" && v.contains("HAS_VOCAB")));
    let second = dir.path().join("again.apr");
    apr::write(&second, &source, WriteOptions::default(), &mut |_| {}).unwrap();
    assert!(std::fs::read(&second).unwrap() == model.bytes(), "deterministic on a real model");
}

#[test]
fn smollm2_llama_gguf_to_apr_keeps_q_and_k_rows_in_gguf_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = convert_and_compare(&apr_engine::testing::models::SMOLLM2.require(), dir.path());
    assert_eq!(model.parsed.qk_row_order, QkRowOrder::Gguf);
}

/// Through the engine's own GGUF reader and writer: llama GGUF -> APR -> GGUF
/// gives back every tensor byte and the metadata; the APR holds the GGUF's rows.
#[test]
fn smollm2_gguf_to_apr_to_gguf_is_lossless() {
    use apr_engine::container::FormatKind;
    use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
    let convert_to = |input: &ModelFile, output: &Path, to: FormatKind| {
        let options = ConvertOptions { to, dtype: DTypeChoice::Keep, force: false };
        convert(input, output, options, &mut |_| {}).unwrap();
        ModelFile::open(output).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let original = ModelFile::open(apr_engine::testing::models::SMOLLM2.require()).unwrap();
    let apr = convert_to(&original, &dir.path().join("m.apr"), FormatKind::Apr);
    assert_eq!(apr.parsed.qk_row_order, QkRowOrder::Gguf);
    assert!(apr.tensor("blk.3.attn_k.weight").unwrap().bytes == original.tensor("blk.3.attn_k.weight").unwrap().bytes);
    let back = convert_to(&apr, &dir.path().join("back.gguf"), FormatKind::Gguf);
    assert_eq!(back.metadata(), original.metadata(), "metadata identical after GGUF -> APR -> GGUF");
    assert_eq!(back.tensors().len(), original.tensors().len());
    for t in original.tensors() {
        let b = back.tensor(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((b.dtype(), b.shape()), (t.dtype, t.shape.as_slice()), "{}", t.name);
        assert!(b.bytes == original.view(t).bytes, "{}: bytes differ after the round trip", t.name);
    }
}
