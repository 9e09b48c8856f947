//! A whole supermachine-style guest: payloads from the crate's constants, the runtime's
//! initramfs flow, a busybox squashfs image, QEMU (TCG) with virtio-mmio blk + vsock, and the
//! agent reached through the host client.

use crate::initramfs::{self, Options as InitOptions};
use crate::qemu::{Machine, Vm, VmConfig};
use crate::{rootfs, vsock};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use supermachine_agent_client::{proto::ExecRequest, Client, Connector};

/// Hybrid-vsock connections to the guest agent whose reads give up after a bound, so a stuck
/// guest fails a test instead of hanging it.
#[derive(Debug, Clone)]
pub struct BoundedVsock {
    uds: PathBuf,
    port: u32,
    read_timeout: Duration,
}

impl BoundedVsock {
    /// Guest `port` through the hybrid-vsock socket `uds`; each read gives up after `read_timeout`.
    pub fn new(uds: impl Into<PathBuf>, port: u32, read_timeout: Duration) -> Self {
        BoundedVsock { uds: uds.into(), port, read_timeout }
    }

    /// The same guest port with another read bound (long-running commands).
    pub fn with_read_timeout(&self, read_timeout: Duration) -> Self {
        BoundedVsock { read_timeout, ..self.clone() }
    }
}

impl Connector for BoundedVsock {
    type Stream = std::os::unix::net::UnixStream;
    fn connect(&self) -> io::Result<Self::Stream> {
        let s = supermachine_agent_client::connect_hybrid_vsock(&self.uds, self.port, Duration::from_secs(10))?;
        s.set_read_timeout(Some(self.read_timeout))?;
        Ok(s)
    }
}
use crate::payloads::{self, GuestPayloads};

/// How to boot.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    /// Which payloads to boot (the x86_64 crate's by default).
    pub payloads: GuestPayloads,
    /// Machine model (the payloads' default machine unless changed).
    pub machine: Machine,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Extra cmdline tokens (e.g. supermachine's `tsi_hijack`).
    pub extra_cmdline: String,
    /// Workload started by the launch script before the agent.
    pub workload: Option<String>,
    /// How long to wait for the agent to answer.
    pub ready_timeout: Duration,
    /// A prebuilt root file system image (squashfs) to boot instead of the busybox tree
    /// built from the payloads (e.g. a Debian root from `scripts/workload-test.sh`).
    pub image: Option<PathBuf>,
    /// The vsock backend (vhost-device-vsock unless a TSI test asks for the runtime's muxer).
    pub backend: vsock::BackendKind,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions::for_payloads(payloads::x86_64())
    }
}

impl GuestOptions {
    /// Defaults for booting `payloads` on their usual QEMU machine.
    pub fn for_payloads(payloads: GuestPayloads) -> Self {
        GuestOptions {
            payloads,
            machine: payloads.machine,
            mem_mib: 256,
            cpus: 1,
            extra_cmdline: String::new(),
            workload: None,
            ready_timeout: Duration::from_secs(120),
            image: None,
            backend: vsock::BackendKind::default(),
        }
    }
}

/// Where the time of a boot went.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Writing the payloads out of the crate constants.
    pub extract: Duration,
    /// Building the initramfs.
    pub initramfs: Duration,
    /// Building the squashfs image.
    pub rootfs: Duration,
    /// Starting the vsock backend and spawning QEMU.
    pub vmm_start: Duration,
    /// QEMU launch → the first successful `/bin/true` exec (the runtime's readiness check).
    pub kernel_to_agent_ready: Duration,
}

/// A booted guest whose agent answers. Killed (QEMU and backend) when dropped.
pub struct Guest {
    /// The QEMU process and its console.
    pub vm: Vm,
    /// Host client connected through hybrid vsock (reads bounded to 120 s).
    pub client: Client<BoundedVsock>,
    /// Where the time went.
    pub timings: Timings,
    _backend: vsock::Backend,
    dir: tempfile::TempDir,
}

impl Guest {
    /// Boots and waits until the agent runs `/bin/true`.
    pub fn boot(opts: &GuestOptions) -> io::Result<Guest> {
        let dir = tempfile::Builder::new().prefix("sm-guest").tempdir()?;
        let mut t = Timings::default();

        let start = Instant::now();
        let kernel = dir.path().join("kernel");
        let p = opts.payloads;
        supermachine_kernel_build::write_atomic(&kernel, p.kernel, false)?;
        t.extract = start.elapsed();

        let start = Instant::now();
        let init_opts = InitOptions { workload: opts.workload.clone(), ..InitOptions::default() };
        let initrd = dir.path().join("initrd.cpio");
        std::fs::write(&initrd, initramfs::supermachine(p.busybox, p.agent, &init_opts))?;
        t.initramfs = start.elapsed();

        let start = Instant::now();
        let image = match &opts.image {
            Some(image) => image.clone(),
            None => {
                let tree = dir.path().join("rootfs");
                rootfs::busybox_tree(&tree, p.busybox)?;
                let image = dir.path().join("rootfs.squashfs");
                rootfs::squashfs(&tree, &image)?;
                image
            }
        };
        t.rootfs = start.elapsed();

        let start = Instant::now();
        let backend = vsock::Backend::start_kind(dir.path(), &opts.backend)?;
        let mut cfg = VmConfig::new(opts.machine, &kernel);
        cfg.initrd = Some(initrd);
        cfg.mem_mib = opts.mem_mib;
        cfg.cpus = opts.cpus;
        cfg.drives = vec![image];
        cfg.vhost_user_vsock = Some(backend.vhost_socket().to_path_buf());
        cfg.append = format!("panic=-1 {}", opts.extra_cmdline);
        let vm = Vm::spawn(&cfg)?;
        t.vmm_start = start.elapsed();

        let client = Client::new(BoundedVsock {
            uds: backend.uds_path().to_path_buf(),
            port: 1028,
            read_timeout: Duration::from_secs(120),
        });
        let deadline = Instant::now() + opts.ready_timeout;
        // The runtime's readiness check: exec /bin/true, each try bounded to 5 s, until one
        // succeeds. The bound matters: a connection made while the guest's vsock driver is
        // still coming up can be accepted by the backend and then never answered.
        let prober = Client::new(BoundedVsock {
            uds: backend.uds_path().to_path_buf(),
            port: 1028,
            read_timeout: Duration::from_secs(5),
        });
        let probe = ExecRequest::new(["/bin/true"]);
        loop {
            match prober.exec(&probe, None) {
                Ok(out) if out.status.success() => break,
                _ if Instant::now() > deadline => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("agent not ready after {:?}; console:\n{}", opts.ready_timeout, vm.console_text()),
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        t.kernel_to_agent_ready = vm.elapsed();
        Ok(Guest { vm, client, timings: t, _backend: backend, dir })
    }

    /// Writes `bytes` to `path` in the guest through the agent (parent folders made, mode 0755:
    /// scripts and programs a test stages after boot).
    pub fn install(&self, path: &str, bytes: &[u8]) -> Result<(), String> {
        let req = ExecRequest::new([
            "/bin/sh",
            "-c",
            "mkdir -p \"${1%/*}\" && cat > \"$1\" && chmod 0755 \"$1\"",
            "install",
            path,
        ]);
        match self.client.exec(&req, Some(bytes)) {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!("installing {path} failed: {}", String::from_utf8_lossy(&out.stderr))),
            Err(e) => Err(format!("installing {path} failed: {e}")),
        }
    }

    /// A scratch folder that lives as long as the guest.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Asks the agent (PID 1) for an orderly power-off (SIGTERM to PID 1) and waits for QEMU.
    pub fn poweroff(mut self, timeout: Duration) -> Result<(), String> {
        let _ = self.client.exec(&ExecRequest::new(["/bin/kill", "-TERM", "1"]), None);
        self.vm.wait_exit(timeout).map(|_| ())
    }
}
