//! Guests booted by init-oci: an initramfs whose `/init` is the `init-oci` payload, and a zstd
//! squashfs image holding a busybox tree, the agent at `/.supermachine/agent` and the process
//! config at `/.supermachine/config.json` (docs/INIT-OCI.md).

use crate::cpio::Archive;
use crate::qemu::{Machine, Vm, VmConfig};
use crate::{rootfs, vsock};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use supermachine_agent_client::{proto::ExecRequest, Client, HybridVsock};
use supermachine_kernel as payloads;

/// The initramfs: `/init` = init-oci and the empty mount points it needs.
pub fn initramfs(init_oci: &[u8]) -> Vec<u8> {
    let mut a = Archive::new();
    for d in ["proc", "dev", "sys", "newroot"] {
        a.dir(d, 0o755);
    }
    a.file("init", 0o755, init_oci);
    a.finish()
}

/// A file to add to the image tree.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Absolute path inside the image.
    pub path: String,
    /// Contents.
    pub data: Vec<u8>,
    /// Mode bits.
    pub mode: u32,
}

impl ImageFile {
    /// A file with mode 0644.
    pub fn new(path: &str, data: impl Into<Vec<u8>>) -> ImageFile {
        ImageFile { path: path.into(), data: data.into(), mode: 0o644 }
    }
}

/// Lays out the image in `dir`: busybox tree, `/.supermachine/agent` (when `agent` is given),
/// `/.supermachine/config.json` (when `config` is given), then `files` (which may replace any
/// of these, e.g. /etc/passwd).
pub fn image_tree(dir: &Path, agent: Option<&[u8]>, config: Option<&str>, files: &[ImageFile]) -> io::Result<()> {
    rootfs::busybox_tree(dir, payloads::BUSYBOX_BYTES)?;
    std::fs::create_dir_all(dir.join(".supermachine"))?;
    if let Some(agent) = agent {
        let p = dir.join(".supermachine/agent");
        std::fs::write(&p, agent)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    if let Some(cfg) = config {
        std::fs::write(dir.join(".supermachine/config.json"), cfg)?;
    }
    for f in files {
        let p = dir.join(f.path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// How to boot an init-oci guest.
#[derive(Debug, Clone)]
pub struct OciOptions {
    /// The JSON config baked into the image (`None`: no file).
    pub config: Option<String>,
    /// Extra image files.
    pub files: Vec<ImageFile>,
    /// Put the agent into the image.
    pub agent: bool,
    /// Attach a squashfs image at all (`false` tests the no-rootfs error).
    pub image: bool,
    /// Attach virtio-vsock (vhost-device-vsock) and connect the agent client.
    pub vsock: bool,
    /// Extra cmdline tokens.
    pub extra_cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
}

impl Default for OciOptions {
    fn default() -> Self {
        OciOptions { config: None, files: Vec::new(), agent: true, image: true, vsock: true,
                     extra_cmdline: String::new(), mem_mib: 256 }
    }
}

/// A guest whose PID 1 is init-oci. QEMU and the vsock backend are killed when dropped.
pub struct OciGuest {
    /// The QEMU process and its console.
    pub vm: Vm,
    backend: Option<vsock::Backend>,
    _dir: tempfile::TempDir,
}

impl OciGuest {
    /// Builds the initramfs and image and starts QEMU (does not wait for anything).
    pub fn boot(opts: &OciOptions) -> io::Result<OciGuest> {
        let dir = tempfile::Builder::new().prefix("sm-oci").tempdir()?;
        let kernel = dir.path().join("kernel");
        payloads::extract_kernel_to(&kernel)?;
        let initrd = dir.path().join("initrd.cpio");
        std::fs::write(&initrd, initramfs(payloads::INIT_OCI_BYTES))?;
        let mut cfg = VmConfig::new(Machine::Microvm { acpi: true }, &kernel);
        cfg.initrd = Some(initrd);
        cfg.mem_mib = opts.mem_mib;
        cfg.append = format!("panic=-1 supermachine.host_time=1795305600 {}", opts.extra_cmdline);
        if opts.image {
            let tree = dir.path().join("rootfs");
            let agent = opts.agent.then_some(payloads::SUPERMACHINE_AGENT_BYTES);
            image_tree(&tree, agent, opts.config.as_deref(), &opts.files)?;
            let image = dir.path().join("rootfs.squashfs");
            rootfs::squashfs(&tree, &image)?;
            cfg.drives = vec![image];
        }
        let backend = if opts.vsock { Some(vsock::Backend::start(dir.path())?) } else { None };
        cfg.vhost_user_vsock = backend.as_ref().map(|b| b.vhost_socket().to_path_buf());
        let vm = Vm::spawn(&cfg)?;
        Ok(OciGuest { vm, backend, _dir: dir })
    }

    /// The agent client (needs `vsock: true`).
    pub fn client(&self) -> Client<HybridVsock> {
        let uds: PathBuf = self.backend.as_ref().expect("booted without vsock").uds_path().to_path_buf();
        Client::new(HybridVsock::new(uds, 1028, Duration::from_secs(5)))
    }

    /// Waits until the agent runs `/bin/true` (the runtime's readiness check).
    pub fn wait_agent(&self, timeout: Duration) -> Result<Client<HybridVsock>, String> {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        let probe = ExecRequest::new(["/bin/true"]);
        loop {
            match client.exec(&probe, None) {
                Ok(out) if out.status.success() => return Ok(client),
                _ if Instant::now() > deadline => {
                    return Err(format!("agent not ready after {timeout:?}; console:\n{}", self.vm.console_text()));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// Waits until `marker` appears on `n` console lines.
pub fn wait_for_count(vm: &Vm, marker: &str, n: usize, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = vm.console_text();
        if text.lines().filter(|l| l.contains(marker)).count() >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{marker:?} seen fewer than {n} times after {timeout:?}; console:\n{text}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
