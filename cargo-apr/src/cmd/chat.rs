//! `cargo apr chat MODEL`: multi-turn chat on stdin; reuses the KV cache for
//! the part of the conversation that is unchanged.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use apr_engine::generate::{generate_observed, GenerateOptions};
use apr_engine::model::{NoObserver, Observer};
use apr_engine::pipeline::Pipeline;
use apr_engine::tokenizer::chat::ChatMessage;

use super::common_args::{opened, BackendArg, ModelArg, SamplingArgs};
use super::run::{model_facts, print_fact_lines};
use super::stream::TextStream;
use super::threads;
use super::trace_args::TraceArgs;
use super::values::{self, Utf8Text};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    backend: BackendArg,
    /// A system message opening the conversation.
    #[arg(long, value_parser = Utf8Text)]
    system: Option<String>,
    /// Let special-token text typed by the user (`<|im_end|>`) become the special token.
    #[arg(long)]
    parse_special: bool,
    /// Tokens to generate at most per reply.
    #[arg(long, short = 'n', default_value_t = 512)]
    max_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Context positions to allocate.
    #[arg(long, default_value_t = 4096, value_parser = values::at_least_one)]
    context: usize,
    /// Worker threads (default: all cores).
    #[arg(long, short = 't', value_parser = values::at_least_one)]
    threads: Option<usize>,
    /// Print facts about the model and where it runs to stderr (the timings come per turn).
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    trace: TraceArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let sampling = args.sampling.params()?;
    args.trace.level()?;
    let threads = threads::configure(args.threads)?;
    let pipeline = opened(args.model.path(), Pipeline::open_on(args.model.path(), args.backend.backend))?;
    if args.verbose {
        print_fact_lines(&model_facts(&pipeline, threads));
    }
    let interactive = std::io::stdin().is_terminal();
    let mut messages: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let model_context = pipeline.model.config.context_length;
    if args.context > model_context {
        eprintln!("note: --context {} capped at the model's context length {model_context}", args.context);
    }
    let mut cache = pipeline.model.new_cache(args.context.min(model_context));
    let mut cached_tokens: Vec<u32> = Vec::new();
    let options = GenerateOptions { max_tokens: args.max_tokens, sampling, logits_top_k: None };
    let mut tracer = args.trace.tracer(&pipeline.model)?;
    // Every traced call of the session, for --trace-output.
    let mut session_steps = Vec::new();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next().transpose()? else { break };
        let line = line.trim();
        if line == "/exit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let prompt = pipeline
            .chat_tokens(&messages, args.parse_special)
            .with_context(|| format!("{}: rendering the chat template", args.model.path().display()))?;
        // Keep the cached prefix the new prompt shares; run only the rest.
        let shared =
            cached_tokens.iter().zip(&prompt).take_while(|(a, b)| a == b).count().min(prompt.len().saturating_sub(1));
        cache.truncate(shared);
        cached_tokens.truncate(shared);
        let mut stream = TextStream::new(&pipeline.tokenizer);
        let mut out = std::io::stdout().lock();
        let observer: &mut dyn Observer = match tracer.as_mut() {
            Some(t) => t,
            None => &mut NoObserver,
        };
        let generation = generate_observed(
            &pipeline.model,
            &mut cache,
            &prompt[shared..],
            &options,
            |t| pipeline.tokenizer.is_eog(t),
            |t| {
                let _ = out.write_all(stream.push(t).as_bytes());
                let _ = out.flush();
            },
            observer,
        )?;
        writeln!(out, "{}", stream.finish())?;
        let t = &generation.timings;
        eprintln!(
            "[turn {}: {} new prompt tokens ({} reused) in {:.2} s, {} tokens in {:.2} s at {:.1} tok/s]",
            messages.len().div_ceil(2),
            prompt.len() - shared,
            shared,
            t.prefill_s,
            generation.tokens.len(),
            t.decode_s,
            t.decode_tok_s
        );
        if let Some(tracer) = tracer.as_mut() {
            let steps = tracer.take_steps();
            args.trace.print_steps(&pipeline.model, tracer.level(), &steps);
            session_steps.extend(steps);
        }
        cached_tokens.extend_from_slice(&prompt[shared..]);
        cached_tokens.extend_from_slice(&generation.tokens);
        let reply_ids = match generation.tokens.last() {
            Some(&last) if pipeline.tokenizer.is_eog(last) => &generation.tokens[..generation.tokens.len() - 1],
            _ => &generation.tokens[..],
        };
        messages.push(ChatMessage::new("assistant", pipeline.tokenizer.decode(reply_ids)));
    }
    if let Some(tracer) = tracer {
        let roofline = args.trace.roofline(&pipeline.model, &session_steps);
        let mut trace = tracer.finish(&pipeline.model);
        trace.steps = session_steps;
        args.trace.finish_session(trace, roofline.as_ref())?;
    }
    Ok(crate::exit::PASS)
}
