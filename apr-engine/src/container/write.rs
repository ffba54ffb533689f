//! Writing without loss: a temporary file beside the target, renamed into
//! place only when complete; an existing target needs `force`.
//!
//! The temporary file is named `.OUTNAME.apr-tmp-PID-N`, so that what an
//! interrupted writer left behind can be recognised: a later write to the
//! same OUT removes those whose process is gone (and says which). While it
//! exists it is registered, so that a signal handler can remove it
//! ([`remove_unfinished_outputs`]). Model files are read back (header, tensor
//! index, metadata) before the rename: a file the readers would refuse is
//! never put in place.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::container::parse_bytes;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Replace an existing output file.
    pub force: bool,
}

/// Temporary files being written by this process.
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Tells apart two writes to one OUT by threads of this process.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

const TEMP_MARK: &str = ".apr-tmp-";

/// Runs `write` against a buffered temporary file in `path`'s directory
/// (created if missing) and renames it to `path` on success. On failure the
/// temporary file is removed and nothing at `path` changes.
pub fn write_atomically(
    path: &Path,
    options: WriteOptions,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    write_checked(path, options, write, |_| Ok(()))
}

/// [`write_atomically`] for a model file: before the rename the written file
/// is parsed as its reader parses it, and a file the reader refuses is an
/// error (the temporary file removed, nothing at `path` changed).
pub fn write_model_atomically(
    path: &Path,
    options: WriteOptions,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    write_checked(path, options, write, |written| read_back(written, path))
}

fn write_checked(
    path: &Path,
    options: WriteOptions,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if path.exists() && !options.force {
        return Err(Error::WouldOverwrite(path.to_path_buf()));
    }
    let dir = directory_of(path);
    // A missing output directory is created, as `cargo build` creates target/.
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    remove_stale_temp_files(path)?;
    let mut temp = TempFile::create(path)?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, &mut temp.file);
        write(&mut out)?;
        out.flush().map_err(|e| Error::io(path, e))?;
    }
    temp.file.sync_all().map_err(|e| Error::io(path, e))?;
    check(&temp.path)?;
    temp.persist(path)
}

/// Parses the written file (header, tensor index, metadata) as the readers do.
fn read_back(written: &Path, target: &Path) -> Result<()> {
    let file = File::open(written).map_err(|e| Error::io(written, e))?;
    // SAFETY: a read-only map of the file this process just wrote and still owns.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(written, e))?;
    parse_bytes(&map).map(drop).map_err(|e| {
        Error::Invalid(format!("{}: the written file does not read back, so it was not kept: {e}", target.display()))
    })
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The prefix of every temporary file for `path`: `.OUTNAME.apr-tmp-`.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    format!(".{name}{TEMP_MARK}")
}

/// A temporary file being written, removed on drop unless persisted.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(target: &Path) -> Result<TempFile> {
        let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}{}-{n}", temp_prefix(target), std::process::id());
        let path = directory_of(target).join(name);
        // New files get the usual mode (0666 less the umask), as `File::create` gives.
        let file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| Error::io(&path, e))?;
        lock_unfinished().push(path.clone());
        Ok(TempFile { path, file })
    }

    fn persist(self, target: &Path) -> Result<()> {
        std::fs::rename(&self.path, target).map_err(|e| Error::io(target, e))?;
        unregister(&self.path);
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        unregister(&self.path);
    }
}

fn lock_unfinished() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a list that is still right.
    UNFINISHED.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unregister(path: &Path) {
    lock_unfinished().retain(|p| p != path);
}

/// Removes the temporary files this process is writing; for a signal handler
/// (Ctrl-C during a conversion), which then exits. Returns what it removed.
pub fn remove_unfinished_outputs() -> Vec<PathBuf> {
    let mut unfinished = lock_unfinished();
    let removed: Vec<PathBuf> = unfinished.drain(..).filter(|p| std::fs::remove_file(p).is_ok()).collect();
    removed
}

/// Removes temporary files for `path` left by writers whose process is gone
/// (killed, or crashed), returning what it removed.
pub fn remove_stale_temp_files(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = directory_of(path);
    let prefix = temp_prefix(path);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(writer_pid) else { continue };
        if !process_is_gone(pid) {
            continue;
        }
        let stale = entry.path();
        std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        removed.push(stale);
    }
    Ok(removed)
}

/// The PID in a temporary file's `PID-N` suffix.
fn writer_pid(suffix: &str) -> Option<u32> {
    let (pid, n) = suffix.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Whether no process has this id. Where that cannot be told (no `/proc`),
/// the file is assumed live and kept: removing a live writer's file is the
/// worse mistake.
fn process_is_gone(pid: u32) -> bool {
    let proc = Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}
