//! Atomic extraction of embedded payloads to files.
//!
//! Every write goes to a uniquely named temp file in the destination folder, is flushed, gets
//! its mode, and is then renamed over the target. Readers never see a partial file, and many
//! processes extracting into one folder at once all end with the complete file.
//!
//! A process killed between creating its temp file and renaming it leaves the temp file
//! behind (`.bzImage.<pid>.<n>.<nanos>.tmp`). Every extraction sweeps such leftovers of the
//! files it writes: one whose owner process is gone and that has not been written to for
//! [`STALE_AFTER`], or any older than [`STALE_AFTER_ANY_OWNER`]. A live extractor's temp file
//! is written continuously and renamed within moments, so it is never touched.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Age (since last write) after which a temp file whose owner process is gone, or whose owner
/// cannot be checked (no `/proc`), is removed. Generous, because a process in another PID
/// namespace sharing the folder looks gone from here.
pub const STALE_AFTER: Duration = Duration::from_secs(5 * 60);
/// Age after which a temp file is removed whoever owns it (the owner's PID may have been
/// reused by an unrelated process).
pub const STALE_AFTER_ANY_OWNER: Duration = Duration::from_secs(24 * 60 * 60);

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
///
/// Leftover temp files of `path` from killed writers are removed first (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8], executable: bool) -> io::Result<()> {
    let (dir, name) = split(path)?;
    sweep_stale_temps(dir, &[name]);
    write_atomic_swept(path, bytes, executable)
}

/// The folder and file name of `path` (`.` for a bare name).
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display())))?;
    Ok((dir, name))
}

/// [`write_atomic`] without the sweep.
fn write_atomic_swept(path: &Path, bytes: &[u8], executable: bool) -> io::Result<()> {
    let mode = if executable { 0o755 } else { 0o644 };
    if holds_same_content(path, bytes, mode)? {
        return Ok(());
    }
    let (dir, name) = split(path)?;
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
    let names: Vec<&OsStr> = assets.iter().map(|a| OsStr::new(a.file_name)).collect();
    sweep_stale_temps(dir, &names);
    assets
        .iter()
        .map(|a| {
            let path = dir.join(a.file_name);
            write_atomic_swept(&path, a.bytes, a.executable).map(|()| path)
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
    /// Creates `.NAME.<pid>.<n>.<nanos>.tmp` ([`temp_name`]) in `dir`, exclusively
    /// (`O_CREAT|O_EXCL`).
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
            let path = dir.join(temp_name(name, std::process::id(), n, nanos));
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

/// `.NAME.<pid>.<n>.<nanos hex>.tmp`: the name of a temp file for `NAME`.
fn temp_name(name: &OsStr, pid: u32, n: u64, nanos: u32) -> OsString {
    let mut file_name = OsString::from(".");
    file_name.push(name);
    file_name.push(format!(".{pid}.{n}.{nanos:x}.tmp"));
    file_name
}

/// The owner PID of `file_name` if it is a [`temp_name`] of `name`.
fn temp_owner(file_name: &OsStr, name: &OsStr) -> Option<u32> {
    let rest = file_name.to_str()?.strip_prefix('.')?.strip_prefix(name.to_str()?)?;
    let mut parts = rest.strip_prefix('.')?.strip_suffix(".tmp")?.split('.');
    let pid = parts.next()?.parse().ok()?;
    let n = parts.next()?;
    let nanos = parts.next()?;
    let digits = |s: &str, radix| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    (digits(n, 10) && digits(nanos, 16) && parts.next().is_none()).then_some(pid)
}

/// Whether process `pid` exists; `None` where that cannot be told (no `/proc`).
fn process_alive(pid: u32) -> Option<bool> {
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.to_string()).exists())
}

/// Removes leftover temp files of `names` in `dir` (see the module docs). Best effort: errors
/// are ignored (a missing file was swept by a concurrent extractor), and this process's own
/// temp files are never touched.
fn sweep_stale_temps(dir: &Path, names: &[&OsStr]) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    let me = std::process::id();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = names.iter().find_map(|n| temp_owner(&file_name, n)) else { continue };
        if pid == me {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let Some(age) = meta.modified().ok().and_then(|m| now.duration_since(m).ok()) else { continue };
        let stale = age >= STALE_AFTER_ANY_OWNER || (age >= STALE_AFTER && process_alive(pid) != Some(true));
        if stale && meta.is_file() {
            let _ = fs::remove_file(entry.path());
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

    /// A temp file of `name` in `dir` owned by `pid`, last written `age` ago.
    fn leftover(dir: &Path, name: &str, pid: u32, age: Duration) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = dir.join(temp_name(OsStr::new(name), pid, N.fetch_add(1, Ordering::Relaxed), 0xabc));
        fs::write(&p, b"partial").unwrap();
        fs::File::options().write(true).open(&p).unwrap().set_modified(SystemTime::now() - age).unwrap();
        p
    }

    /// A PID that is not running: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn temp_names_parse_back() {
        let name = OsStr::new("bzImage");
        assert_eq!(temp_owner(&temp_name(name, 4242, 3, 0x1f), name), Some(4242));
        assert_eq!(temp_owner(&temp_name(name, 1, 0, 0), OsStr::new("Image")), None);
        assert_eq!(temp_owner(&temp_name(OsStr::new("bzImage.old"), 1, 0, 0), name), None);
        for other in [
            ".bzImage.12.tmp",
            ".bzImage.x.1.2.tmp",
            ".bzImage.1.2.zz.tmp",
            "bzImage.1.2.3.tmp",
            ".bzImage.1.2.3.tmp.keep",
            ".bzImage.1.2.3.4.tmp",
        ] {
            assert_eq!(temp_owner(OsStr::new(other), name), None, "{other}");
        }
    }

    /// Issue 11, item 9: a killed extractor's temp files are removed by the next extraction,
    /// whether it writes or finds the file already current; live and recent ones are kept.
    #[cfg(target_os = "linux")]
    #[test]
    fn extraction_sweeps_leftovers_of_dead_extractors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = STALE_AFTER + Duration::from_secs(60);
        let dead = dead_pid();
        let mut live = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let swept = [
            leftover(d, "bzImage", dead, old),
            leftover(d, "busybox", dead, old),
            leftover(d, "bzImage", live.id(), STALE_AFTER_ANY_OWNER + Duration::from_secs(60)),
        ];
        let kept = [
            leftover(d, "bzImage", dead, Duration::from_secs(5)), // maybe another PID namespace
            leftover(d, "bzImage", live.id(), old),               // a live owner
            leftover(d, "bzImage", std::process::id(), old),      // this process
            leftover(d, "unrelated", dead, old),
        ]; // not a file we write
        let assets = [
            Asset { name: "kernel", file_name: "bzImage", bytes: b"kernel", sha256: "", executable: false },
            Asset { name: "busybox", file_name: "busybox", bytes: b"bb", sha256: "", executable: true },
        ];
        extract_all_to(d, &assets).unwrap();
        for p in &swept {
            assert!(!p.exists(), "{} was not swept", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{} was swept", p.display());
        }
        // Files already current: the sweep still runs (write_atomic alone, too).
        let again = leftover(d, "bzImage", dead, old);
        extract_all_to(d, &assets).unwrap();
        assert!(!again.exists());
        let again = leftover(d, "bzImage", dead, old);
        write_atomic(&d.join("bzImage"), b"kernel", false).unwrap();
        assert!(!again.exists());
        live.kill().unwrap();
        live.wait().unwrap();
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
