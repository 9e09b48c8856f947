//! Mounting: the API file systems, volumes and virtio-fs shares, and the switch to the image root.

use super::{in_root, wait_for};
use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use supermachine_guest_sys::cvt;
use supermachine_guest_sys::mounts::{self, mount, API_MOUNTS, RUN_MOUNT};
use supermachine_init::cmdline::Cmdline;
use supermachine_init::runtime;
use supermachine_init::{Fatal, Status};

/// Creates `target` and mounts on it; failure is `status`. For the early mounts, EBUSY (already
/// mounted by the kernel or a previous stage) is fine.
pub fn mount_or(
    status: Status,
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), Fatal> {
    std::fs::create_dir_all(target)
        .map_err(|e| Fatal::new(status, format!("cannot create mount point {target}: {e}")))?;
    match mount(src, target, fstype, flags, data) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && status == Status::EarlyMount => Ok(()),
        Err(e) => Err(Fatal::new(
            status,
            format!("cannot mount {} {src} on {target}: {e}", if fstype.is_empty() { "(move)" } else { fstype }),
        )),
    }
}

/// /dev (then fds 0-2 on the console), /proc, /sys, /dev/pts, /dev/shm and the /dev symlinks;
/// then what the runtime's init adds: cgroup2 at /sys/fs/cgroup (dockerd, systemd and runc
/// expect it) and a 64 MiB /dev/shm.
pub fn early_mounts() -> Result<(), Fatal> {
    for m in &API_MOUNTS {
        mount_or(Status::EarlyMount, m.source, m.target, m.fstype, m.flags, m.data)?;
        if m.target == "/dev" {
            // fds 0-2 on /dev/console when the kernel could not give us a console.
            supermachine_guest_sys::stdio::fill_std_fds(c"/dev/console");
        }
    }
    mounts::create_dev_symlinks();
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if let Err(e) = mount("cgroup2", "/sys/fs/cgroup", "cgroup2", flags, "") {
        log!("warning: mount cgroup2 on /sys/fs/cgroup: {e}");
    }
    let shm = libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    if let Err(e) = mount("shm", "/dev/shm", "tmpfs", shm, "mode=1777,size=64m") {
        log!("warning: /dev/shm size=64m: {e}");
    }
    Ok(())
}

pub fn is_block(path: &str) -> bool {
    std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

/// `sm.volume=` (ext4 block devices) and `sm.virtiofs=` shares, under the new root.
pub fn mount_volumes(c: &Cmdline) -> Result<(), Fatal> {
    for v in &c.volumes {
        if !wait_for(|| is_block(&v.device)) {
            return Err(Fatal::new(
                Status::VolumeMount,
                format!("volume {} (sm.volume=) is not a block device", v.device),
            ));
        }
        let flags = if v.read_only { libc::MS_RDONLY } else { 0 };
        mount_or(Status::VolumeMount, &v.device, &in_root(&v.target), "ext4", flags, "")?;
    }
    for v in &c.virtiofs {
        let flags = if v.read_only { libc::MS_RDONLY } else { 0 };
        let target = in_root(&v.target);
        std::fs::create_dir_all(&target).map_err(|e| Fatal::new(Status::VolumeMount, format!("{target}: {e}")))?;
        if mount(&v.tag, &target, "virtiofs", flags, "dax").is_err() {
            mount(&v.tag, &target, "virtiofs", flags, "").map_err(|e| {
                Fatal::new(Status::VolumeMount, format!("cannot mount virtiofs tag {} on {}: {e}", v.tag, v.target))
            })?;
        }
    }
    Ok(())
}

/// `/.supermachine-virtiofs-binds` (root = prefix of the image root). Failures are warnings,
/// as in the runtime's init.
pub fn mount_delta_binds(root: &str, binds: &[(String, String)]) {
    for (tag, path) in binds {
        let target = format!("{root}{path}");
        let _ = std::fs::create_dir_all(&target);
        match mount(tag, &target, "virtiofs", 0, "") {
            Ok(()) => log!("mounted virtio-fs {tag} -> {path}"),
            Err(e) => log!("warning: mount -t virtiofs {tag} -> {path}: {e}"),
        }
    }
}

/// `/.supermachine-volumes`, after the switch: volume i is the i-th of the last N `/dev/vd?`
/// devices, ext4. Failures are warnings, as in the runtime's init.
pub fn mount_delta_volumes(volumes: &[String]) {
    if volumes.is_empty() {
        return;
    }
    let devices = (b'a'..=b'z').take_while(|l| is_block(&format!("/dev/vd{}", *l as char))).count();
    match runtime::volume_devices(volumes, devices) {
        Ok(map) => {
            for (dev, path) in map {
                let _ = std::fs::create_dir_all(&path);
                match mount(&dev, &path, "ext4", 0, "") {
                    Ok(()) => log!("mounted {dev} -> {path} (ext4, rw)"),
                    Err(e) => log!("warning: mount {dev} -> {path} ext4: {e}"),
                }
            }
        }
        Err(e) => log!("warning: {e}"),
    }
}

/// Removes the initramfs contents (frees their memory), staying on its file system.
fn wipe(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.dev() != dev {
            continue;
        }
        if m.is_dir() {
            wipe(&p, dev);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// tmpfs on the new root's /run and /tmp, mode 1777 as the runtime's init leaves them: without
/// it /tmp is the runtime's delta-layer directory, owned by the baking host user, mode 0755, and
/// non-root workloads cannot write it. Before the virtio-fs binds, so one under /run (Rosetta's)
/// stays visible.
pub fn mount_scratch_dirs() -> Result<(), Fatal> {
    let s = Status::SwitchRoot;
    let flags = libc::MS_NOSUID | libc::MS_NODEV;
    mount_or(s, RUN_MOUNT.source, &in_root(RUN_MOUNT.target), RUN_MOUNT.fstype, flags, "mode=1777")?;
    mount_or(s, "tmpfs", &in_root("/tmp"), "tmpfs", flags, "mode=1777")?;
    // Directories the runtime's init makes: X11's socket folder (sticky, like /tmp) and dbus's.
    for (dir, mode) in [("/tmp/.X11-unix", 0o1777), ("/run/dbus", 0o755)] {
        let path = in_root(dir);
        if std::fs::create_dir_all(&path).is_ok() {
            let _ = std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode));
        }
    }
    Ok(())
}

/// Moves /proc, /sys and /dev into the new root and makes it `/`.
pub fn switch_root() -> Result<(), Fatal> {
    let s = Status::SwitchRoot;
    for d in ["/proc", "/sys", "/dev"] {
        mount_or(s, d, &in_root(d), "", libc::MS_MOVE, "")?;
    }
    let err = |what: &str, e: io::Error| Fatal::new(s, format!("{what}: {e}"));
    chdir(c"/newroot").map_err(|e| err("chdir /newroot", e))?;
    let dot = c".";
    // SAFETY: both arguments are NUL-terminated literals.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } == 0 {
        // Not on the initramfs (rootfs cannot be pivoted): drop the old root.
        // SAFETY: the path is a NUL-terminated literal.
        unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    } else {
        // switch_root semantics: empty the initramfs, move the new root over it, chroot.
        if let Ok(m) = std::fs::metadata("/") {
            wipe(Path::new("/"), m.dev());
        }
        mount(".", "/", "", libc::MS_MOVE, "").map_err(|e| err("mount --move /newroot /", e))?;
        // SAFETY: the path is a NUL-terminated literal.
        cvt(unsafe { libc::chroot(dot.as_ptr()) }).map_err(|e| err("chroot", e))?;
    }
    chdir(c"/").map_err(|e| err("chdir /", e))
}

// A literal C path: no conversion code (init-oci's size is budgeted).
fn chdir(dir: &CStr) -> io::Result<()> {
    // SAFETY: `dir` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::chdir(dir.as_ptr()) }).map(drop)
}

/// Opens a device by a literal path, read-write.
pub fn open_device(path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: open() just created `fd`; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
