//! Generate greedily from a prompt through the model's chat template.
//!
//! `cargo run -p apr-examples --example generate -- [MODEL] ["prompt"]`

use apr_engine::generate::{generate, GenerateOptions, SamplingParams};
use apr_engine::pipeline::Pipeline;

fn main() -> anyhow::Result<()> {
    let path = apr_examples::model_path_from_args();
    let prompt = std::env::args().nth(2).unwrap_or_else(|| "Write a haiku about Rust.".into());
    let pipeline = Pipeline::open(&path)?;
    let tokens = pipeline.prompt_tokens(&prompt, None, false)?;
    let options = GenerateOptions { max_tokens: 32, sampling: SamplingParams::default(), logits_top_k: None };
    let mut cache = pipeline.model.new_cache(tokens.len() + options.max_tokens);
    let tokenizer = &pipeline.tokenizer;
    let out = generate(
        &pipeline.model,
        &mut cache,
        &tokens,
        &options,
        |t| tokenizer.is_eog(t),
        |t| {
            print!("{}", tokenizer.decode(&[t]));
        },
    )?;
    println!();
    println!(
        "{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s",
        tokens.len(),
        out.tokens.len(),
        out.timings.prefill_tok_s,
        out.timings.decode_tok_s
    );
    Ok(())
}
