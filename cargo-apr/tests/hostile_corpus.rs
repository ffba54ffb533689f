//! The hostile corpus of issue 11: malformed files (cut, absurd counts, huge
//! metadata arrays, written by hand) and modified copies of the real SmolLM2
//! (written through the project's own GGUF writer: zero-length and wrong-length
//! norms, NaN epsilon, block count below the layers present, a tokens array
//! shorter than the embedding, rope base 0, an unknown token type, template
//! bombs (endless loops, values doubled until memory runs out, a namespace
//! holding itself), a template that renders nothing), plus empty prompts. Every command
//! that reads a model runs over every file and must end with exit 1 (or 2) and
//! a message naming the file where the file is unusable, never a panic (101)
//! and never run past `TIME_LIMIT`. A `convert` that succeeds must write a file
//! that `inspect` reads back.
//!
//! `APR_HOSTILE_CORPUS=DIR` keeps the generated files in DIR (about 1 GB).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use apr_engine::container::{
    FileSource, MetaArray, MetaType, MetaValue, Metadata, ModelFile, TensorSource, TensorSpec, WriteOptions,
};
use apr_engine::dtype::DType;
use apr_engine::testing::models::SMOLLM2;
use assert_cmd::Command;

/// Any command on a 94 MB model finishes in a few seconds; past this it hangs.
const TIME_LIMIT: Duration = Duration::from_secs(30);

/// The commands that read a model file, as run over each corpus file.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmd {
    Inspect,
    Validate,
    Run,
    Chat,
    Check,
    Convert,
    DiffTensors,
}

const ALL: [Cmd; 7] = [Cmd::Inspect, Cmd::Validate, Cmd::Run, Cmd::Chat, Cmd::Check, Cmd::Convert, Cmd::DiffTensors];
/// What a file that parses but cannot run must fail: loading it, and validating it.
const LOADERS: [Cmd; 4] = [Cmd::Validate, Cmd::Run, Cmd::Chat, Cmd::Check];

struct Case {
    name: &'static str,
    /// Commands that must end with exit 1 and name the file; the others may
    /// pass (or report a mismatch), but never panic or hang.
    must_fail: &'static [Cmd],
    write: fn(&Path),
}

fn cases() -> Vec<Case> {
    vec![
        Case { name: "cut-in-header.gguf", must_fail: &ALL, write: |p| write_prefix(p, 20) },
        Case { name: "cut-in-tensor-data.gguf", must_fail: &ALL, write: |p| write_prefix(p, 3_000_000) },
        Case { name: "absurd-tensor-count.gguf", must_fail: &ALL, write: |p| write_gguf_header(p, u64::MAX, 0, &[]) },
        Case { name: "absurd-kv-count.gguf", must_fail: &ALL, write: |p| write_gguf_header(p, 0, u64::MAX, &[]) },
        Case { name: "absurd-array-count.gguf", must_fail: &ALL, write: |p| write_u8_array(p, u64::MAX, 0) },
        // A valid GGUF holding one 16 M-element array and no model.
        Case {
            name: "huge-metadata-array.gguf",
            must_fail: &LOADERS,
            write: |p| write_u8_array(p, 16 << 20, 16 << 20),
        },
        Case {
            name: "zero-length-norm.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.norm("output_norm.weight", 0)),
        },
        Case {
            name: "short-norm.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.norm("blk.0.attn_norm.weight", 575)),
        },
        Case {
            name: "long-norm.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.norm("output_norm.weight", 1152)),
        },
        Case {
            name: "nan-rms-eps.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.set("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(f32::NAN))),
        },
        Case {
            name: "rope-base-zero.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.set("llama.rope.freq_base", MetaValue::F32(0.0))),
        },
        Case {
            name: "block-count-29-of-30.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.set("llama.block_count", MetaValue::U32(29))),
        },
        Case {
            name: "1000-tokens-49152-rows.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.vocabulary_cut_to(1000)),
        },
        Case {
            name: "token-type-99.gguf",
            must_fail: &LOADERS,
            write: |p| edited(p, |e| e.i32_element("tokenizer.ggml.token_type", 100, 99)),
        },
        Case {
            name: "template-loops-forever.gguf",
            must_fail: &[Cmd::Run, Cmd::Chat, Cmd::Check],
            write: |p| {
                with_template(p, "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}")
            },
        },
        Case {
            // 2^25 bytes: far past any sane output cap, yet bounded if no cap stops it.
            name: "template-doubles-24-times.gguf",
            must_fail: &[Cmd::Run, Cmd::Chat, Cmd::Check],
            write: |p| {
                let bomb = "{% set s = namespace(v='xx') %}{% for i in range(24) %}{% set s.v = s.v ~ s.v %}{% endfor %}{{ s.v }}";
                with_template(p, bomb)
            },
        },
        Case {
            // Never printed, so no output cap sees it: 2^40 bytes unless memory is bounded.
            name: "template-doubles-40-times-silently.gguf",
            must_fail: &[Cmd::Run, Cmd::Chat, Cmd::Check],
            write: |p| with_template(p, include_str!("../../fuzz/known/chat_template-namespace-doubling-oom.jinja")),
        },
        Case {
            // Printing a namespace that holds itself recurses until the stack overflows.
            name: "template-namespace-holds-itself.gguf",
            must_fail: &[Cmd::Run, Cmd::Chat, Cmd::Check],
            write: |p| with_template(p, include_str!("../../fuzz/known/chat_template-namespace-cycle-minimal.jinja")),
        },
        Case {
            name: "template-renders-nothing.gguf",
            must_fail: &[Cmd::Run, Cmd::Chat, Cmd::Check],
            write: |p| with_template(p, ""),
        },
    ]
}

/// The arguments of `command` on `file`; `scratch` takes convert's output.
fn args(command: Cmd, file: &Path, scratch: &Path) -> Vec<String> {
    let file = file.display().to_string();
    let words: Vec<String> = match command {
        Cmd::Inspect => vec!["inspect".into(), file],
        Cmd::Validate => vec!["validate".into(), file],
        Cmd::Run => vec!["run".into(), file, "-p".into(), "Hi".into(), "-n".into(), "2".into()],
        Cmd::Chat => vec!["chat".into(), file, "-n".into(), "2".into()],
        Cmd::Check => vec!["check".into(), file],
        Cmd::Convert => vec!["convert".into(), file, converted(scratch).display().to_string(), "--force".into()],
        Cmd::DiffTensors => vec!["diff-tensors".into(), SMOLLM2.require().display().to_string(), file],
    };
    words
}

fn converted(scratch: &Path) -> PathBuf {
    scratch.join("converted.apr")
}

/// What went wrong running `command` on `file`, if anything.
fn judge(case: &Case, command: Cmd, file: &Path, scratch: &Path) -> Option<String> {
    let mut process = Command::cargo_bin("cargo-apr").unwrap();
    process.arg("apr").args(args(command, file, scratch)).write_stdin("Hi\n").timeout(TIME_LIMIT);
    let output = process.output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let tail: String = said.chars().rev().take(400).collect::<String>().chars().rev().collect();
    let code = match output.status.code() {
        None => return Some(format!("killed after {TIME_LIMIT:?} (hang or unbounded work)")),
        Some(101) => return Some(format!("panicked: {tail}")),
        Some(code) => code,
    };
    if case.must_fail.contains(&command) {
        let named = said.contains(case.name);
        if code != 1 || !named {
            return Some(format!(
                "exit {code}, {}: {tail}",
                if named { "names the file" } else { "does not name the file" }
            ));
        }
    } else if ![0, 1, 5].contains(&code) {
        return Some(format!("exit {code}: {tail}"));
    }
    if command == Cmd::Convert && code == 0 {
        return unreadable_output(&converted(scratch));
    }
    None
}

/// A file `convert` wrote must open again.
fn unreadable_output(written: &Path) -> Option<String> {
    let mut inspect = Command::cargo_bin("cargo-apr").unwrap();
    let output = inspect.arg("apr").arg("inspect").arg(written).timeout(TIME_LIMIT).output().unwrap();
    let _ = std::fs::remove_file(written);
    (output.status.code() != Some(0))
        .then(|| format!("wrote a file it cannot read back: {}", String::from_utf8_lossy(&output.stderr)))
}

#[test]
fn every_command_refuses_every_hostile_file_without_panic_or_hang() {
    let kept = std::env::var_os("APR_HOSTILE_CORPUS").map(PathBuf::from);
    let temp = tempfile::tempdir().unwrap();
    let dir = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in cases() {
        let file = dir.join(case.name);
        (case.write)(&file);
        for command in ALL {
            if let Some(problem) = judge(&case, command, &file, scratch.path()) {
                failures.push(format!("{} {command:?}: {problem}", case.name));
            }
        }
        if kept.is_none() {
            std::fs::remove_file(&file).unwrap();
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// The control: the same commands pass an unedited copy written the same way,
/// so each failure above comes from its edit, not from the harness or the writer.
#[test]
fn every_command_passes_an_unedited_copy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("unedited.gguf");
    edited(&file, |_| {});
    let mut failures = Vec::new();
    for command in ALL {
        let mut process = Command::cargo_bin("cargo-apr").unwrap();
        process.arg("apr").args(args(command, &file, dir.path())).write_stdin("Hi\n").timeout(TIME_LIMIT);
        let output = process.output().unwrap();
        if output.status.code() != Some(0) {
            let said =
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            failures.push(format!("{command:?}: {:?}: {said}", output.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn empty_prompts_are_errors_not_panics() {
    let model = SMOLLM2.require().display().to_string();
    let commands: [&[&str]; 4] = [
        &["run", &model, "-p", ""],
        &["run", &model, "--raw", "-p", ""],
        &["run", &model, "-p", "", "--raw", "--json"],
        &["compare-inference", &model, &model, "-p", "", "--raw"],
    ];
    for words in commands {
        let output =
            Command::cargo_bin("cargo-apr").unwrap().arg("apr").args(words).timeout(TIME_LIMIT).output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(matches!(output.status.code(), Some(1 | 2)), "{words:?}: {:?} {err}", output.status.code());
        assert!(err.contains("prompt"), "{words:?}: {err}");
    }
}

// ---- Files written by hand ----

fn write_prefix(path: &Path, bytes: usize) {
    let model = std::fs::read(SMOLLM2.require()).unwrap();
    std::fs::write(path, &model[..bytes]).unwrap();
}

/// A GGUF v3 header with the given counts, followed by `rest`.
fn write_gguf_header(path: &Path, tensors: u64, kvs: u64, rest: &[u8]) {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(tensors.to_le_bytes());
    bytes.extend(kvs.to_le_bytes());
    bytes.extend(rest);
    std::fs::write(path, bytes).unwrap();
}

/// A GGUF whose one key holds a u8 array that claims `count` elements and has `present`.
fn write_u8_array(path: &Path, count: u64, present: usize) {
    let key = "general.junk";
    let mut kv = (key.len() as u64).to_le_bytes().to_vec();
    kv.extend(key.as_bytes());
    kv.extend((MetaType::Array as u32).to_le_bytes());
    kv.extend((MetaType::U8 as u32).to_le_bytes());
    kv.extend(count.to_le_bytes());
    kv.resize(kv.len() + present, 7);
    write_gguf_header(path, 0, 1, &kv);
}

// ---- SmolLM2 with edits, through the project's GGUF writer ----

/// SmolLM2's metadata and tensors with some replaced; the rest stream from the file.
struct Edited<'a> {
    file: FileSource<'a>,
    metadata: Metadata,
    specs: Vec<TensorSpec>,
    replaced: Vec<Option<Vec<u8>>>,
}

impl<'a> Edited<'a> {
    fn of(model: &'a ModelFile) -> Self {
        let file = FileSource::new(model);
        let specs = file.specs().to_vec();
        Edited { metadata: model.metadata().clone(), replaced: vec![None; specs.len()], specs, file }
    }

    fn set(&mut self, key: &str, value: MetaValue) {
        self.metadata.insert(key, value);
    }

    /// `name` becomes an F32 vector of `len` ones.
    fn norm(&mut self, name: &str, len: u64) {
        let i = self.specs.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("no tensor {name}"));
        self.specs[i] = TensorSpec { name: name.into(), dtype: DType::F32, shape: vec![len] };
        self.replaced[i] = Some((0..len).flat_map(|_| 1f32.to_le_bytes()).collect());
    }

    fn array(&mut self, key: &str) -> &mut MetaArray {
        match self.metadata.entries.get_mut(key) {
            Some(MetaValue::Array(array)) => array,
            other => panic!("{key} is not an array: {other:?}"),
        }
    }

    fn i32_element(&mut self, key: &str, index: usize, value: i32) {
        match self.array(key) {
            MetaArray::I32(values) => values[index] = value,
            other => panic!("{key} holds {:?}, not i32", other.elem_type()),
        }
    }

    /// The tokenizer's per-token arrays cut to `len` entries (the embedding keeps its rows).
    fn vocabulary_cut_to(&mut self, len: usize) {
        for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"] {
            if self.metadata.get(key).is_some() {
                self.array(key).truncate(len);
            }
        }
    }
}

impl TensorSource for Edited<'_> {
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }
    fn data(&self, index: usize) -> apr_engine::error::Result<Cow<'_, [u8]>> {
        match &self.replaced[index] {
            Some(bytes) => Ok(Cow::Borrowed(bytes)),
            None => self.file.data(index),
        }
    }
}

/// SmolLM2 with `edit` applied, written to `path`.
/// SmolLM2 with `template` as its chat template.
fn with_template(path: &Path, template: &str) {
    edited(path, |e| e.set("tokenizer.chat_template", MetaValue::String(template.into())))
}

fn edited(path: &Path, edit: impl FnOnce(&mut Edited)) {
    let model = ModelFile::open(SMOLLM2.require()).unwrap();
    let mut edited = Edited::of(&model);
    edit(&mut edited);
    apr_engine::container::gguf::write(path, &edited, WriteOptions { force: true }, &mut |_| {}).unwrap();
}
