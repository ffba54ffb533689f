//! Writers never leave a file that the readers refuse, never leave their
//! temporary files behind, and clean up after a writer that was killed.

use std::io::Write;
use std::path::Path;

use apr_engine::container::FormatKind;
use apr_engine::container::{write_model_atomically, MetaValue, ModelFile, WriteOptions};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::testing::faults::{write_faulty_copy, Fault};
use apr_engine::testing::models::SMOLLM2;

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn a_file_the_reader_refuses_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.gguf");
    let error = write_model_atomically(&out, WriteOptions::default(), |w| {
        w.write_all(b"GGUF\x03\0\0\0 truncated").map_err(|e| apr_engine::error::Error::io("bad.gguf", e))
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("bad.gguf") && error.contains("does not read back"), "{error}");
    assert!(names_in(dir.path()).is_empty(), "left {:?}", names_in(dir.path()));
}

#[test]
fn a_nan_epsilon_converts_to_an_apr_that_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("nan.gguf");
    let model = ModelFile::open(SMOLLM2.require()).unwrap();
    let eps = Fault::SetMetadata("llama.attention.layer_norm_rms_epsilon".into(), MetaValue::F32(f32::NAN));
    write_faulty_copy(&model, &gguf, &[eps], false).unwrap();
    let apr = dir.path().join("nan.apr");
    let options = ConvertOptions { to: FormatKind::Apr, dtype: DTypeChoice::Keep, force: false };
    convert(&ModelFile::open(&gguf).unwrap(), &apr, options, &mut |_| {}).unwrap();
    let back = ModelFile::open(&apr).unwrap();
    let eps = back.metadata().get_f64("llama.attention.layer_norm_rms_epsilon").unwrap();
    assert!(eps.is_nan());
}

#[test]
fn stale_temporary_files_of_dead_writers_are_removed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.apr");
    // No process has a PID above the kernel's limit (at most 2^22).
    let stale = dir.path().join(".out.apr.apr-tmp-999999999-0");
    let live = dir.path().join(format!(".out.apr.apr-tmp-{}-77", std::process::id()));
    let other = dir.path().join(".other.apr.apr-tmp-999999999-0");
    for path in [&stale, &live, &other] {
        std::fs::write(path, b"partial").unwrap();
    }
    let options = ConvertOptions { to: FormatKind::Apr, dtype: DTypeChoice::Keep, force: false };
    let report = convert(&ModelFile::open(SMOLLM2.require()).unwrap(), &out, options, &mut |_| {}).unwrap();
    assert!(report.notes.iter().any(|n| n.contains(".out.apr.apr-tmp-999999999-0")), "{:?}", report.notes);
    let live_name = live.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names_in(dir.path()), [".other.apr.apr-tmp-999999999-0".to_string(), live_name, "out.apr".into()]);
}
