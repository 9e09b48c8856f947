//! virtio-vsock for QEMU guests without `/dev/vhost-vsock`: runs the vhost-user backend
//! `vhost-device-vsock` (crates.io), which exposes the guest's ports on a Unix socket with the
//! Firecracker hybrid-vsock convention (`CONNECT <port>\n` → `OK …\n`).

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The guest CID the harness gives its VMs (the supermachine runtime uses 3 as well).
pub const GUEST_CID: u32 = 3;

/// A running vhost-device-vsock process. Killed when dropped.
pub struct Backend {
    child: Child,
    vhost_socket: PathBuf,
    uds: PathBuf,
}

impl Backend {
    /// Starts the backend with its sockets in `dir` and waits until QEMU can attach.
    pub fn start(dir: &Path) -> io::Result<Backend> {
        let vhost_socket = dir.join("vhu.sock");
        let uds = dir.join("vm.vsock");
        let child = Command::new("vhost-device-vsock")
            .arg("--guest-cid").arg(GUEST_CID.to_string())
            .arg("--socket").arg(&vhost_socket)
            .arg("--uds-path").arg(&uds)
            .stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!(
                "starting vhost-device-vsock ({e}); install it: cargo install --locked vhost-device-vsock --version 0.3.0")))?;
        let mut b = Backend { child, vhost_socket, uds };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !b.vhost_socket.exists() {
            if let Some(st) = b.child.try_wait()? {
                return Err(io::Error::other(format!("vhost-device-vsock exited early: {st}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "vhost-device-vsock did not create its socket in 10 s"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(b)
    }

    /// The vhost-user socket to give QEMU (`VmConfig::vhost_user_vsock`).
    pub fn vhost_socket(&self) -> &Path {
        &self.vhost_socket
    }

    /// The hybrid-vsock Unix socket host programs connect to.
    pub fn uds_path(&self) -> &Path {
        &self.uds
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
