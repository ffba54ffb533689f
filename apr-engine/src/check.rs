//! `check`: a staged smoke test of a model, stopping at the first failure.

use std::path::Path;

use serde::Serialize;

use crate::backend::BackendKind;
use crate::generate::{argmax, generate, GenerateOptions, SamplingParams};
use crate::model::{Boundary, Logits, Observer};
use crate::pipeline::Pipeline;
use crate::stats::{stats_of, ValueStats};

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

const PROBE_TEXT: &str = "Hello, world! 2+2=4";
/// The user message rendered through the chat template for the generation stage.
const CHAT_PROBE: &str = "What is 2+2?";

/// Runs the stages in order; the last stage in the result is the first failure, if any.
pub fn check(path: &Path, backend: BackendKind) -> Vec<Stage> {
    let mut stages = Vec::new();
    let pipeline = match Pipeline::open_on(path, backend) {
        Ok(p) => p,
        Err(e) => {
            stages.push(Stage { name: "open", passed: false, detail: e.to_string() });
            return stages;
        }
    };
    let file = &pipeline.model.file;
    let c = &pipeline.model.config;
    let mut push = |name, passed, detail: String| {
        stages.push(Stage { name, passed, detail });
        passed
    };
    push(
        "open",
        true,
        format!(
            "{}, {} bytes, {} tensors, loaded in {:.2} s",
            file.format(),
            file.file_size(),
            file.tensors().len(),
            pipeline.load_time.as_secs_f64()
        ),
    );
    push(
        "metadata",
        true,
        format!(
            "{}, {} layers, hidden {}, {} heads / {} KV heads, vocab {}",
            c.architecture, c.layers, c.hidden, c.heads, c.kv_heads, c.vocab
        ),
    );
    let ids = pipeline.tokenizer.encode_with_special(PROBE_TEXT, false);
    let decoded = pipeline.tokenizer.decode(&ids);
    if !push("tokenizer", decoded == PROBE_TEXT, format!("{PROBE_TEXT:?} -> {} tokens -> {decoded:?}", ids.len())) {
        return stages;
    }
    let mut probe = StatsProbe::default();
    let mut cache = pipeline.model.new_cache(ids.len() + 8);
    let logits = match pipeline.model.forward_observed(&ids, &mut cache, Logits::Last, &mut probe) {
        Ok(l) => l,
        Err(e) => {
            push("forward", false, e.to_string());
            return stages;
        }
    };
    let layer_outputs: Vec<&ValueStats> = probe.find(|l, b| l.is_some() && b == Boundary::FfnResidual);
    let embedding = probe.find(|_, b| b == Boundary::Embedding)[0];
    let final_norm = probe.find(|_, b| b == Boundary::FinalNorm)[0];
    let logit_stats = stats_of(&logits);
    let checks: [(&str, bool, String); 5] = [
        ("embedding", healthy(embedding), describe(embedding)),
        (
            "one layer",
            layer_outputs.first().is_some_and(|s| healthy(s)),
            layer_outputs.first().map_or("no layer ran".into(), |s| format!("layer 0 output {}", describe(s))),
        ),
        ("all layers", layer_outputs.iter().all(|s| healthy(s)), all_layers_detail(&layer_outputs)),
        ("final norm", healthy(final_norm), describe(final_norm)),
        (
            "logits",
            healthy(&logit_stats),
            format!(
                "logits[{}] {}, max {:.1}",
                logits.len(),
                if logit_stats.nan + logit_stats.inf == 0 { "finite" } else { "NOT finite" },
                logit_stats.max
            ),
        ),
    ];
    for (name, passed, detail) in checks {
        if !push(name, passed, detail) {
            return stages;
        }
    }
    let next = argmax(&logits);
    if !push(
        "sampling",
        (next as usize) < c.vocab,
        format!("greedy next token {next} {:?}", pipeline.tokenizer.decode(&[next])),
    ) {
        return stages;
    }
    let prompt = match pipeline.prompt_tokens(CHAT_PROBE, None, false) {
        Ok(prompt) => prompt,
        Err(e) => {
            push("template", false, e.to_string());
            return stages;
        }
    };
    let how = if pipeline.chat_template().is_some() { "the model's template" } else { "no template: plain text" };
    push("template", true, format!("{CHAT_PROBE:?} -> {} tokens ({how})", prompt.len()));
    let mut cache = pipeline.model.new_cache(prompt.len() + 8);
    let options = GenerateOptions { max_tokens: 8, sampling: SamplingParams::default(), logits_top_k: None };
    match generate(&pipeline.model, &mut cache, &prompt, &options, |t| pipeline.tokenizer.is_eog(t), |_| {}) {
        Ok(g) => push(
            "generation",
            !g.tokens.is_empty(),
            format!(
                "{} tokens: {:?} ({:.1} tok/s)",
                g.tokens.len(),
                pipeline.tokenizer.decode(&g.tokens),
                g.timings.decode_tok_s
            ),
        ),
        Err(e) => push("generation", false, e.to_string()),
    };
    stages
}

fn healthy(s: &ValueStats) -> bool {
    s.nan == 0 && s.inf == 0 && s.std > 0.0
}

fn describe(s: &ValueStats) -> String {
    format!("mean {:.4}, std {:.4}, range [{:.3}, {:.3}], {} NaN, {} Inf", s.mean, s.std, s.min, s.max, s.nan, s.inf)
}

fn all_layers_detail(outputs: &[&ValueStats]) -> String {
    match outputs.iter().position(|s| !healthy(s)) {
        Some(bad) => format!("layer {bad} output broken: {}", describe(outputs[bad])),
        None => {
            let max = outputs.iter().map(|s| s.max.abs().max(s.min.abs())).fold(0.0, f32::max);
            format!("{} layers finite, largest |activation| {max:.1}", outputs.len())
        }
    }
}

/// Keeps the stats of every observed boundary.
#[derive(Default)]
struct StatsProbe {
    seen: Vec<(Option<usize>, Boundary, ValueStats)>,
}

impl StatsProbe {
    fn find(&self, wanted: impl Fn(Option<usize>, Boundary) -> bool) -> Vec<&ValueStats> {
        self.seen.iter().filter(|(l, b, _)| wanted(*l, *b)).map(|(_, _, s)| s).collect()
    }
}

impl Observer for StatsProbe {
    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]) {
        self.seen.push((layer, boundary, stats_of(values)));
    }
}
