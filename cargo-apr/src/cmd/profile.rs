//! `cargo apr profile MODEL`: per-token decode latency percentiles and
//! throughput; with `--ci`, assertions printed PASS/FAIL (exit 1 on any FAIL).

use std::time::Duration;

use apr_engine::bench::{decode_latencies, percentile};
use apr_engine::container::ModelFile;
use apr_engine::model::Model;
use serde::Serialize;

use super::color::status;
use super::common_args::{opened, BackendArg, ModelArg};
use super::{threads, values};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("assertions").multiple(true)))]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// Untimed decode steps before measuring.
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    /// Timed decode steps.
    #[arg(long, default_value_t = 64, value_parser = values::at_least_one)]
    measure: usize,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', value_parser = values::at_least_one)]
    threads: Option<usize>,
    /// Check the --assert-* limits (at least one is needed) and exit 1 if any fails.
    #[arg(long, requires = "assertions")]
    ci: bool,
    /// Minimum decode throughput, tokens per second (needs --ci).
    #[arg(long, value_name = "TOK_S", group = "assertions", requires = "ci")]
    assert_throughput: Option<f64>,
    /// Maximum median per-token latency, milliseconds (needs --ci).
    #[arg(long, value_name = "MS", group = "assertions", requires = "ci")]
    assert_p50: Option<f64>,
    /// Maximum 99th-percentile per-token latency, milliseconds (needs --ci).
    #[arg(long, value_name = "MS", group = "assertions", requires = "ci")]
    assert_p99: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Assertion {
    name: &'static str,
    limit: f64,
    value: f64,
    passed: bool,
}

#[derive(Serialize)]
struct ProfileJson {
    schema: &'static str,
    tokens: usize,
    threads: usize,
    throughput_tok_s: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    min_ms: f64,
    max_ms: f64,
    assertions: Vec<Assertion>,
    passed: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let threads = threads::configure(args.threads)?;
    let model = Model::load(opened(args.model.path(), ModelFile::open(args.model.path()))?, args.backend.backend)
        .map_err(|e| e.about_file(args.model.path()))?;
    let latencies = decode_latencies(&model, args.warmup, args.measure)?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total: Duration = latencies.iter().sum();
    let throughput = latencies.len() as f64 / total.as_secs_f64();
    let (p50, p99) = (ms(percentile(&latencies, 50.0)), ms(percentile(&latencies, 99.0)));
    let mut assertions = Vec::new();
    if let Some(limit) = args.assert_throughput {
        assertions.push(Assertion { name: "throughput", limit, value: throughput, passed: throughput >= limit });
    }
    if let Some(limit) = args.assert_p50 {
        assertions.push(Assertion { name: "p50", limit, value: p50, passed: p50 <= limit });
    }
    if let Some(limit) = args.assert_p99 {
        assertions.push(Assertion { name: "p99", limit, value: p99, passed: p99 <= limit });
    }
    let passed = assertions.iter().all(|a| a.passed);
    let report = ProfileJson {
        schema: "apr.profile.v1",
        tokens: latencies.len(),
        threads,
        throughput_tok_s: throughput,
        p50_ms: p50,
        p90_ms: ms(percentile(&latencies, 90.0)),
        p99_ms: p99,
        min_ms: ms(*latencies.iter().min().unwrap_or(&Duration::ZERO)),
        max_ms: ms(*latencies.iter().max().unwrap_or(&Duration::ZERO)),
        assertions,
        passed,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{} decode tokens on {threads} threads: {:.2} tok/s", report.tokens, report.throughput_tok_s);
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  min {:.2}  max {:.2}",
            report.p50_ms, report.p90_ms, report.p99_ms, report.min_ms, report.max_ms
        );
        if args.ci {
            for a in &report.assertions {
                let op = if a.name == "throughput" { ">=" } else { "<=" };
                println!(
                    "{} {}: {:.2} {op} {:.2}",
                    status(if a.passed { "PASS" } else { "FAIL" }),
                    a.name,
                    a.value,
                    a.limit
                );
            }
        }
    }
    Ok(if args.ci && !passed { crate::exit::FAILURE } else { crate::exit::PASS })
}
