//! Atomic file writes: data goes to a temp file beside the target, is fsynced, and renamed over
//! the target, so a reader sees the old or the new content, never a torn file. Parent
//! directories are created. Without a mode an existing file keeps its mode (new files: 0644).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory and file name of `path` (`.` for a bare name).
pub fn split(path: &str) -> io::Result<(PathBuf, String)> {
    let p = Path::new(path);
    let name = p
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// Makes the finished temp file `tmp` the `target`: mode, fsync, rename, fsync of the folder.
pub fn commit(file: &File, tmp: &Path, target: &Path, mode: Option<u32>) -> io::Result<()> {
    let mode = mode.or_else(|| fs::metadata(target).ok().map(|m| m.mode() & 0o7777)).unwrap_or(0o644);
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    fs::rename(tmp, target)?;
    if let Some(d) = target.parent() {
        if let Ok(f) = File::open(if d.as_os_str().is_empty() { Path::new(".") } else { d }) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new temp file beside its target; removed on drop unless committed.
pub struct TmpFile {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    len: u64,
    committed: bool,
}

impl TmpFile {
    /// Creates `.<name>.sm-tmp.<pid>.<n>` (mode 0600) beside `target`, creating the folders.
    pub fn beside(target: &str) -> io::Result<TmpFile> {
        let (dir, name) = split(target)?;
        fs::create_dir_all(&dir)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.sm-tmp.{}.{n}", std::process::id()));
        let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        Ok(TmpFile { file, tmp, target: PathBuf::from(target), len: 0, committed: false })
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Notes `n` bytes written through [`TmpFile::file`] at the current end.
    pub fn grew(&mut self, n: u64) {
        self.len += n;
    }

    pub fn commit(mut self, mode: Option<u32>) -> io::Result<()> {
        commit(&self.file, &self.tmp, &self.target, mode)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` to `path` atomically.
pub fn atomic_write(path: &str, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    let mut t = TmpFile::beside(path)?;
    t.append(data)?;
    t.commit(mode)
}
