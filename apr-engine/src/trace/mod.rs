//! Tracing a run: per-call and per-layer timings, activation statistics at
//! every boundary, and the versioned JSON document `--trace-output` writes.
//!
//! A [`Tracer`] is an [`Observer`]: the forward pass shows it what it does and
//! the tracer keeps only what its [`TraceLevel`] asks for. Every number is
//! measured (clock readings around each operation, statistics over the real
//! activations); an untraced run uses `NoObserver`, which reads no clock.

pub mod profile;
pub mod render;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::dtype::DType;
use crate::model::{Boundary, Model, ModelConfig, Observer, Op};
use crate::stats::{stats_of, ValueStats};

/// Version of the trace JSON document; bumped on any incompatible change.
pub const TRACE_SCHEMA_VERSION: u32 = 1;

/// How much a trace records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceLevel {
    /// One line per forward call, and the kernel each projection uses.
    Basic,
    /// Adds per-layer attention, FFN and norm times.
    Layer,
    /// Adds statistics of the activations at every boundary and position.
    Payload,
}

/// Time spent in one operation during one forward call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpTiming {
    pub layer: Option<usize>,
    pub op: Op,
    pub ms: f64,
}

/// One layer's share of a forward call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayerTiming {
    pub layer: usize,
    pub attention_ms: f64,
    pub ffn_ms: f64,
    pub norm_ms: f64,
    pub total_ms: f64,
}

/// Statistics of the activations at one boundary for one position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundaryStats {
    pub position: usize,
    pub layer: Option<usize>,
    pub boundary: Boundary,
    pub stats: ValueStats,
}

/// One forward call: positions `start_pos..start_pos + n_tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepTrace {
    pub start_pos: usize,
    pub n_tokens: usize,
    /// Wall time of the whole call.
    pub total_ms: f64,
    /// Wall time of the decoder layers alone.
    pub layers_ms: f64,
    pub ops: Vec<OpTiming>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub layers: Vec<LayerTiming>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub boundaries: Vec<BoundaryStats>,
}

/// Which kernel a kind of weight runs on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelUse {
    /// Tensor kind, e.g. `attn_q` or `ffn_down`.
    pub tensor: String,
    pub dtype: DType,
    pub kernel: String,
}

/// The facts a trace is about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceModel {
    pub path: String,
    pub format: String,
    pub architecture: String,
    pub layers: usize,
    pub backend: String,
}

/// The whole trace, as `--trace-output` writes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trace {
    pub schema_version: u32,
    pub level: TraceLevel,
    pub model: TraceModel,
    pub kernels: Vec<KernelUse>,
    pub steps: Vec<StepTrace>,
}

/// Collects a [`Trace`] while the model runs.
pub struct Tracer {
    level: TraceLevel,
    widths: BoundaryWidths,
    current: Option<StepInProgress>,
    steps: Vec<StepTrace>,
}

struct StepInProgress {
    start_pos: usize,
    n_tokens: usize,
    started: Instant,
    layers_started: Option<Instant>,
    layers_ms: f64,
    ops: Vec<OpTiming>,
    boundaries: Vec<BoundaryStats>,
}

impl Tracer {
    pub fn new(level: TraceLevel, config: &ModelConfig) -> Self {
        Tracer { level, widths: BoundaryWidths::for_config(config), current: None, steps: Vec::new() }
    }

    pub fn level(&self) -> TraceLevel {
        self.level
    }

    /// The forward calls traced so far.
    pub fn steps(&self) -> &[StepTrace] {
        &self.steps
    }

    /// Forgets the steps traced so far (chat: one trace per turn).
    pub fn take_steps(&mut self) -> Vec<StepTrace> {
        std::mem::take(&mut self.steps)
    }

    /// The finished trace document for `model`.
    pub fn finish(self, model: &Model) -> Trace {
        Trace {
            schema_version: TRACE_SCHEMA_VERSION,
            level: self.level,
            model: TraceModel {
                path: model.file.path.display().to_string(),
                format: model.file.format().to_string(),
                architecture: model.config.architecture.clone(),
                layers: model.config.layers,
                backend: model.backend_name().to_string(),
            },
            kernels: kernel_uses(model),
            steps: self.steps,
        }
    }
}

impl Observer for Tracer {
    fn begin(&mut self, start: usize, n_tokens: usize) {
        self.current = Some(StepInProgress {
            start_pos: start,
            n_tokens,
            started: Instant::now(),
            layers_started: None,
            layers_ms: 0.0,
            ops: Vec::new(),
            boundaries: Vec::new(),
        });
    }

    /// Only the payload level reads activations (the others time boundaries).
    fn wants_values(&self) -> bool {
        self.level >= TraceLevel::Payload
    }

    fn observe(&mut self, layer: Option<usize>, boundary: Boundary, values: &[f32]) {
        let Some(step) = self.current.as_mut() else { return };
        match boundary {
            Boundary::Embedding => step.layers_started = Some(Instant::now()),
            Boundary::FinalNorm => {
                step.layers_ms = step.layers_started.map_or(0.0, |t| ms(t.elapsed()));
            }
            _ => {}
        }
        if self.level < TraceLevel::Payload {
            return;
        }
        let width = self.widths.of(boundary);
        let rows = values.len() / width.max(1);
        // Logits and the final norm may cover only the last positions.
        let first = step.start_pos + step.n_tokens - rows;
        for (i, row) in values.chunks_exact(width).enumerate() {
            step.boundaries.push(BoundaryStats { position: first + i, layer, boundary, stats: stats_of(row) });
        }
    }

    fn wants_timing(&self) -> bool {
        true
    }

    fn timed(&mut self, layer: Option<usize>, op: Op, elapsed: Duration) {
        if let Some(step) = self.current.as_mut() {
            step.ops.push(OpTiming { layer, op, ms: ms(elapsed) });
        }
    }

    fn end(&mut self) {
        let Some(step) = self.current.take() else { return };
        let layers = if self.level >= TraceLevel::Layer { layer_timings(&step.ops) } else { Vec::new() };
        self.steps.push(StepTrace {
            start_pos: step.start_pos,
            n_tokens: step.n_tokens,
            total_ms: ms(step.started.elapsed()),
            layers_ms: step.layers_ms,
            ops: step.ops,
            layers,
            boundaries: step.boundaries,
        });
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Sums each layer's operations into attention, FFN and norm time.
fn layer_timings(ops: &[OpTiming]) -> Vec<LayerTiming> {
    let mut layers: Vec<LayerTiming> = Vec::new();
    for t in ops {
        let Some(layer) = t.layer else { continue };
        if layers.len() <= layer {
            layers.resize_with(layer + 1, LayerTiming::default);
        }
        let entry = &mut layers[layer];
        entry.layer = layer;
        match t.op {
            Op::AttnNorm | Op::FfnNorm => entry.norm_ms += t.ms,
            Op::QkvProjection | Op::Rope | Op::Attention | Op::OutProjection | Op::AttnResidual => {
                entry.attention_ms += t.ms
            }
            Op::GateUpProjection | Op::Activation | Op::DownProjection | Op::FfnResidual => entry.ffn_ms += t.ms,
            Op::Embedding | Op::FinalNorm | Op::LmHead => {}
        }
        entry.total_ms += t.ms;
    }
    layers
}

/// Row width of the activations at each boundary.
#[derive(Debug, Clone, Copy)]
struct BoundaryWidths {
    hidden: usize,
    q: usize,
    kv: usize,
    vocab: usize,
}

impl BoundaryWidths {
    fn for_config(config: &ModelConfig) -> Self {
        BoundaryWidths {
            hidden: config.hidden,
            q: config.heads * config.head_dim,
            kv: config.kv_heads * config.head_dim,
            vocab: config.vocab,
        }
    }

    fn of(&self, boundary: Boundary) -> usize {
        match boundary {
            Boundary::Q => self.q,
            Boundary::K | Boundary::V => self.kv,
            Boundary::Logits => self.vocab,
            _ => self.hidden,
        }
    }
}

/// The kernel each kind of projection runs on, once per kind (layer 0 stands
/// for all layers; a kind whose dtype changes across layers is listed per dtype).
pub fn kernel_uses(model: &Model) -> Vec<KernelUse> {
    let tensors = model.file.tensors();
    let mut uses: Vec<KernelUse> = Vec::new();
    let mut note = |index: usize| {
        let info = &tensors[index];
        let kind = info.name.split('.').rev().nth(1).unwrap_or(&info.name).to_string();
        if !uses.iter().any(|u| u.tensor == kind && u.dtype == info.dtype) {
            uses.push(KernelUse { tensor: kind, dtype: info.dtype, kernel: model.kernel_name(info.dtype).to_string() });
        }
    };
    for layer in &model.weights.layers {
        for index in [layer.q, layer.k, layer.v, layer.o, layer.gate, layer.up, layer.down] {
            note(index);
        }
    }
    note(model.weights.output);
    uses
}
