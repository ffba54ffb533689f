//! The same model from every container: the 0.5B converted to APR with its
//! quantized blocks kept must give the GGUF's tokens and bit-identical
//! logits; converted to SafeTensors F32 and to APR F32, the two must give
//! identical logits to each other and the GGUF's tokens for at least the
//! first 8 generated tokens of every reference prompt. And a Llama model runs.

use std::path::{Path, PathBuf};

use apr_engine::container::{FormatKind, ModelFile};
use apr_engine::convert::{convert, ConvertOptions, DTypeChoice};
use apr_engine::generate::{generate, GenerateOptions};
use apr_engine::model::Logits;
use apr_engine::pipeline::Pipeline;
use apr_engine::testing::models::{QWEN_0_5B, SMOLLM2};
use apr_engine::DType;
use serde_json::Value;

/// The 0.5B converted to `name` in `dir` (a per-test temporary directory,
/// removed when the test ends: these files are gigabytes).
fn convert_into(dir: &Path, name: &str, to: FormatKind, dtype: DTypeChoice) -> PathBuf {
    let original = ModelFile::open(QWEN_0_5B.require()).unwrap();
    let path = dir.join(name);
    convert(&original, &path, ConvertOptions { to, dtype, force: false }, &mut |_| {}).unwrap();
    path
}

/// The reference prompts and llama.cpp's greedy tokens for them.
fn reference_prompts() -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(QWEN_0_5B.reference_file("greedy.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["question"].as_str().unwrap().to_string(), ids(&r["generated_ids"])))
        .collect()
}

/// Greedy tokens and the logits of every position, for each reference prompt.
fn run_all(path: &Path, max_tokens: usize) -> Vec<(Vec<u32>, Vec<f32>)> {
    let pipeline = Pipeline::open(path).unwrap();
    reference_prompts()
        .iter()
        .map(|(question, _)| {
            let prompt = pipeline.prompt_tokens(question, Some("You are a helpful assistant."), false).unwrap();
            let mut cache = pipeline.model.new_cache(prompt.len() + max_tokens);
            let options = GenerateOptions { max_tokens, sampling: Default::default(), logits_top_k: None };
            let g = generate(&pipeline.model, &mut cache, &prompt, &options, |t| pipeline.tokenizer.is_eog(t), |_| {})
                .unwrap();
            // Every position's logits, teacher-forced over prompt + generation in one call.
            let mut all = prompt.clone();
            all.extend(&g.tokens);
            let mut cache = pipeline.model.new_cache(all.len());
            (g.tokens, pipeline.model.forward(&all, &mut cache, Logits::All).unwrap())
        })
        .collect()
}

#[test]
fn apr_with_quantized_blocks_kept_equals_gguf_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let apr_kept = convert_into(dir.path(), "kept.apr", FormatKind::Apr, DTypeChoice::Keep);
    let gguf = run_all(&QWEN_0_5B.require(), 16);
    let apr = run_all(&apr_kept, 16);
    for (((tokens_g, logits_g), (tokens_a, logits_a)), (question, _)) in gguf.iter().zip(&apr).zip(reference_prompts())
    {
        assert_eq!(tokens_g, tokens_a, "{question:?}: tokens");
        assert!(logits_g == logits_a, "{question:?}: logits are not bit-identical");
    }
}

#[test]
fn safetensors_f32_and_apr_f32_agree_and_follow_the_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let f32 = DTypeChoice::To(DType::F32);
    let apr_f32 = convert_into(dir.path(), "f32.apr", FormatKind::Apr, f32);
    convert_into(dir.path(), "model.safetensors", FormatKind::SafeTensors, f32);
    let safetensors = run_all(dir.path(), 8);
    let apr = run_all(&apr_f32, 8);
    for (((tokens_s, logits_s), (tokens_a, logits_a)), (question, reference)) in
        safetensors.iter().zip(&apr).zip(reference_prompts())
    {
        assert!(logits_s == logits_a, "{question:?}: SafeTensors F32 and APR F32 logits are not identical");
        assert_eq!(tokens_s, tokens_a, "{question:?}");
        let n = 8.min(reference.len());
        assert_eq!(
            tokens_s[..n],
            reference[..n],
            "{question:?}: the first {n} tokens differ from the GGUF's (llama.cpp's)"
        );
    }
}

#[test]
fn llama_architecture_model_answers_sensibly() {
    let pipeline = Pipeline::open(SMOLLM2.require()).unwrap();
    let prompt = pipeline.prompt_tokens("What is the capital of France?", None, false).unwrap();
    let mut cache = pipeline.model.new_cache(prompt.len() + 24);
    let options = GenerateOptions { max_tokens: 24, sampling: Default::default(), logits_top_k: None };
    let g = generate(&pipeline.model, &mut cache, &prompt, &options, |t| pipeline.tokenizer.is_eog(t), |_| {}).unwrap();
    let text = pipeline.tokenizer.decode(&g.tokens);
    println!("SmolLM2: {text:?}");
    assert!(text.contains("Paris"), "SmolLM2-135M should name Paris: {text:?}");
}
