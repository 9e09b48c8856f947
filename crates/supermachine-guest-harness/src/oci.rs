//! Guests booted by init-oci: an initramfs whose `/init` is the `init-oci` payload, and a zstd
//! squashfs image holding a busybox tree, the agent at `/.supermachine/agent` and the process
//! config at `/.supermachine/config.json` (docs/INIT-OCI.md); optionally a second "delta"
//! squashfs on top holding the published supermachine runtime's files (`/.supermachine-cmd`, …)
//! and an env service on vsock port 1026, as the runtime provides on HVF. Any architecture's
//! [`GuestPayloads`].

use crate::cpio::Archive;
use crate::guest::BoundedVsock;
use crate::payloads::GuestPayloads;
use crate::qemu::{Vm, VmConfig};
use crate::{rootfs, virtiofs, vsock};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use supermachine_agent_client::{proto::ExecRequest, Client};

/// The wall-clock time (Unix seconds) every OCI guest boots with (`supermachine.host_time=`):
/// init-oci sets the clock from it, so tests can check the clock against it.
pub const HOST_TIME: u64 = 1_795_305_600;

/// The initramfs: `/init` = init-oci, the empty mount points it needs, and `extra` files at its
/// top level (the runtime adds `/supermachine-smpark.ko` there).
pub fn initramfs(init_oci: &[u8], extra: &[ImageFile]) -> Vec<u8> {
    let mut a = Archive::new();
    for d in ["proc", "dev", "sys", "newroot"] {
        a.dir(d, 0o755);
    }
    a.file("init", 0o755, init_oci);
    for f in extra {
        a.file(f.path.trim_start_matches('/'), f.mode, &f.data);
    }
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
pub fn image_tree(
    dir: &Path,
    busybox: &[u8],
    agent: Option<&[u8]>,
    config: Option<&str>,
    files: &[ImageFile],
) -> io::Result<()> {
    rootfs::busybox_tree(dir, busybox)?;
    std::fs::create_dir_all(dir.join(".supermachine"))?;
    if let Some(agent) = agent {
        let p = dir.join(".supermachine/agent");
        std::fs::write(&p, agent)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    if let Some(cfg) = config {
        std::fs::write(dir.join(".supermachine/config.json"), cfg)?;
    }
    write_files(dir, files)
}

/// Writes `files` under `dir`.
pub fn write_files(dir: &Path, files: &[ImageFile]) -> io::Result<()> {
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
    /// The payloads (kernel, busybox, agent, init-oci) and the QEMU machine.
    pub payloads: GuestPayloads,
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
    /// A second squashfs layer on top of the image (the runtime's "delta" layer), e.g. its
    /// `/.supermachine-cmd` and `/supermachine-agent` files. `None`: one layer only.
    pub delta: Option<Vec<ImageFile>>,
    /// Put the agent at `/supermachine-agent` in the delta layer (the runtime's place).
    pub delta_agent: bool,
    /// Serve this JSON on the host's vsock port 1026 (the runtime's env service,
    /// `{"env":{..},"secrets":{..}}`). Needs `vsock`.
    pub env_json: Option<String>,
    /// Extra cmdline tokens.
    pub extra_cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Files added to the initramfs next to `/init` (e.g. the runtime's `/supermachine-smpark.ko`).
    pub initramfs_files: Vec<ImageFile>,
    /// Host folders shared with virtio-fs: (tag, folder), served by [`crate::virtiofs`] (root).
    pub virtiofs: Vec<(String, PathBuf)>,
}

impl Default for OciOptions {
    fn default() -> Self {
        OciOptions::for_payloads(crate::payloads::x86_64())
    }
}

impl OciOptions {
    /// Defaults (agent in the image, vsock, 256 MiB) for `payloads`.
    pub fn for_payloads(payloads: GuestPayloads) -> Self {
        OciOptions {
            payloads,
            config: None,
            files: Vec::new(),
            agent: true,
            image: true,
            vsock: true,
            delta: None,
            delta_agent: false,
            env_json: None,
            extra_cmdline: String::new(),
            mem_mib: 256,
            cpus: 1,
            initramfs_files: Vec::new(),
            virtiofs: Vec::new(),
        }
    }
}

/// Serves one JSON blob on a Unix socket until dropped (vhost-device-vsock forwards a guest's
/// connection to host port P to `<uds>_P`).
struct EnvService {
    stop: Arc<AtomicBool>,
}

impl EnvService {
    fn start(path: PathBuf, json: String) -> io::Result<EnvService> {
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(json.as_bytes());
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(EnvService { stop })
    }
}

impl Drop for EnvService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A guest whose PID 1 is init-oci. QEMU and the vsock backend are killed when dropped.
pub struct OciGuest {
    /// The QEMU process and its console.
    pub vm: Vm,
    backend: Option<vsock::Backend>,
    _env: Option<EnvService>,
    _shares: Vec<virtiofs::Share>,
    _dir: tempfile::TempDir,
}

impl OciGuest {
    /// Builds the initramfs and image and starts QEMU (does not wait for anything).
    pub fn boot(opts: &OciOptions) -> io::Result<OciGuest> {
        let dir = tempfile::Builder::new().prefix("sm-oci").tempdir()?;
        let p = opts.payloads;
        let kernel = dir.path().join("kernel");
        supermachine_kernel_build::write_atomic(&kernel, p.kernel, false)?;
        let initrd = dir.path().join("initrd.cpio");
        std::fs::write(&initrd, initramfs(p.init_oci, &opts.initramfs_files))?;
        let mut cfg = VmConfig::new(p.machine, &kernel);
        cfg.initrd = Some(initrd);
        cfg.mem_mib = opts.mem_mib;
        cfg.cpus = opts.cpus;
        cfg.append = format!("panic=-1 supermachine.host_time={HOST_TIME} {}", opts.extra_cmdline);
        if opts.image {
            let tree = dir.path().join("rootfs");
            let agent = opts.agent.then_some(p.agent);
            image_tree(&tree, p.busybox, agent, opts.config.as_deref(), &opts.files)?;
            let image = dir.path().join("rootfs.squashfs");
            rootfs::squashfs(&tree, &image)?;
            cfg.drives = vec![image];
            if let Some(files) = &opts.delta {
                let delta = dir.path().join("delta");
                std::fs::create_dir_all(&delta)?;
                let mut files = files.clone();
                if opts.delta_agent {
                    files.push(ImageFile { path: "/supermachine-agent".into(), data: p.agent.to_vec(), mode: 0o755 });
                }
                write_files(&delta, &files)?;
                let image = dir.path().join("delta.squashfs");
                rootfs::squashfs(&delta, &image)?;
                cfg.drives.push(image);
            }
        }
        let backend = if opts.vsock { Some(vsock::Backend::start(dir.path())?) } else { None };
        let env = match (&opts.env_json, &backend) {
            (Some(json), Some(b)) => {
                let mut path = b.uds_path().as_os_str().to_owned();
                path.push("_1026");
                Some(EnvService::start(PathBuf::from(path), json.clone())?)
            }
            _ => None,
        };
        cfg.vhost_user_vsock = backend.as_ref().map(|b| b.vhost_socket().to_path_buf());
        let shares = opts
            .virtiofs
            .iter()
            .map(|(tag, src)| virtiofs::Share::start(dir.path(), tag, src))
            .collect::<io::Result<Vec<_>>>()?;
        cfg.vhost_user_fs = shares.iter().map(|s| (s.tag.clone(), s.socket().to_path_buf())).collect();
        let vm = Vm::spawn(&cfg)?;
        Ok(OciGuest { vm, backend, _env: env, _shares: shares, _dir: dir })
    }

    /// The agent client (needs `vsock: true`).
    pub fn client(&self) -> Client<BoundedVsock> {
        self.client_with_timeout(Duration::from_secs(120))
    }

    /// The agent client with reads bounded to `read_timeout` (needs `vsock: true`).
    pub fn client_with_timeout(&self, read_timeout: Duration) -> Client<BoundedVsock> {
        let uds: PathBuf = self.backend.as_ref().expect("booted without vsock").uds_path().to_path_buf();
        Client::new(BoundedVsock::new(uds, 1028, read_timeout))
    }

    /// Waits until the agent runs `/bin/true` (the runtime's readiness check).
    pub fn wait_agent(&self, timeout: Duration) -> Result<Client<BoundedVsock>, String> {
        // Each try bounded to 5 s, as the runtime does: an early connection can go unanswered.
        let prober = self.client_with_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + timeout;
        let probe = ExecRequest::new(["/bin/true"]);
        loop {
            match prober.exec(&probe, None) {
                Ok(out) if out.status.success() => return Ok(self.client()),
                _ if self.vm.has_exited() => {
                    return Err(format!("QEMU exited before the agent answered; console:\n{}", self.vm.console_text()));
                }
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
