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

/// The longest file name Linux file systems take (`NAME_MAX`), in bytes.
const NAME_MAX: usize = 255;

/// The name of a temp file beside a target named `name`: `.<name><marker><tail>`. When that is
/// longer than a file name may be (the target's own name can already be 255 bytes), `name` and
/// `tail` are cut to 96 bytes each and a hash of both is added, so different names (and
/// different tails, e.g. upload tokens) still give different temp names. `marker` (short) is
/// always kept whole: it is how temp files are recognised.
pub fn temp_name(name: &str, marker: &str, tail: &str) -> String {
    let full = format!(".{name}{marker}{tail}");
    if full.len() <= NAME_MAX {
        return full;
    }
    // FNV-1a, 64 bits: a stable fingerprint (the host chooses these names; no adversary).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0xff]).chain(tail.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    format!(".{}~{h:016x}{marker}{}", cut(name, 96), cut(tail, 96))
}

/// At most `max` bytes of `s`, ending at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
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
    /// Creates `.<name>.sm-tmp.<pid>.<n>` (mode 0600; see [`temp_name`] for long names) beside
    /// `target`, creating the folders.
    pub fn beside(target: &str) -> io::Result<TmpFile> {
        let (dir, name) = split(target)?;
        fs::create_dir_all(&dir)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(temp_name(&name, ".sm-tmp.", &format!("{}.{n}", std::process::id())));
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
