//! `cargo apr diff-tensors A B [--filter S] [--json]`: exit 5 on any mismatch.

use std::path::PathBuf;

use apr_engine::diff::tensors::{diff_tensors, DiffOptions, TensorDiffReport, Verdict};
use apr_engine::ModelFile;

use super::common_args::opened;

#[derive(clap::Args)]
pub struct Args {
    /// Model A.
    a: PathBuf,
    /// Model B, compared tensor by tensor against A.
    b: PathBuf,
    /// Only tensors whose canonical name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let a = opened(&args.a, ModelFile::open(&args.a))?;
    let b = opened(&args.b, ModelFile::open(&args.b))?;
    let report = diff_tensors(&a, &b, &DiffOptions { filter: args.filter.clone() })?;
    let s = &report.summary;
    if let Some(filter) = &args.filter {
        // A filter that selects nothing would report EQUAL about nothing.
        if s.compared + s.missing + s.extra == 0 {
            anyhow::bail!("--filter {filter:?} matches no tensor of {} or {}", args.a.display(), args.b.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_human(&report);
    }
    Ok(if report.summary.mismatch() { crate::exit::MISMATCH } else { crate::exit::PASS })
}

fn print_human(r: &TensorDiffReport) {
    println!("A: {}\nB: {}", r.a, r.b);
    for name in &r.missing {
        println!("  MISSING   {name}: in A, not in B");
    }
    for name in &r.extra {
        println!("  EXTRA     {name}: in B, not in A");
    }
    for t in &r.tensors {
        let dtypes = if t.dtype_a == t.dtype_b { t.dtype_a.clone() } else { format!("{} vs {}", t.dtype_a, t.dtype_b) };
        match &t.verdict {
            Verdict::Identical => {}
            Verdict::Values { metrics: m, .. } if m.max_abs_diff == 0.0 && m.non_finite == 0 => {
                println!("  SAME      {:<44} {dtypes}: equal values", t.name)
            }
            Verdict::Values { metrics: m, .. } => println!(
                "  VALUES    {:<44} {dtypes}: max abs diff {:.3e}, NMSE {:.3e}, cosine {:.6}{}",
                t.name,
                m.max_abs_diff,
                m.nmse,
                m.cosine,
                if m.non_finite > 0 { format!(", {} non-finite", m.non_finite) } else { String::new() }
            ),
            Verdict::Transposed { fix } => {
                println!("  TRANSPOSED {:<43} {:?} vs {:?}: {fix}", t.name, t.shape_a, t.shape_b)
            }
            Verdict::ShapeMismatch => println!("  SHAPE     {:<44} {:?} vs {:?}", t.name, t.shape_a, t.shape_b),
        }
    }
    let s = &r.summary;
    println!(
        "{} compared: {} identical, {} value diffs, {} dtype mismatches, {} shape mismatches, {} missing, {} extra => {}",
        s.compared,
        s.identical,
        s.value_diffs,
        s.dtype_mismatches,
        s.shape_mismatches,
        s.missing,
        s.extra,
        if s.mismatch() { "MISMATCH" } else { "EQUAL" }
    );
}
