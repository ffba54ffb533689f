//! `cargo apr review`: the golden snapshots a test run left pending
//! (`NAME.new.json` beside `NAME.json`), shown against the pinned ones as a
//! line diff, then accepted (`--accept`: the new one is pinned) or rejected
//! (`--reject`: it is deleted), all of them or those a filter names.
//! `--check` (and any run with `CI` set) fails while snapshots are pending.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use apr_engine::testing::golden::{ci_mode, differences, Golden};
use similar::{ChangeTag, TextDiff};

use super::workspace::PackageArgs;
use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// Only the pending snapshots whose path or test name contains one of these.
    filters: Vec<String>,
    /// Pin the pending snapshots (those the filters name, else all).
    #[arg(long, conflicts_with_all = ["reject", "check"])]
    accept: bool,
    /// Delete the pending snapshots (those the filters name, else all).
    #[arg(long, conflicts_with = "check")]
    reject: bool,
    /// Exit 1 while snapshots are pending (the default when the `CI` variable is set).
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    selection: PackageArgs,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let workspace = args.selection.load()?;
    let mut pending = Vec::new();
    for dir in workspace.package_dirs() {
        find_pending(&dir, &mut pending);
    }
    let mut selected = Vec::new();
    for path in pending {
        if matches_filters(&path, &args.filters)? {
            selected.push(path);
        }
    }
    if selected.is_empty() {
        println!("no pending golden snapshots");
        return Ok(exit::PASS);
    }
    let style = Style::for_stdout();
    for new in &selected {
        let pinned = pinned_path(new);
        show(new, &pinned, style)?;
        if args.accept {
            std::fs::rename(new, &pinned).with_context(|| format!("pinning {}", pinned.display()))?;
            println!("  accepted: {} is pinned", pinned.display());
        } else if args.reject {
            std::fs::remove_file(new).with_context(|| format!("deleting {}", new.display()))?;
            println!("  rejected: {} deleted", new.display());
        }
    }
    if args.accept || args.reject {
        return Ok(exit::PASS);
    }
    println!(
        "\n{} pending; `cargo apr review --accept [FILTER]` pins them, `--reject [FILTER]` drops them",
        selected.len()
    );
    Ok(if args.check || ci_mode() { exit::FAILURE } else { exit::PASS })
}

/// Whether the pending snapshot at `path` is one the filters name (no filter: all).
fn matches_filters(path: &Path, filters: &[String]) -> anyhow::Result<bool> {
    if filters.is_empty() {
        return Ok(true);
    }
    let test = read(path)?.test;
    let shown = path.display().to_string();
    Ok(filters.iter().any(|f| shown.contains(f.as_str()) || test.contains(f.as_str())))
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

fn show(new_path: &Path, pinned_path: &Path, style: Style) -> anyhow::Result<()> {
    let new = read(new_path)?;
    println!("\n{} ({})", new_path.display(), new.test);
    let old = if pinned_path.is_file() {
        read(pinned_path)?
    } else {
        println!("  new snapshot, nothing pinned yet");
        Golden { prompts: Vec::new(), ..new.clone() }
    };
    // Every difference, however small: the test already judged the tolerance.
    for line in differences(&old, &new, 0.0) {
        println!("  - {line}");
    }
    print!("{}", render_diff(&as_lines(&old), &as_lines(&new), style));
    Ok(())
}

/// A snapshot as lines that a line diff shows well: per prompt its text,
/// tokens and, per generated position, the pinned top logits.
fn as_lines(golden: &Golden) -> String {
    let mut out = String::new();
    for p in &golden.prompts {
        out.push_str(&format!("prompt {:?}\n  text {:?}\n  tokens {:?}\n", p.prompt, p.text, p.tokens));
        for (position, row) in p.top_logits.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|(token, logit)| format!("{token}:{logit:.4}")).collect();
            out.push_str(&format!("  position {position}: {}\n", cells.join(" ")));
        }
    }
    out
}

/// How diff lines are marked: ANSI colours on a terminal, plain text when
/// piped or when `NO_COLOR` is set (https://no-color.org).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Style {
    Plain,
    Colored,
}

impl Style {
    fn for_stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stdout().is_terminal() && !no_color {
            Style::Colored
        } else {
            Style::Plain
        }
    }
}

/// A unified diff (3 lines of context) of `old` against `new`: `-` pinned, `+` new.
fn render_diff(old: &str, new: &str, style: Style) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    for group in diff.grouped_ops(3) {
        out.push_str("  @@\n");
        for op in &group {
            for change in diff.iter_changes(op) {
                let (sign, color) = match change.tag() {
                    ChangeTag::Delete => ('-', "\x1b[31m"),
                    ChangeTag::Insert => ('+', "\x1b[32m"),
                    ChangeTag::Equal => (' ', ""),
                };
                let line = format!("  {sign} {}", change.value().trim_end_matches('\n'));
                match style {
                    Style::Colored if !color.is_empty() => out.push_str(&format!("{color}{line}\x1b[0m\n")),
                    _ => out.push_str(&format!("{line}\n")),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines_and_colours_only_when_asked() {
        let old = "prompt \"p\"\n  tokens [1, 2]\n  position 0: 1:5.0000\n";
        let new = "prompt \"p\"\n  tokens [1, 2]\n  position 0: 1:5.2500\n";
        let plain = render_diff(old, new, Style::Plain);
        assert!(plain.contains("  -   position 0: 1:5.0000\n"), "{plain}");
        assert!(plain.contains("  +   position 0: 1:5.2500\n"), "{plain}");
        assert!(plain.contains("      tokens [1, 2]\n"), "context kept: {plain}");
        assert!(!plain.contains('\x1b'), "{plain}");
        let colored = render_diff(old, new, Style::Colored);
        assert!(colored.contains("\x1b[31m  -   position 0: 1:5.0000\x1b[0m"), "{colored}");
        assert!(colored.contains("\x1b[32m  +   position 0: 1:5.2500\x1b[0m"), "{colored}");
        assert!(render_diff(old, old, Style::Colored).is_empty());
    }
}
