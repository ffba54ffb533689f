//! `cargo apr convert IN OUT [--to apr|gguf|safetensors] [--dtype ...] [--force]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use apr_engine::container::FormatKind;
use apr_engine::container::TensorSource;
use apr_engine::convert::{convert, format_for_extension, ConvertOptions, ConvertingSource, DTypeChoice};
use apr_engine::{DType, ModelFile};
use indicatif::{ProgressBar, ProgressStyle};

use super::common_args::opened;
use super::human_bytes;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Target {
    Apr,
    Gguf,
    Safetensors,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DTypeArg {
    Keep,
    F32,
    F16,
    Bf16,
    #[value(name = "q8_0")]
    Q8_0,
    #[value(name = "q4_k")]
    Q4K,
    #[value(name = "q6_k")]
    Q6K,
}

#[derive(clap::Args)]
pub struct Args {
    /// The model to convert.
    input: PathBuf,
    /// Where to write it (format from the extension unless --to).
    output: PathBuf,
    /// Output format (default: from OUT's extension).
    #[arg(long)]
    to: Option<Target>,
    /// Dtype of the weight tensors in OUT (keep: as in IN, bytes carried unchanged).
    #[arg(long, value_enum, default_value = "keep")]
    dtype: DTypeArg,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Print what was written as one JSON object (the notes stay on stderr).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let to = match args.to {
        Some(Target::Apr) => FormatKind::Apr,
        Some(Target::Gguf) => FormatKind::Gguf,
        Some(Target::Safetensors) => FormatKind::SafeTensors,
        None => format_for_extension(&args.output)
            .with_context(|| format!("cannot tell the output format from {}; pass --to", args.output.display()))?,
    };
    let dtype = match args.dtype {
        DTypeArg::Keep => DTypeChoice::Keep,
        DTypeArg::F32 => DTypeChoice::To(DType::F32),
        DTypeArg::F16 => DTypeChoice::To(DType::F16),
        DTypeArg::Bf16 => DTypeChoice::To(DType::BF16),
        DTypeArg::Q8_0 => DTypeChoice::To(DType::Q8_0),
        DTypeArg::Q4K => DTypeChoice::To(DType::Q4_K),
        DTypeArg::Q6K => DTypeChoice::To(DType::Q6_K),
    };
    let input = opened(&args.input, ModelFile::open(&args.input))?;
    remove_output_on_interrupt()?;
    let started = Instant::now();
    let options = ConvertOptions { to, dtype, force: args.force };
    let bar = ProgressBar::new(output_tensor_bytes(&input, options)?);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}").expect("valid template"),
    );
    let report = convert(&input, &args.output, options, &mut |bytes| bar.inc(bytes))?;
    bar.finish_and_clear();
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss = apr_engine::bench::peak_rss_bytes();
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["schema"] = serde_json::json!("apr.convert.v1");
        value["input"] = serde_json::json!(args.input.display().to_string());
        value["output"] = serde_json::json!(args.output.display().to_string());
        value["seconds"] = serde_json::json!(seconds);
        value["peak_rss_bytes"] = serde_json::json!(peak_rss);
        println!("{}", serde_json::to_string(&value)?);
        return Ok(crate::exit::PASS);
    }
    println!(
        "wrote {} ({}): {} tensors, {} carried byte for byte, {} converted, {} Q/K reordered, in {seconds:.1} s",
        args.output.display(),
        human_bytes(report.bytes_written),
        report.tensors,
        report.carried,
        report.converted,
        report.reordered,
    );
    // Peak RSS counts the input's mapped pages that were read; it stays near
    // the file size because tensors are streamed one at a time.
    let peak = peak_rss.map_or("unknown".into(), human_bytes);
    println!(
        "throughput {}/s of input, peak RSS {peak} (input {})",
        human_bytes((input.file_size() as f64 / seconds.max(1e-9)) as u64),
        human_bytes(input.file_size())
    );
    Ok(crate::exit::PASS)
}

/// Ctrl-C (SIGINT) or SIGTERM while converting: the half-written temporary
/// file beside OUT is removed, then the process exits as interrupted (130).
/// (kill -9 cannot be caught; the next write to OUT removes what it left.)
pub(super) fn remove_output_on_interrupt() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        for removed in apr_engine::container::remove_unfinished_outputs() {
            eprintln!("interrupted: removed the unfinished {}", removed.display());
        }
        std::process::exit(130);
    })
    .context("cannot install the Ctrl-C handler")
}

/// The bytes of OUT's tensors, which the writer reports as it goes: the
/// progress total, different from IN's when the dtype changes.
fn output_tensor_bytes(input: &ModelFile, options: ConvertOptions) -> anyhow::Result<u64> {
    let source = ConvertingSource::new(input, options)?;
    let mut total = 0;
    for spec in source.specs() {
        total += spec.dtype.byte_size(&spec.shape).with_context(|| format!("tensor {}", spec.name))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use apr_engine::container::FormatKind;
    use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
    use apr_engine::testing::models::SMOLLM2;
    use apr_engine::{DType, ModelFile};

    #[test]
    fn the_progress_total_is_what_the_writer_reports_when_the_dtype_changes() {
        let input = ModelFile::open(SMOLLM2.require()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("q8.apr");
        let options = ConvertOptions { to: FormatKind::Apr, dtype: DTypeChoice::To(DType::Q8_0), force: false };
        let mut reported = 0;
        convert(&input, &out, options, &mut |bytes| reported += bytes).unwrap();
        let total = super::output_tensor_bytes(&input, options).unwrap();
        assert_eq!(total, reported);
        let input_total: u64 = input.tensors().iter().map(|t| t.size).sum();
        assert_ne!(total, input_total, "the case must change the size");
    }
}
