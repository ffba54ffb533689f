//! The prompt flags of the commands that drive two models.

use apr_engine::tracediff::TraceDiffOptions;

#[derive(clap::Args, Debug)]
pub struct PromptArgs {
    #[arg(long, short)]
    prompt: String,
    /// A system message for the chat template.
    #[arg(long)]
    system: Option<String>,
    /// Feed the prompt without the chat template.
    #[arg(long)]
    raw: bool,
}

impl PromptArgs {
    /// Options for `max_tokens` generated tokens from this prompt.
    pub fn options(&self, max_tokens: usize) -> TraceDiffOptions {
        TraceDiffOptions {
            system: self.system.clone(),
            raw: self.raw,
            max_tokens,
            ..TraceDiffOptions::new(self.prompt.clone())
        }
    }
}
