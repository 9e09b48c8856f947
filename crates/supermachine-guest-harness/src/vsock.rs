//! virtio-vsock for QEMU guests without `/dev/vhost-vsock`: runs a vhost-user backend that
//! exposes the guest's ports on a Unix socket with the Firecracker hybrid-vsock convention
//! (`CONNECT <port>\n` → `OK …\n`): `vhost-device-vsock` (crates.io) by default, or
//! `tools/tsi-backend`, whose device model is the supermachine runtime's own vsock muxer, so the
//! guest's TSI networking reaches real host sockets.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The guest CID the harness gives its VMs (the supermachine runtime uses 3 as well).
pub const GUEST_CID: u32 = 3;

/// Which vhost-user vsock backend a guest gets.
#[derive(Debug, Clone, Default)]
pub enum BackendKind {
    /// `vhost-device-vsock` 0.3.0: native vsock streams only (it drops datagrams, so TSI
    /// requests go unanswered).
    #[default]
    VhostDeviceVsock,
    /// `tools/tsi-backend` (the runtime's muxer): the program and extra arguments (e.g.
    /// `--tsi-token HEX`). Its ingress socket is `mux.sock` beside the hybrid-vsock socket.
    Tsi { program: PathBuf, args: Vec<String> },
}

/// A running backend process. Killed when dropped.
pub struct Backend {
    child: Child,
    vhost_socket: PathBuf,
    uds: PathBuf,
}

impl Backend {
    /// Starts vhost-device-vsock with its sockets in `dir` and waits until QEMU can attach.
    pub fn start(dir: &Path) -> io::Result<Backend> {
        Backend::start_kind(dir, &BackendKind::VhostDeviceVsock)
    }

    /// Starts the given backend with its sockets in `dir` (a TSI backend's log goes to
    /// `dir/backend.log`) and waits until QEMU can attach.
    pub fn start_kind(dir: &Path, kind: &BackendKind) -> io::Result<Backend> {
        let vhost_socket = dir.join("vhu.sock");
        let uds = dir.join("vm.vsock");
        let (program, extra, stderr, hint): (PathBuf, &[String], Stdio, &str) = match kind {
            BackendKind::VhostDeviceVsock => (
                "vhost-device-vsock".into(),
                &[],
                Stdio::null(),
                "install it: cargo install --locked vhost-device-vsock --version 0.3.0",
            ),
            BackendKind::Tsi { program, args } => (
                program.clone(),
                args,
                Stdio::from(std::fs::File::create(dir.join("backend.log"))?),
                "build it: cargo build --release --manifest-path tools/Cargo.toml -p tsi-backend",
            ),
        };
        let mut cmd = Command::new(&program);
        cmd.arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&vhost_socket)
            .arg("--uds-path")
            .arg(&uds);
        if matches!(kind, BackendKind::Tsi { .. }) {
            cmd.arg("--dir").arg(dir);
        }
        let child = cmd
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {} ({e}); {hint}", program.display())))?;
        let mut b = Backend { child, vhost_socket, uds };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !b.vhost_socket.exists() {
            if let Some(st) = b.child.try_wait()? {
                return Err(io::Error::other(format!("{} exited early: {st}", program.display())));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not create its socket in 10 s", program.display()),
                ));
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
