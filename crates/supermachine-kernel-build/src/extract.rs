//! Atomic extraction of embedded payloads to files.
//!
//! Every write goes to a uniquely named temp file in the destination folder, is flushed, gets
//! its mode, and is then renamed over the target. Readers never see a partial file, and many
//! processes extracting into one folder at once all end with the complete file.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One embedded payload, as listed in an arch crate's `ASSETS` table.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Short name, e.g. `"kernel"`, `"busybox"`, `"supermachine-agent"`, `"init-oci"`.
    pub name: &'static str,
    /// File name [`extract_all_to`] writes the payload as.
    pub file_name: &'static str,
    /// The decoded payload.
    pub bytes: &'static [u8],
    /// Lowercase hex SHA-256 of [`Asset::bytes`] (checked at build time).
    pub sha256: &'static str,
    /// Whether the file is a program (extracted with mode 0755, else 0644).
    pub executable: bool,
}

impl Asset {
    /// Writes this asset to `path` atomically (see [`write_atomic`]).
    pub fn extract_to(&self, path: &Path) -> io::Result<()> {
        write_atomic(path, self.bytes, self.executable)
    }
}

/// Writes `bytes` to `path` atomically with mode 0755 (`executable`) or 0644.
///
/// If `path` already holds exactly `bytes` (and the right mode), nothing is written, so a
/// running VM that maps the file is never disturbed. The parent folder must exist.
pub fn write_atomic(path: &Path, bytes: &[u8], executable: bool) -> io::Result<()> {
    let mode = if executable { 0o755 } else { 0o644 };
    if holds_same_content(path, bytes, mode)? {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display()))
    })?;
    let mut tmp = TempFile::new_in(dir, name)?;
    // On failure (e.g. a full disk) the temp file is removed and the target is untouched.
    tmp.file().write_all(bytes).map_err(|e| annotate(e, "writing (nothing replaced)", path))?;
    tmp.file().sync_all().map_err(|e| annotate(e, "syncing (nothing replaced)", path))?;
    set_mode(tmp.file(), mode)?;
    tmp.persist(path).map_err(|e| annotate(e, "renaming into", path))?;
    Ok(())
}

/// Writes every asset into `dir` (created if missing) under its [`Asset::file_name`] and
/// returns the written paths, in table order.
pub fn extract_all_to(dir: &Path, assets: &[Asset]) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(|e| annotate(e, "creating", dir))?;
    assets
        .iter()
        .map(|a| {
            let path = dir.join(a.file_name);
            a.extract_to(&path).map(|()| path)
        })
        .collect()
}

/// Like [`write_atomic`], creating missing parent folders first.
pub fn write_atomic_with_parents(path: &Path, bytes: &[u8], executable: bool) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| annotate(e, "creating", parent))?;
    }
    write_atomic(path, bytes, executable)
}

/// A uniquely named file beside its destination, removed unless [`TempFile::persist`]ed.
///
/// std-only (no `tempfile` crate) to keep the payload crates' build graph small.
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<fs::File>,
}

impl TempFile {
    /// Creates `.NAME.<pid>.<n>.<nanos>.tmp` in `dir`, exclusively (`O_CREAT|O_EXCL`).
    pub(crate) fn new_in(dir: &Path, name: &std::ffi::OsStr) -> io::Result<TempFile> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut last = None;
        for _ in 0..64 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut file_name = std::ffi::OsString::from(".");
            file_name.push(name);
            file_name.push(format!(".{}.{n}.{nanos:x}.tmp", std::process::id()));
            let path = dir.join(file_name);
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok(TempFile { path, file: Some(file) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(annotate(e, "creating a temp file in", dir)),
            }
        }
        Err(annotate(last.unwrap_or_else(|| io::Error::other("no free name")), "creating a temp file in", dir))
    }

    pub(crate) fn file(&mut self) -> &mut fs::File {
        self.file.as_mut().expect("temp file open until persisted")
    }

    /// Renames the file to `to` (atomic on one file system).
    pub(crate) fn persist(mut self, to: &Path) -> io::Result<()> {
        drop(self.file.take());
        fs::rename(&self.path, to)?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn holds_same_content(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        // Unreadable or a folder: let the write report the real problem.
        Err(_) => return Ok(false),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() != bytes.len() as u64 || !mode_matches(&meta, mode) {
        return Ok(false);
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut offset = 0;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(offset == bytes.len());
        }
        if offset + n > bytes.len() || buf[..n] != bytes[offset..offset + n] {
            return Ok(false);
        }
        offset += n;
    }
}

#[cfg(unix)]
fn mode_matches(meta: &fs::Metadata, mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o777 == mode
}
#[cfg(not(unix))]
fn mode_matches(_: &fs::Metadata, _: u32) -> bool {
    true
}

#[cfg(unix)]
fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}
#[cfg(not(unix))]
fn set_mode(_: &fs::File, _: u32) -> io::Result<()> {
    Ok(())
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Defines an upstream-compatible `extract_X_to` / `extract_X_to_with_parents` pair.
#[macro_export]
macro_rules! extract_fns {
    ($to:ident, $with_parents:ident, $bytes:expr, $exec:expr, $what:literal) => {
        #[doc = concat!("Writes the ", $what, " to `path` atomically (temp file + rename; skipped if")]
        #[doc = "the file already holds the same bytes). The parent folder must exist."]
        pub fn $to(path: &::std::path::Path) -> ::std::io::Result<()> {
            $crate::write_atomic(path, $bytes, $exec)
        }
        #[doc = concat!("Like [`", stringify!($to), "`], creating missing parent folders first.")]
        pub fn $with_parents(path: &::std::path::Path) -> ::std::io::Result<()> {
            $crate::extract::write_atomic_with_parents(path, $bytes, $exec)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_then_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"hello", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        let before = fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_atomic(&p, b"hello", true).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), before, "rewrote identical file");
        write_atomic(&p, b"hello!", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello!");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755);
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temp file left behind");
    }

    #[test]
    fn missing_parent_is_an_error_naming_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/f");
        let e = write_atomic(&p, b"x", false).unwrap_err();
        assert!(e.to_string().contains("no/such"), "{e}");
        write_atomic_with_parents(&p, b"x", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
    }
}
