//! Boots a guest under QEMU with TCG and watches its serial console.
//!
//! `/dev/kvm` on our build machines cannot run guest kernels (see TESTING.md), so every boot
//! here is `-accel tcg`. The console is the guest's ttyS0 (x86) or ttyAMA0 (arm64) on QEMU's
//! stdout, read line by line with arrival times, so tests can wait for markers and benchmarks
//! can time them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The QEMU machine model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86 `-M microvm`: virtio-mmio only. With `acpi: false` QEMU describes CPUs with an MP
    /// table and declares virtio-mmio devices on the kernel cmdline, as the supermachine KVM
    /// backend does (a guest must then `reboot`, not power off, to end the VM).
    Microvm {
        /// Give the guest ACPI tables (needed for `poweroff` to stop QEMU).
        acpi: bool,
    },
    /// x86 `-M pc` (SeaBIOS, PCI): virtio-pci devices.
    Pc,
    /// arm64 `-M virt,gic-version=3,dtb-randomness=off -cpu cortex-a72` with modern virtio-mmio
    /// transports: the machine the supermachine HVF VMM's device tree describes.
    Virt,
}

impl Machine {
    fn binary(self) -> &'static str {
        match self {
            Machine::Virt => "qemu-system-aarch64",
            _ => "qemu-system-x86_64",
        }
    }
    fn is_mmio(self) -> bool {
        !matches!(self, Machine::Pc)
    }
    /// Where guest RAM starts: QEMU `virt` maps it at 1 GiB, the x86 machines at 0.
    pub fn ram_base(self) -> u64 {
        match self {
            Machine::Virt => 0x4000_0000,
            _ => 0,
        }
    }
}

/// TSC frequency passed to microvm guests: TCG has no calibrated TSC, and without this token
/// the guest can hang calibrating its clock.
pub const TSC_EARLY_KHZ: u32 = 2_000_000;

/// The accelerator: TCG with every vCPU on one host thread (round robin).
///
/// Multi-threaded TCG (QEMU's default for SMP guests) does not keep cross-modifying code
/// coherent: a vCPU can translate a block while another vCPU writes to it and keep running
/// the old bytes after the writer's core-serializing IPIs. Linux patches live text exactly that
/// way (`text_poke_bp`: int3, sync, rest, sync, first byte, sync), so a static-key flip under
/// load can leave a vCPU executing an int3 that memory no longer holds: "Oops: int3" in
/// `sched_clock_cpu` at boot (CI, 2026-12-02) or `mem_cgroup_sk_alloc` on `unshare --net`.
/// `tests/tcg_cross_modifying_code.rs` shows it from user space (thousands of stale traps per
/// 20,000 patches with `thread=multi`, none with `thread=single`) on QEMU 7.2. Real CPUs and
/// KVM/HVF are not affected; one-vCPU guests (all benchmarks) run the same either way.
pub const TCG_ACCEL: &str = "tcg,thread=single";

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Machine model.
    pub machine: Machine,
    /// Kernel image (bzImage or arm64 Image).
    pub kernel: PathBuf,
    /// Initramfs, if any.
    pub initrd: Option<PathBuf>,
    /// Kernel cmdline; the console and (microvm) `tsc_early_khz` tokens are added.
    pub append: String,
    /// Guest RAM in MiB.
    pub mem_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Raw disk images, attached as virtio-blk in order (vda, vdb, …).
    pub drives: Vec<PathBuf>,
    /// A vhost-user vsock backend socket (vhost-device-vsock) to attach.
    pub vhost_user_vsock: Option<PathBuf>,
    /// virtio-fs shares: (tag, vhost-user socket of its daemon, see [`crate::virtiofs`]).
    pub vhost_user_fs: Vec<(String, PathBuf)>,
    /// `tsc_early_khz=` for microvm guests (default [`TSC_EARLY_KHZ`]); the boot profiler sets the
    /// host's TSC rate (wall-clock printk times) or 1 GHz (`-icount shift=0`: 1 tick per virtual ns).
    pub tsc_khz: Option<u32>,
    /// Extra QEMU arguments, appended last (e.g. `-icount shift=0,sleep=off`).
    pub extra_args: Vec<String>,
}

impl VmConfig {
    /// A config with defaults: 128 MiB, 1 vCPU, no disks.
    pub fn new(machine: Machine, kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            machine,
            kernel: kernel.into(),
            initrd: None,
            append: String::new(),
            mem_mib: 128,
            cpus: 1,
            drives: Vec::new(),
            vhost_user_vsock: None,
            vhost_user_fs: Vec::new(),
            tsc_khz: None,
            extra_args: Vec::new(),
        }
    }

    /// The full QEMU command line.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.machine.binary());
        let mem = format!("{}M", self.mem_mib);
        // vhost-user needs guest RAM in a shared memfd of exactly -m bytes.
        let shared_mem = self.vhost_user_vsock.is_some() || !self.vhost_user_fs.is_empty();
        let membackend = if shared_mem { ",memory-backend=mem" } else { "" };
        let mut append = self.append.clone();
        match self.machine {
            Machine::Microvm { acpi } => {
                c.args([
                    "-M",
                    &format!("microvm,pit=on,pic=on,rtc=on,acpi={}{membackend}", if acpi { "on" } else { "off" }),
                ]);
                c.args(["-cpu", "max"]);
                append = format!("console=ttyS0 tsc_early_khz={} {append}", self.tsc_khz.unwrap_or(TSC_EARLY_KHZ));
            }
            Machine::Pc => {
                c.args(["-M", &format!("pc{membackend}"), "-cpu", "max"]);
                append = format!("console=ttyS0 {append}");
            }
            Machine::Virt => {
                // As the supermachine HVF VMM describes the machine (runtime
                // arch/aarch64/fdt.rs): a GICv3, no `kaslr-seed`/`rng-seed` in /chosen, and
                // modern (VERSION_1) virtio-mmio transports, which QEMU's `virt` only gives
                // when told.
                c.args(["-M", &format!("virt,gic-version=3,dtb-randomness=off{membackend}"), "-cpu", "cortex-a72"]);
                c.args(["-global", "virtio-mmio.force-legacy=false"]);
                append = format!("console=ttyAMA0 {append}");
            }
        }
        c.args(["-accel", TCG_ACCEL, "-m", &mem, "-smp", &self.cpus.to_string()]);
        if shared_mem {
            c.args(["-object", &format!("memory-backend-memfd,id=mem,size={mem},share=on")]);
        }
        c.arg("-kernel").arg(&self.kernel);
        if let Some(initrd) = &self.initrd {
            c.arg("-initrd").arg(initrd);
        }
        c.args(["-append", append.trim()]);
        let (blk, vsock) = if self.machine.is_mmio() {
            ("virtio-blk-device", "vhost-user-vsock-device")
        } else {
            ("virtio-blk-pci", "vhost-user-vsock-pci")
        };
        // `virt` hands its virtio-mmio slots out from the top and Linux names disks from the
        // bottom, so there the last `-device` is vda: add them in reverse to keep vda first.
        let mut drives: Vec<_> = self.drives.iter().enumerate().collect();
        if self.machine == Machine::Virt {
            drives.reverse();
        }
        for (i, d) in drives {
            c.args(["-drive", &format!("id=d{i},file={},format=raw,if=none,readonly=on", d.display())]);
            c.args(["-device", &format!("{blk},drive=d{i}")]);
        }
        if let Some(sock) = &self.vhost_user_vsock {
            c.args(["-chardev", &format!("socket,id=vsc,path={}", sock.display())]);
            c.args(["-device", &format!("{vsock},chardev=vsc")]);
        }
        let fs = if self.machine.is_mmio() { "vhost-user-fs-device" } else { "vhost-user-fs-pci" };
        for (i, (tag, sock)) in self.vhost_user_fs.iter().enumerate() {
            c.args(["-chardev", &format!("socket,id=fs{i},path={}", sock.display())]);
            c.args(["-device", &format!("{fs},chardev=fs{i},tag={tag}")]);
        }
        c.args(["-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio"]);
        c.args(&self.extra_args);
        c
    }
}

#[derive(Default)]
struct Console {
    lines: Vec<(Duration, String)>,
    closed: bool,
}

/// A running guest. Killed when dropped.
pub struct Vm {
    child: Child,
    started: Instant,
    console: Arc<(Mutex<Console>, Condvar)>,
    /// The compact DTB of an arm64 guest (see [`crate::dtb`]), removed after QEMU.
    _dtb_dir: Option<tempfile::TempDir>,
    /// Guest-physical address of the first byte of RAM.
    ram_base: u64,
}

impl Vm {
    /// Starts QEMU. An arm64 `virt` guest gets an exact-size DTB ([`crate::dtb`]) unless
    /// `extra_args` passes its own `-dtb`; making it runs QEMU once more, before the launch
    /// that [`Vm::elapsed`] and the console times count from.
    pub fn spawn(cfg: &VmConfig) -> std::io::Result<Vm> {
        let mut cmd = cfg.command();
        let mut dtb_dir = None;
        if cfg.machine == Machine::Virt && !cfg.extra_args.iter().any(|a| a == "-dtb") {
            let dir = tempfile::tempdir()?;
            let dtb = dir.path().join("virt.dtb");
            // Disks, vsock and virtio-fs sit behind virtio-mmio slots the DTB lists either way;
            // leaving them out keeps the dump from opening the disk files or the backends'
            // sockets (QEMU's virtiofsd serves one connection, then exits).
            let probe =
                VmConfig { drives: Vec::new(), vhost_user_vsock: None, vhost_user_fs: Vec::new(), ..cfg.clone() };
            crate::dtb::write_compact_virt_dtb(probe.command(), &dtb).map_err(std::io::Error::other)?;
            cmd.arg("-dtb").arg(&dtb);
            dtb_dir = Some(dir);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting {:?}: {e}", cfg.machine.binary())))?;
        let console = Arc::new((Mutex::new(Console::default()), Condvar::new()));
        for (stream, tag) in [
            (child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), ""),
            (child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), "qemu: "),
        ] {
            let Some(stream) = stream else { continue };
            let console = console.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
                            let (m, cv) = &*console;
                            m.lock().unwrap().lines.push((started.elapsed(), format!("{tag}{line}")));
                            cv.notify_all();
                        }
                    }
                }
                if tag.is_empty() {
                    let (m, cv) = &*console;
                    m.lock().unwrap().closed = true;
                    cv.notify_all();
                }
            });
        }
        Ok(Vm { child, started, console, _dtb_dir: dtb_dir, ram_base: cfg.machine.ram_base() })
    }

    /// QEMU's shared memfd holding guest RAM (a vhost-user device, vsock or virtio-fs, makes
    /// QEMU put RAM there), opened for reading and optionally writing.
    fn guest_ram_file(&self, write: bool) -> std::io::Result<std::fs::File> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))?;
        let memfd = fds
            .flatten()
            .map(|e| e.path())
            .find(|p| std::fs::read_link(p).is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:mem")))
            .ok_or_else(|| std::io::Error::other("QEMU has no memfd guest RAM (boot with a vhost-user device)"))?;
        std::fs::OpenOptions::new().read(true).write(write).open(memfd)
    }

    /// Writes `bytes` at guest-physical address `gpa` straight into guest RAM while the guest
    /// runs, as a VMM writes its guest's memory (the supermachine runtime's direct smpark unpark
    /// does). Needs RAM in QEMU's shared memfd, which a vhost-user device (vsock, virtio-fs)
    /// brings; only below any RAM hole (small guests).
    pub fn write_guest_phys(&self, gpa: u64, bytes: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let offset = gpa
            .checked_sub(self.ram_base)
            .ok_or_else(|| std::io::Error::other(format!("{gpa:#x} is below guest RAM ({:#x})", self.ram_base)))?;
        self.guest_ram_file(true)?.write_all_at(bytes, offset)
    }

    /// All of guest RAM, as a VMM's snapshot reads it (pause the guest first for a consistent
    /// image: [`Vm::pause`]). Byte 0 is guest-physical [`Machine::ram_base`].
    pub fn read_guest_ram(&self) -> std::io::Result<Vec<u8>> {
        let mut ram = Vec::new();
        std::io::Read::read_to_end(&mut self.guest_ram_file(false)?, &mut ram)?;
        Ok(ram)
    }

    /// Stops every vCPU (and QEMU's other threads): SIGSTOP to the QEMU process, as a VMM stops
    /// its vCPUs before it captures a snapshot.
    pub fn pause(&self) -> std::io::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a [`Vm::pause`]d guest run again.
    pub fn resume(&self) -> std::io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> std::io::Result<()> {
        let st = Command::new("kill").arg(sig).arg(self.child.id().to_string()).status()?;
        if st.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("kill {sig} {}: {st}", self.child.id())))
        }
    }

    /// Waits until a console line contains `marker`; returns the time since launch it arrived.
    /// On timeout or QEMU exit, the error holds the console so far.
    pub fn wait_for(&self, marker: &str, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.console;
        let mut c = m.lock().unwrap();
        loop {
            if let Some((t, _)) = c.lines.iter().find(|(_, l)| l.contains(marker)) {
                return Ok(*t);
            }
            let now = Instant::now();
            if c.closed || now >= deadline {
                let why = if c.closed { "QEMU exited" } else { "timed out" };
                let log: Vec<_> = c.lines.iter().map(|(_, l)| l.as_str()).collect();
                return Err(format!(
                    "{why} after {:?} waiting for {marker:?}; console:\n{}",
                    self.started.elapsed(),
                    log.join("\n")
                ));
            }
            c = cv.wait_timeout(c, deadline - now).unwrap().0;
        }
    }

    /// Waits for QEMU to exit (the guest powered off or rebooted with `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                // Let the reader threads drain the console.
                let (m, cv) = &*self.console;
                let c = m.lock().unwrap();
                let _ = cv.wait_timeout_while(c, Duration::from_secs(2), |c| !c.closed);
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                return Err(format!("QEMU still running after {timeout:?}; console:\n{}", self.console_text()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True once QEMU's console has closed (the VM ended).
    pub fn has_exited(&self) -> bool {
        self.console.0.lock().unwrap().closed
    }

    /// The whole console so far.
    pub fn console_text(&self) -> String {
        let c = self.console.0.lock().unwrap();
        c.lines.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }

    /// Every console line so far with its arrival time since launch.
    pub fn lines(&self) -> Vec<(Duration, String)> {
        self.console.0.lock().unwrap().lines.clone()
    }

    /// Console lines between the lines containing `begin` and `end` markers.
    pub fn section(&self, begin: &str, end: &str) -> Vec<String> {
        let c = self.console.0.lock().unwrap();
        c.lines
            .iter()
            .map(|(_, l)| l.clone())
            .skip_while(|l| !l.contains(begin))
            .skip(1)
            .take_while(|l| !l.contains(end))
            .collect()
    }

    /// Time since launch.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
