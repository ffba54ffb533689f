//! `cargo apr bench MODEL`: llama-bench-style prefill (pp) and decode (tg) throughput.

use std::time::Instant;

use apr_engine::backend::cpu::Cpu;
use apr_engine::bench::{bench, peak_rss_bytes, BenchOptions};
use apr_engine::container::ModelFile;
use apr_engine::model::Model;
use serde_json::json;

use super::common_args::{opened, ModelArg};
use super::{human_bytes, threads, values};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    /// Prompt tokens of the prefill test (pp).
    #[arg(long, default_value_t = 512, value_parser = values::at_least_one)]
    prompt_tokens: usize,
    /// Generated tokens of the decode test (tg).
    #[arg(long, default_value_t = 128, value_parser = values::at_least_one)]
    gen_tokens: usize,
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

pub fn run(args: Args) -> anyhow::Result<u8> {
    let threads = threads::configure(args.threads)?;
    let started = Instant::now();
    let file = opened(args.model.path(), ModelFile::open(args.model.path()))?;
    let size = file.file_size();
    let model = Model::load(file, Box::new(Cpu))?;
    let load_s = started.elapsed().as_secs_f64();
    let options = BenchOptions { prompt_tokens: args.prompt_tokens, gen_tokens: args.gen_tokens, reps: args.reps };
    let r = bench(&model, options)?;
    let rss = peak_rss_bytes();
    if args.json {
        let mut value = serde_json::to_value(&r)?;
        value["schema"] = json!("apr.bench.v1");
        value["model"] = json!(args.model.path().display().to_string());
        value["file_bytes"] = json!(size);
        value["threads"] = json!(threads);
        value["backend"] = json!(model.backend_name());
        value["load_s"] = json!(load_s);
        value["peak_rss_bytes"] = json!(rss);
        println!("{}", serde_json::to_string(&value)?);
        return Ok(crate::exit::PASS);
    }
    let name = args.model.path().file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    println!(
        "| {:<40} | {:>10} | {:>7} | {:>7} | {:>8} | {:>18} |",
        "model", "size", "backend", "threads", "test", "t/s"
    );
    println!("| {:-<40} | {:->10} | {:->7} | {:->7} | {:->8} | {:->18} |", "", "", "", "", "", "");
    let rows = [
        (format!("pp{}", r.prompt_tokens), r.prompt_tok_s, r.prompt_tok_s_std),
        (format!("tg{}", r.gen_tokens), r.decode_tok_s, r.decode_tok_s_std),
    ];
    for (test, mean, std) in rows {
        println!(
            "| {name:<40} | {:>10} | {:>7} | {threads:>7} | {test:>8} | {:>18} |",
            human_bytes(size),
            model.backend_name(),
            format!("{mean:.2} ± {std:.2}")
        );
    }
    println!("load {load_s:.3} s, peak RSS {}", rss.map_or("unknown".into(), human_bytes));
    Ok(crate::exit::PASS)
}
