//! Decode steps as CUDA graphs. A decode step is a few hundred small kernel
//! launches; launched one by one, the host's launch cost, not the GPU, sets
//! the pace. The forward pass gives each step a key naming everything the
//! launches bake in (buffers, row counts); token ids and positions reach the
//! kernels through device buffers written before the step. So the second time
//! a key is seen, its launches are recorded into a graph, and from then on the
//! whole step is one graph launch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaGraph, CudaStream};

use super::device_error;
use crate::backend::StepKey;
use crate::error::Result;

/// Recorded graphs kept at most; a server's changing batches make new keys,
/// and graphs of finished requests are never replayed.
const MAX_GRAPHS: usize = 64;

#[derive(Default)]
pub(super) struct Steps {
    /// One step at a time on the stream: a recording must hold only its own launches.
    graphs: Mutex<HashMap<StepKey, Recording>>,
    recording: AtomicBool,
    /// Set when a buffer the recordings point at was replaced: they are dropped at the next step.
    stale: AtomicBool,
}

enum Recording {
    /// Seen once, run launch by launch (which also allocates what it lazily needs).
    Seen,
    Ready(Graph),
}

/// A graph is used only under the `Steps` mutex.
struct Graph(CudaGraph);
// SAFETY: the graph is created, launched and dropped only while `Steps::graphs` is locked.
unsafe impl Send for Graph {}

impl Steps {
    /// Runs `work` on `stream`, or replays its recording for `key`.
    pub fn run(
        &self,
        stream: &Arc<CudaStream>,
        key: Option<&StepKey>,
        work: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        let mut graphs = self.graphs.lock().unwrap_or_else(|p| p.into_inner());
        if self.stale.swap(false, Ordering::Relaxed) {
            graphs.clear();
        }
        let Some(key) = key.filter(|_| graphs_enabled()) else { return work() };
        match graphs.get(key) {
            Some(Recording::Ready(graph)) => graph.0.launch().map_err(device_error),
            Some(Recording::Seen) => {
                let graph = self.record(stream, work)?;
                graph.0.launch().map_err(device_error)?;
                graphs.insert(key.clone(), Recording::Ready(graph));
                Ok(())
            }
            None => {
                if graphs.len() >= MAX_GRAPHS {
                    graphs.clear();
                }
                graphs.insert(key.clone(), Recording::Seen);
                work()
            }
        }
    }

    fn record(&self, stream: &Arc<CudaStream>, work: &mut dyn FnMut() -> Result<()>) -> Result<Graph> {
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(device_error)?;
        self.recording.store(true, Ordering::Relaxed);
        let worked = work();
        self.recording.store(false, Ordering::Relaxed);
        // The capture ends whatever `work` did, so the stream is usable again.
        let captured = stream.end_capture(CUgraphInstantiate_flags(0));
        worked?;
        match captured.map_err(device_error)? {
            Some(graph) => Ok(Graph(graph)),
            None => Err(device_error("recording a decode step gave no graph")),
        }
    }

    /// Drops every recording before the next step (a buffer they point at is
    /// being replaced; only a step run launch by launch replaces one).
    pub fn forget_all(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    /// An error if a step is being recorded: what `what` needs cannot be allocated inside a graph.
    pub fn check_not_recording(&self, what: &str) -> Result<()> {
        if self.recording.load(Ordering::Relaxed) {
            return Err(device_error(format!("{what} would be allocated while recording a step")));
        }
        Ok(())
    }
}

/// `APR_CUDA_GRAPHS=0` runs every step launch by launch (to compare, or to debug a kernel).
fn graphs_enabled() -> bool {
    std::env::var_os("APR_CUDA_GRAPHS").is_none_or(|v| v != "0")
}
