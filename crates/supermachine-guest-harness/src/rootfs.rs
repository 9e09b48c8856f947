//! Small image root file systems (zstd squashfs, like the runtime's image layers).

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Applets linked into `/bin` of a busybox image (enough for tests and the demo).
pub const APPLETS: &[&str] = &[
    "sh",
    "true",
    "false",
    "echo",
    "cat",
    "ls",
    "sleep",
    "uname",
    "id",
    "env",
    "pwd",
    "head",
    "wc",
    "nc",
    "kill",
    "ps",
    "date",
    "grep",
    "sed",
    "dd",
    "mkdir",
    "rm",
    "sync",
    "zcat",
    "stty",
    "tty",
    "sha256sum",
    "printf",
    "test",
    "stat",
    "mount",
    "hostname",
    "seq",
    "yes",
    "tr",
];

/// Lays out a minimal busybox root in `dir`: /bin/busybox + applet links, /etc, /tmp, /root.
pub fn busybox_tree(dir: &Path, busybox: &[u8]) -> io::Result<()> {
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev", "run"] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::write(dir.join("bin/busybox"), busybox)?;
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
    for a in APPLETS {
        symlink("busybox", dir.join("bin").join(a))?;
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")?;
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// Packs `dir` into a zstd squashfs at `out` with `mksquashfs` (package squashfs-tools).
pub fn squashfs(dir: &Path, out: &Path) -> io::Result<()> {
    let st = Command::new("mksquashfs")
        .arg(dir)
        .arg(out)
        .args(["-comp", "zstd", "-noappend", "-quiet", "-no-progress", "-all-root"])
        .status()
        .map_err(|e| io::Error::new(e.kind(), format!("running mksquashfs (install squashfs-tools): {e}")))?;
    if !st.success() {
        return Err(io::Error::other(format!("mksquashfs {} failed: {st}", dir.display())));
    }
    Ok(())
}
