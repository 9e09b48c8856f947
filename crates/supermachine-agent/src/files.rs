//! File-system actions on a path that need no data stream: `stat` and `mkdir`. (Reading,
//! writing and removing have their own modules: `file_read`, `file_write`, `remove`.)

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// What `stat` reports.
pub struct Stat {
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

/// Metadata of `path`, following a final symlink when `follow`.
pub fn stat(path: &str, follow: bool) -> io::Result<Stat> {
    let md = if follow { fs::metadata(path) } else { fs::symlink_metadata(path) }?;
    let ft = md.file_type();
    let kind = if ft.is_file() {
        "file"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "other"
    };
    Ok(Stat { kind, size: md.len(), mode: md.mode(), mtime: md.mtime(), uid: md.uid(), gid: md.gid() })
}

/// Creates `path` with `mode` (exactly: the umask does not apply); with `parents`, like
/// `mkdir -p` (an existing folder is fine).
pub fn mkdir(path: &str, parents: bool, mode: u32) -> io::Result<()> {
    if parents && Path::new(path).is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(parents).mode(mode).create(path)?;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
    Ok(())
}
