//! Writes the seed corpora into `fuzz/seeds/<target>/`: small valid files
//! from our own writers, plus the head (header and leading metadata) of the
//! real Qwen 0.5B GGUF; for `load`, tiny models with SmolLM2's metadata layout
//! and tokenizer; for `chat_template`, the real templates of Qwen2.5 and
//! SmolLM2 and a few written here. The fuzzer reads them as a second corpus
//! directory and writes its own finds to the (ignored) `fuzz/corpus/<target>/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (from the repo root).

use std::io::Read;
use std::path::{Path, PathBuf};

use std::collections::HashSet;

use apr_engine::container::{apr, gguf, safetensors, MemorySource, MetaArray, MetaValue, Metadata, TensorSpec};
use apr_engine::container::{ModelFile, Progress, TensorSource, WriteOptions};
use apr_engine::testing::models::{QWEN_0_5B, SMOLLM2};
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
    write_load_seeds(&corpus.join("load"));
    write_chat_template_seeds(&corpus.join("chat_template"));
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

/// Tiny models for `load`: SmolLM2's metadata (every key, its tokenizer's
/// first 300 tokens with the merges among them, its chat template) with
/// dimensions small enough for thousands of forwards a second: hidden 32,
/// 2 layers, 2 heads of 16, 1 KV head, FFN 64. One keeps SmolLM2's dtypes
/// (Q8_0 embedding, Q4_1 matrices, F32 norms, tied output), one mixes float
/// dtypes with an untied Q8_0 output; the first is also written as APR.
fn write_load_seeds(dir: &Path) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    let smollm2 = ModelFile::open(SMOLLM2.require()).expect("SmolLM2 readable");
    let meta = tiny_smollm2_metadata(smollm2.metadata());
    let seeds: [(&str, &str, Writer, &TinyDtypes); 3] = [
        ("smollm2-tiny-q4_1", "gguf", gguf::write, &SMOLLM2_DTYPES),
        ("smollm2-tiny-mixed", "gguf", gguf::write, &MIXED_DTYPES),
        ("smollm2-tiny-q4_1", "apr", apr::write, &SMOLLM2_DTYPES),
    ];
    for (name, ext, write, dtypes) in seeds {
        let source = tiny_model(meta.clone(), dtypes);
        let path = dir.join(format!("seed-{name}.{ext}"));
        write(&path, &source, WriteOptions { force: true }, &mut |_| {}).expect("writer accepts the seed");
        let bytes = std::fs::read(&path).expect("seed readable");
        let outcome = apr_fuzz::load::load_and_run(&bytes);
        let full = apr_fuzz::load::Outcome { reached: apr_fuzz::load::Reached::Forward, tokenizer: true };
        assert_eq!(outcome, full, "{}: the seed does not run the whole load path", path.display());
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}

const TINY_VOCAB: usize = 300;
const TINY_HIDDEN: u64 = 32;
const TINY_LAYERS: usize = 2;
const TINY_HEADS: u64 = 2;
const TINY_KV_HEADS: u64 = 1;
const TINY_FFN: u64 = 64;

/// The dtype of each kind of tensor in a tiny model; `output: None` ties the
/// output head to the embedding.
struct TinyDtypes {
    embedding: DType,
    norms: DType,
    q: DType,
    kv: DType,
    o: DType,
    ffn: DType,
    output: Option<DType>,
}

const SMOLLM2_DTYPES: TinyDtypes = TinyDtypes {
    embedding: DType::Q8_0,
    norms: DType::F32,
    q: DType::Q4_1,
    kv: DType::Q4_1,
    o: DType::Q4_1,
    ffn: DType::Q4_1,
    output: None,
};

const MIXED_DTYPES: TinyDtypes = TinyDtypes {
    embedding: DType::BF16,
    norms: DType::F16,
    q: DType::F16,
    kv: DType::Q8_0,
    o: DType::F32,
    ffn: DType::F16,
    output: Some(DType::Q8_0),
};

fn tiny_smollm2_metadata(real: &Metadata) -> Metadata {
    let mut meta = real.clone();
    let tokens: Vec<String> = string_items(real, "tokenizer.ggml.tokens").take(TINY_VOCAB).collect();
    let known: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let merges: Vec<String> = string_items(real, "tokenizer.ggml.merges")
        .filter(|merge| {
            let (left, right) = merge.split_once(' ').expect("a merge is two tokens");
            known.contains(left) && known.contains(right) && known.contains(format!("{left}{right}").as_str())
        })
        .collect();
    assert!(merges.len() >= 10, "only {} merges among the first {TINY_VOCAB} tokens", merges.len());
    let mut types = real.get("tokenizer.ggml.token_type").and_then(MetaValue::as_array).expect("token types").clone();
    types.truncate(TINY_VOCAB);
    let types = MetaValue::Array(types);
    let u32_value = |n: u64| MetaValue::U32(n as u32);
    meta.insert("general.name", MetaValue::String("seed: SmolLM2 layout, tiny".into()));
    meta.insert("llama.block_count", u32_value(TINY_LAYERS as u64));
    meta.insert("llama.context_length", u32_value(64));
    meta.insert("llama.embedding_length", u32_value(TINY_HIDDEN));
    meta.insert("llama.feed_forward_length", u32_value(TINY_FFN));
    meta.insert("llama.attention.head_count", u32_value(TINY_HEADS));
    meta.insert("llama.attention.head_count_kv", u32_value(TINY_KV_HEADS));
    meta.insert("llama.vocab_size", u32_value(TINY_VOCAB as u64));
    meta.insert("llama.rope.dimension_count", u32_value(TINY_HIDDEN / TINY_HEADS));
    meta.insert("tokenizer.ggml.tokens", MetaValue::string_array(tokens));
    meta.insert("tokenizer.ggml.token_type", types);
    meta.insert("tokenizer.ggml.merges", MetaValue::string_array(merges));
    meta
}

fn string_items<'m>(meta: &'m Metadata, key: &str) -> impl Iterator<Item = String> + 'm {
    let items = meta.get(key).and_then(MetaValue::as_array).and_then(|a| a.as_strings());
    items.unwrap_or_else(|| panic!("{key} is an array of strings")).iter().cloned()
}

/// A tiny decoder's tensors, in SmolLM2's order, with small pseudo-random
/// weights (quantized by our own quantizers, so every block is well formed).
fn tiny_model(meta: Metadata, d: &TinyDtypes) -> MemorySource {
    let (hidden, vocab, ffn) = (TINY_HIDDEN, TINY_VOCAB as u64, TINY_FFN);
    let head_dim = TINY_HIDDEN / TINY_HEADS;
    let (q, kv) = (TINY_HEADS * head_dim, TINY_KV_HEADS * head_dim);
    let mut source = MemorySource::new(meta);
    let mut seed = 1u32;
    let mut add = |source: &mut MemorySource, name: &str, dtype: DType, shape: &[u64]| {
        seed += 1;
        push_values(source, name, dtype, shape, seed);
    };
    add(&mut source, "token_embd.weight", d.embedding, &[vocab, hidden]);
    for layer in 0..TINY_LAYERS {
        let name = |suffix: &str| format!("blk.{layer}.{suffix}");
        add(&mut source, &name("attn_norm.weight"), d.norms, &[hidden]);
        add(&mut source, &name("ffn_down.weight"), d.ffn, &[hidden, ffn]);
        add(&mut source, &name("ffn_gate.weight"), d.ffn, &[ffn, hidden]);
        add(&mut source, &name("ffn_up.weight"), d.ffn, &[ffn, hidden]);
        add(&mut source, &name("ffn_norm.weight"), d.norms, &[hidden]);
        add(&mut source, &name("attn_k.weight"), d.kv, &[kv, hidden]);
        add(&mut source, &name("attn_output.weight"), d.o, &[hidden, q]);
        add(&mut source, &name("attn_q.weight"), d.q, &[q, hidden]);
        add(&mut source, &name("attn_v.weight"), d.kv, &[kv, hidden]);
    }
    add(&mut source, "output_norm.weight", d.norms, &[hidden]);
    if let Some(output) = d.output {
        add(&mut source, "output.weight", output, &[vocab, hidden]);
    }
    source
}

/// Values near 1 for a norm gain (a vector), small ones around 0 for a matrix.
fn push_values(source: &mut MemorySource, name: &str, dtype: DType, shape: &[u64], seed: u32) {
    let count: u64 = shape.iter().product();
    let mut state = seed.wrapping_mul(2_654_435_761);
    let values: Vec<f32> = (0..count)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let unit = (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            if shape.len() == 1 {
                1.0 + 0.2 * unit
            } else {
                0.2 * unit
            }
        })
        .collect();
    let bytes = apr_engine::quant::quantize(dtype, &values).expect("quantizable");
    let spec = TensorSpec { name: name.into(), dtype, shape: shape.to_vec() };
    source.push(spec, bytes).expect("bytes match the shape");
}

/// Templates written here, each exercising a part of the Jinja language
/// that real chat templates use.
const HAND_WRITTEN_TEMPLATES: [(&str, &str); 6] = [
    (
        "loops",
        "{% for m in messages %}{{ loop.index }}/{{ loop.length }} {{ m.role }}: {{ m['content'] }}\
         {% if not loop.last %}\n{% endif %}{% endfor %}\
         {% for i in range(3) %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}\
         {% for m in messages|reverse %}{% if loop.index > 2 %}{% break %}{% endif %}{{ m.role[0] }}{% endfor %}",
    ),
    (
        "macros",
        "{% macro turn(role, text, close='<|im_end|>') -%}\n<|im_start|>{{ role }}\n{{ text | trim }}{{ close }}\n\
         {%- endmacro %}\
         {% for m in messages %}{{ turn(m.role, m.content) }}{% endfor %}\
         {% if add_generation_prompt %}{{ turn('assistant', '', close='') }}{% endif %}\
         {% macro wrap(tag) %}<{{ tag }}>{{ caller(tag | upper) }}</{{ tag }}>{% endmacro %}\
         {% call(x) wrap('tool') %}{{ x }}{% endcall %}",
    ),
    (
        "filters",
        "{{ messages | map(attribute='content') | join(' | ') | upper }}\n{{ messages | length }} \
         {{ messages | selectattr('role', 'equalto', 'user') | list | tojson }}\n\
         {{ messages[0].content | tojson(indent=2) }} {{ 'a,b,c'.split(',') | first }} {{ [3, 1, 2] | sort | last }}\
         {{ 'x' | default('y') }}{{ none | default('d', true) }}{{ '%s-%d' | format('a', 3) }}{{ 'AbC' | lower | replace('b', 'B') }}",
    ),
    (
        "namespace",
        "{%- set ns = namespace(system='', count=0) -%}\n\
         {%- for m in messages -%}\n\
         {%- if m.role == 'system' -%}{%- set ns.system = m.content.strip() -%}\n\
         {%- else -%}{%- set ns.count = ns.count + 1 -%}{%- endif -%}\n\
         {%- endfor -%}\n\
         {{ bos_token }}[{{ ns.system.upper() }}] {{ ns.count }} turns\
         {% for k, v in {'a': 1, 'b': [1, 2]}.items() %} {{ k }}={{ v }}{% endfor %}\
         {{ 'abc'.startswith('a') }} {{ ' x '.rstrip() }}{{ eos_token }}",
    ),
    (
        "raise",
        "{%- if messages[0]['role'] != 'system' -%}{{ raise_exception('the first message must be the system') }}\
         {%- endif -%}{%- for message in messages[1:] -%}\
         {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\
         {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
         {%- endif -%}{{ '[INST] ' + message['content'] + ' [/INST]' if message['role'] == 'user' else message['content'] + eos_token }}\
         {%- endfor -%}",
    ),
    (
        "llama3",
        "{% set loop_messages = messages %}{% for message in loop_messages %}\
         {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}\
         {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}\
         {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    ),
];

/// `chat_template` seeds: the real templates of Qwen2.5 and SmolLM2, read
/// from their GGUF metadata, and the hand-written ones. Each must render
/// (the `raise` template raises on the fixed conversation only if it breaks).
fn write_chat_template_seeds(dir: &Path) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    let real = |name: &'static str, path: PathBuf| {
        let model = ModelFile::open(&path).expect("real model readable");
        let template = model.metadata().get_str("tokenizer.chat_template").expect("a chat template").to_string();
        (name, template)
    };
    let mut templates = vec![real("qwen2.5", QWEN_0_5B.require()), real("smollm2", SMOLLM2.require())];
    templates.extend(HAND_WRITTEN_TEMPLATES.iter().map(|&(name, text)| (name, text.to_string())));
    for (name, template) in templates {
        let path = dir.join(format!("seed-{name}.jinja"));
        std::fs::write(&path, &template).expect("seed written");
        for add_generation_prompt in [false, true] {
            let rendered = apr_fuzz::chat::render_fixed(&template, add_generation_prompt);
            rendered.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        println!("{} ({} bytes)", path.display(), template.len());
    }
}
