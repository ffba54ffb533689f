//! Golden snapshots: the candidate's greedy tokens and top logits, pinned in
//! a JSON file. A run compares against the pinned file within the declared
//! logits tolerance; any difference (or a missing file) writes the new
//! snapshot beside it as `<name>.new.json` for `cargo apr review`. In CI
//! (`CI` set, as every CI service sets it) nothing is written: the test
//! fails, and the snapshot is reviewed where the developer runs it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::GoldenOutcome;
use super::spec::{TestSpec, ToleranceSpec};
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions, SamplingParams};
use crate::pipeline;
use crate::tracediff::Side;

pub const SCHEMA: &str = "apr.golden.v1";
/// How many of the top logits each position pins.
pub const TOP_K: usize = 5;
/// Logit tolerance when the test declares none.
pub const DEFAULT_MAX_ABS: f64 = 1e-3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Golden {
    pub schema: String,
    pub test: String,
    pub model: String,
    pub max_tokens: usize,
    pub prompts: Vec<GoldenPrompt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldenPrompt {
    pub prompt: String,
    pub tokens: Vec<u32>,
    pub text: String,
    /// Per generated position: the top (token, logit) pairs of the row that chose it.
    pub top_logits: Vec<Vec<(u32, f32)>>,
}

/// The pending snapshot's path beside the pinned one.
pub fn pending_path(pinned: &Path) -> PathBuf {
    let stem = pinned.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    pinned.with_file_name(format!("{stem}.new.json"))
}

pub fn check(
    spec: &TestSpec,
    pinned: &Path,
    candidate: &Side,
    reference: &Side,
    prompts: &[&str],
) -> Result<GoldenOutcome> {
    let max_tokens = spec.max_tokens.unwrap_or(super::compare::DEFAULT_MAX_TOKENS);
    let fresh = snapshot(spec, candidate, reference, prompts, max_tokens)?;
    let pending = pending_path(pinned);
    let outcome = |passed: bool, detail: String| GoldenOutcome { path: pinned.to_path_buf(), passed, detail };
    let pinned_text = match std::fs::read_to_string(pinned) {
        Ok(text) => text,
        Err(_) => {
            let left = leave_pending(&pending, &fresh, ci_mode())?;
            return Ok(outcome(false, format!("no golden file at {}; {left}", pinned.display())));
        }
    };
    let old: Golden = serde_json::from_str(&pinned_text)
        .map_err(|e| Error::Invalid(format!("{}: not a golden snapshot: {e}", pinned.display())))?;
    let max_abs = spec
        .tolerance
        .iter()
        .find_map(|t| match t {
            ToleranceSpec::LogitsMaxAbs(v) => Some(*v),
            _ => None,
        })
        .unwrap_or(DEFAULT_MAX_ABS);
    let differences = differences(&old, &fresh, max_abs);
    if differences.is_empty() {
        let _ = std::fs::remove_file(&pending);
        return Ok(outcome(true, format!("matches within |dlogit| <= {max_abs:e}")));
    }
    let left = leave_pending(&pending, &fresh, ci_mode())?;
    Ok(outcome(false, format!("{}; {left}", differences.join("; "))))
}

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false`
/// (GitHub Actions, GitLab, Buildkite and others set `CI=true`).
pub fn ci_mode() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Writes the fresh snapshot to `pending` for `cargo apr review`, unless in
/// CI, where no file is left behind; says which, for the failure message.
fn leave_pending(pending: &Path, fresh: &Golden, ci: bool) -> Result<String> {
    if ci {
        return Ok(
            "CI is set, so no new snapshot was written: run the test locally, then `cargo apr review`".to_string()
        );
    }
    let json = serde_json::to_vec_pretty(fresh).map_err(|e| Error::Invalid(e.to_string()))?;
    if let Some(dir) = pending.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(pending, json).map_err(|e| Error::io(pending, e))?;
    Ok(format!(
        "new snapshot in {}: `cargo apr review` shows it, `cargo apr review --accept` pins it",
        pending.display()
    ))
}

fn snapshot(
    spec: &TestSpec,
    candidate: &Side,
    reference: &Side,
    prompts: &[&str],
    max_tokens: usize,
) -> Result<Golden> {
    // A candidate without a tokenizer is driven with the reference's.
    let driver = if candidate.tokenizer.is_ok() { candidate } else { reference };
    let tokenizer = driver.tokenizer.as_ref().map_err(|e| Error::Invalid(format!("no tokenizer: {e}")))?;
    let mut out = Vec::new();
    for prompt in prompts {
        let ids = pipeline::prompt_tokens(tokenizer, driver.model.file.metadata(), prompt, None, false)?;
        let mut cache = candidate.model.new_cache(ids.len() + max_tokens + 1);
        let options = GenerateOptions { max_tokens, sampling: SamplingParams::default(), logits_top_k: Some(TOP_K) };
        let generation = generate(&candidate.model, &mut cache, &ids, &options, |t| tokenizer.is_eog(t), |_| {})?;
        let first_row = ids.len() - 1;
        out.push(GoldenPrompt {
            prompt: prompt.to_string(),
            text: tokenizer.decode(&generation.tokens),
            top_logits: generation.top_logits[first_row..].iter().take(generation.tokens.len()).cloned().collect(),
            tokens: generation.tokens,
        });
    }
    Ok(Golden {
        schema: SCHEMA.into(),
        test: format!("{}::{}", spec.module, spec.function),
        model: spec.candidate.as_ref().map(super::runner::model_label).unwrap_or_default(),
        max_tokens,
        prompts: out,
    })
}

/// What differs between a pinned and a new snapshot, in words; empty when they agree.
pub fn differences(old: &Golden, new: &Golden, max_abs: f64) -> Vec<String> {
    let mut out = Vec::new();
    for new_prompt in &new.prompts {
        let Some(old_prompt) = old.prompts.iter().find(|p| p.prompt == new_prompt.prompt) else {
            out.push(format!("prompt {:?} is not pinned", new_prompt.prompt));
            continue;
        };
        if let Some(at) = old_prompt.tokens.iter().zip(&new_prompt.tokens).position(|(a, b)| a != b) {
            out.push(format!(
                "prompt {:?}: token {at} was {} now {} ({:?} -> {:?})",
                new_prompt.prompt, old_prompt.tokens[at], new_prompt.tokens[at], old_prompt.text, new_prompt.text
            ));
            continue;
        }
        if old_prompt.tokens.len() != new_prompt.tokens.len() {
            out.push(format!(
                "prompt {:?}: {} tokens pinned, {} now",
                new_prompt.prompt,
                old_prompt.tokens.len(),
                new_prompt.tokens.len()
            ));
            continue;
        }
        let worst = worst_logit_difference(old_prompt, new_prompt);
        if worst.0 > max_abs {
            out.push(format!(
                "prompt {:?}: position {} logit of token {} moved by {:.3e} (> {max_abs:e})",
                new_prompt.prompt, worst.1, worst.2, worst.0
            ));
        }
    }
    for old_prompt in &old.prompts {
        if !new.prompts.iter().any(|p| p.prompt == old_prompt.prompt) {
            out.push(format!("pinned prompt {:?} is no longer run", old_prompt.prompt));
        }
    }
    out
}

/// (largest |difference|, position, token) over the pinned top logits; a
/// pinned token that left the new top-k counts as an infinite difference.
fn worst_logit_difference(old: &GoldenPrompt, new: &GoldenPrompt) -> (f64, usize, u32) {
    let mut worst = (0.0, 0, 0);
    for (position, (old_row, new_row)) in old.top_logits.iter().zip(&new.top_logits).enumerate() {
        for &(token, logit) in old_row {
            let d = new_row
                .iter()
                .find(|(t, _)| *t == token)
                .map_or(f64::INFINITY, |(_, l)| (f64::from(*l) - f64::from(logit)).abs());
            if d > worst.0 {
                worst = (d, position, token);
            }
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(tokens: Vec<u32>, logit: f32) -> Golden {
        Golden {
            schema: SCHEMA.into(),
            test: "t".into(),
            model: "m".into(),
            max_tokens: 2,
            prompts: vec![GoldenPrompt {
                prompt: "p".into(),
                text: String::new(),
                top_logits: tokens.iter().map(|&t| vec![(t, logit), (99, 0.0)]).collect(),
                tokens,
            }],
        }
    }

    #[test]
    fn differences_name_tokens_and_logits() {
        assert!(differences(&golden(vec![1, 2], 5.0), &golden(vec![1, 2], 5.0005), 1e-3).is_empty());
        let d = differences(&golden(vec![1, 2], 5.0), &golden(vec![1, 2], 5.01), 1e-3);
        assert!(d[0].contains("moved by 1.000e-2"), "{d:?}");
        let d = differences(&golden(vec![1, 2], 5.0), &golden(vec![1, 3], 5.0), 1e-3);
        assert!(d[0].contains("token 1 was 2 now 3"), "{d:?}");
        assert_eq!(pending_path(Path::new("tests/golden/a.json")), Path::new("tests/golden/a.new.json"));
    }

    #[test]
    fn ci_leaves_no_pending_file() {
        let dir = tempfile::tempdir().unwrap();
        let pending = dir.path().join("golden/a.new.json");
        let said = leave_pending(&pending, &golden(vec![1], 1.0), true).unwrap();
        assert!(said.contains("CI is set") && !pending.exists(), "{said}");
        let said = leave_pending(&pending, &golden(vec![1], 1.0), false).unwrap();
        assert!(said.contains("a.new.json") && pending.exists(), "{said}");
        let written: Golden = serde_json::from_slice(&std::fs::read(&pending).unwrap()).unwrap();
        assert_eq!(written, golden(vec![1], 1.0));
    }
}
