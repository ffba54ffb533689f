//! `cargo apr bench MODEL`: llama-bench-style prefill (pp) and decode (tg)
//! throughput, one row per test printed as soon as it finishes.

use std::io::Write;
use std::time::Instant;

use apr_engine::bench::{bench, peak_rss_bytes, BenchOptions};
use apr_engine::container::ModelFile;
use apr_engine::model::Model;
use serde::Serialize;
use serde_json::json;

use super::common_args::{opened, BackendArg, ModelArg};
use super::{human_bytes, threads, values, UsageError};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// Prompt lengths of the prefill tests, comma-separated (`-p 64,512`); 0 runs none.
    #[arg(long = "prompt-tokens", short = 'p', value_delimiter = ',', default_value = "512")]
    prompt_tokens: Vec<usize>,
    /// Token counts of the decode tests, comma-separated (`-n 16,128`); 0 runs none.
    #[arg(long = "gen-tokens", short = 'n', value_delimiter = ',', default_value = "128")]
    gen_tokens: Vec<usize>,
    /// Timed repetitions of each test (after one untimed warm-up).
    #[arg(long, short = 'r', default_value_t = 5, value_parser = values::at_least_one)]
    reps: usize,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', value_parser = values::at_least_one)]
    threads: Option<usize>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// One test: `pp512` (prefill of 512 tokens) or `tg128` (128 decode steps).
#[derive(Serialize)]
struct Row {
    test: String,
    tokens: usize,
    tok_s: f64,
    tok_s_std: f64,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let tests = tests(&args)?;
    let threads = threads::configure(args.threads)?;
    let started = Instant::now();
    let path = args.model.path();
    let file = opened(path, ModelFile::open(path))?;
    let size = file.file_size();
    let model = Model::load(file, args.backend.backend).map_err(|e| e.about_file(args.model.path()))?;
    let load_s = started.elapsed().as_secs_f64();
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let table_row = |test: &str, result: &str| {
        format!(
            "| {name:<40} | {:>10} | {:>7} | {threads:>7} | {test:>8} | {result:>18} |",
            human_bytes(size),
            model.backend_name()
        )
    };
    if !args.json {
        println!(
            "| {:<40} | {:>10} | {:>7} | {:>7} | {:>8} | {:>18} |",
            "model", "size", "backend", "threads", "test", "t/s"
        );
        println!("| {:-<40} | {:->10} | {:->7} | {:->7} | {:->8} | {:->18} |", "", "", "", "", "", "");
    }
    let mut rows = Vec::new();
    for (prompt_tokens, gen_tokens) in tests {
        let row = run_test(&model, prompt_tokens, gen_tokens, args.reps)?;
        if !args.json {
            println!("{}", table_row(&row.test, &format!("{:.2} ± {:.2}", row.tok_s, row.tok_s_std)));
            let _ = std::io::stdout().flush();
        }
        rows.push(row);
    }
    let rss = peak_rss_bytes();
    // Device memory after every test (device-wide; nothing is freed mid-run, so this is the peak).
    let device_memory = model.device_memory_in_use();
    if args.json {
        let report = json!({
            "schema": "apr.bench.v1",
            "model": path.display().to_string(),
            "file_bytes": size,
            "threads": threads,
            "backend": model.backend_name(),
            "reps": args.reps,
            "load_s": load_s,
            "peak_rss_bytes": rss,
            "device_memory_bytes": device_memory,
            "results": rows,
        });
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("load {load_s:.3} s, peak RSS {}", rss.map_or("unknown".into(), human_bytes));
        match device_memory {
            Some(bytes) => println!(", device memory in use {} (the whole device)", human_bytes(bytes)),
            None => println!(),
        }
    }
    Ok(crate::exit::PASS)
}

/// `(prompt tokens, generated tokens)` of each test, pp tests first, as llama-bench orders them.
fn tests(args: &Args) -> Result<Vec<(usize, usize)>, UsageError> {
    let pp = args.prompt_tokens.iter().filter(|&&n| n > 0).map(|&n| (n, 0));
    let tg = args.gen_tokens.iter().filter(|&&n| n > 0).map(|&n| (0, n));
    let tests: Vec<_> = pp.chain(tg).collect();
    if tests.is_empty() {
        return Err(UsageError("no test to run: --prompt-tokens and --gen-tokens are both 0".into()));
    }
    Ok(tests)
}

fn run_test(model: &Model, prompt_tokens: usize, gen_tokens: usize, reps: usize) -> anyhow::Result<Row> {
    let r = bench(model, BenchOptions { prompt_tokens, gen_tokens, reps })?;
    Ok(if prompt_tokens > 0 {
        Row {
            test: format!("pp{prompt_tokens}"),
            tokens: prompt_tokens,
            tok_s: r.prompt_tok_s,
            tok_s_std: r.prompt_tok_s_std,
        }
    } else {
        Row {
            test: format!("tg{gen_tokens}"),
            tokens: gen_tokens,
            tok_s: r.decode_tok_s,
            tok_s_std: r.decode_tok_s_std,
        }
    })
}
