//! `cargo apr kld MODEL --text F`: the engine's distance to exact math over a
//! text run teacher-forced, and with `--against-llama-logits F` llama.cpp's
//! distance to the same exact reference (from its `--kl-divergence-base` file).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;

use apr_engine::accuracy::kld::{self, Chunks, KldReport, Summary};
use apr_engine::accuracy::llama_kld_base;
use apr_engine::backend::BackendKind;
use apr_engine::model::Model;
use apr_engine::pipeline::Pipeline;

use super::common_args::ModelArg;
use super::prompt_args::read_bounded;
use super::{threads, UsageError};
use crate::exit;

/// llama-perplexity's chunk size in `scripts/llama_kld_base.sh`.
const DEFAULT_CTX: usize = 128;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// The text to run teacher-forced (read as `llama-perplexity -f` reads it).
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Tokens per chunk; each chunk is scored on its second half, as llama-perplexity
    /// does [default: 128, or the base file's]
    #[arg(long, short = 'c', value_name = "N")]
    ctx: Option<usize>,
    /// Score only the first N chunks.
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// llama.cpp's log-probabilities for the same text (`llama-perplexity
    /// --kl-divergence-base F`): llama.cpp's distance to the exact reference too.
    #[arg(long, value_name = "FILE")]
    against_llama_logits: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Print the report, with every scored position, as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.chunks == Some(0) {
        return Err(UsageError("--chunks 0 scores nothing".into()).into());
    }
    if let Some(ctx) = args.ctx.filter(|&c| c < kld::MIN_CTX) {
        return Err(UsageError(format!(
            "--ctx {ctx}: a chunk of fewer than {} tokens scores no position",
            kld::MIN_CTX
        ))
        .into());
    }
    threads::configure(args.threads)?;
    let llama = args.against_llama_logits.as_deref().map(llama_kld_base::read).transpose()?;
    let n_ctx = match (&llama, args.ctx) {
        (Some(base), Some(asked)) if asked != base.n_ctx() => {
            let file = base.path().display();
            return Err(UsageError(format!("--ctx {asked}: {file} was written with chunks of {}", base.n_ctx())).into());
        }
        (Some(base), _) => base.n_ctx(),
        (None, asked) => asked.unwrap_or(DEFAULT_CTX),
    };
    let path = args.model.path();
    let fast = Pipeline::open(path)?;
    let exact =
        Model::load(apr_engine::ModelFile::open(path)?, BackendKind::CpuReference).map_err(|e| e.about_file(path))?;
    let file = std::fs::File::open(&args.text).with_context(|| format!("{}: cannot open", args.text.display()))?;
    let text = read_bounded(file, &args.text, "text")?;
    let chunks = Chunks::of_text(&fast.tokenizer, &text, n_ctx, args.chunks)
        .with_context(|| format!("{}", args.text.display()))?;
    if !args.json {
        println!(
            "{}: {} chunks of {n_ctx} tokens of {}, {} scored positions; exact = {} (weights dequantized, f64 dots)",
            path.display(),
            chunks.n_chunk(),
            args.text.display(),
            chunks.n_chunk() * chunks.scored_in_chunk().len(),
            exact.backend_name(),
        );
    }
    // The exact backend takes seconds to minutes per chunk: show progress on a terminal.
    let show_progress = std::io::stderr().is_terminal();
    let report = kld::measure(&fast.model, &exact, &chunks, llama.as_ref(), |done, all| {
        if show_progress {
            eprint!("\rchunk {done}/{all}{}", if done == all { "\n" } else { "" });
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    Ok(exit::PASS)
}

fn print_summary(report: &KldReport) {
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>8} {:>11} {:>11}",
        "engine", "mean KL", "p99 KL", "max KL", "top-1", "max|dlogp|", "max|dlogit|"
    );
    print_row(&format!("apr ({})", report.engine), &report.apr);
    if let Some(llama) = &report.llama_cpp {
        print_row("llama.cpp", llama);
    }
    if let Some(kl) = report.apr_mean_kl_on_llama_outcomes {
        println!(
            "llama.cpp's KL is over the tokens above its file's floor (16 nats under its top) and the rest as one; \
             apr's mean KL scored so: {kl:.3e}"
        );
    }
    if let Some(d) = &report.apr_minus_llama_cpp {
        let verdict = match (d.is_significant(), d.mean <= 0.0) {
            (false, _) => "not told apart by this text (within two standard errors)",
            (true, true) => "apr is closer to exact math",
            (true, false) => "llama.cpp is closer to exact math",
        };
        println!("apr - llama.cpp mean KL: {:+.2e} +/- {:.2e}: {verdict}", d.mean, d.standard_error);
    }
    println!(
        "KL is KL(exact || engine) in nats; top-1: share of positions whose top token is exact math's; \
         max|dlogp| over the tokens within {} nats of the exact top",
        kld::LOGPROB_WINDOW
    );
}

fn print_row(name: &str, s: &Summary) {
    let dlogit = s.max_abs_dlogit.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    println!(
        "{name:<14} {:>10.3e} {:>10.3e} {:>10.3e} {:>7.2}% {:>11.4} {:>11}",
        s.mean_kl,
        s.p99_kl,
        s.max_kl,
        100.0 * s.top1_agreement,
        s.max_abs_dlogprob,
        dlogit
    );
}
