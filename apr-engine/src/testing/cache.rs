//! Where tests keep their outputs (`target/apr/`), and the conversion cache:
//! each conversion is done once, keyed by its input's fingerprint and its
//! options, and shared safely by concurrent test threads and processes
//! (a lock file created with `create_new`, output written to a temporary
//! name and renamed into place).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::manifest::{file_fingerprint, hex};
use crate::error::{Error, Result};

/// The target directory of the running test: `$APR_TARGET_DIR`, `$CARGO_TARGET_DIR`,
/// or found from the test binary's path (`<target>/<profile>/deps/<test>`).
pub fn target_dir(manifest_dir: &Path) -> PathBuf {
    for var in ["APR_TARGET_DIR", "CARGO_TARGET_DIR"] {
        if let Some(dir) = std::env::var_os(var) {
            let dir = PathBuf::from(dir);
            return if dir.is_absolute() { dir } else { manifest_dir.join(dir) };
        }
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let deps = exe.parent()?;
        (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
    });
    from_exe.unwrap_or_else(|| manifest_dir.join("target"))
}

/// `$APR_REPORT_DIR`, else `<target>/apr/reports`.
pub fn report_dir(manifest_dir: &Path) -> PathBuf {
    match std::env::var_os("APR_REPORT_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir(manifest_dir).join("apr/reports"),
    }
}

/// `$APR_CACHE_DIR`, else `<target>/apr/cache`.
pub fn cache_dir(manifest_dir: &Path) -> PathBuf {
    match std::env::var_os("APR_CACHE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => target_dir(manifest_dir).join("apr/cache"),
    }
}

/// The cached output for `input` under `options` (a description that changes
/// whenever the output would), produced by `produce(temporary_path)` on a miss.
/// The temporary path has `extension`, so writers that pick a format by
/// extension work unchanged.
pub fn cached(
    cache: &Path,
    input: &Path,
    options: &str,
    extension: &str,
    produce: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    let key = cache_key(input, options)?;
    let stem = input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let output = cache.join(format!("{stem}-{key}.{extension}"));
    if output.is_file() {
        return Ok(output);
    }
    let _lock = Lock::acquire(&cache.join(format!("{stem}-{key}.lock")))?;
    // Another thread or process may have finished it while we waited.
    if output.is_file() {
        return Ok(output);
    }
    let temporary = cache.join(format!("{stem}-{key}.tmp{}.{extension}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let produced =
        produce(&temporary).and_then(|()| std::fs::rename(&temporary, &output).map_err(|e| Error::io(&output, e)));
    if produced.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    produced.map(|()| output)
}

/// 16 hex digits of sha256(input fingerprint, options).
pub fn cache_key(input: &Path, options: &str) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(file_fingerprint(input)?.as_bytes());
    hasher.update([0]);
    hasher.update(options.as_bytes());
    Ok(hex(&hasher.finalize()[..8]))
}

/// A lock file held while a conversion runs; removed on drop. A lock whose
/// owner process is gone, or older than an hour, is taken over.
struct Lock {
    path: PathBuf,
}

const STALE_AFTER: Duration = Duration::from_secs(3600);

impl Lock {
    fn acquire(path: &Path) -> Result<Lock> {
        loop {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut file) => {
                    let _ = write!(file, "{}", std::process::id());
                    return Ok(Lock { path: path.to_path_buf() });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if Self::is_stale(path) {
                        let _ = std::fs::remove_file(path);
                        continue;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    }

    fn is_stale(path: &Path) -> bool {
        let owner_gone = std::fs::read_to_string(path)
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| pid != std::process::id() && !process_alive(pid));
        let old = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        owner_gone || old
    }
}

/// Whether a process exists (Linux: `/proc/<pid>`; elsewhere assume it does and rely on age).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_produce_once() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.bin");
        std::fs::write(&input, b"weights").unwrap();
        let produced = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (dir, input, produced) = (dir.path().to_path_buf(), input.clone(), produced.clone());
                std::thread::spawn(move || {
                    cached(&dir.join("cache"), &input, "to=apr", "apr", |tmp| {
                        produced.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        std::fs::write(tmp, b"converted").map_err(|e| Error::io(tmp, e))
                    })
                    .unwrap()
                })
            })
            .collect();
        let outputs: Vec<PathBuf> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(produced.load(Ordering::SeqCst), 1);
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(std::fs::read(&outputs[0]).unwrap(), b"converted");
        let other = cached(&dir.path().join("cache"), &input, "to=gguf", "gguf", |tmp| {
            std::fs::write(tmp, b"g").map_err(|e| Error::io(tmp, e))
        })
        .unwrap();
        assert_ne!(other, outputs[0], "other options, other entry");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .flatten()
            .filter(|e| {
                !e.file_name().to_string_lossy().ends_with("apr") && !e.file_name().to_string_lossy().ends_with("gguf")
            })
            .collect();
        assert!(leftovers.is_empty(), "no lock or temporary file left: {leftovers:?}");
    }

    #[test]
    fn failed_production_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.bin");
        std::fs::write(&input, b"weights").unwrap();
        let cache = dir.path().join("cache");
        let e = cached(&cache, &input, "x", "apr", |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Invalid("writer failed".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("writer failed"));
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    }

    #[test]
    fn stale_lock_of_a_dead_process_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        // pid 0 is never a user process: /proc/0 does not exist.
        std::fs::write(&lock, "0").unwrap();
        let held = Lock::acquire(&lock).unwrap();
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), std::process::id().to_string());
        drop(held);
        assert!(!lock.exists());
    }
}
