//! `cargo apr synth` on the real models: a synthetic file has the original's
//! exact layout and new bytes, runs through every layer with finite values,
//! and is a function of its seed; a header-only prefix of the 1.5B is enough
//! to make it; a prefix cut inside its tensor table is refused.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use apr_engine::backend::BackendKind;
use apr_engine::container::gguf;
use apr_engine::generate::{generate_observed, GenerateOptions, SamplingParams};
use apr_engine::model::{Boundary, Observer};
use apr_engine::pipeline::Pipeline;
use apr_engine::stats::{stats_of, ValueStats};
use apr_engine::testing::models::{QWEN_1_5B, SMOLLM2};
use apr_engine::ModelFile;
use common::{apr, outputs};

fn synth(like: &Path, out: &Path, seed: u64) -> String {
    let (stdout, _) =
        outputs(apr(&["synth", "--seed", &seed.to_string()]).arg("--like").arg(like).arg("--out").arg(out), 0);
    stdout
}

fn header_prefix(model: &Path, out: &Path) -> String {
    outputs(apr(&["synth", "--header-only"]).arg("--like").arg(model).arg("--out").arg(out), 0).0
}

/// Where the data section of a GGUF file (or of a header prefix) starts.
fn data_offset(path: &Path) -> u64 {
    gguf::parse_header(&std::fs::read(path).unwrap()).unwrap().data_offset
}

/// The synthetic file holds exactly the original's header (metadata, tensor
/// table: names, dtypes, shapes, offsets, sizes) and different tensor bytes.
fn assert_same_layout_new_data(original: &Path, synthetic: &Path) {
    let (original, synthetic) = (ModelFile::open(original).unwrap(), ModelFile::open(synthetic).unwrap());
    assert_eq!(synthetic.format(), original.format());
    assert_eq!(synthetic.metadata(), original.metadata());
    assert_eq!(synthetic.tensors(), original.tensors());
    assert_eq!(synthetic.file_size(), original.file_size());
    let header_len = gguf::parse_header(original.bytes()).unwrap().data_offset as usize;
    assert!(synthetic.bytes()[..header_len] == original.bytes()[..header_len], "the headers differ");
    let unchanged: Vec<&str> = synthetic
        .views()
        .zip(original.views())
        .filter(|(s, o)| s.bytes == o.bytes)
        .map(|(s, _)| s.info.name.as_str())
        .collect();
    assert!(unchanged.is_empty(), "tensors whose bytes were copied: {unchanged:?}");
}

/// Statistics of every boundary of every forward call, by (layer, boundary).
#[derive(Default)]
struct Activations {
    seen: BTreeMap<(Option<usize>, String), Vec<ValueStats>>,
}

impl Observer for Activations {
    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]) {
        self.seen.entry((layer, format!("{boundary:?}"))).or_default().push(stats_of(values));
    }
}

/// A short greedy generation on the CPU: every boundary of every layer, the
/// logits included, finite and not constant, at every step.
fn assert_runs_finite(path: &Path) {
    let pipeline = Pipeline::open_on(path, BackendKind::Cpu).unwrap();
    let prompt = pipeline.tokenizer.encode_with_special("The quick brown fox jumps over the lazy dog.", false);
    let mut cache = pipeline.model.new_cache(prompt.len() + 8);
    let options = GenerateOptions { max_tokens: 6, sampling: SamplingParams::default(), logits_top_k: Some(5) };
    let mut activations = Activations::default();
    let generation =
        generate_observed(&pipeline.model, &mut cache, &prompt, &options, |_| false, |_| {}, &mut activations).unwrap();
    assert_eq!(generation.tokens.len(), 6);
    let layers = activations.seen.keys().filter_map(|(layer, _)| *layer).max().map_or(0, |l| l + 1);
    assert_eq!(layers, pipeline.model.config.layers, "every layer observed");
    assert!(activations.seen.contains_key(&(None, "Logits".to_string())), "logits observed");
    for ((layer, boundary), steps) in &activations.seen {
        for (step, s) in steps.iter().enumerate() {
            let largest = s.min.abs().max(s.max.abs());
            assert!(
                s.nan == 0 && s.inf == 0 && s.std > 0.0 && largest < 1e4,
                "layer {layer:?} {boundary} at step {step}: {s:?}"
            );
        }
    }
}

#[test]
fn smollm2_synth_keeps_the_layout_and_runs_finite() {
    let original = SMOLLM2.require();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synthetic.gguf");
    let stdout = synth(&original, &out, 1);
    assert!(stdout.contains("random weights from seed 1"), "{stdout}");
    assert_same_layout_new_data(&original, &out);
    assert_runs_finite(&out);
}

#[test]
fn a_seed_gives_the_same_bytes_and_another_seed_other_bytes() {
    let original = SMOLLM2.require();
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = ["a", "b", "c"].map(|n| dir.path().join(format!("{n}.gguf")));
    synth(&original, &a, 5);
    synth(&original, &b, 5);
    synth(&original, &c, 6);
    let [a, b, c] = [a, b, c].map(|p| std::fs::read(p).unwrap());
    assert!(a == b, "seed 5 twice gave different files");
    assert!(a != c, "seeds 5 and 6 gave the same file");
}

#[test]
fn the_1_5b_is_made_from_its_header_prefix() {
    let original = QWEN_1_5B.require();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("header.gguf");
    let stdout = header_prefix(&original, &prefix);
    assert!(stdout.contains("cargo apr synth --like"), "{stdout}");
    let prefix_len = std::fs::metadata(&prefix).unwrap().len();
    assert_eq!(prefix_len, data_offset(&original));
    assert!(prefix_len < 16 << 20, "the header is {prefix_len} bytes");
    // The ordinary reader stays strict: a header alone is not a model file.
    let refused = ModelFile::open(&prefix).err().expect("a header prefix opened as a model").to_string();
    assert!(refused.contains("runs past the end of the file"), "{refused}");
    let out = dir.path().join("synthetic.gguf");
    synth(&prefix, &out, 3);
    assert_same_layout_new_data(&original, &out);
    assert_runs_finite(&out);
}

#[test]
fn a_prefix_cut_inside_the_tensor_table_is_refused_naming_file_field_and_offset() {
    let original = SMOLLM2.require();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("header.gguf");
    header_prefix(&original, &prefix);
    let bytes = std::fs::read(&prefix).unwrap();
    // The last tensor record is over 24 bytes and the padding under 32, so 40
    // bytes before the data section is inside the table.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let out = dir.path().join("out.gguf");
    let (_, stderr) = outputs(apr(&["synth", "--like"]).arg(&cut).arg("--out").arg(&out), 1);
    assert!(stderr.contains(&cut.display().to_string()), "{stderr}");
    assert!((stderr.contains("tensor '") || stderr.contains("tensor[")) && stderr.contains("at offset"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn an_existing_out_is_kept_without_force() {
    let original = SMOLLM2.require();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("header.gguf");
    std::fs::write(&out, b"keep me").unwrap();
    let args = |force: bool| {
        let mut command = apr(&["synth", "--header-only", "--like"]);
        command.arg(&original).arg("--out").arg(&out);
        if force {
            command.arg("--force");
        }
        command
    };
    let (_, stderr) = outputs(&mut args(false), 1);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    outputs(&mut args(true), 0);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), data_offset(&original));
}

#[test]
fn other_containers_and_a_meaningless_seed_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = dir.path().join("model.apr");
    std::fs::write(&not_gguf, b"APR\0 and not much else").unwrap();
    let out = dir.path().join("out.gguf");
    let (_, stderr) = outputs(apr(&["synth", "--like"]).arg(&not_gguf).arg("--out").arg(&out), 1);
    assert!(stderr.contains("synth reads and writes GGUF"), "{stderr}");
    let (_, stderr) =
        outputs(apr(&["synth", "--header-only", "--seed", "1", "--like"]).arg(&not_gguf).arg("--out").arg(&out), 2);
    assert!(stderr.contains("--seed"), "{stderr}");
}
