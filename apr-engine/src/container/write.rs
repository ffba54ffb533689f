//! Writing without loss: a temporary file beside the target, renamed into
//! place only when complete; an existing target needs `force`.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Replace an existing output file.
    pub force: bool,
}

/// Runs `write` against a buffered temporary file in `path`'s directory
/// (created if missing) and
/// renames it to `path` on success. On failure the temporary file is removed
/// and nothing at `path` changes.
pub fn write_atomically(
    path: &Path,
    options: WriteOptions,
    write: impl FnOnce(&mut BufWriter<&mut std::fs::File>) -> Result<()>,
) -> Result<()> {
    if path.exists() && !options.force {
        return Err(Error::WouldOverwrite(path.to_path_buf()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A missing output directory is created, as `cargo build` creates target/.
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = temp_file_builder()
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, std::io::Error::new(e.kind(), "cannot create a temporary file here")))?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
        write(&mut out)?;
        out.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Temporary files are private (0600) by default; the output should get the
/// mode any new file gets (0666 less the umask, usually 0644), as `File::create` does.
fn temp_file_builder() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
}
