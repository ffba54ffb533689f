//! nextest's own JUnit report, asked for without touching the user's
//! `.config/nextest.toml`: a tool config file (`--tool-config-file apr:PATH`,
//! nextest's mechanism for tools that drive it) defines a profile whose
//! `junit.path` is set, and the run selects that profile. The path is
//! absolute, in the report folder: a relative one is under nextest's store
//! (`target/nextest` of the workspace root by default, whatever
//! `CARGO_TARGET_DIR` says, or the user's `store.dir`), which apr cannot know.

use std::path::PathBuf;

use anyhow::Context;

use super::ReportDir;

/// Tool-defined profiles carry the tool's name as a prefix.
const PROFILE: &str = "apr:junit";

pub struct Junit {
    config: PathBuf,
    report: PathBuf,
}

impl Junit {
    /// Writes the tool config under the report folder and removes the JUnit
    /// file of an earlier run, so that a run that writes none is noticed.
    pub fn prepare(out: &ReportDir) -> anyhow::Result<Junit> {
        let config = out.nextest_config();
        let report = std::path::absolute(out.nextest_junit())
            .with_context(|| format!("{}: no absolute path", out.nextest_junit().display()))?;
        // A JSON string is a valid TOML basic string: quotes and backslashes escaped.
        let quoted = serde_json::to_string(report.to_str().context("the report folder's path is not UTF-8")?)?;
        let text = format!(
            "# Written by `cargo apr test` for `cargo nextest run --tool-config-file apr:{}`.\n\
             [profile.\"{PROFILE}\"]\nfail-fast = false\n\n[profile.\"{PROFILE}\".junit]\npath = {quoted}\n",
            config.display(),
        );
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        match std::fs::remove_file(&report) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", report.display()))
            }
            _ => {}
        }
        Ok(Junit { config, report })
    }

    pub fn arguments(&self) -> Vec<String> {
        vec!["--tool-config-file".into(), format!("apr:{}", self.config.display()), "--profile".into(), PROFILE.into()]
    }

    /// The report nextest wrote; a run that wrote none (a build error) gives an empty one.
    pub fn read(&self) -> anyhow::Result<quick_junit::Report> {
        match std::fs::read_to_string(&self.report) {
            Ok(xml) => quick_junit::Report::deserialize_from_str(&xml)
                .with_context(|| format!("{}: not a JUnit report", self.report.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(quick_junit::Report::new("nextest-run")),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.report.display())),
        }
    }
}
