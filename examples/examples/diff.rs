//! Compare two model files tensor by tensor. With one file, it is first
//! converted to APR (dtypes kept) and the two are compared: every tensor identical.
//!
//! `cargo run -p apr-examples --example diff -- [MODEL_A] [MODEL_B]`

use apr_engine::container::FormatKind;
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::diff::tensors::{diff_tensors, DiffOptions};
use apr_engine::ModelFile;

fn main() -> anyhow::Result<()> {
    let a_path = apr_examples::model_path_from_args();
    let a = ModelFile::open(&a_path)?;
    let scratch = tempfile::tempdir()?;
    let b_path = match std::env::args_os().nth(2) {
        Some(path) => path.into(),
        None => {
            let out = scratch.path().join("converted.apr");
            let options = ConvertOptions { to: FormatKind::Apr, dtype: DTypeChoice::Keep, force: false };
            let report = convert(&a, &out, options, &mut |_| {})?;
            println!("converted to {}: {} tensors carried byte for byte", out.display(), report.carried);
            out
        }
    };
    let b = ModelFile::open(&b_path)?;
    let report = diff_tensors(&a, &b, &DiffOptions::default())?;
    let s = &report.summary;
    println!(
        "{} tensors compared: {} identical, {} differ in value, {} in shape, {} in dtype; {} missing, {} extra",
        s.compared, s.identical, s.value_diffs, s.shape_mismatches, s.dtype_mismatches, s.missing, s.extra
    );
    std::process::exit(if s.mismatch() { 5 } else { 0 });
}
