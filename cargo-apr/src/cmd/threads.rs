//! The worker pool size.

use anyhow::Context;

/// Sets rayon's global pool to `threads` (default: all cores), with the calling
/// thread as one of its workers; returns the count. A decode step runs a hundred
/// or so short parallel loops: started from a worker, each hands work to the
/// others and joins in, instead of waking the pool and sleeping until it is done.
pub fn configure(threads: Option<usize>) -> anyhow::Result<usize> {
    let mut pool = rayon::ThreadPoolBuilder::new().use_current_thread();
    if let Some(n) = threads {
        pool = pool.num_threads(n);
    }
    pool.build_global().context("configuring the thread pool")?;
    Ok(rayon::current_num_threads())
}
