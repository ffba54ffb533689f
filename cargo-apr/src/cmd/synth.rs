//! `cargo apr synth --like MODEL --out FILE [--seed N]`: a model with MODEL's
//! exact header and random weights; `--header-only` writes MODEL's header
//! alone, a few megabytes from which the full-size file can be made elsewhere.

use std::path::PathBuf;
use std::time::Instant;

use apr_engine::container::WriteOptions;
use apr_engine::synth::{read_layout, synthesize, write_header_prefix};
use indicatif::{ProgressBar, ProgressStyle};

use super::convert::remove_output_on_interrupt;
use super::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// The model whose layout to copy: a GGUF file, or a header-only prefix of one.
    #[arg(long, value_name = "MODEL")]
    like: PathBuf,
    /// Where to write the synthetic model (with --header-only, the header).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Seed of the random weights; a seed always gives the same file, byte for byte (default 0).
    #[arg(long, conflicts_with = "header_only")]
    seed: Option<u64>,
    /// Write only MODEL's header (metadata and tensor table, no tensor data), to synthesize from later.
    #[arg(long)]
    header_only: bool,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let options = WriteOptions { force: args.force };
    if args.header_only {
        let len = write_header_prefix(&args.like, &args.out, options)?;
        println!("wrote {} ({}): the header of {}", args.out.display(), human_bytes(len), args.like.display());
        println!("make the model from it with: cargo apr synth --like {} --out MODEL.gguf", args.out.display());
        return Ok(crate::exit::PASS);
    }
    let layout = read_layout(&args.like)?.parsed;
    remove_output_on_interrupt()?;
    let started = Instant::now();
    let bar = ProgressBar::new(layout.tensors.iter().map(|t| t.size).sum());
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}").expect("valid template"),
    );
    let seed = args.seed.unwrap_or(0);
    let report = synthesize(&layout, &args.out, seed, options, &mut |bytes| bar.inc(bytes))?;
    bar.finish_and_clear();
    println!(
        "wrote {} ({}): {} tensors, {:.2} B parameters laid out like {}, random weights from seed {seed}, in {:.1} s",
        args.out.display(),
        human_bytes(report.bytes_written),
        report.tensors,
        report.parameters as f64 / 1e9,
        args.like.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(crate::exit::PASS)
}
