//! The prompts a qualification runs and the greedy tokens it expects: llama.cpp's
//! reference data (`reference/`) for the models it covers, else none (the A1
//! cell's own tokens become the ground truth).

use std::path::Path;

use anyhow::{bail, Context};
use apr_engine::testing::models::{reference_dir, ReferenceModel, QWEN_0_5B, QWEN_1_5B, SMOLLM2};
use serde_json::Value;

/// One prompt, as the chat template (or raw) feeds it.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub question: String,
    pub system: Option<String>,
    pub raw: bool,
    /// llama.cpp's tokens for the prompt and its greedy answer, when known.
    pub reference: Option<Reference>,
}

/// The reference's top-5 `(id, logit)` at each generated step.
pub type StepsTop5 = Vec<Vec<(u32, f32)>>;

#[derive(Debug, Clone)]
pub struct Reference {
    pub prompt_ids: Vec<u32>,
    pub generated_ids: Vec<u32>,
    /// llama.cpp's top-5 `(id, logit)` per generated step, where recorded.
    pub steps_top5: Option<StepsTop5>,
}

/// Used for models without reference data and no `--prompts`.
const DEFAULT_QUESTIONS: [&str; 3] =
    ["What is 2+2?", "What is the capital of France?", "Explain what a hash map is in one sentence."];

/// The prompts and a description of the ground truth.
pub struct PromptSet {
    pub prompts: Vec<Prompt>,
    pub ground_truth: String,
}

/// From `--prompts FILE` (one question a line, ground truth A1), else the
/// reference data of a known model (matched by file name), else the defaults.
pub fn load(model: &Path, prompts_file: Option<&Path>, max_prompts: Option<usize>) -> anyhow::Result<PromptSet> {
    let mut set = match prompts_file {
        Some(file) => from_file(file)?,
        None => match known_reference(model) {
            Some(reference) => from_reference(reference)?,
            None => PromptSet {
                prompts: DEFAULT_QUESTIONS.iter().map(|q| plain(q)).collect(),
                ground_truth: "the A1 cell (CPU GGUF): no llama.cpp reference data for this model".into(),
            },
        },
    };
    if let Some(n) = max_prompts {
        set.prompts.truncate(n);
    }
    Ok(set)
}

fn plain(question: &str) -> Prompt {
    Prompt { question: question.to_string(), system: None, raw: false, reference: None }
}

fn from_file(file: &Path) -> anyhow::Result<PromptSet> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let prompts: Vec<Prompt> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(plain).collect();
    if prompts.is_empty() {
        bail!("{}: no prompts (one a line)", file.display());
    }
    Ok(PromptSet { prompts, ground_truth: format!("the A1 cell (CPU GGUF) on the prompts of {}", file.display()) })
}

/// The reference model whose file name `model` has, when its data is present.
fn known_reference(model: &Path) -> Option<ReferenceModel> {
    let name = model.file_name()?.to_str()?;
    [QWEN_0_5B, QWEN_1_5B, SMOLLM2].into_iter().find(|r| r.file == name && greedy_file(r).is_file())
}

fn greedy_file(model: &ReferenceModel) -> std::path::PathBuf {
    reference_dir().join(model.file.trim_end_matches(".gguf")).join("greedy.json")
}

fn from_reference(model: ReferenceModel) -> anyhow::Result<PromptSet> {
    let path = greedy_file(&model);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let cases = json["results"].as_array().with_context(|| format!("{}: no results", path.display()))?;
    let prompts = cases.iter().map(reference_prompt).collect::<Option<Vec<_>>>();
    let prompts = prompts.with_context(|| format!("{}: a result lacks a field", path.display()))?;
    let engine = json["settings"]["engine"].as_str().unwrap_or("llama.cpp");
    Ok(PromptSet { prompts, ground_truth: format!("{engine} greedy tokens from {}", path.display()) })
}

fn reference_prompt(case: &Value) -> Option<Prompt> {
    let ids = |v: &Value| v.as_array()?.iter().map(|x| x.as_u64().map(|i| i as u32)).collect::<Option<Vec<_>>>();
    let steps_top5 = case["steps_top5"].as_array().map(|steps| {
        steps
            .iter()
            .map(|step| {
                let pairs = step.as_array().map(Vec::as_slice).unwrap_or_default();
                pairs.iter().filter_map(|p| Some((p[0].as_u64()? as u32, p[1].as_f64()? as f32))).collect()
            })
            .collect()
    });
    Some(Prompt {
        question: case["question"].as_str()?.to_string(),
        system: case["system"].as_str().map(String::from),
        raw: !case["chat_template_applied"].as_bool()?,
        reference: Some(Reference {
            prompt_ids: ids(&case["prompt_ids"])?,
            generated_ids: ids(&case["generated_ids"])?,
            steps_top5,
        }),
    })
}
