//! Human-readable trace output: the lines `--trace`, `--trace-level layer`
//! and `--trace-level payload` print.

use std::fmt::Write;

use super::{KernelUse, LayerTiming, StepTrace, TraceLevel};

/// `[TRACE] pos=14: 28 layers took 6.7 ms` (a prefill call names its range).
pub fn step_line(step: &StepTrace, layers: usize) -> String {
    let positions = if step.n_tokens == 1 {
        format!("pos={}", step.start_pos)
    } else {
        format!("pos={}..{} ({} tokens)", step.start_pos, step.start_pos + step.n_tokens - 1, step.n_tokens)
    };
    format!("[TRACE] {positions}: {layers} layers took {:.1} ms (call {:.1} ms)", step.layers_ms, step.total_ms)
}

/// One line per kind of projection: which kernel it runs on.
pub fn kernel_lines(kernels: &[KernelUse]) -> String {
    let mut out = String::new();
    for k in kernels {
        let _ = writeln!(out, "[TRACE] kernel {:<12} {:<6} {}", k.tensor, k.dtype.name(), k.kernel);
    }
    out
}

/// The per-layer table of a run: attention, FFN, norm and total ms, summed
/// over every call (prefill and each decoded token).
pub fn layer_table(steps: &[StepTrace]) -> String {
    let mut totals: Vec<LayerTiming> = Vec::new();
    for l in steps.iter().flat_map(|s| &s.layers) {
        if totals.len() <= l.layer {
            totals.resize_with(l.layer + 1, LayerTiming::default);
        }
        let t = &mut totals[l.layer];
        t.layer = l.layer;
        t.attention_ms += l.attention_ms;
        t.ffn_ms += l.ffn_ms;
        t.norm_ms += l.norm_ms;
        t.total_ms += l.total_ms;
    }
    let mut out = String::new();
    let _ = writeln!(out, "[TRACE] per layer over {} calls:", steps.len());
    let _ = writeln!(out, "{:>5} {:>12} {:>9} {:>9} {:>9}", "layer", "attention ms", "ffn ms", "norm ms", "total ms");
    for l in &totals {
        let _ = writeln!(
            out,
            "{:>5} {:>12.3} {:>9.3} {:>9.3} {:>9.3}",
            l.layer, l.attention_ms, l.ffn_ms, l.norm_ms, l.total_ms
        );
    }
    out
}

/// The statistics of every boundary of one call, one row per position and boundary.
pub fn payload_table(step: &StepTrace) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>4} {:>5} {:<14} {:>11} {:>10} {:>11} {:>11} {:>11} {:>4} {:>4} {:>6}",
        "pos", "layer", "boundary", "mean", "std", "min", "max", "l2", "nan", "inf", "zeros"
    );
    for b in &step.boundaries {
        let layer = b.layer.map_or("-".to_string(), |l| l.to_string());
        let s = &b.stats;
        let _ = writeln!(
            out,
            "{:>4} {:>5} {:<14} {:>11.4e} {:>10.4e} {:>11.4e} {:>11.4e} {:>11.4e} {:>4} {:>4} {:>6.3}",
            b.position,
            layer,
            format!("{:?}", b.boundary),
            s.mean,
            s.std,
            s.min,
            s.max,
            s.l2,
            s.nan,
            s.inf,
            s.zero_fraction
        );
    }
    out
}

/// Everything a level prints for a run: a line per call (with its payload
/// statistics at that level), then the per-layer table.
pub fn run_report(steps: &[StepTrace], layers: usize, level: TraceLevel) -> String {
    let mut out = String::new();
    for step in steps {
        out.push_str(&step_line(step, layers));
        out.push('\n');
        if level >= TraceLevel::Payload {
            out.push_str(&payload_table(step));
        }
    }
    if level >= TraceLevel::Layer {
        out.push_str(&layer_table(steps));
    }
    out
}
