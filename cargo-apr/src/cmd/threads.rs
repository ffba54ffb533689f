//! The worker pool size.

use anyhow::Context;

/// Sets rayon's global pool to `threads` (default: all cores); returns the count.
pub fn configure(threads: Option<usize>) -> anyhow::Result<usize> {
    if let Some(n) = threads {
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().context("configuring the thread pool")?;
    }
    Ok(rayon::current_num_threads())
}
