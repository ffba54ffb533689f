//! The prompt flags: where the prompt comes from (`-p TEXT`, `-p -` for stdin,
//! `--prompt-file F`), and the template flags of the commands that drive two models.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use apr_engine::tracediff::TraceDiffOptions;

use super::values::{utf8_error, Utf8Text};
use super::UsageError;

/// A prompt read from a file or stdin is refused above this size: far more
/// text than any model's context holds, and a bound on what is read into memory.
const MAX_PROMPT_BYTES: u64 = 64 << 20;

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PromptSource {
    /// The prompt text; `-` reads it from stdin.
    #[arg(long, short, value_name = "TEXT", value_parser = Utf8Text)]
    prompt: Option<String>,
    /// Read the prompt from FILE (UTF-8; for prompts too long for a command line).
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
}

impl PromptSource {
    /// The prompt text, read from stdin or the file when asked.
    pub fn read(&self) -> anyhow::Result<String> {
        match (&self.prompt, &self.prompt_file) {
            (Some(dash), None) if dash == "-" => read_bounded(std::io::stdin().lock(), Path::new("<stdin>"), "prompt"),
            (Some(text), None) => Ok(text.clone()),
            (None, Some(path)) => {
                let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
                read_bounded(file, path, "prompt")
            }
            // clap's group makes exactly one of the two present.
            _ => Err(UsageError("give either --prompt or --prompt-file".into()).into()),
        }
    }
}

/// At most `MAX_PROMPT_BYTES` of UTF-8 from `source`, named `name` in errors
/// and called `what` ("prompt", "text").
pub fn read_bounded(source: impl Read, name: &Path, what: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    source
        .take(MAX_PROMPT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("{}: cannot read the {what}", name.display()))?;
    if bytes.len() as u64 > MAX_PROMPT_BYTES {
        anyhow::bail!("{}: {what} longer than {} MiB", name.display(), MAX_PROMPT_BYTES >> 20);
    }
    String::from_utf8(bytes).map_err(|e| {
        let detail = utf8_error(e.as_bytes(), &e.utf8_error());
        anyhow::anyhow!("{}: the {what} is not valid UTF-8: {detail}", name.display())
    })
}

/// The prompt flags of `trace-diff` and `compare-inference`.
#[derive(clap::Args, Debug)]
pub struct PromptArgs {
    #[command(flatten)]
    text: PromptSource,
    /// A system message for the chat template.
    #[arg(long, value_parser = Utf8Text, conflicts_with = "raw")]
    system: Option<String>,
    /// Feed the prompt without the chat template.
    #[arg(long)]
    raw: bool,
}

impl PromptArgs {
    /// Options for `max_tokens` generated tokens from this prompt.
    pub fn options(&self, max_tokens: usize) -> anyhow::Result<TraceDiffOptions> {
        Ok(TraceDiffOptions {
            system: self.system.clone(),
            raw: self.raw,
            max_tokens,
            ..TraceDiffOptions::new(self.text.read()?)
        })
    }
}
