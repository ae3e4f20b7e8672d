//! Atomic file writes: the foundation of "no partial output file" (`docs/formats.md`).
//! Used by every layer that writes files (`nn` checkpoints, `data`, the CLI).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// Writes a file atomically: `write` fills a temporary file in the same directory as `path`
/// (named `.{filename}.tmp-{pid}-{k}`), which is flushed, synced to disk and then renamed
/// over `path`.
///
/// If `write` or any later step fails, the temporary file is removed and `path` is left as
/// it was: absent if it did not exist, untouched if it did. The parent directory must
/// exist. A plain [`Error::Io`] returned by `write` is reported as an [`Error::File`] for
/// `path`; other errors are passed through unchanged.
pub fn write_atomic<F>(path: impl AsRef<Path>, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let path = path.as_ref();
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file path (no file name)"))?;
    let dir: PathBuf = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::file(
            path,
            format!("cannot write: directory '{}' does not exist", dir.display()),
        ));
    }
    if path.is_dir() {
        return Err(Error::file(path, "cannot write: it is a directory"));
    }

    let (tmp_path, file) = create_temp(path, &dir, &file_name.to_string_lossy())?;
    let result = fill_and_commit(path, &tmp_path, file, write);
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Creates a fresh temporary file next to `path`, never reusing an existing name.
fn create_temp(path: &Path, dir: &Path, file_name: &str) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..100 {
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.tmp-{pid}-{k}"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(Error::file(
                    path,
                    format!("cannot create temporary file '{}': {e}", tmp.display()),
                ))
            }
        }
    }
    Err(Error::file(
        path,
        format!(
            "cannot create a temporary file in '{}': {}",
            dir.display(),
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

fn fill_and_commit<F>(path: &Path, tmp: &Path, file: File, write: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> Result<()>,
{
    let io_err = |what: &str, e: io::Error| Error::file(path, format!("cannot {what}: {e}"));
    let mut w = BufWriter::new(file);
    write(&mut w).map_err(|e| match e {
        Error::Io(e) => io_err("write", e),
        other => other,
    })?;
    let file = w.into_inner().map_err(|e| io_err("write", e.into_error()))?;
    file.sync_all().map_err(|e| io_err("sync", e))?;
    // Keep the permissions of a file we replace.
    if let Ok(meta) = fs::metadata(path) {
        let _ = file.set_permissions(meta.permissions());
    }
    drop(file);
    fs::rename(tmp, path).map_err(|e| io_err("rename the temporary file into place", e))?;
    sync_dir(path);
    Ok(())
}

/// Best effort: make the rename durable by syncing the directory (Unix only).
fn sync_dir(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
