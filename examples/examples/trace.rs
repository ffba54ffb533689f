//! Trace a short generation layer by layer: per-layer times and the
//! statistics of every activation boundary of the last step.
//!
//! `cargo run -p apr-examples --example trace -- [MODEL]`

use apr_engine::generate::{generate_observed, GenerateOptions, SamplingParams};
use apr_engine::pipeline::Pipeline;
use apr_engine::trace::{render, TraceLevel, Tracer};

fn main() -> anyhow::Result<()> {
    let path = apr_examples::model_path_from_args();
    let pipeline = Pipeline::open(&path)?;
    let tokens = pipeline.prompt_tokens("What is 2+2?", None, false)?;
    let options = GenerateOptions { max_tokens: 3, sampling: SamplingParams::default(), logits_top_k: None };
    let mut cache = pipeline.model.new_cache(tokens.len() + options.max_tokens);
    let mut tracer = Tracer::new(TraceLevel::Payload, &pipeline.model.config);
    let tokenizer = &pipeline.tokenizer;
    let out = generate_observed(
        &pipeline.model,
        &mut cache,
        &tokens,
        &options,
        |t| tokenizer.is_eog(t),
        |_| {},
        &mut tracer,
    )?;
    println!("generated {:?}", tokenizer.decode(&out.tokens));
    let trace = tracer.finish(&pipeline.model);
    print!("{}", render::run_report(&trace.steps, trace.model.layers, trace.level));
    Ok(())
}
