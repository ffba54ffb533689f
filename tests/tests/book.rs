//! The book (`book/src`) cannot drift from the code:
//!
//! - every ```rust block is an `{{#include}}` of a file that is the root of a
//!   compiled workspace target (a test, an example, a library), so every Rust
//!   sample is built and run by the test suite;
//! - every `{{#include}}` names a file that exists, and every anchor or line
//!   range it names exists in that file;
//! - the dtype table of `dtypes.md` and the dtype bytes of `apr-format.md`
//!   agree, row by row, with the engine's own `DType` table and with what the
//!   engine does (containers written and read back, kernels, quantizers).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use apr_engine::container::WriteOptions;
use apr_engine::container::{apr, gguf, safetensors, MemorySource, MetaValue, Metadata, ModelFile, TensorSpec};
use apr_engine::kernels::dot::scalar_kernel;
use apr_engine::quant;
use apr_engine::testing::roundtrip::nmse_bound;
use apr_engine::DType;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

fn book_src() -> PathBuf {
    workspace_root().join("book/src")
}

/// Every `.md` file under `dir`, sorted.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

/// A fenced code block: its info string's language, the line of its opening
/// fence (1-based) and its content lines with their numbers.
struct Fence {
    language: String,
    line: usize,
    body: Vec<(usize, String)>,
}

/// The fenced blocks of a Markdown text (backtick or tilde fences, as
/// CommonMark opens and closes them).
fn fences(text: &str) -> Vec<Fence> {
    let mut out = Vec::new();
    let mut open: Option<(String, Fence)> = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        let marker: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
        let is_fence = marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap());
        match &mut open {
            Some((opener, fence)) => {
                let closes =
                    is_fence && marker.starts_with(opener.as_str()) && trimmed[marker.len()..].trim().is_empty();
                if closes {
                    out.push(open.take().unwrap().1);
                } else {
                    fence.body.push((number, line.to_string()));
                }
            }
            None if is_fence => {
                let info = trimmed[marker.len()..].trim();
                let language = info.split([',', ' ']).next().unwrap_or("").to_string();
                open = Some((marker, Fence { language, line: number, body: Vec::new() }));
            }
            None => {}
        }
    }
    if let Some((_, fence)) = open {
        out.push(fence);
    }
    out
}

/// An `{{#include PATH[:SPEC]}}` (or `#rustdoc_include`) directive on a line.
struct Include {
    path: PathBuf,
    spec: Option<String>,
}

fn includes_in(line: &str, chapter_dir: &Path) -> Vec<Include> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{#") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else { break };
        let directive = after[..end].trim();
        rest = &after[end + 2..];
        let argument = directive.strip_prefix("include ").or_else(|| directive.strip_prefix("rustdoc_include "));
        if let Some(argument) = argument {
            let argument = argument.trim();
            let (path, spec) = match argument.split_once(':') {
                Some((path, spec)) => (path, Some(spec.to_string())),
                None => (argument, None),
            };
            out.push(Include { path: chapter_dir.join(path), spec });
        }
    }
    out
}

/// The root source files of every target of every workspace package, from `cargo metadata`.
fn compiled_target_roots() -> BTreeSet<PathBuf> {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut roots = BTreeSet::new();
    for package in metadata["packages"].as_array().expect("packages") {
        for target in package["targets"].as_array().expect("targets") {
            let path = PathBuf::from(target["src_path"].as_str().expect("src_path"));
            roots.insert(path.canonicalize().unwrap_or(path));
        }
    }
    roots
}

/// Why an include's line range or anchor is not in `text`, if it is not.
fn check_spec(text: &str, spec: &str) -> Result<(), String> {
    let is_range = spec.split(':').all(|part| part.is_empty() || part.chars().all(|c| c.is_ascii_digit()));
    if is_range {
        let lines = text.lines().count();
        for part in spec.split(':').filter(|p| !p.is_empty()) {
            let n: usize = part.parse().unwrap();
            if n == 0 || n > lines {
                return Err(format!("line {n} is outside the file's {lines} lines"));
            }
        }
        return Ok(());
    }
    let has_marker =
        |marker: &str| text.lines().any(|l| l.split_once(marker).is_some_and(|(_, after)| after.trim() == spec));
    match (has_marker("ANCHOR:"), has_marker("ANCHOR_END:")) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("no `ANCHOR: {spec}` in the file")),
        (true, false) => Err(format!("no `ANCHOR_END: {spec}` in the file")),
    }
}

/// Every problem with the includes and Rust blocks of one chapter.
fn chapter_problems(chapter: &Path, targets: &BTreeSet<PathBuf>) -> Vec<String> {
    let text = std::fs::read_to_string(chapter).unwrap();
    let dir = chapter.parent().unwrap();
    let name = relative(chapter);
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for include in includes_in(line, dir) {
            let at = format!("{name}:{}", index + 1);
            let Ok(included) = std::fs::read_to_string(&include.path) else {
                problems.push(format!("{at}: included file {} does not exist", include.path.display()));
                continue;
            };
            if let Some(spec) = &include.spec {
                if let Err(why) = check_spec(&included, spec) {
                    problems.push(format!("{at}: {{{{#include {}:{spec}}}}}: {why}", relative(&include.path)));
                }
            }
        }
    }
    for fence in fences(&text).into_iter().filter(|f| f.language == "rust") {
        let at = format!("{name}:{}", fence.line);
        let content: Vec<&(usize, String)> = fence.body.iter().filter(|(_, l)| !l.trim().is_empty()).collect();
        let [(line, only)] = content.as_slice() else {
            problems.push(format!(
                "{at}: a ```rust block must be one {{{{#include}}}} of a compiled target's file, not inline code"
            ));
            continue;
        };
        let includes = includes_in(only, dir);
        let [include] = includes.as_slice() else {
            problems.push(format!("{name}:{line}: a ```rust block must be one {{{{#include}}}} line, found {only:?}"));
            continue;
        };
        let resolved = include.path.canonicalize().unwrap_or(include.path.clone());
        if !targets.contains(&resolved) {
            problems.push(format!(
                "{name}:{line}: {} is not the root file of a compiled workspace target (a test, example, \
                 binary or library that cargo builds), so the sample is not compiled",
                relative(&include.path)
            ));
        }
    }
    problems
}

#[test]
fn every_rust_sample_is_an_include_of_a_compiled_target_and_every_include_resolves() {
    let targets = compiled_target_roots();
    let chapters = markdown_files(&book_src());
    assert!(chapters.len() >= 5, "book/src has its chapters: {chapters:?}");
    let problems: Vec<String> = chapters.iter().flat_map(|c| chapter_problems(c, &targets)).collect();
    assert!(problems.is_empty(), "the book's samples and includes:\n{}", problems.join("\n"));
}

/// The checker itself: an inline Rust block, an include of a file that no
/// target compiles, a missing file and a missing anchor are each reported.
#[test]
fn the_sample_checker_reports_each_kind_of_problem() {
    let dir = tempfile::tempdir().unwrap();
    let sample = workspace_root().join("examples/tests/trace_diff.rs");
    let chapter = dir.path().join("chapter.md");
    let text = format!(
        "# Chapter\n\n```rust\nfn inline() {{}}\n```\n\n```rust\n{{{{#include {not_a_target}}}}}\n```\n\n\
         ```rust\n{{{{#include {sample}:diverged}}}}\n```\n\n```toml\n{{{{#include {sample}:no_such_anchor}}}}\n```\n\n\
         ```text\n{{{{#include {missing}}}}}\n```\n",
        not_a_target = workspace_root().join("book/src/SUMMARY.md").display(),
        sample = sample.display(),
        missing = dir.path().join("missing.txt").display(),
    );
    std::fs::write(&chapter, text).unwrap();
    let problems = chapter_problems(&chapter, &compiled_target_roots());
    let expect =
        ["chapter.md:4: a ```rust block must be one", "SUMMARY.md is not the root file", "no `ANCHOR: no_such_anchor`"];
    for expected in expect {
        assert!(problems.iter().any(|p| p.contains(expected)), "{expected:?} not in {problems:#?}");
    }
    assert!(problems.iter().any(|p| p.contains("missing.txt does not exist")), "{problems:#?}");
    assert_eq!(problems.len(), 4, "the valid include of a test file is not a problem: {problems:#?}");
}

/// The rows of the first Markdown table whose header starts with `header`, as trimmed cells,
/// each with its line number.
fn table_rows(text: &str, header: &str) -> Vec<(usize, Vec<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with(header)).unwrap_or_else(|| panic!("no table `{header}`"));
    lines[start + 2..]
        .iter()
        .enumerate()
        .take_while(|(_, l)| l.starts_with('|'))
        .map(|(i, l)| (start + 3 + i, l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()))
        .collect()
}

const CONTAINERS: [&str; 3] = ["GGUF", "APR", "SafeTensors"];

/// Whether a one-tensor file of `dtype` written to `container` reads back with that dtype.
fn container_holds(container: &str, dtype: DType, dir: &Path) -> bool {
    let mut meta = Metadata::default();
    meta.insert("general.architecture", MetaValue::String("test".into()));
    let mut source = MemorySource::new(meta);
    let shape = vec![2, 256];
    let bytes = vec![0u8; dtype.byte_size(&shape).unwrap() as usize];
    source.push(TensorSpec { name: "t.weight".into(), dtype, shape }, bytes).unwrap();
    let path = dir.join(format!("{}.{}", dtype.name(), container.to_lowercase()));
    let written = match container {
        "GGUF" => gguf::write(&path, &source, WriteOptions { force: true }, &mut |_| {}),
        "APR" => apr::write(&path, &source, WriteOptions { force: true }, &mut |_| {}),
        _ => safetensors::write(&path, &source, WriteOptions { force: true }, &mut |_| {}),
    };
    if written.is_err() {
        return false;
    }
    let model = ModelFile::open(&path).unwrap_or_else(|e| panic!("{} written but unreadable: {e}", path.display()));
    model.tensor("t.weight").is_some_and(|t| t.dtype() == dtype)
}

/// What each column of a dtype's row must say, computed from the engine.
fn expected_row(dtype: DType, dir: &Path) -> Vec<(&'static str, String)> {
    let bits = (dtype.block_bytes() * 8) as f64 / dtype.block_elems() as f64;
    let containers: Vec<&str> = CONTAINERS.into_iter().filter(|c| container_holds(c, dtype, dir)).collect();
    let kernel = scalar_kernel(dtype).map_or("—".to_string(), |k| k.name.trim_end_matches(" scalar").to_string());
    vec![
        ("Id", dtype.id().to_string()),
        ("Type", dtype.name().to_string()),
        ("Block elements", dtype.block_elems().to_string()),
        ("Block bytes", dtype.block_bytes().to_string()),
        ("Bits per weight", bits.to_string()),
        ("Containers", containers.join(", ")),
        ("CPU matmul kernel", kernel),
        ("Quantize from F32", if quant::can_quantize(dtype) { "yes" } else { "no" }.to_string()),
        ("Round-trip NMSE bound", nmse_bound(dtype).to_string()),
    ]
}

/// Cells compare as numbers where both are numbers (`6e-2` is `0.06`), else as text.
fn same_cell(written: &str, expected: &str) -> bool {
    match (written.parse::<f64>(), expected.parse::<f64>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => written == expected,
    }
}

#[test]
fn the_dtype_chapter_agrees_with_the_engine_row_by_row() {
    let path = book_src().join("dtypes.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let rows = table_rows(&text, "| Id | Type |");
    let dir = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (line, cells) in &rows {
        let at = format!("book/src/dtypes.md:{line}");
        let Some(dtype) = cells.get(1).and_then(|name| DType::from_name(name)) else {
            problems
                .push(format!("{at}: `{}` is not a dtype of the engine", cells.get(1).cloned().unwrap_or_default()));
            continue;
        };
        seen.push(dtype);
        let expected = expected_row(dtype, dir.path());
        if cells.len() != expected.len() {
            problems.push(format!("{at} ({dtype}): {} cells, the table has {} columns", cells.len(), expected.len()));
            continue;
        }
        for (cell, (column, value)) in cells.iter().zip(&expected) {
            if !same_cell(cell, value) {
                problems.push(format!("{at} ({dtype}): column `{column}` says `{cell}`, the engine says `{value}`"));
            }
        }
    }
    if seen != DType::ALL {
        problems.push(format!("the table's rows are {seen:?}; the engine's dtypes, in id order, are {:?}", DType::ALL));
    }
    // The prose says every type dequantizes.
    for &dtype in DType::ALL {
        if let Err(e) = quant::dequantize_to_vec(dtype, &vec![0u8; dtype.block_bytes()]) {
            problems.push(format!("{dtype} does not dequantize: {e}"));
        }
    }
    assert!(problems.is_empty(), "book/src/dtypes.md disagrees with the engine:\n{}", problems.join("\n"));
}

/// `apr-format.md` lists the dtype bytes as (Id, Type, elements / bytes) triples, two per row.
#[test]
fn the_apr_format_chapter_lists_every_dtype_byte() {
    let text = std::fs::read_to_string(book_src().join("apr-format.md")).unwrap();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (line, cells) in table_rows(&text, "| Id | Type | Block (elements / bytes) |") {
        for triple in cells.chunks(3) {
            let [id, name, block] = triple else {
                problems.push(format!("book/src/apr-format.md:{line}: a row holds (Id, Type, Block) triples"));
                continue;
            };
            let Some(dtype) = DType::from_name(name) else {
                problems.push(format!("book/src/apr-format.md:{line}: `{name}` is not a dtype of the engine"));
                continue;
            };
            seen.push(dtype);
            let expected_block = format!("{} / {}", dtype.block_elems(), dtype.block_bytes());
            if *id != dtype.id().to_string() || *block != expected_block {
                problems.push(format!(
                    "book/src/apr-format.md:{line} ({dtype}): says id {id}, block {block}; the engine: id {}, block {expected_block}",
                    dtype.id()
                ));
            }
        }
    }
    seen.sort();
    if seen != DType::ALL {
        problems.push(format!("the table lists {seen:?}; the engine knows {:?}", DType::ALL));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every chapter is in SUMMARY.md and every SUMMARY.md link is a chapter.
#[test]
fn the_summary_lists_every_chapter() {
    let src = book_src();
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let linked: BTreeSet<PathBuf> = summary
        .lines()
        .filter_map(|l| l.split_once("](").and_then(|(_, rest)| rest.split_once(')')).map(|(target, _)| target))
        .map(|target| src.join(target.split('#').next().unwrap()))
        .collect();
    let chapters: BTreeSet<PathBuf> =
        markdown_files(&src).into_iter().filter(|p| p.file_name().unwrap() != "SUMMARY.md").collect();
    let unlisted: Vec<String> = chapters.difference(&linked).map(|p| relative(p)).collect();
    let missing: Vec<String> = linked.difference(&chapters).map(|p| relative(p)).collect();
    assert!(unlisted.is_empty(), "chapters not in SUMMARY.md: {unlisted:?}");
    assert!(missing.is_empty(), "SUMMARY.md links to missing chapters: {missing:?}");
}
