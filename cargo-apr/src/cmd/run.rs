//! `cargo apr run MODEL --prompt P`: generate, streamed or as one JSON object.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use apr_engine::generate::{generate_observed, GenerateOptions, Timings};
use apr_engine::model::{NoObserver, Observer};
use apr_engine::pipeline::{Pipeline, PromptMode};
use serde::Serialize;

use super::common_args::{opened, BackendArg, ModelArg, SamplingArgs};
use super::prompt_args::PromptSource;
use super::stream::TextStream;
use super::trace_args::TraceArgs;
use super::values::{self, Utf8Text};
use super::{human_bytes, threads};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    #[command(flatten)]
    prompt: PromptSource,
    /// Feed the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// A system message for the chat template.
    #[arg(long, value_parser = Utf8Text, conflicts_with = "raw")]
    system: Option<String>,
    /// Let special-token text typed by the user (`<|im_end|>`) become the special token.
    #[arg(long)]
    parse_special: bool,
    /// Tokens to generate at most.
    #[arg(long, short = 'n', default_value_t = 128)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// With --json: the K highest logits at every position.
    #[arg(long, value_name = "K", requires = "json")]
    logits_top_k: Option<usize>,
    /// Print facts about the model and the run to stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', value_parser = values::at_least_one)]
    threads: Option<usize>,
    #[command(flatten)]
    trace: TraceArgs,
}

#[derive(Serialize)]
struct RunJson {
    schema: &'static str,
    prompt_tokens: Vec<u32>,
    tokens: Vec<u32>,
    text: String,
    timings: JsonTimings,
    #[serde(skip_serializing_if = "Option::is_none")]
    logits: Option<Vec<Vec<(u32, f32)>>>,
}

#[derive(Serialize)]
struct JsonTimings {
    load_s: f64,
    #[serde(flatten)]
    run: Timings,
    total_s: f64,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let started = Instant::now();
    let sampling = args.sampling.params()?;
    args.trace.level()?;
    let prompt_text = args.prompt.read()?;
    let threads = threads::configure(args.threads)?;
    let pipeline = opened(args.model.path(), Pipeline::open_on(args.model.path(), args.backend.backend))?;
    let prompt = pipeline
        .prompt_tokens_with(
            &prompt_text,
            args.system.as_deref(),
            PromptMode { raw: args.raw, parse_special: args.parse_special },
        )
        .with_context(|| format!("{}: preparing the prompt", args.model.path().display()))?;
    let options = GenerateOptions { max_tokens: args.max_tokens, sampling, logits_top_k: args.logits_top_k };
    // Saturating: `-n 18446744073709551615` means "until the context is full", not an overflow.
    let context =
        prompt.len().saturating_add(args.max_tokens).min(pipeline.model.config.context_length.max(prompt.len() + 1));
    let mut cache = pipeline.model.new_cache(context);
    let mut stream = TextStream::new(&pipeline.tokenizer);
    let stdout = std::io::stdout();
    let mut tracer = args.trace.tracer(&pipeline.model)?;
    let observer: &mut dyn Observer = match tracer.as_mut() {
        Some(t) => t,
        None => &mut NoObserver,
    };
    let on_token = |token| {
        if !args.json {
            let mut out = stdout.lock();
            let _ = out.write_all(stream.push(token).as_bytes());
            let _ = out.flush();
        }
    };
    let is_eog = |t| pipeline.tokenizer.is_eog(t);
    let generation = generate_observed(&pipeline.model, &mut cache, &prompt, &options, is_eog, on_token, observer)?;
    let text = pipeline.tokenizer.decode(strip_eog(&pipeline, &generation.tokens));
    if args.json {
        let json = RunJson {
            schema: "apr.run.v1",
            prompt_tokens: prompt.clone(),
            tokens: generation.tokens.clone(),
            text,
            timings: JsonTimings {
                load_s: pipeline.load_time.as_secs_f64(),
                run: generation.timings.clone(),
                total_s: started.elapsed().as_secs_f64(),
            },
            logits: args.logits_top_k.map(|_| generation.top_logits.clone()),
        };
        println!("{}", serde_json::to_string(&json)?);
    } else {
        print!("{}", stream.finish());
        println!();
    }
    if let Some(tracer) = tracer {
        args.trace.finish(&pipeline.model, tracer)?;
    }
    if args.verbose {
        print_facts(&pipeline, threads, &generation.timings, prompt.len(), generation.tokens.len(), started);
    }
    Ok(crate::exit::PASS)
}

/// Generated tokens without the end-of-generation token that stopped them.
fn strip_eog<'a>(pipeline: &Pipeline, tokens: &'a [u32]) -> &'a [u32] {
    match tokens.last() {
        Some(&t) if pipeline.tokenizer.is_eog(t) => &tokens[..tokens.len() - 1],
        _ => tokens,
    }
}

fn print_facts(p: &Pipeline, threads: usize, t: &Timings, prompt: usize, generated: usize, started: Instant) {
    let mut facts = model_facts(p, threads);
    facts.extend([
        ("prefill", format!("{prompt} tokens in {:.3} s ({:.1} tok/s)", t.prefill_s, t.prefill_tok_s)),
        ("decode", format!("{generated} tokens in {:.3} s ({:.1} tok/s)", t.decode_s, t.decode_tok_s)),
        ("total time", format!("{:.3} s", started.elapsed().as_secs_f64())),
    ]);
    print_fact_lines(&facts);
}

/// What `--verbose` says about the model and where it runs (run and chat).
pub fn model_facts(p: &Pipeline, threads: usize) -> Vec<(&'static str, String)> {
    let c = &p.model.config;
    let file = &p.model.file;
    let quant = apr_engine::inspect::inspect(file, false)
        .dtypes
        .iter()
        .map(|(d, n)| format!("{d}x{}", n.tensors))
        .collect::<Vec<_>>()
        .join(" ");
    vec![
        ("source", file.path.display().to_string()),
        ("file size", human_bytes(file.file_size())),
        ("format", file.format().to_string()),
        ("architecture", c.architecture.clone()),
        ("layers", c.layers.to_string()),
        ("vocabulary", c.vocab.to_string()),
        ("hidden size", c.hidden.to_string()),
        ("context length", c.context_length.to_string()),
        ("quantization", quant),
        ("threads", threads.to_string()),
        ("backend", p.model.backend_description()),
        ("load time", format!("{:.3} s", p.load_time.as_secs_f64())),
    ]
}

/// `[apr] name   value` lines on stderr.
pub fn print_fact_lines(facts: &[(&str, String)]) {
    for (k, v) in facts {
        eprintln!("[apr] {k:<15} {v}");
    }
}
