//! What the forward pass shows to whoever watches it: the boundaries where
//! activations can be seen, the operations that are timed, and the
//! [`Observer`] that receives both.

use std::time::Duration;

/// A point in the forward pass where activations can be observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    Embedding,
    AttnNorm,
    Q,
    K,
    V,
    AttnOutput,
    AttnResidual,
    FfnNorm,
    FfnOutput,
    /// The layer's output.
    FfnResidual,
    FinalNorm,
    Logits,
}

/// One timed operation of the forward pass (what `--trace` and `--profile` report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Embedding,
    AttnNorm,
    QkvProjection,
    Rope,
    Attention,
    OutProjection,
    AttnResidual,
    FfnNorm,
    GateUpProjection,
    Activation,
    DownProjection,
    FfnResidual,
    FinalNorm,
    LmHead,
}

/// Sees what the forward pass does: each call's positions, each boundary
/// reached (with its activations, `n_tokens` rows, when it wants them) and,
/// when asked, each operation's duration. `layer` is `None` outside the
/// decoder layers. Values cross from the backend to the host only for an
/// observer that wants them.
pub trait Observer {
    /// A forward call over positions `start..start + n_tokens` begins.
    fn begin(&mut self, _start: usize, _n_tokens: usize) {}
    /// Whether [`Observer::observe`] should get the activations (else it gets
    /// an empty slice, and the backend reads nothing back).
    fn wants_values(&self) -> bool {
        true
    }
    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]);
    /// Values to continue with instead of the ones just observed at this
    /// boundary (trace-diff's isolation: every operation fed the reference's
    /// input). Asked right after [`Observer::observe`]; `None` keeps them.
    fn replacement(&mut self, _layer: Option<usize>, _boundary: Boundary) -> Option<&[f32]> {
        None
    }
    /// Whether [`Observer::timed`] should be called (the clock is read only then).
    fn wants_timing(&self) -> bool {
        false
    }
    fn timed(&mut self, _layer: Option<usize>, _op: Op, _elapsed: Duration) {}
    /// The forward call ends.
    fn end(&mut self) {}
    /// True for an observer that needs none of the calls above but `begin`
    /// and `end`: the backend may then replay a recorded step, which calls nothing.
    fn ignores_steps(&self) -> bool {
        false
    }
}

/// The observer of an untraced run: does nothing, costs nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    fn wants_values(&self) -> bool {
        false
    }
    #[inline]
    fn observe(&mut self, _: Option<usize>, _: Boundary, _: &[f32]) {}
    fn ignores_steps(&self) -> bool {
        true
    }
}
