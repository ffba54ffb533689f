//! Runs untrusted work (a model file's chat template) in a forked child
//! process, so that what cannot be caught in-process (a stack overflow, memory
//! exhausted by a value that doubles forty times, a render that never ends)
//! ends the child and comes back as an error instead of ending the caller.
//!
//! The child inherits the caller's memory copy-on-write, runs the closure on
//! the forking thread only, writes its result to a pipe and leaves with
//! `_exit` (no destructors, no flushing of buffers it shares with the parent).
//! Its stderr goes to a second pipe, so the error can quote why it died. On
//! platforms without `fork` the closure runs in-process, and so it does under
//! a fuzzer (`cfg(fuzzing)`): there the fuzzer must see the crash, count the
//! coverage, and not pay a fork per input.

use std::time::Duration;

/// Limits on an isolated run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory the child may allocate on top of what the parent already holds.
    pub extra_memory: u64,
    /// Wall-clock time before the child is killed.
    pub time: Duration,
}

/// Why an isolated run gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsolationError {
    #[error("took longer than {0:?} and was stopped")]
    TimedOut(Duration),
    #[error("crashed ({how}){}", first_words(.stderr))]
    Crashed { how: String, stderr: String },
    #[error("could not be isolated: {0}")]
    Setup(String),
}

/// The child's first line on stderr says why it died (a backtrace may follow).
fn first_words(stderr: &str) -> String {
    match stderr.lines().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(": {}", line.trim()),
        None => String::new(),
    }
}

/// Runs `work` in a child process under `limits`; its output travels back as
/// bytes (`encode` in the child, `decode` here).
#[cfg(all(unix, not(fuzzing)))]
pub fn run<T>(
    limits: Limits,
    work: impl FnOnce() -> T,
    encode: impl FnOnce(&T) -> Vec<u8>,
    decode: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<T, IsolationError> {
    unix::run(limits, || encode(&work())).and_then(|bytes| {
        decode(&bytes)
            .ok_or_else(|| IsolationError::Crashed { how: "its result did not decode".into(), stderr: String::new() })
    })
}

#[cfg(any(not(unix), fuzzing))]
pub fn run<T>(
    _limits: Limits,
    work: impl FnOnce() -> T,
    _encode: impl FnOnce(&T) -> Vec<u8>,
    _decode: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<T, IsolationError> {
    Ok(work())
}

#[cfg(all(unix, not(fuzzing)))]
mod unix {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Instant;

    use super::{IsolationError, Limits};

    /// Bytes of output the parent accepts from the child's stderr.
    const STDERR_KEEP: usize = 4096;

    pub fn run(limits: Limits, work: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, IsolationError> {
        let (result_read, result_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        let data_limit = data_size().saturating_add(limits.extra_memory);
        // SAFETY: the child touches only its own copies of the two pipe ends,
        // then runs `work` on this thread and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(IsolationError::Setup(format!("fork: {}", std::io::Error::last_os_error())));
        }
        if pid == 0 {
            drop(result_read);
            drop(stderr_read);
            child(result_write, stderr_write, data_limit, work);
        }
        drop(result_write);
        drop(stderr_write);
        let deadline = Instant::now() + limits.time;
        let collected = collect(result_read, stderr_read, deadline);
        if collected.is_none() {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let status = wait(pid)?;
        let Some((result, stderr)) = collected else {
            return Err(IsolationError::TimedOut(limits.time));
        };
        let stderr = String::from_utf8_lossy(&stderr).into_owned();
        if libc::WIFSIGNALED(status) {
            let how = match libc::WTERMSIG(status) {
                // Rust prints why before it aborts; guess only when it could not.
                libc::SIGABRT if !stderr.trim().is_empty() => "aborted".to_string(),
                libc::SIGABRT => "aborted: stack overflow or memory budget exceeded".to_string(),
                libc::SIGSEGV => "segmentation fault: stack overflow".to_string(),
                signal => format!("killed by signal {signal}"),
            };
            return Err(IsolationError::Crashed { how, stderr });
        }
        match libc::WEXITSTATUS(status) {
            0 => Ok(result),
            code => Err(IsolationError::Crashed { how: format!("exit status {code}"), stderr }),
        }
    }

    fn child(result: OwnedFd, stderr: OwnedFd, data_limit: u64, work: impl FnOnce() -> Vec<u8>) -> ! {
        // SAFETY: plain system calls on descriptors this process owns.
        unsafe {
            libc::dup2(stderr.as_raw_fd(), libc::STDERR_FILENO);
            let limit = libc::rlimit { rlim_cur: data_limit as libc::rlim_t, rlim_max: data_limit as libc::rlim_t };
            libc::setrlimit(libc::RLIMIT_DATA, &limit);
        }
        // A panic must not unwind into the parent's code that this child shares.
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
            Ok(bytes) => match File::from(result).write_all(&bytes) {
                Ok(()) => 0,
                Err(_) => 3,
            },
            Err(_) => 4,
        };
        // SAFETY: leaves without running destructors or atexit handlers that belong to the parent.
        unsafe { libc::_exit(code) }
    }

    fn pipe() -> Result<(OwnedFd, OwnedFd), IsolationError> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(IsolationError::Setup(format!("pipe: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: both descriptors were just opened and are owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    /// Reads both pipes to their end, or gives up at `deadline` (None).
    fn collect(result: OwnedFd, stderr: OwnedFd, deadline: Instant) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut open = [Some(File::from(result)), Some(File::from(stderr))];
        let mut bytes = [Vec::new(), Vec::new()];
        while open.iter().any(Option::is_some) {
            let left = deadline.checked_duration_since(Instant::now())?;
            let mut polled: Vec<libc::pollfd> = open
                .iter()
                .flatten()
                .map(|f| libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 })
                .collect();
            let timeout = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `polled` is a valid array of pollfd for the call's duration.
            let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout) };
            if ready < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return None;
            }
            for p in polled.iter().filter(|p| p.revents != 0) {
                let i = open.iter().position(|f| f.as_ref().is_some_and(|f| f.as_raw_fd() == p.fd))?;
                let mut chunk = [0u8; 64 * 1024];
                match open[i].as_mut()?.read(&mut chunk) {
                    Ok(0) | Err(_) => open[i] = None,
                    Ok(_) if i == 1 && bytes[1].len() >= STDERR_KEEP => {}
                    Ok(n) => bytes[i].extend_from_slice(&chunk[..n]),
                }
            }
        }
        let [result, stderr] = bytes;
        Some((result, stderr))
    }

    fn wait(pid: libc::pid_t) -> Result<libc::c_int, IsolationError> {
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child.
            if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
                return Ok(status);
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(IsolationError::Setup(format!("waitpid: {err}")));
            }
        }
    }

    /// This process's data size (what RLIMIT_DATA counts), from /proc where there is one.
    fn data_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmData:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        // Without /proc, leave the child unlimited rather than starve it.
        kib.map_or(u64::MAX / 2, |k| k * 1024)
    }
}

#[cfg(all(test, unix, not(fuzzing)))]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { extra_memory: 256 << 20, time: Duration::from_secs(20) };

    #[allow(clippy::ptr_arg)] // the shape `run` hands its encoder: &T for T = Vec<u8>
    fn bytes(v: &Vec<u8>) -> Vec<u8> {
        v.to_vec()
    }

    fn decode(b: &[u8]) -> Option<Vec<u8>> {
        Some(b.to_vec())
    }

    #[test]
    fn result_comes_back() {
        let big = vec![7u8; 1 << 20];
        let out = run(LIMITS, || big.clone(), bytes, decode).unwrap();
        assert_eq!(out, big);
    }

    #[test]
    fn runaway_memory_ends_the_child_only() {
        let err = run(
            LIMITS,
            || {
                let mut s = vec![1u8; 1 << 20];
                for _ in 0..20 {
                    s.extend_from_slice(&s.clone());
                }
                s
            },
            bytes,
            decode,
        )
        .unwrap_err();
        assert!(matches!(err, IsolationError::Crashed { .. }), "{err}");
        assert!(err.to_string().contains("memory allocation"), "{err}");
    }

    #[test]
    fn endless_work_is_stopped() {
        let limits = Limits { time: Duration::from_millis(300), ..LIMITS };
        let err = run(
            limits,
            || loop {
                std::hint::spin_loop();
            },
            |_: &()| Vec::new(),
            |_| Some(()),
        )
        .unwrap_err();
        assert_eq!(err, IsolationError::TimedOut(Duration::from_millis(300)));
    }

    #[test]
    fn stack_overflow_ends_the_child_only() {
        #[allow(unconditional_recursion)]
        fn deep(n: u64) -> u64 {
            let pad = [n; 64];
            std::hint::black_box(&pad);
            deep(n + 1) + pad[3]
        }
        let err = run(LIMITS, || deep(0), |_| Vec::new(), |_| Some(0)).unwrap_err();
        assert!(err.to_string().contains("overflowed its stack"), "{err}");
    }
}
