//! `cargo apr review`: the golden snapshots a test run left pending
//! (`NAME.new.json` beside `NAME.json`), shown against the pinned ones, then
//! accepted (`--accept`: the new one is pinned) or rejected (`--reject`: it is deleted).

use std::path::{Path, PathBuf};

use anyhow::Context;
use apr_engine::testing::golden::{differences, Golden};

use super::workspace::PackageArgs;
use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Pin every pending snapshot.
    #[arg(long, conflicts_with = "reject")]
    accept: bool,
    /// Delete every pending snapshot.
    #[arg(long)]
    reject: bool,
    #[command(flatten)]
    selection: PackageArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let workspace = args.selection.load()?;
    let mut pending = Vec::new();
    for dir in workspace.package_dirs() {
        find_pending(&dir, &mut pending);
    }
    if pending.is_empty() {
        println!("no pending golden snapshots");
        return Ok(exit::PASS);
    }
    for new in &pending {
        let pinned = pinned_path(new);
        show(new, &pinned)?;
        if args.accept {
            std::fs::rename(new, &pinned).with_context(|| format!("pinning {}", pinned.display()))?;
            println!("  accepted: {} is pinned", pinned.display());
        } else if args.reject {
            std::fs::remove_file(new)?;
            println!("  rejected: {} deleted", new.display());
        }
    }
    if !args.accept && !args.reject {
        println!("\n{} pending; run `cargo apr review --accept` to pin them or `--reject` to drop them", pending.len());
    }
    Ok(exit::PASS)
}

fn pinned_path(new: &Path) -> PathBuf {
    let name = new.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    new.with_file_name(name.replace(".new.json", ".json"))
}

fn find_pending(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                find_pending(&path, out);
            }
        } else if name.ends_with(".new.json") {
            out.push(path);
        }
    }
    out.sort();
}

fn read(path: &Path) -> anyhow::Result<Golden> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a golden snapshot", path.display()))
}

fn show(new_path: &Path, pinned_path: &Path) -> anyhow::Result<()> {
    let new = read(new_path)?;
    println!("\n{} ({})", new_path.display(), new.test);
    if !pinned_path.is_file() {
        println!("  new snapshot, nothing pinned yet:");
        for p in &new.prompts {
            println!("    {:?} -> {:?} ({} tokens)", p.prompt, p.text, p.tokens.len());
        }
        return Ok(());
    }
    let old = read(pinned_path)?;
    // Every difference, however small: the test already judged the tolerance.
    let found = differences(&old, &new, 0.0);
    if found.is_empty() {
        println!("  same tokens and top logits as the pinned snapshot");
    }
    for line in found {
        println!("  - {line}");
    }
    for p in &new.prompts {
        if let Some(o) = old.prompts.iter().find(|o| o.prompt == p.prompt) {
            if o.text != p.text {
                println!("    {:?}:\n      pinned: {:?}\n      new:    {:?}", p.prompt, o.text, p.text);
            }
        }
    }
    Ok(())
}
