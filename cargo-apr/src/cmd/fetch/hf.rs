//! `hf://` sources: a file of a Hugging Face model repository, downloaded by
//! hf-hub into the standard hub cache (where huggingface_hub and llama.cpp
//! find it too) at the declared revision, with the user's token for gated or
//! private repositories, resuming an interrupted download where it stopped.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::bail;
use apr_engine::testing::manifest::{hf_hub_cache, DeclaredModel};
use hf_hub::api::tokio::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use super::http::block_on;

/// Downloads `repo`/`file` at `revision` into the hub cache, unless
/// `HF_HUB_OFFLINE` forbids it; returns the snapshot path, checked against the sha256.
pub(super) fn fetch(model: &DeclaredModel, repo: &str, file: &str, revision: &str) -> anyhow::Result<PathBuf> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let endpoint = endpoint.trim_end_matches('/');
    let url = format!("{endpoint}/{repo}/resolve/{revision}/{file}");
    let cache = hf_hub_cache();
    let fill_cache = format!("or put the file in the cache with `{}`", hf_download_command(repo, file, revision));
    if offline() {
        bail!(
            "{repo}/{file} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set, so {url} is not \
             downloaded; unset HF_HUB_OFFLINE and run `cargo apr fetch {}` while online, {fill_cache}",
            cache.display(),
            model.name
        );
    }
    eprintln!("{}: not in the Hugging Face cache ({}); downloading {url}", model.name, cache.display());
    let api = ApiBuilder::from_cache(Cache::new(cache.clone()))
        .with_endpoint(endpoint.to_string())
        .with_token(token(&cache))
        .with_max_files(4)
        .with_progress(std::io::stderr().is_terminal())
        .build()?;
    let repository = api.repo(Repo::with_revision(repo.to_string(), RepoType::Model, revision.to_string()));
    let placed = block_on(repository.download(file))?.map_err(|e| {
        explain(e, &url).context(format!(
            "{repo}/{file} is not in the Hugging Face cache ({}) and downloading it failed; run `cargo apr fetch {}` \
             again while online, {fill_cache}",
            cache.display(),
            model.name
        ))
    })?;
    let in_cache = DeclaredModel { local_path: placed.clone(), ..model.clone() };
    in_cache.verify().map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "the download stays in the Hugging Face cache at {}: correct the declared sha256, or delete the file \
             if the repository changed",
            placed.display()
        ))
    })?;
    Ok(placed)
}

/// `HF_TOKEN`, else the token file `hf auth login` writes beside the hub cache.
fn token(cache: &std::path::Path) -> Option<String> {
    let from_env = std::env::var("HF_TOKEN").ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty());
    from_env.or_else(|| Cache::new(cache.to_path_buf()).token())
}

/// The hub's refusals in words a user can act on.
fn explain(error: ApiError, url: &str) -> anyhow::Error {
    let ApiError::RequestError(request) = &error else { return error.into() };
    match request.status().map(|s| s.as_u16()) {
        Some(code @ (401 | 403)) => anyhow::anyhow!(
            "{url}: the hub answered HTTP {code}: the repository is gated or private; accept its terms on the hub \
             and set HF_TOKEN to a token with access (or run `hf auth login`)"
        ),
        Some(404) => anyhow::anyhow!("{url}: the hub answered HTTP 404: no such repository, revision or file"),
        Some(code) => anyhow::anyhow!("{url}: the hub answered HTTP {code}"),
        None => anyhow::Error::new(error).context(format!("could not reach {url} (offline?)")),
    }
}

fn hf_download_command(repo: &str, file: &str, revision: &str) -> String {
    match revision {
        "main" => format!("hf download {repo} {file}"),
        _ => format!("hf download {repo} {file} --revision {revision}"),
    }
}

/// `HF_HUB_OFFLINE` as huggingface_hub reads it: 1, ON, YES or TRUE, in any case.
fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.trim().to_uppercase().as_str()))
}
