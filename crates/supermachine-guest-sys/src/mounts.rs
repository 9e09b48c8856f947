//! The API file systems every guest PID 1 mounts first, and `mount(2)` itself.

use crate::{cstring, cvt};
use std::io;

/// One `mount(2)` call.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    /// The source (a device, or a name shown in /proc/mounts for virtual file systems).
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: libc::c_ulong,
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// /dev, /proc, /sys, /dev/pts and /dev/shm, in mount order (/dev first: a console on /dev
/// lets later failures be reported).
pub const API_MOUNTS: [MountSpec; 5] = [
    MountSpec { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: libc::MS_NOSUID, data: "mode=0755" },
    MountSpec { source: "proc", target: "/proc", fstype: "proc", flags: NOSUID_NODEV_NOEXEC, data: "" },
    MountSpec { source: "sysfs", target: "/sys", fstype: "sysfs", flags: NOSUID_NODEV_NOEXEC, data: "" },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "mode=0620,ptmxmode=0666,gid=5",
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
    },
];

/// The tmpfs on /run.
pub const RUN_MOUNT: MountSpec = MountSpec {
    source: "run",
    target: "/run",
    fstype: "tmpfs",
    flags: libc::MS_NOSUID | libc::MS_NODEV,
    data: "mode=0755",
};

/// The /dev symlinks programs expect (devtmpfs does not create them).
pub const DEV_SYMLINKS: [(&str, &str); 5] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
];

/// Creates the missing [`DEV_SYMLINKS`] (best effort: a read-only /dev keeps what it has).
pub fn create_dev_symlinks() {
    for (link, target) in DEV_SYMLINKS {
        if std::fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
}

/// `mount(2)`; an empty `fstype` or `data` is passed as NULL (a move or bind needs no type).
pub fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let (source, target, fstype_c, data_c) = (cstring(source)?, cstring(target)?, cstring(fstype)?, cstring(data)?);
    let fstype_ptr = if fstype.is_empty() { std::ptr::null() } else { fstype_c.as_ptr() };
    let data_ptr = if data.is_empty() { std::ptr::null() } else { data_c.as_ptr().cast() };
    // SAFETY: every pointer is NUL-terminated (CString) or NULL, and outlives the call.
    cvt(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype_ptr, flags, data_ptr) })?;
    Ok(())
}

impl MountSpec {
    /// Mounts this spec.
    pub fn mount(&self) -> io::Result<()> {
        mount(self.source, self.target, self.fstype, self.flags, self.data)
    }
}
