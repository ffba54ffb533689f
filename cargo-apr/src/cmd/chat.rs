//! `cargo apr chat MODEL`: multi-turn chat on stdin; reuses the KV cache for
//! the part of the conversation that is unchanged.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use apr_engine::generate::{generate_observed, GenerateOptions, SamplingParams};
use apr_engine::model::{NoObserver, Observer};
use apr_engine::pipeline::Pipeline;
use apr_engine::tokenizer::chat::ChatMessage;

use super::stream::TextStream;
use super::trace_args::TraceArgs;

#[derive(clap::Args)]
pub struct Args {
    model: PathBuf,
    #[arg(long)]
    system: Option<String>,
    /// Let special-token text typed by the user (`<|im_end|>`) become the special token.
    #[arg(long)]
    parse_special: bool,
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Context positions to allocate.
    #[arg(long, default_value_t = 4096)]
    context: usize,
    #[command(flatten)]
    trace: TraceArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let pipeline = Pipeline::open(&args.model)?;
    let interactive = std::io::stdin().is_terminal();
    let mut messages: Vec<ChatMessage> = args.system.iter().map(|s| ChatMessage::new("system", s)).collect();
    let mut cache = pipeline.model.new_cache(args.context.min(pipeline.model.config.context_length));
    let mut cached_tokens: Vec<u32> = Vec::new();
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: SamplingParams { temperature: args.temperature, seed: args.seed, ..Default::default() },
        logits_top_k: None,
    };
    let mut tracer = args.trace.tracer(&pipeline.model);
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
        let prompt = pipeline.chat_tokens(&messages, args.parse_special)?;
        // Keep the cached prefix the new prompt shares; run only the rest.
        let shared = cached_tokens.iter().zip(&prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
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
            args.trace.print_steps(&pipeline.model, tracer.level(), &tracer.take_steps());
        }
        cached_tokens.extend_from_slice(&prompt[shared..]);
        cached_tokens.extend_from_slice(&generation.tokens);
        let reply_ids = match generation.tokens.last() {
            Some(&last) if pipeline.tokenizer.is_eog(last) => &generation.tokens[..generation.tokens.len() - 1],
            _ => &generation.tokens[..],
        };
        messages.push(ChatMessage::new("assistant", pipeline.tokenizer.decode(reply_ids)));
    }
    Ok(crate::exit::PASS)
}
