//! Locating the reference models fetched by `scripts/fetch-models.sh`.

use std::path::PathBuf;

/// A reference model: its file name and the fetch script's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceModel {
    pub file: &'static str,
    pub fetch_name: &'static str,
}

pub const QWEN_0_5B: ReferenceModel =
    ReferenceModel { file: "qwen2.5-coder-0.5b-instruct.gguf", fetch_name: "qwen-0.5b" };
pub const QWEN_1_5B: ReferenceModel =
    ReferenceModel { file: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", fetch_name: "qwen-1.5b" };
pub const SMOLLM2: ReferenceModel = ReferenceModel { file: "smollm2-135m-instruct-q4_1.gguf", fetch_name: "smollm2" };

/// `${APR_MODEL_DIR:-$HOME/.cache/apr/models}`.
pub fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("APR_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/apr/models")
}

impl ReferenceModel {
    pub fn path(&self) -> PathBuf {
        model_dir().join(self.file)
    }

    /// The model's path, or a panic that says how to fetch it.
    pub fn require(&self) -> PathBuf {
        let path = self.path();
        assert!(
            path.is_file(),
            "model {} is not at {}; fetch it with: scripts/fetch-models.sh {}",
            self.file,
            path.display(),
            self.fetch_name
        );
        path
    }
}

/// llama.cpp's outputs on the reference models, committed in the repository's
/// `reference/` folder (its README says how they were made), or `$APR_REFERENCE_DIR`.
pub fn reference_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("APR_REFERENCE_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reference")
}

impl ReferenceModel {
    /// llama.cpp's outputs for this model under `reference/` (folder named after the file).
    pub fn reference_file(&self, name: &str) -> PathBuf {
        let folder = self.file.trim_end_matches(".gguf");
        let path = reference_dir().join(folder).join(name);
        assert!(path.is_file(), "reference file {} is missing from the repository's reference/ folder", path.display());
        path
    }
}
