//! The tracing flags shared by `run` and `chat`, and what they print.

use std::path::PathBuf;

use apr_engine::model::Model;
use apr_engine::trace::{profile, render, StepTrace, TraceLevel, Tracer};

#[derive(clap::Args, Debug, Default)]
pub struct TraceArgs {
    /// One line per forward call, and the kernel each projection runs on.
    #[arg(long)]
    trace: bool,
    /// How much to trace: basic, layer (per-layer timings) or payload (activation statistics).
    #[arg(long, value_enum, value_name = "LEVEL")]
    trace_level: Option<Level>,
    /// Same as --trace-level payload.
    #[arg(long)]
    trace_payload: bool,
    /// Write the whole trace as JSON (schema in the book) to FILE.
    #[arg(long, value_name = "FILE")]
    trace_output: Option<PathBuf>,
    /// Roofline view: bytes and FLOPs of each operation against this machine's measured limits.
    #[arg(long)]
    profile: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Level {
    Basic,
    Layer,
    Payload,
}

impl TraceArgs {
    /// The level asked for, if any tracing was.
    pub fn level(&self) -> Option<TraceLevel> {
        let level = match (self.trace_payload, self.trace_level) {
            (true, _) | (_, Some(Level::Payload)) => TraceLevel::Payload,
            (_, Some(Level::Layer)) => TraceLevel::Layer,
            (_, Some(Level::Basic)) => TraceLevel::Basic,
            (false, None) if self.trace || self.trace_output.is_some() || self.profile => TraceLevel::Basic,
            (false, None) => return None,
        };
        Some(level)
    }

    pub fn tracer(&self, model: &Model) -> Option<Tracer> {
        self.level().map(|level| Tracer::new(level, &model.config))
    }

    /// Prints the traced calls to stderr, and the per-layer table of the run
    /// (or of the chat turn), when a trace was asked for.
    pub fn print_steps(&self, model: &Model, level: TraceLevel, steps: &[StepTrace]) {
        if !(self.trace || self.trace_level.is_some() || self.trace_payload) {
            return;
        }
        eprint!("{}", render::run_report(steps, model.config.layers, level));
    }

    /// After a run: kernel lines, the roofline and the JSON file.
    pub fn finish(&self, model: &Model, tracer: Tracer) -> anyhow::Result<()> {
        let level = tracer.level();
        self.print_steps(model, level, tracer.steps());
        let trace = tracer.finish(model);
        if self.trace || self.trace_level.is_some() || self.trace_payload {
            eprint!("{}", render::kernel_lines(&trace.kernels));
        }
        let roofline = self.profile.then(|| profile::profile(model, &trace.steps, profile::Machine::measure()));
        if let Some(p) = &roofline {
            eprint!("{}", profile::render(p));
        }
        if let Some(path) = &self.trace_output {
            let mut json = serde_json::to_value(&trace)?;
            if let Some(p) = &roofline {
                json["profile"] = serde_json::to_value(p)?;
            }
            std::fs::write(path, serde_json::to_string_pretty(&json)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!("[trace] written to {}", path.display());
        }
        Ok(())
    }
}
