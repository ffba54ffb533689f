//! The user's workspace as `cargo metadata` describes it: the packages to
//! test and the models they declare in `[package.metadata.apr.models]`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use apr_engine::testing::manifest::{models_in_metadata, DeclaredModel};
use cargo_metadata::{Metadata, MetadataCommand, Package};

pub struct Workspace {
    pub metadata: Metadata,
    pub manifest_path: PathBuf,
    pub target_dir: PathBuf,
    /// Names of the packages chosen with `-p` (empty: cargo's default members).
    pub selected: Vec<String>,
}

/// `cargo metadata`'s failure in one line: cargo's own first error, and
/// "not inside a cargo package" when that is what it means.
fn one_line(error: cargo_metadata::Error) -> anyhow::Error {
    let cargo_metadata::Error::CargoMetadata { stderr } = &error else {
        return anyhow::Error::new(error).context("running cargo metadata");
    };
    let first = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or(stderr.trim());
    let first = first.trim_start_matches("error:").trim();
    if first.contains("could not find `Cargo.toml`") {
        anyhow::anyhow!("not inside a cargo package: {first} (give --manifest-path PATH/Cargo.toml)")
    } else {
        anyhow::anyhow!("cargo metadata: {first}")
    }
}

impl Workspace {
    pub fn load(manifest_path: Option<&Path>, packages: &[String]) -> anyhow::Result<Workspace> {
        let mut command = MetadataCommand::new();
        command.no_deps();
        if let Some(path) = manifest_path {
            command.manifest_path(path);
        }
        let metadata = command.exec().map_err(one_line)?;
        for name in packages {
            if !metadata.workspace_packages().iter().any(|p| &p.name == name) {
                let known: Vec<&str> = metadata.workspace_packages().iter().map(|p| p.name.as_str()).collect();
                bail!("no package `{name}` in this workspace (packages: {})", known.join(", "));
            }
        }
        let manifest_path = match manifest_path {
            Some(path) => path.to_path_buf(),
            None => metadata.workspace_root.join("Cargo.toml").into_std_path_buf(),
        };
        Ok(Workspace {
            target_dir: metadata.target_directory.clone().into_std_path_buf(),
            manifest_path,
            selected: packages.to_vec(),
            metadata,
        })
    }

    /// The packages the command covers: the selected ones, else the default members.
    pub fn packages(&self) -> Vec<&Package> {
        if self.selected.is_empty() {
            self.metadata.workspace_default_packages()
        } else {
            self.metadata.workspace_packages().into_iter().filter(|p| self.selected.contains(&p.name)).collect()
        }
    }

    /// Every model the covered packages declare (a name declared twice, once).
    pub fn models(&self) -> anyhow::Result<Vec<DeclaredModel>> {
        let mut all: Vec<DeclaredModel> = Vec::new();
        for package in self.packages() {
            let dir = package.manifest_path.parent().map(|d| d.as_std_path().to_path_buf()).unwrap_or_default();
            let models = models_in_metadata(&package.metadata, &dir).with_context(|| package.name.clone())?;
            for model in models {
                if !all.iter().any(|m| m.name == model.name && m.local_path == model.local_path) {
                    all.push(model);
                }
            }
        }
        Ok(all)
    }

    /// The covered packages' folders.
    pub fn package_dirs(&self) -> Vec<PathBuf> {
        self.packages().iter().filter_map(|p| p.manifest_path.parent().map(|d| d.as_std_path().to_path_buf())).collect()
    }
}

/// The package selection shared by `test`, `fetch` and `review`.
#[derive(clap::Args, Debug)]
pub struct PackageArgs {
    /// Only these packages (default: the workspace's default members).
    #[arg(short = 'p', long = "package")]
    packages: Vec<String>,
    /// Path to the Cargo.toml of the package or workspace (default: found from the current folder).
    #[arg(long)]
    manifest_path: Option<std::path::PathBuf>,
}

impl PackageArgs {
    pub fn load(&self) -> anyhow::Result<Workspace> {
        Workspace::load(self.manifest_path.as_deref(), &self.packages)
    }
}
