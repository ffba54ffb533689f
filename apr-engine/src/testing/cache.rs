//! Where tests keep their outputs (`target/apr/`), and the conversion cache:
//! each conversion is done once, keyed by its input's fingerprint and its
//! options, and shared safely by concurrent test threads and processes
//! (an exclusive `File::lock` on a lock file beside the output, which the
//! operating system releases when its holder exits, however it exits; output
//! written to a temporary name and renamed into place).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

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

/// An exclusive lock on a lock file, held while a conversion runs. The file
/// is removed on release while still locked; a waiter that locked the removed
/// file sees that the path no longer names it and locks the new one, so two
/// callers never both hold the lock.
struct Lock {
    /// Open (and so locked) until the `Lock` is dropped.
    _held: File,
    path: PathBuf,
}

impl Lock {
    /// Blocks until no other thread or process holds the lock.
    fn acquire(path: &Path) -> Result<Lock> {
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            file.lock().map_err(|e| Error::io(path, e))?;
            if names_file(path, &file) {
                return Ok(Lock { _held: file, path: path.to_path_buf() });
            }
        }
    }
}

/// Whether `path` still names the open `file` (the same inode).
#[cfg(unix)]
fn names_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Elsewhere the lock file is never removed (see `Drop`), so the path always names it.
#[cfg(not(unix))]
fn names_file(_path: &Path, _file: &File) -> bool {
    true
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still locked; closing the file afterwards releases the lock.
        if cfg!(unix) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

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

    /// A lock file left behind (its holder gone, or a live process that never
    /// locked it: here pid 1) does not block: only a held lock does.
    #[test]
    fn a_lock_file_nobody_holds_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        std::fs::write(&lock, "1").unwrap();
        let (done, acquired) = std::sync::mpsc::channel();
        let path = lock.clone();
        std::thread::spawn(move || done.send(Lock::acquire(&path).map(drop).is_ok()).unwrap());
        assert_eq!(acquired.recv_timeout(Duration::from_secs(60)), Ok(true));
    }

    #[test]
    fn a_held_lock_blocks_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("x.lock");
        let held = Lock::acquire(&lock).unwrap();
        let (done, acquired) = std::sync::mpsc::channel();
        let path = lock.clone();
        std::thread::spawn(move || done.send(Lock::acquire(&path).map(drop).is_ok()).unwrap());
        assert!(acquired.recv_timeout(Duration::from_millis(300)).is_err(), "acquired while held");
        drop(held);
        // Generous: on a loaded 2-core runner the waiting thread may not run for seconds.
        assert_eq!(acquired.recv_timeout(Duration::from_secs(60)), Ok(true));
        assert!(!lock.exists(), "released locks leave no file");
    }
}
