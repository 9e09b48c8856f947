//! The `remove` action: a file, a symlink, an empty directory, or (recursive) a whole tree that
//! stays on the named path's filesystem, like `rm -r --one-file-system`.
//!
//! The tree is walked through directory file descriptors (`openat`/`unlinkat` with
//! `O_NOFOLLOW`), so a symlink or a rename during the walk cannot lead it outside the tree. A
//! directory that is a mount point (another filesystem, or a bind mount of the same one: its
//! mount id differs) is neither entered nor removed; the call then fails naming it. A path with
//! a `..` component, or one ending in `.`, is refused for a recursive remove: it would name a
//! directory above the one the caller wrote.

use std::ffi::{CStr, CString, OsStr};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Why a remove failed.
#[derive(Debug)]
pub enum RemoveError {
    /// A system call failed on `path` inside the tree (`None`: on the named path itself).
    Io { path: Option<PathBuf>, err: io::Error },
    /// A recursive remove of a path that climbs (`..`) or names `.`.
    Traversal,
    /// A recursive remove of `/`.
    Root,
    /// Mount points inside the tree were left alone (the rest was removed).
    MountPoints(Vec<PathBuf>),
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveError::Io { path: Some(path), err } => write!(f, "{}: {err}", path.display()),
            RemoveError::Io { path: None, err } => write!(f, "{err}"),
            RemoveError::Traversal => {
                f.write_str("refusing a recursive remove of a path with a `..` component or ending in `.`; name the directory itself")
            }
            RemoveError::Root => f.write_str("refusing to remove / recursively"),
            RemoveError::MountPoints(m) => {
                let list: Vec<String> = m.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "not removed: {} (a mount point: another filesystem or a bind mount; the remove stays on one filesystem like rm --one-file-system)",
                    list.join(", ")
                )
            }
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RemoveError + '_ {
    move |err| RemoveError::Io { path: Some(path.to_path_buf()), err }
}

fn top_err(err: io::Error) -> RemoveError {
    RemoveError::Io { path: None, err }
}

/// Removes `path`; with `recursive` a whole tree on one filesystem.
pub fn remove(path: &str, recursive: bool) -> Result<(), RemoveError> {
    let p = Path::new(path);
    let md = std::fs::symlink_metadata(p).map_err(top_err)?;
    if !md.is_dir() {
        return std::fs::remove_file(p).map_err(top_err);
    }
    if !recursive {
        return std::fs::remove_dir(p).map_err(top_err);
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed == "." || trimmed.ends_with("/.") || p.components().any(|c| c == Component::ParentDir) {
        return Err(RemoveError::Traversal);
    }
    if p.components().all(|c| c == Component::RootDir) {
        return Err(RemoveError::Root);
    }
    let root = Dir::open_at(libc::AT_FDCWD, &cstr(p.as_os_str()).map_err(top_err)?).map_err(top_err)?;
    let mount = Mount::of(root.fd(), c"").map_err(top_err)?;
    let mut skipped = Vec::new();
    remove_tree(root, p, mount, &mut skipped)?;
    if !skipped.is_empty() {
        return Err(RemoveError::MountPoints(skipped));
    }
    std::fs::remove_dir(p).map_err(top_err)
}

/// Empties the tree under `root` (not `root` itself), iteratively: a deep tree cannot overflow
/// the thread's stack.
fn remove_tree(root: Dir, root_path: &Path, mount: Mount, skipped: &mut Vec<PathBuf>) -> Result<(), RemoveError> {
    // Each level: the open directory, its path, its name in the parent, and whether a mount
    // point was kept somewhere below it (then it cannot be removed either).
    struct Level {
        dir: Dir,
        path: PathBuf,
        name: CString,
        kept: bool,
    }
    let mut stack = vec![Level { dir: root, path: root_path.to_path_buf(), name: CString::default(), kept: false }];
    while let Some(top) = stack.last_mut() {
        let entry = top.dir.next().map_err(io_err(&top.path))?;
        let Some(name) = entry else {
            let done = stack.pop().expect("stack is not empty");
            let Some(parent) = stack.last_mut() else { return Ok(()) };
            if done.kept {
                parent.kept = true;
            } else {
                unlink_at(&parent.dir, &done.name, true).map_err(io_err(&done.path))?;
            }
            continue;
        };
        let path = top.path.join(OsStr::from_bytes(name.as_bytes()));
        let st = Mount::of(top.dir.fd(), &name).map_err(io_err(&path))?;
        if !st.is_dir {
            unlink_at(&top.dir, &name, false).map_err(io_err(&path))?;
            continue;
        }
        if !st.same_mount(&mount) {
            top.kept = true;
            skipped.push(path);
            continue;
        }
        let dir = Dir::open_at(top.dir.fd(), &name).map_err(io_err(&path))?;
        stack.push(Level { dir, path, name, kept: false });
    }
    Ok(())
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn unlink_at(dir: &Dir, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: `dir.fd()` is an open directory fd owned by `dir`; `name` is NUL-terminated.
    crate::sys::cvt(unsafe { libc::unlinkat(dir.fd(), name.as_ptr(), flags) }).map(|_| ())
}

/// Where an entry lives: its mount (mount id when the kernel reports it, else the device) and
/// whether it is a directory (not following symlinks).
struct Mount {
    dev: (u32, u32),
    mnt_id: Option<u64>,
    is_dir: bool,
}

impl Mount {
    /// `statx` of `name` in the directory `dirfd` (or of `dirfd` itself when `name` is empty).
    fn of(dirfd: libc::c_int, name: &CStr) -> io::Result<Mount> {
        let flags =
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_NO_AUTOMOUNT | if name.is_empty() { libc::AT_EMPTY_PATH } else { 0 };
        // SAFETY: statx is plain old data; all-zero is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: `name` is NUL-terminated, `stx` is a valid out-pointer for the call.
        let r = unsafe { libc::statx(dirfd, name.as_ptr(), flags, libc::STATX_TYPE | libc::STATX_MNT_ID, &mut stx) };
        crate::sys::cvt(r)?;
        Ok(Mount {
            dev: (stx.stx_dev_major, stx.stx_dev_minor),
            mnt_id: (stx.stx_mask & libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id),
            is_dir: u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR,
        })
    }

    fn same_mount(&self, root: &Mount) -> bool {
        self.dev == root.dev && (self.mnt_id.is_none() || root.mnt_id.is_none() || self.mnt_id == root.mnt_id)
    }
}

/// An open directory stream (`fdopendir`), closed on drop.
struct Dir(std::ptr::NonNull<libc::DIR>);

impl Dir {
    /// Opens the directory `name` under `dirfd` without following a symlink.
    fn open_at(dirfd: libc::c_int, name: &CStr) -> io::Result<Dir> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `name` is NUL-terminated; the returned fd is owned below.
        let fd = crate::sys::cvt(unsafe { libc::openat(dirfd, name.as_ptr(), flags) })?;
        // SAFETY: `fd` is an open directory fd we own; fdopendir takes it over on success.
        match std::ptr::NonNull::new(unsafe { libc::fdopendir(fd) }) {
            Some(d) => Ok(Dir(d)),
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: fdopendir failed, so `fd` is still ours to close.
                unsafe { libc::close(fd) };
                Err(e)
            }
        }
    }

    fn fd(&self) -> libc::c_int {
        // SAFETY: `self.0` is an open DIR stream until drop.
        unsafe { libc::dirfd(self.0.as_ptr()) }
    }

    /// The next entry's name, skipping `.` and `..`; `None` at the end.
    fn next(&mut self) -> io::Result<Option<CString>> {
        loop {
            crate::sys::clear_errno();
            // SAFETY: `self.0` is an open DIR stream; the entry stays valid until the next
            // readdir on this stream, and its name is copied out before that.
            let ent = unsafe { libc::readdir(self.0.as_ptr()) };
            if ent.is_null() {
                return match crate::sys::errno() {
                    0 => Ok(None),
                    e => Err(io::Error::from_raw_os_error(e)),
                };
            }
            // SAFETY: `ent` is non-null and points to the dirent readdir returned.
            let d_name = unsafe { (*ent).d_name.as_ptr() };
            // SAFETY: d_name is NUL-terminated and lives until the next readdir on this stream.
            let name = unsafe { CStr::from_ptr(d_name) };
            if name != c"." && name != c".." {
                return Ok(Some(name.to_owned()));
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open DIR stream, closed exactly once here.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}
