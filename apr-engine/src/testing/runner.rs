//! Runs one generated test: resolves the models (by name or path, converting
//! through the cache), performs the test's kind, writes the report, and
//! panics with the rendered report when it failed.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cache;
use super::compare;
use super::faults::write_faulty_copy;
use super::manifest::{models_in_manifest, DeclaredModel, Source};
use super::report::{Report, Status, SCHEMA};
use super::roundtrip;
use super::spec::{BackendKind, ConvertSpec, DTypeSel, Kind, ModelRef, TestSpec};
use crate::container::{detect_format, FormatKind, ModelFile};
use crate::convert::{convert, ConvertOptions, DTypeChoice};
use crate::error::{Error, Result};

/// Runs the test `spec`; on a pass, hands the report to `body`.
pub fn run(spec: &TestSpec, body: impl FnOnce(&Report)) {
    let started = Instant::now();
    let mut report = skeleton(spec);
    let report_dir = cache::report_dir(Path::new(spec.manifest_dir));
    if let Some(reason) = backend_unavailable(spec.backend) {
        report.formats = declared_formats(spec);
        report.status = Status::Skip;
        report.reason = Some(reason.clone());
        write(&report, &report_dir);
        println!("SKIP {}: {reason}", report.test);
        return;
    }
    let outcome = execute(spec, &mut report);
    report.duration_s = started.elapsed().as_secs_f64();
    if let Err(e) = outcome {
        report.status = Status::Fail;
        report.reason = Some(e.to_string());
    }
    write(&report, &report_dir);
    if report.status == Status::Fail {
        panic!("\n{}", report.render());
    }
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&report))) {
        report.status = Status::Fail;
        report.reason = Some("the test's own assertions failed (see the panic message)".into());
        write(&report, &report_dir);
        resume_unwind(panic);
    }
}

fn write(report: &Report, dir: &Path) {
    if let Err(e) = report.write(dir) {
        eprintln!("warning: could not write the report of {} under {}: {e}", report.test, dir.display());
    }
}

/// Why a backend cannot run here, or `None` if it can. `APR_BACKEND=NAME`
/// (set by `cargo apr test --backend`) leaves the other backends out.
pub fn backend_unavailable(backend: BackendKind) -> Option<String> {
    if let Ok(selected) = std::env::var("APR_BACKEND") {
        if selected != "all" && selected != backend.name() {
            return Some(format!("backend {} not selected (APR_BACKEND={selected})", backend.name()));
        }
    }
    backend.unavailable()
}

fn skeleton(spec: &TestSpec) -> Report {
    let label = |r: Option<&ModelRef>| r.map(model_label).unwrap_or_default();
    let reference = spec.reference.as_ref().or(spec.model.as_ref());
    Report {
        schema: SCHEMA,
        test: format!("{}::{}", spec.module, spec.test),
        kind: spec.kind.name().into(),
        reference: label(reference),
        candidate: match spec.kind {
            Kind::DtypeRoundtrip => {
                let dtypes: Vec<String> = spec.dtypes.iter().map(|d| d.label()).collect();
                let containers: Vec<&str> = spec.containers.iter().map(|c| c.extension()).collect();
                format!("[{}] x [{}]", dtypes.join(","), containers.join(","))
            }
            _ => label(spec.candidate.as_ref()),
        },
        formats: String::new(),
        backend: spec.backend.name().into(),
        status: Status::Pass,
        reason: None,
        duration_s: 0.0,
        key_figure: String::new(),
        prompts: Vec::new(),
        roundtrip: Vec::new(),
        golden: None,
    }
}

fn execute(spec: &TestSpec, report: &mut Report) -> Result<()> {
    let resolver = Resolver::new(spec)?;
    let base = spec.model.as_ref().or(spec.reference.as_ref()).ok_or_else(|| Error::Invalid("no reference".into()))?;
    let base = resolver.resolve(base, None)?;
    match spec.kind {
        Kind::DtypeRoundtrip => {
            let containers: Vec<&str> = spec.containers.iter().map(|c| c.extension()).collect();
            report.formats = format!("{} -> {}", format_name(&base), containers.join(","));
            roundtrip::run(spec, report, &base, &resolver.cache_dir)
        }
        Kind::FormatEquivalence | Kind::TraceDiff => {
            let reference = match &spec.reference {
                Some(r) => resolver.resolve(r, Some(&base))?,
                None => base.clone(),
            };
            let candidate_ref = spec.candidate.as_ref().ok_or_else(|| Error::Invalid("no candidate".into()))?;
            let candidate = resolver.resolve(candidate_ref, Some(&base))?;
            report.formats = format!("{} -> {}", format_name(&reference), format_name(&candidate));
            compare::run(spec, report, &reference, &candidate, Path::new(spec.manifest_dir))
        }
    }
}

/// The format pair as far as it is known without converting anything (for skipped tests).
fn declared_formats(spec: &TestSpec) -> String {
    let resolver = Resolver::new(spec).ok();
    let name = |r: Option<&ModelRef>| match r {
        Some(ModelRef::Convert(c)) => c.to.extension(),
        Some(ModelRef::Named(n)) => {
            resolver.as_ref().and_then(|res| res.named(n).ok()).map_or("?", |p| format_name(&p))
        }
        None => "?",
    };
    let reference = name(spec.reference.as_ref().or(spec.model.as_ref()));
    match spec.kind {
        Kind::DtypeRoundtrip => {
            let containers: Vec<&str> = spec.containers.iter().map(|c| c.extension()).collect();
            format!("{reference} -> {}", containers.join(","))
        }
        _ => format!("{reference} -> {}", name(spec.candidate.as_ref())),
    }
}

/// `gguf`, `apr` or `safetensors`, from the file's first bytes.
pub fn format_name(path: &Path) -> &'static str {
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head));
    match read.ok().and_then(|n| detect_format(&head[..n])) {
        Some(FormatKind::Gguf) => "gguf",
        Some(FormatKind::Apr) => "apr",
        Some(FormatKind::SafeTensors) => "safetensors",
        None => "unknown",
    }
}

pub fn model_label(r: &ModelRef) -> String {
    match r {
        ModelRef::Named(name) => (*name).to_string(),
        ModelRef::Convert(c) => convert_label(c),
    }
}

fn convert_label(c: &ConvertSpec) -> String {
    let mut label = format!("convert({}, dtype = {}", c.to.extension(), c.dtype.label());
    for fault in c.faults {
        label.push_str(&format!(", fault = {fault}"));
    }
    label.push(')');
    label
}

/// Finds models by name or path and produces conversions through the cache.
pub struct Resolver {
    manifest_dir: PathBuf,
    models: Vec<DeclaredModel>,
    pub cache_dir: PathBuf,
}

impl Resolver {
    pub fn new(spec: &TestSpec) -> Result<Resolver> {
        let manifest_dir = PathBuf::from(spec.manifest_dir);
        Ok(Resolver {
            models: models_in_manifest(&manifest_dir)?,
            cache_dir: cache::cache_dir(&manifest_dir),
            manifest_dir,
        })
    }

    /// The file of `r`; conversions start from `base`.
    pub fn resolve(&self, r: &ModelRef, base: Option<&Path>) -> Result<PathBuf> {
        match r {
            ModelRef::Named(name) => self.named(name),
            ModelRef::Convert(c) => {
                let base = base.ok_or_else(|| Error::Invalid("convert(...) needs a model to start from".into()))?;
                self.converted(base, c)
            }
        }
    }

    pub fn named(&self, name: &str) -> Result<PathBuf> {
        if let Some(model) = self.models.iter().find(|m| m.name == name) {
            if !model.local_path.is_file() {
                return Err(Error::Invalid(match model.source {
                    Source::Path(_) => format!(
                        "model `{name}` is not at {}: it is declared by `path`, a file of your own tree that \
                         nothing fetches; write it there first (your converter's output, say)",
                        model.local_path.display()
                    ),
                    _ => format!(
                        "model `{name}` is not at {}; fetch it with: {} (in {})",
                        model.local_path.display(),
                        model.fetch_command(),
                        self.manifest_dir.display()
                    ),
                }));
            }
            model.verify()?;
            return Ok(model.local_path.clone());
        }
        let path = self.manifest_dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
        let known: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        Err(Error::Invalid(format!(
            "`{name}` is neither a model in [package.metadata.apr.models] of {}/Cargo.toml (declared: {}) nor an existing file ({})",
            self.manifest_dir.display(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") },
            path.display()
        )))
    }

    /// `base` converted as `c` says: the container and dtype first, then the faults on top.
    fn converted(&self, base: &Path, c: &ConvertSpec) -> Result<PathBuf> {
        let ext = c.to.extension();
        let plain = ConvertSpec { faults: &[], ..*c };
        let options = format!("convert to={ext} dtype={}", c.dtype.label());
        let converted = cache::cached(&self.cache_dir, base, &options, ext, |tmp| {
            let input = ModelFile::open(base)?;
            let dtype = match plain.dtype {
                DTypeSel::Keep => DTypeChoice::Keep,
                DTypeSel::To(d) => DTypeChoice::To(d),
            };
            convert(&input, tmp, ConvertOptions { to: c.to.format(), dtype, force: true }, &mut |_| {}).map(drop)
        })?;
        if c.faults.is_empty() {
            return Ok(converted);
        }
        let faults: Vec<_> = c.faults.iter().map(|f| f.to_fault()).collect();
        cache::cached(&self.cache_dir, &converted, &format!("faults {:?}", c.faults), ext, |tmp| {
            write_faulty_copy(&ModelFile::open(&converted)?, tmp, &faults, true)
        })
    }
}
