//! The worker pool size.

use anyhow::Context;

/// More workers than this many per core only adds spinning and switching: a
/// decode step's short parallel loops then wait on threads the OS has parked.
const MAX_THREADS_PER_CORE: usize = 2;

/// Sets rayon's global pool to `threads` (default: all cores; at most
/// `MAX_THREADS_PER_CORE` per core, said on stderr), with the calling
/// thread as one of its workers; returns the count. A decode step runs a hundred
/// or so short parallel loops: started from a worker, each hands work to the
/// others and joins in, instead of waking the pool and sleeping until it is done.
pub fn configure(threads: Option<usize>) -> anyhow::Result<usize> {
    let mut pool = rayon::ThreadPoolBuilder::new().use_current_thread();
    if let Some(asked) = threads {
        pool = pool.num_threads(capped(asked, cores()));
    }
    pool.build_global().context("configuring the thread pool")?;
    Ok(rayon::current_num_threads())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `asked`, or the cap with a note when it is above it.
fn capped(asked: usize, cores: usize) -> usize {
    let limit = cores * MAX_THREADS_PER_CORE;
    if asked > limit {
        eprintln!("note: --threads {asked} capped at {limit} ({MAX_THREADS_PER_CORE} per core, {cores} cores)");
        return limit;
    }
    asked
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_counts_above_the_cap_are_capped() {
        assert_eq!(super::capped(4000, 8), 16);
        assert_eq!(super::capped(16, 8), 16);
        assert_eq!(super::capped(3, 8), 3);
    }
}
