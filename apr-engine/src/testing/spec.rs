//! What `#[model_test]` generates: a constant description of one test.
//! Every field is plain data so that the macro can emit it as a `const`.

use crate::dtype::DType;
use crate::tracediff::Classification;

#[derive(Debug, Clone, Copy)]
pub struct TestSpec {
    /// The annotated function's name.
    pub function: &'static str,
    /// The generated test's name (`<function>_<backend>`).
    pub test: &'static str,
    pub module: &'static str,
    /// The user crate's `CARGO_MANIFEST_DIR`: where its Cargo.toml and relative paths are.
    pub manifest_dir: &'static str,
    pub kind: Kind,
    /// The model that conversions start from, when the reference is itself converted.
    pub model: Option<ModelRef>,
    pub reference: Option<ModelRef>,
    pub candidate: Option<ModelRef>,
    pub prompts: &'static [&'static str],
    pub max_tokens: Option<usize>,
    pub tolerance: &'static [ToleranceSpec],
    pub expect: Option<Expect>,
    pub dtypes: &'static [DTypeSel],
    pub containers: &'static [Container],
    /// Tensor names (a trailing `*` matches a prefix) the round trip covers; empty: all.
    pub tensors: &'static [&'static str],
    /// A golden snapshot, relative to the manifest dir.
    pub golden: Option<&'static str>,
    pub backend: BackendKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    FormatEquivalence,
    DtypeRoundtrip,
    TraceDiff,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::FormatEquivalence => "format_equivalence",
            Kind::DtypeRoundtrip => "dtype_roundtrip",
            Kind::TraceDiff => "trace_diff",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum ModelRef {
    /// A name from `[package.metadata.apr.models]`, else a path (relative to the manifest dir).
    Named(&'static str),
    /// A conversion of the base model (`model`, else the reference).
    Convert(ConvertSpec),
}

#[derive(Debug, Clone, Copy)]
pub struct ConvertSpec {
    pub to: Container,
    pub dtype: DTypeSel,
    pub faults: &'static [FaultSpec],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Apr,
    Gguf,
    SafeTensors,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::Apr => "apr",
            Container::Gguf => "gguf",
            Container::SafeTensors => "safetensors",
        }
    }

    pub fn format(self) -> crate::container::FormatKind {
        use crate::container::FormatKind;
        match self {
            Container::Apr => FormatKind::Apr,
            Container::Gguf => FormatKind::Gguf,
            Container::SafeTensors => FormatKind::SafeTensors,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DTypeSel {
    Keep,
    To(DType),
}

impl DTypeSel {
    pub fn label(self) -> String {
        match self {
            DTypeSel::Keep => "keep".into(),
            DTypeSel::To(d) => d.name().to_ascii_lowercase(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum FaultSpec {
    Scale(&'static str, f32),
    Zero(&'static str),
    Noise(&'static str, u64),
    Swap(&'static str, &'static str),
}

/// As the attribute spells it: `scale("blk.5.ffn_down.weight", 1.5)`.
impl std::fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultSpec::Scale(name, factor) => write!(f, "scale({name:?}, {factor})"),
            FaultSpec::Zero(name) => write!(f, "zero({name:?})"),
            FaultSpec::Noise(name, seed) => write!(f, "noise({name:?}, {seed})"),
            FaultSpec::Swap(a, b) => write!(f, "swap({a:?}, {b:?})"),
        }
    }
}

impl FaultSpec {
    pub fn to_fault(self) -> super::faults::Fault {
        use super::faults::Fault;
        match self {
            FaultSpec::Scale(name, factor) => Fault::ScaleTensor { name: name.into(), factor },
            FaultSpec::Zero(name) => Fault::ZeroTensor(name.into()),
            FaultSpec::Noise(name, seed) => Fault::NoiseTensor { name: name.into(), seed },
            FaultSpec::Swap(a, b) => Fault::SwapTensors(a.into(), b.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ToleranceSpec {
    LogitsMaxAbs(f64),
    Nmse(f64),
    Cosine(f64),
    /// KL divergence of the candidate's next-token distribution from the reference's, per position.
    Kld(f64),
    /// The top token agrees at every position.
    Top1,
}

#[derive(Debug, Clone, Copy)]
pub enum Expect {
    Identical,
    Equivalent(&'static [ToleranceSpec]),
    /// Diverged, with this classification when given.
    Diverged(Option<Classification>),
}

/// The backend a generated test runs its models on: the library's own kind.
pub use crate::backend::BackendKind;
