//! The tracing flags shared by `run` and `chat`, and what they print.

use std::cell::OnceCell;
use std::path::PathBuf;

use apr_engine::model::Model;
use apr_engine::trace::profile::{self, Machine, Profile};
use apr_engine::trace::{render, StepTrace, Trace, TraceLevel, Tracer};

use super::UsageError;

#[derive(clap::Args, Debug, Default)]
pub struct TraceArgs {
    /// One line per forward call, and the kernel each projection runs on.
    #[arg(long)]
    trace: bool,
    /// How much to trace: none, basic, layer (per-layer timings) or payload (activation statistics).
    #[arg(long, value_enum, value_name = "LEVEL")]
    trace_level: Option<Level>,
    /// Same as --trace-level payload.
    #[arg(long)]
    trace_payload: bool,
    /// Write the whole trace as JSON (schema in the book) to FILE; for chat, the whole session.
    #[arg(long, value_name = "FILE")]
    trace_output: Option<PathBuf>,
    /// Roofline view: bytes and FLOPs of each operation against this machine's measured
    /// limits (chat: after each turn).
    #[arg(long)]
    profile: bool,
    /// The machine's limits, measured once per process.
    #[arg(skip)]
    machine: OnceCell<Machine>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Level {
    /// No tracing (the default).
    None,
    Basic,
    Layer,
    Payload,
}

impl TraceArgs {
    /// The level asked for, if any tracing was; `--trace-level none` with a
    /// flag that needs a trace is a usage error.
    pub fn level(&self) -> Result<Option<TraceLevel>, UsageError> {
        let wants_trace = self.trace || self.trace_payload || self.trace_output.is_some() || self.profile;
        let level = match (self.trace_payload, self.trace_level) {
            (_, Some(Level::None)) if wants_trace => {
                return Err(UsageError(
                    "--trace-level none contradicts --trace, --trace-payload, --trace-output and --profile".into(),
                ))
            }
            (_, Some(Level::None)) => return Ok(None),
            (true, _) | (_, Some(Level::Payload)) => TraceLevel::Payload,
            (_, Some(Level::Layer)) => TraceLevel::Layer,
            (_, Some(Level::Basic)) => TraceLevel::Basic,
            (false, None) if wants_trace => TraceLevel::Basic,
            (false, None) => return Ok(None),
        };
        Ok(Some(level))
    }

    pub fn tracer(&self, model: &Model) -> Result<Option<Tracer>, UsageError> {
        Ok(self.level()?.map(|level| Tracer::new(level, &model.config)))
    }

    /// Whether the traced calls are printed (the JSON file and the roofline alone print none).
    fn prints_steps(&self) -> bool {
        self.trace || self.trace_payload || matches!(self.trace_level, Some(l) if l != Level::None)
    }

    /// Prints what a run (or one chat turn) traced: the calls and per-layer
    /// table when a trace was asked for, and the roofline with `--profile`;
    /// returns the roofline.
    pub fn print_steps(&self, model: &Model, level: TraceLevel, steps: &[StepTrace]) -> Option<Profile> {
        if self.prints_steps() {
            eprint!("{}", render::run_report(steps, model.config.layers, level));
        }
        let roofline = self.roofline(model, steps);
        if let Some(p) = &roofline {
            eprint!("{}", profile::render(p));
        }
        roofline
    }

    /// With `--profile`: `steps` placed on this machine's roofline.
    pub fn roofline(&self, model: &Model, steps: &[StepTrace]) -> Option<Profile> {
        self.profile.then(|| profile::profile(model, steps, *self.machine.get_or_init(Machine::measure)))
    }

    /// After a run: the calls, the roofline, the kernel lines and the JSON file.
    pub fn finish(&self, model: &Model, tracer: Tracer) -> anyhow::Result<()> {
        let roofline = self.print_steps(model, tracer.level(), tracer.steps());
        self.finish_session(tracer.finish(model), roofline.as_ref())
    }

    /// After a run or a whole chat session (`trace` holding every call): the
    /// kernel lines and the JSON file, with the roofline when there is one.
    pub fn finish_session(&self, trace: Trace, roofline: Option<&Profile>) -> anyhow::Result<()> {
        if self.prints_steps() {
            eprint!("{}", render::kernel_lines(&trace.kernels));
        }
        let Some(path) = &self.trace_output else { return Ok(()) };
        let mut json = serde_json::to_value(&trace)?;
        json["schema"] = serde_json::json!("apr.trace.v1");
        if let Some(p) = roofline {
            json["profile"] = serde_json::to_value(p)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        eprintln!("[trace] written to {}", path.display());
        Ok(())
    }
}
