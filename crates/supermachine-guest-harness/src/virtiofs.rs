//! virtio-fs shares for a guest, served by QEMU's own `virtiofsd` (the C daemon Debian 12 ships
//! in `qemu-system-common`; root only). The supermachine runtime shares host folders this way,
//! e.g. Rosetta's at `/run/rosetta` (tag `rosetta`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `qemu-system-common` installs the daemon.
pub const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";

/// One running daemon serving a host folder; killed when dropped.
pub struct Share {
    /// The tag the guest mounts.
    pub tag: String,
    socket: PathBuf,
    child: Child,
}

impl Share {
    /// Serves `source` under `tag` on a vhost-user socket in `dir`; waits (≤ 10 s) for the socket.
    pub fn start(dir: &Path, tag: &str, source: &Path) -> io::Result<Share> {
        let socket = dir.join(format!("fs-{tag}.sock"));
        let log = std::fs::File::create(dir.join(format!("virtiofsd-{tag}.log")))?;
        let child = Command::new(VIRTIOFSD)
            .arg(format!("--socket-path={}", socket.display()))
            .args(["-o", &format!("source={}", source.display()), "-o", "cache=none", "-o", "sandbox=chroot"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("{VIRTIOFSD}: {e} (package qemu-system-common; needs root)"))
            })?;
        let mut share = Share { tag: tag.to_string(), socket, child };
        let t = Instant::now();
        while !share.socket.exists() {
            if let Some(st) = share.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{VIRTIOFSD} for {} exited ({st}) before its socket appeared",
                    source.display()
                )));
            }
            if t.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other(format!("{VIRTIOFSD}: no socket {} after 10 s", share.socket.display())));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(share)
    }

    /// The vhost-user socket QEMU connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
