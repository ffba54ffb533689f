//! The GGUF reader and writer: metadata of every type survives a round trip;
//! malformed files give errors naming field and offset, never a panic or an
//! allocation sized by an untrusted count; the writer lays files out as the
//! specification says; and the real models read and written back are the same
//! files byte for byte, as gguf-py confirms.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use apr_engine::container::{
    gguf, qk_order, FileSource, Format, MemorySource, MetaArray, MetaType, MetaValue, Metadata, ModelFile, QkRowOrder,
    TensorSpec, WriteOptions,
};
use apr_engine::error::Error;
use apr_engine::testing::models::{QWEN_0_5B, SMOLLM2};
use apr_engine::DType;
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------
// Largest single allocation per thread, to show that absurd counts allocate nothing big.

struct TrackLargestAllocation;

thread_local! {
    static LARGEST_ALLOCATION: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    // try_with: the allocator also runs while thread locals are torn down.
    let _ = LARGEST_ALLOCATION.try_with(|largest| largest.set(largest.get().max(size)));
}

unsafe impl GlobalAlloc for TrackLargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: TrackLargestAllocation = TrackLargestAllocation;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_allocation_in<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_ALLOCATION.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST_ALLOCATION.with(Cell::get))
}

// ---------------------------------------------------------------------------
// A GGUF file assembled field by field from the specification, independently
// of the writer, so that tests can put bad values at known offsets.

#[derive(Default)]
struct Assembler {
    bytes: Vec<u8>,
}

impl Assembler {
    /// Magic, version 3 and the two counts.
    fn header(tensor_count: u64, kv_count: u64) -> Self {
        let mut a = Assembler::default();
        a.raw(b"GGUF").u32(3).u64(tensor_count).u64(kv_count);
        a
    }
    fn pos(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.raw(&[v])
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    fn string(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    /// A key and a value type id; the value follows.
    fn key(&mut self, key: &str, value_type: MetaType) -> &mut Self {
        self.string(key).u32(value_type as u32)
    }
    /// A tensor info record; `dims` innermost first, as GGUF stores them.
    fn tensor(&mut self, name: &str, dims: &[u64], type_id: u32, relative_offset: u64) -> &mut Self {
        self.string(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(relative_offset)
    }
    fn pad_to(&mut self, alignment: u64) -> &mut Self {
        while !self.pos().is_multiple_of(alignment) {
            self.u8(0);
        }
        self
    }
    fn fill(&mut self, n: usize, byte: u8) -> &mut Self {
        self.bytes.resize(self.bytes.len() + n, byte);
        self
    }
}

/// One F32 tensor `w.weight` of 8 elements with the given type id and relative offset.
fn one_tensor_file(type_id: u32, relative_offset: u64) -> (Vec<u8>, u64, u64) {
    let mut a = Assembler::header(1, 0);
    a.string("w.weight").u32(1).u64(8);
    let type_at = a.pos();
    a.u32(type_id);
    let offset_at = a.pos();
    a.u64(relative_offset).pad_to(32).fill(64, 0x11);
    (a.bytes, type_at, offset_at)
}

// ---------------------------------------------------------------------------
// Sources and helpers.

fn spec(name: &str, dtype: DType, shape: &[u64]) -> TensorSpec {
    TensorSpec { name: name.to_string(), dtype, shape: shape.to_vec() }
}

/// Distinct, position-dependent bytes, so that misplaced data shows.
fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn push_patterned(source: &mut MemorySource, spec: TensorSpec, seed: u8) {
    let len = spec.dtype.byte_size(&spec.shape).unwrap();
    source.push(spec, pattern(len, seed)).unwrap();
}

fn every_type_metadata() -> Metadata {
    use MetaArray as A;
    use MetaValue as V;
    let mut m = Metadata::default();
    m.insert("general.architecture", V::String("test".into()));
    m.insert("t.u8", V::U8(255));
    m.insert("t.i8", V::I8(-128));
    m.insert("t.u16", V::U16(65535));
    m.insert("t.i16", V::I16(-32768));
    m.insert("t.u32", V::U32(u32::MAX));
    m.insert("t.i32", V::I32(i32::MIN));
    m.insert("t.f32", V::F32(-0.0));
    m.insert("t.f32_subnormal", V::F32(f32::from_bits(1)));
    m.insert("t.f32_inf", V::F32(f32::NEG_INFINITY));
    m.insert("t.bool_true", V::Bool(true));
    m.insert("t.bool_false", V::Bool(false));
    m.insert("t.string", V::String("héllo ▁wörld \u{1F600} \n\t\"".into()));
    m.insert("t.empty_string", V::String(String::new()));
    m.insert("t.u64", V::U64(u64::MAX));
    m.insert("t.i64", V::I64(i64::MIN));
    m.insert("t.f64", V::F64(std::f64::consts::PI));
    m.insert("a.u8", V::Array(A::U8(vec![0, 1, 255])));
    m.insert("a.i8", V::Array(A::I8(vec![-1, 127])));
    m.insert("a.u16", V::Array(A::U16(vec![7])));
    m.insert("a.i16", V::Array(A::I16(vec![-7, 300])));
    m.insert("a.u32", V::Array(A::U32(vec![1, 2, 3])));
    m.insert("a.i32", V::Array(A::I32(vec![-5])));
    m.insert("a.f32", V::Array(A::F32(vec![1.5, -2.25])));
    m.insert("a.bool", V::Array(A::Bool(vec![true, false])));
    m.insert("a.string", V::string_array(["a".into(), String::new(), "ü".into()]));
    m.insert("a.u64", V::Array(A::U64(vec![1 << 40])));
    m.insert("a.i64", V::Array(A::I64(vec![-(1 << 40)])));
    m.insert("a.f64", V::Array(A::F64(vec![1e300])));
    m.insert("a.empty", V::Array(A::U32(vec![])));
    m.insert("a.empty_of_arrays", V::Array(A::Array(vec![])));
    // Nested: inner arrays each carry their own element type, which may differ.
    let mixed = A::Array(vec![A::I64(vec![1, -2]), A::String(vec!["x".into(), "yz".into()]), A::U8(vec![])]);
    m.insert("a.nested_mixed", V::Array(mixed));
    let deep = A::Array(vec![A::Array(vec![A::String(vec!["deep".into()]), A::Bool(vec![true])])]);
    m.insert("a.nested_deep", V::Array(deep));
    m
}

fn write_source(path: &Path, source: &MemorySource) -> apr_engine::error::Result<()> {
    gguf::write(path, source, WriteOptions::default(), &mut |_| {})
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A small valid file written by our writer: metadata with strings and an
/// array, three tensors, the last one followed by padding.
fn small_valid_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let mut meta = Metadata::default();
        meta.insert("general.architecture", MetaValue::String("llama".into()));
        meta.insert("llama.block_count", MetaValue::U32(1));
        meta.insert("tokenizer.ggml.tokens", MetaValue::string_array(["<s>".into(), "a".into(), "b".into()]));
        meta.insert("x.nested", MetaValue::Array(MetaArray::Array(vec![MetaArray::String(vec!["q".into()])])));
        let mut source = MemorySource::new(meta);
        push_patterned(&mut source, spec("token_embd.weight", DType::Q8_0, &[3, 32]), 1);
        push_patterned(&mut source, spec("blk.0.attn_norm.weight", DType::F32, &[32]), 2);
        push_patterned(&mut source, spec("output_norm.weight", DType::F16, &[5]), 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.gguf");
        write_source(&path, &source).unwrap();
        read(&path)
    })
}

fn parse_error(bytes: &[u8]) -> apr_engine::error::ParseError {
    match gguf::parse(bytes) {
        Ok(_) => panic!("malformed file parsed"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// Round trips and layout.

#[test]
fn every_metadata_type_and_nested_arrays_round_trip() {
    let mut source = MemorySource::new(every_type_metadata());
    push_patterned(&mut source, spec("a.weight", DType::F32, &[2, 3]), 1);
    push_patterned(&mut source, spec("b.weight", DType::Q4_K, &[2, 256]), 2);
    push_patterned(&mut source, spec("c.weight", DType::F16, &[2, 3, 4, 5]), 3);
    push_patterned(&mut source, spec("d.scalar", DType::F32, &[]), 4);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("types.gguf");
    write_source(&path, &source).unwrap();

    let model = ModelFile::open(&path).unwrap();
    assert_eq!(model.format(), Format::Gguf { version: 3 });
    assert_eq!(model.metadata(), &source.metadata, "every key, type and value, in order");
    let keys: Vec<_> = model.metadata().entries.keys().collect();
    let expected: Vec<_> = source.metadata.entries.keys().collect();
    assert_eq!(keys, expected, "key order");
    assert_eq!(
        model.metadata().get("t.f32").map(|v| matches!(v, MetaValue::F32(x) if x.is_sign_negative())),
        Some(true)
    );
    for (i, spec) in source.specs.iter().enumerate() {
        let t = model.tensor(&spec.name).unwrap();
        assert_eq!((t.dtype(), t.shape()), (spec.dtype, spec.shape.as_slice()), "{}", spec.name);
        assert_eq!(t.bytes, source.data[i].as_slice(), "{} bytes", spec.name);
        assert_eq!(t.info.offset % 32, 0, "{} aligned", spec.name);
    }

    // Written again from what was read: the same file.
    let again = dir.path().join("again.gguf");
    gguf::write(&again, &FileSource::new(&model), WriteOptions::default(), &mut |_| {}).unwrap();
    assert!(read(&again) == read(&path), "read -> write reproduces the file");
}

#[test]
fn nan_payloads_survive() {
    let mut meta = Metadata::default();
    let f32_bits = 0x7fc0_1234u32;
    let f64_bits = 0xfff8_0000_dead_beefu64;
    meta.insert("nan32", MetaValue::F32(f32::from_bits(f32_bits)));
    meta.insert("nan64", MetaValue::F64(f64::from_bits(f64_bits)));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.gguf");
    write_source(&path, &MemorySource::new(meta)).unwrap();
    let parsed = gguf::parse(&read(&path)).unwrap();
    assert!(matches!(parsed.metadata.get("nan32"), Some(MetaValue::F32(v)) if v.to_bits() == f32_bits));
    assert!(matches!(parsed.metadata.get("nan64"), Some(MetaValue::F64(v)) if v.to_bits() == f64_bits));
}

#[test]
fn a_model_file_from_bytes_reads_as_the_opened_file_does() {
    let bytes = small_valid_file();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.gguf");
    std::fs::write(&path, bytes).unwrap();
    let opened = ModelFile::open(&path).unwrap();
    let in_memory = ModelFile::from_bytes("in memory", bytes).unwrap();
    assert_eq!(in_memory.tensors(), opened.tensors());
    assert_eq!(in_memory.metadata(), opened.metadata());
    assert_eq!(in_memory.bytes(), bytes);
    assert_eq!(
        in_memory.tensor("output_norm.weight").unwrap().bytes,
        opened.tensor("output_norm.weight").unwrap().bytes
    );
    let error = ModelFile::from_bytes("label.bin", &bytes[..10]).err().expect("a truncated file is refused");
    assert!(error.to_string().contains("label.bin"), "{error}");
    assert!(ModelFile::from_bytes("empty", &[]).is_err(), "no bytes, no magic");
}

#[test]
fn writer_layout_matches_a_file_assembled_from_the_specification() {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("test".into()));
    meta.insert("x.arr", MetaValue::Array(MetaArray::I16(vec![1, -2])));
    let mut source = MemorySource::new(meta);
    // 24 bytes then 8 of padding; 34 bytes then 30 of padding.
    push_patterned(&mut source, spec("a.weight", DType::F32, &[2, 3]), 1);
    push_patterned(&mut source, spec("b.weight", DType::Q8_0, &[1, 32]), 2);

    let mut a = Assembler::header(2, 2);
    a.key("general.architecture", MetaType::String).string("test");
    a.key("x.arr", MetaType::Array)
        .u32(MetaType::I16 as u32)
        .u64(2)
        .raw(&1i16.to_le_bytes())
        .raw(&(-2i16).to_le_bytes());
    a.tensor("a.weight", &[3, 2], DType::F32.id(), 0);
    a.tensor("b.weight", &[32, 1], DType::Q8_0.id(), 32);
    a.pad_to(32).raw(&source.data[0]).pad_to(32).raw(&source.data[1]).pad_to(32);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("layout.gguf");
    write_source(&path, &source).unwrap();
    assert_eq!(read(&path), a.bytes);
}

#[test]
fn custom_alignment_is_honoured_and_reported() {
    let mut meta = Metadata::default();
    meta.insert("general.alignment", MetaValue::U32(64));
    let mut source = MemorySource::new(meta);
    push_patterned(&mut source, spec("a.weight", DType::F32, &[3]), 1);
    push_patterned(&mut source, spec("b.weight", DType::F32, &[5]), 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("align64.gguf");
    write_source(&path, &source).unwrap();
    let bytes = read(&path);
    let parsed = gguf::parse(&bytes).unwrap();
    assert_eq!(bytes.len() % 64, 0, "the last tensor is padded too");
    for t in &parsed.tensors {
        assert_eq!(t.offset % 64, 0, "{} at {}", t.name, t.offset);
    }
    assert_eq!(parsed.tensors[1].offset - parsed.tensors[0].offset, 64);
    let fact = |key: &str| parsed.facts.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(fact("alignment").as_deref(), Some("64"));
    assert_eq!(fact("data offset"), Some(parsed.tensors[0].offset.to_string()));
    assert_eq!(fact("tensor count").as_deref(), Some("2"));
    assert_eq!(fact("kv count").as_deref(), Some("1"));
    assert_eq!(fact("version").as_deref(), Some("3"));
}

#[test]
fn hugging_face_names_are_written_as_gguf_names() {
    let mut source = MemorySource::new(Metadata::default());
    push_patterned(&mut source, spec("model.layers.0.self_attn.q_proj.weight", DType::F32, &[4, 2]), 1);
    push_patterned(&mut source, spec("model.embed_tokens.weight", DType::F32, &[3, 2]), 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("names.gguf");
    write_source(&path, &source).unwrap();
    let parsed = gguf::parse(&read(&path)).unwrap();
    let stored: Vec<_> = parsed.tensors.iter().map(|t| t.stored_name.as_str()).collect();
    assert_eq!(stored, ["blk.0.attn_q.weight", "token_embd.weight"]);
}

/// Rows of an F32 [rows, 1] tensor, one value per row.
fn rows_of(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn qk_source(arch: &str, order: QkRowOrder) -> MemorySource {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String(arch.into()));
    meta.insert(format!("{arch}.attention.head_count"), MetaValue::U32(2));
    meta.insert(format!("{arch}.attention.head_count_kv"), MetaValue::U32(1));
    let mut source = MemorySource::new(meta);
    source.qk_row_order = Some(order);
    let rows = |n: usize| -> Vec<u8> { (0..n).flat_map(|r| (r as f32).to_le_bytes()).collect() };
    source.push(spec("blk.0.attn_q.weight", DType::F32, &[8, 1]), rows(8)).unwrap();
    source.push(spec("blk.0.attn_k.weight", DType::F32, &[4, 1]), rows(4)).unwrap();
    source.push(spec("blk.0.attn_v.weight", DType::F32, &[4, 1]), rows(4)).unwrap();
    source
}

fn written_rows(source: &MemorySource, name: &str) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qk.gguf");
    write_source(&path, source).unwrap();
    let model = ModelFile::open(&path).unwrap();
    rows_of(model.tensor(name).unwrap().bytes)
}

#[test]
fn llama_q_and_k_rows_from_hugging_face_order_are_interleaved() {
    let hf = qk_source("llama", QkRowOrder::HuggingFace);
    // Per head of 4 rows, halves [r0 r1 | r2 r3] become pairs [r0 r2 r1 r3].
    assert_eq!(written_rows(&hf, "blk.0.attn_q.weight"), [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    assert_eq!(written_rows(&hf, "blk.0.attn_k.weight"), [0.0, 2.0, 1.0, 3.0], "K has head_count_kv heads");
    assert_eq!(written_rows(&hf, "blk.0.attn_v.weight"), [0.0, 1.0, 2.0, 3.0], "V is never permuted");
    let expected = qk_order::reorder_rows(&hf.data[0], 4, 2, QkRowOrder::HuggingFace, QkRowOrder::Gguf);
    assert_eq!(written_rows(&hf, "blk.0.attn_q.weight"), rows_of(&expected));

    let already_gguf = qk_source("llama", QkRowOrder::Gguf);
    assert_eq!(written_rows(&already_gguf, "blk.0.attn_q.weight"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let qwen = qk_source("qwen2", QkRowOrder::HuggingFace);
    assert_eq!(
        written_rows(&qwen, "blk.0.attn_q.weight"),
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        "qwen2 rotates halves"
    );
}

#[test]
fn progress_reports_each_tensor_and_overwrite_needs_force() {
    let mut source = MemorySource::new(Metadata::default());
    push_patterned(&mut source, spec("a.weight", DType::F32, &[3]), 1);
    push_patterned(&mut source, spec("b.weight", DType::Q8_0, &[2, 32]), 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.gguf");
    let mut reported = Vec::new();
    gguf::write(&path, &source, WriteOptions::default(), &mut |n| reported.push(n)).unwrap();
    assert_eq!(reported, [12, 68]);

    let before = read(&path);
    let other = MemorySource::new(Metadata::default());
    let err = write_source(&path, &other).unwrap_err();
    assert!(matches!(err, Error::WouldOverwrite(_)), "{err}");
    assert_eq!(read(&path), before, "refused write leaves the file alone");
    gguf::write(&path, &other, WriteOptions { force: true }, &mut |_| {}).unwrap();
    assert_eq!(gguf::parse(&read(&path)).unwrap().tensors.len(), 0);
}

#[test]
fn writer_refuses_bad_sources_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, MemorySource, &str)> = vec![
        (
            "short data",
            {
                let mut s = MemorySource::new(Metadata::default());
                s.specs.push(spec("a.weight", DType::F32, &[4]));
                s.data.push(vec![0; 15]);
                s
            },
            "'a.weight'",
        ),
        (
            "bad alignment",
            {
                let mut m = Metadata::default();
                m.insert("general.alignment", MetaValue::U32(48));
                MemorySource::new(m)
            },
            "general.alignment",
        ),
        (
            "five dimensions",
            {
                let mut s = MemorySource::new(Metadata::default());
                s.specs.push(spec("a.weight", DType::F32, &[1, 1, 1, 1, 1]));
                s.data.push(vec![0; 4]);
                s
            },
            "dimensions",
        ),
        (
            "long name",
            {
                let mut s = MemorySource::new(Metadata::default());
                push_patterned(&mut s, spec(&"n".repeat(64), DType::F32, &[1]), 0);
                s
            },
            "63",
        ),
        (
            "duplicate name",
            {
                let mut s = MemorySource::new(Metadata::default());
                push_patterned(&mut s, spec("output.weight", DType::F32, &[1]), 0);
                push_patterned(&mut s, spec("lm_head.weight", DType::F32, &[1]), 0);
                s
            },
            "twice",
        ),
    ];
    for (what, source, needle) in cases {
        let path = dir.path().join(format!("{what}.gguf"));
        let err = write_source(&path, &source).expect_err(what).to_string();
        assert!(err.contains(needle), "{what}: {err}");
        assert!(!path.exists(), "{what}: no file left behind");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no temporary files left behind");
}

// ---------------------------------------------------------------------------
// Malformed input.

#[test]
fn truncation_anywhere_before_the_last_tensor_ends_is_an_error() {
    let bytes = small_valid_file();
    let parsed = gguf::parse(bytes).unwrap();
    let data_end = parsed.tensors.iter().map(|t| t.offset + t.size).max().unwrap() as usize;
    assert!(data_end < bytes.len(), "the sample ends in padding, so both cases below are exercised");
    for len in 0..data_end {
        let err = parse_error(&bytes[..len]);
        assert!(err.offset <= len as u64, "cut at {len}: {err}");
    }
    // Only the final padding may be missing: the data is all there (gguf-py reads such files too).
    for len in data_end..bytes.len() {
        let cut = gguf::parse(&bytes[..len]).unwrap_or_else(|e| panic!("cut at {len} in the final padding: {e}"));
        assert_eq!(cut.tensors, parsed.tensors);
    }
}

#[test]
fn absurd_counts_and_lengths_error_without_allocating() {
    let mut cases: Vec<(&str, Vec<u8>, &str, u64)> = Vec::new();
    cases.push(("tensor count", Assembler::header(u64::MAX, 0).bytes, "header.tensor_count", 8));
    cases.push(("kv count", Assembler::header(0, 1 << 40).bytes, "header.kv_count", 16));
    let mut a = Assembler::header(0, 1);
    a.u64(u64::MAX / 2).raw(b"some key bytes");
    cases.push(("key length", a.bytes, "metadata[0].key", 24));
    let mut a = Assembler::header(0, 1);
    a.key("k", MetaType::String).u64(1 << 62).raw(b"abc");
    cases.push(("string length", a.bytes, "metadata 'k' value", 37));
    let mut a = Assembler::header(0, 1);
    a.key("k", MetaType::Array).u32(MetaType::U64 as u32).u64(1 << 60).u64(7);
    cases.push(("array count", a.bytes, "metadata 'k' value", 41));
    let mut a = Assembler::header(0, 1);
    a.key("k", MetaType::Array).u32(MetaType::Array as u32).u64(u64::MAX);
    cases.push(("nested array count", a.bytes, "metadata 'k' value", 41));
    let mut a = Assembler::header(1, 0);
    a.string("w").u32(1_000_000).u64(1);
    cases.push(("n_dims", a.bytes, "tensor 'w' n_dims", 33));
    let mut a = Assembler::header(1, 0);
    a.tensor("w", &[1 << 40, 1 << 40], 0, 0);
    cases.push(("element count", a.bytes, "tensor 'w' dims", 33));
    let mut a = Assembler::header(1, 0);
    a.tensor("w", &[1 << 40], 0, 0).pad_to(32).fill(32, 0);
    cases.push(("data past end", a.bytes, "tensor 'w' offset", 49));
    let mut a = Assembler::header(1, 0);
    a.tensor("w", &[8], 0, u64::MAX - 31).pad_to(32).fill(32, 0);
    cases.push(("offset overflow", a.bytes, "tensor 'w' offset", 49));
    let mut a = Assembler::header(0, 1);
    a.key("k", MetaType::Array);
    for _ in 0..100_000 {
        a.u32(MetaType::Array as u32).u64(1);
    }
    cases.push(("array nesting", a.bytes, "metadata 'k' value", 0));

    for (what, bytes, field, offset) in cases {
        let (result, largest) = largest_allocation_in(|| gguf::parse(&bytes));
        let err = result.err().unwrap_or_else(|| panic!("{what}: parsed"));
        assert_eq!(err.field, field, "{what}: {err}");
        if what != "array nesting" {
            assert_eq!(err.offset, offset, "{what}: {err}");
        }
        assert!(largest < 64 * 1024, "{what}: allocated {largest} bytes at once ({err})");
    }
}

/// An array takes no more memory parsed than in the file (issue #11: 50 M u8
/// took 1.6 GB when each element was a 32-byte `MetaValue`).
#[test]
fn a_50_million_element_u8_array_parses_compactly() {
    const COUNT: usize = 50_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big-array.gguf");
    let mut meta = Metadata::default();
    meta.insert("general.junk", MetaValue::Array(MetaArray::U8(vec![7; COUNT])));
    write_source(&path, &MemorySource::new(meta)).unwrap();
    let bytes = read(&path);
    let (parsed, largest) = largest_allocation_in(|| gguf::parse(&bytes).unwrap());
    let Some(MetaValue::Array(MetaArray::U8(values))) = parsed.metadata.get("general.junk") else {
        panic!("general.junk is not a u8 array: {:?}", parsed.metadata.get("general.junk").map(MetaValue::meta_type));
    };
    assert_eq!(values.len(), COUNT);
    assert_eq!(values.capacity(), COUNT, "one byte per element, reserved once");
    assert!(values.iter().all(|&v| v == 7));
    assert!(largest <= COUNT, "the largest allocation was {largest} bytes for {COUNT} elements");
}

#[test]
fn unknown_dtype_id_names_the_id_the_tensor_and_the_offset() {
    for id in [99, 16] {
        let (bytes, type_at, _) = one_tensor_file(id, 0);
        let err = parse_error(&bytes);
        let message = err.to_string();
        assert_eq!((err.field.as_str(), err.offset), ("tensor 'w.weight' dtype", type_at), "{message}");
        assert!(message.contains(&format!("unknown dtype id {id}")), "{message}");
        assert!(message.contains(&format!("offset {type_at}")), "{message}");
    }
    assert!(parse_error(&one_tensor_file(16, 0).0).to_string().contains("IQ2_XXS"));
    gguf::parse(&one_tensor_file(0, 0).0).expect("the same file with F32 parses");
}

#[test]
fn misaligned_tensor_offset_is_an_error() {
    let (bytes, _, offset_at) = one_tensor_file(0, 8);
    let err = parse_error(&bytes);
    assert_eq!((err.field.as_str(), err.offset), ("tensor 'w.weight' offset", offset_at), "{err}");
    assert!(err.reason.contains("alignment 32"), "{err}");
}

#[test]
fn bad_alignment_values_are_errors_naming_the_key_offset() {
    let values: [(&str, MetaType, &[u8]); 4] = [
        ("zero", MetaType::U32, &0u32.to_le_bytes()),
        ("not a power of two", MetaType::U32, &48u32.to_le_bytes()),
        ("wrong type", MetaType::U64, &32u64.to_le_bytes()),
        ("string", MetaType::String, &[0; 8]),
    ];
    for (what, value_type, value) in values {
        let mut a = Assembler::header(0, 2);
        a.key("general.name", MetaType::String).string("x");
        let key_at = a.pos();
        a.key("general.alignment", value_type).raw(value);
        let err = parse_error(&a.bytes);
        assert_eq!((err.field.as_str(), err.offset), ("general.alignment", key_at), "{what}: {err}");
    }
    let mut a = Assembler::header(0, 1);
    a.key("general.alignment", MetaType::U32).u32(16);
    let parsed = gguf::parse(&a.bytes).unwrap();
    assert!(parsed.facts.contains(&("alignment".to_string(), "16".to_string())));
}

#[test]
fn other_malformed_headers_are_errors_with_field_and_offset() {
    let mut cases: Vec<(&str, Vec<u8>, &str, u64, &str)> = Vec::new();
    cases.push(("magic", b"GGUG\x03\0\0\0".to_vec(), "header.magic", 0, "GGUF"));
    for (version, hint) in [(1u32, "obsolete"), (4, "versions 2 and 3"), (0x0300_0000, "big-endian")] {
        let mut a = Assembler::default();
        a.raw(b"GGUF").u32(version).u64(0).u64(0);
        cases.push(("version", a.bytes, "header.version", 4, hint));
    }
    let mut a = Assembler::header(0, 2);
    a.key("k", MetaType::U8).u8(1).key("k", MetaType::U8).u8(2);
    cases.push(("duplicate key", a.bytes, "metadata[1].key", 38, "duplicate key 'k'"));
    let mut a = Assembler::header(0, 1);
    a.key("k", MetaType::Bool).u8(2);
    cases.push(("bool", a.bytes, "metadata 'k' value", 37, "not 0 or 1"));
    let mut a = Assembler::header(0, 1);
    a.string("k").u32(13).u8(0);
    cases.push(("value type", a.bytes, "metadata 'k' type", 33, "unknown metadata value type 13"));
    let mut a = Assembler::header(0, 1);
    a.key("k", MetaType::String).u64(2).raw(&[0xc3, 0x28]);
    cases.push(("utf-8", a.bytes, "metadata 'k' value", 45, "UTF-8"));
    let mut a = Assembler::header(2, 0);
    a.tensor("output.weight", &[8], 0, 0).tensor("output.weight", &[8], 0, 32).pad_to(32).fill(64, 0);
    cases.push(("duplicate tensor", a.bytes, "tensor[1].name", 69, "same tensor as tensor[0]"));
    let mut a = Assembler::header(1, 0);
    a.tensor("w", &[33], DType::Q8_0.id(), 0).pad_to(32).fill(64, 0);
    cases.push(("partial block", a.bytes, "tensor 'w' dims", 33, "block size"));

    for (what, bytes, field, offset, reason) in cases {
        let err = parse_error(&bytes);
        assert_eq!((err.field.as_str(), err.offset), (field, offset), "{what}: {err}");
        assert!(err.to_string().contains(reason), "{what}: {err}");
    }
}

#[test]
fn version_2_files_are_read() {
    let (mut bytes, _, _) = one_tensor_file(0, 0);
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(gguf::parse(&bytes).unwrap().format, Format::Gguf { version: 2 });
}

/// Whatever a mutated file holds, a successful parse describes tensors that
/// lie in the file, aligned, with sizes that match their dtype and shape.
fn check_consistent(bytes: &[u8]) {
    let Ok(parsed) = gguf::parse(bytes) else { return };
    let alignment: u64 = parsed.facts.iter().find(|(k, _)| k == "alignment").unwrap().1.parse().unwrap();
    for t in &parsed.tensors {
        assert!(t.offset + t.size <= bytes.len() as u64, "{} out of bounds", t.name);
        assert_eq!(t.offset % alignment, 0, "{} misaligned", t.name);
        assert_eq!(Ok(t.size), t.dtype.byte_size(&t.shape));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_byte_mutations_never_panic(edits in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..8)) {
        let mut bytes = small_valid_file().to_vec();
        let len = bytes.len();
        for (at, value) in edits {
            bytes[at.index(len)] = value;
        }
        check_consistent(&bytes);
    }

    #[test]
    fn extreme_u64s_anywhere_never_panic(
        at in any::<Index>(),
        value in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(1 << 63), Just(1 << 32), any::<u64>()],
        cut in any::<Index>(),
    ) {
        let mut bytes = small_valid_file().to_vec();
        let start = at.index(bytes.len() - 8);
        bytes[start..start + 8].copy_from_slice(&value.to_le_bytes());
        check_consistent(&bytes);
        let keep = cut.index(bytes.len());
        check_consistent(&bytes[..keep]);
    }

    #[test]
    fn arbitrary_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend(tail);
        check_consistent(&bytes);
    }
}

// ---------------------------------------------------------------------------
// The real models.

fn assert_shape(model: &ModelFile, name: &str, dtype: DType, shape: &[u64]) {
    let t = model.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    assert_eq!((t.dtype(), t.shape()), (dtype, shape), "{name}");
}

fn readback_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gguf_py_readback.py")
}

/// Runs the gguf-py script with `args`, failing with its output unless it succeeds.
fn run_gguf_py(args: &[&Path]) -> String {
    let output = Command::new("python3").arg(readback_script()).args(args).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "gguf-py script failed:\n{text}");
    text
}

/// Writes `model` back out, requires the very same bytes, and has gguf-py compare the two files.
fn assert_writes_back_identically(model: &ModelFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("written.gguf");
    let mut reported = 0u64;
    gguf::write(&path, &FileSource::new(model), WriteOptions::default(), &mut |n| reported += n).unwrap();
    assert_eq!(reported, model.tensors().iter().map(|t| t.size).sum::<u64>(), "progress covers every tensor byte");

    let written = ModelFile::open(&path).unwrap();
    let (a, b) = (model.bytes(), written.bytes());
    if let Some(at) = a.iter().zip(b).position(|(x, y)| x != y) {
        panic!("written file differs from the original at byte {at} (lengths {} and {})", a.len(), b.len());
    }
    assert_eq!(a.len(), b.len(), "written file length");

    let text = run_gguf_py(&[&model.path, &path]);
    assert!(text.contains(&format!("{} tensors", model.tensors().len())), "{text}");
}

#[test]
fn qwen_0_5b_parses_and_writes_back_byte_identical() {
    let model = ModelFile::open(QWEN_0_5B.require()).unwrap();
    assert_eq!(model.format(), Format::Gguf { version: 3 });
    assert_eq!(model.tensors().len(), 291);
    assert_eq!(model.metadata().len(), 26);
    assert_shape(&model, "token_embd.weight", DType::Q5_0, &[151936, 896]);
    assert_shape(&model, "output.weight", DType::Q8_0, &[151936, 896]);
    assert_shape(&model, "blk.0.ffn_down.weight", DType::Q6_K, &[896, 4864]);
    assert_shape(&model, "blk.0.ffn_up.weight", DType::Q5_0, &[4864, 896]);
    assert_shape(&model, "blk.0.attn_k.weight", DType::Q5_0, &[128, 896]);
    assert_shape(&model, "blk.0.attn_k.bias", DType::F32, &[128]);
    assert_shape(&model, "blk.23.attn_norm.weight", DType::F32, &[896]);
    assert!(model.tensors().iter().all(|t| t.name == t.stored_name), "GGUF names are canonical");
    assert_eq!(model.metadata().get_u64("qwen2.block_count"), Some(24));
    let tokens = model.metadata().get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).unwrap();
    assert_eq!(tokens.len(), 151936);
    assert!(model.parsed.facts.contains(&("data offset".to_string(), "5947776".to_string())));
    assert_eq!(model.parsed.qk_row_order, QkRowOrder::Gguf);
    assert_writes_back_identically(&model);
}

#[test]
fn smollm2_parses_and_writes_back_byte_identical() {
    let model = ModelFile::open(SMOLLM2.require()).unwrap();
    assert_eq!(model.tensors().len(), 272);
    assert_shape(&model, "token_embd.weight", DType::Q8_0, &[49152, 576]);
    assert_shape(&model, "blk.0.attn_k.weight", DType::Q4_1, &[192, 576]);
    assert_shape(&model, "blk.0.ffn_down.weight", DType::Q4_1, &[576, 1536]);
    assert_eq!(model.metadata().architecture(), Some("llama"));
    assert!(model.parsed.facts.contains(&("data offset".to_string(), "1785664".to_string())));
    assert_writes_back_identically(&model);
}

#[test]
fn a_file_written_by_gguf_py_reads_with_every_type_and_writes_back_byte_identical() {
    use MetaArray as A;
    use MetaValue as V;
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("gguf_py_sample.gguf");
    run_gguf_py(&[Path::new("--write-sample"), &sample]);
    let model = ModelFile::open(&sample).unwrap();
    let meta = model.metadata();
    let expected = [
        ("general.architecture", V::String("llama".into())),
        ("t.u8", V::U8(200)),
        ("t.i8", V::I8(-100)),
        ("t.u16", V::U16(60000)),
        ("t.i16", V::I16(-30000)),
        ("t.u32", V::U32(4_000_000_000)),
        ("t.i32", V::I32(-2_000_000_000)),
        ("t.f32", V::F32(0.125)),
        ("t.bool", V::Bool(true)),
        ("t.string", V::String("héllo ▁wörld".into())),
        ("t.u64", V::U64((1 << 63) + 5)),
        ("t.i64", V::I64(-(1 << 62))),
        ("t.f64", V::F64(-1.0e-300)),
        ("a.i32", V::Array(A::I32(vec![1, -2, 3]))),
        ("a.f32", V::Array(A::F32(vec![0.5, -1.5]))),
        ("a.strings", V::string_array(["a".into(), String::new(), "ü".into()])),
        ("a.bool", V::Array(A::Bool(vec![true, false]))),
        ("a.nested", V::Array(A::Array(vec![A::I32(vec![1, 2]), A::I32(vec![3])]))),
        (
            "a.nested_strings",
            V::Array(A::Array(vec![A::String(vec!["x".into(), "yz".into()]), A::String(vec!["w".into()])])),
        ),
    ];
    for (key, value) in &expected {
        assert_eq!(meta.get(key), Some(value), "{key}");
    }
    assert_eq!(meta.len(), expected.len());
    assert_shape(&model, "token_embd.weight", DType::F32, &[3, 4]);
    assert_shape(&model, "blk.0.attn_norm.weight", DType::F16, &[5]);
    assert_shape(&model, "output.weight", DType::F32, &[2, 4, 8]);
    let embd = rows_of(model.tensor("token_embd.weight").unwrap().bytes);
    assert_eq!(embd, (0..12).map(|v| v as f32).collect::<Vec<_>>());
    assert_writes_back_identically(&model);
}
