//! Boots the x86_64 payloads the way the supermachine runtime's KVM backend does, under QEMU TCG:
//! guest RAM laid out by the runtime's own loader (`tools/kvm-entry`: `setup_boot` and
//! `write_mptable` from `supermachine =0.7.108`), no ACPI, the runtime's cold-boot command line,
//! and a PVH stub (`scripts/kvm-entry/stub.S`) that only enters long mode as the runtime's
//! register state says and jumps to the bzImage's 64-bit entry.
//!
//! ```text
//! kvm-entry-test --kvm-entry TOOL [--stub-src stub.S] [--cpus N] [--mem MIB] [--kernel BZIMAGE]
//!                [--nokaslr] [--label NAME] [--json OUT] [--mmio-tokens FILE]
//! ```
//! Steps: one ordinary microvm boot (ACPI off) learns the `virtio_mmio.device=` tokens QEMU's
//! devices need (QEMU adds them only when it loads the kernel itself; with `--mmio-tokens FILE`
//! they are read from FILE when it exists and written there when learned, so a matrix of boots
//! with the same devices learns them once); then the runtime-loader
//! boot, whose command line is the runtime's (`console=ttyS0 panic=-1 reboot=t tsi_hijack
//! supermachine.host_time=…`) plus those tokens and `tsc_early_khz=` (TCG has no calibrated TSC;
//! KVM needs none). It checks, through the agent: the kernel saw exactly that command line, no
//! ACPI, every CPU from the MP table, the two e820 RAM ranges the runtime declares, a clean
//! dmesg. Exit status 1 on any failure, naming the last console line. `--json` records launch →
//! agent ready for scripts/bench.sh.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use supermachine_agent_client::{proto::ExecRequest, Client};
use supermachine_guest_harness::cli::{self, die};
use supermachine_guest_harness::guest::BoundedVsock;
use supermachine_guest_harness::qemu::{Machine, Vm, VmConfig, TSC_EARLY_KHZ};
use supermachine_guest_harness::{initramfs, payloads, rootfs, vsock};

fn fail(vm: &Vm, msg: &str) -> ! {
    let console = vm.console_text();
    let last = console.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no console output)");
    eprintln!("kvm-entry-test: FAIL: {msg}; last console line: {last}\n--- console ---\n{console}");
    std::process::exit(1)
}

struct Args {
    tool: PathBuf,
    stub_src: PathBuf,
    kernel: Option<PathBuf>,
    cpus: u32,
    mem: u32,
    nokaslr: bool,
    label: String,
    json: Option<PathBuf>,
    mmio_tokens: Option<PathBuf>,
}

fn parse() -> Args {
    let stub_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kvm-entry/stub.S");
    let mut a = Args {
        tool: PathBuf::new(),
        stub_src,
        kernel: None,
        cpus: 2,
        mem: 256,
        nokaslr: false,
        label: "ours".into(),
        json: None,
        mmio_tokens: None,
    };
    let mut args = cli::Args::from_env();
    while let Some(f) = args.next() {
        match f.as_str() {
            "--kvm-entry" => a.tool = args.value(&f).into(),
            "--stub-src" => a.stub_src = args.value(&f).into(),
            "--nokaslr" => a.nokaslr = true,
            "--label" => a.label = args.value(&f),
            "--json" => a.json = Some(args.value(&f).into()),
            "--mmio-tokens" => a.mmio_tokens = Some(args.value(&f).into()),
            "--kernel" => a.kernel = Some(args.value(&f).into()),
            "--cpus" => a.cpus = args.value(&f).parse().unwrap_or_else(|_| die("--cpus takes a count")),
            "--mem" => a.mem = args.value(&f).parse().unwrap_or_else(|_| die("--mem takes MiB")),
            _ => die(&format!("unknown argument {f} (see the header of src/bin/kvm-entry-test.rs)")),
        }
    }
    if a.tool.as_os_str().is_empty() {
        die("--kvm-entry TOOL is required (scripts/kvm-entry-test.sh builds it)");
    }
    a
}

/// Assembles and links the stub with STAGE where tools/kvm-entry staged the low memory.
fn build_stub(src: &Path, stage: &str, dir: &Path) -> PathBuf {
    let obj = dir.join("stub.o");
    let elf = dir.join("stub.elf");
    let run = |c: &mut Command, what: &str| {
        let o = c.output().unwrap_or_else(|e| die(&format!("{what}: {e} (needs gcc and binutils)")));
        if !o.status.success() {
            die(&format!("{what}: {}", String::from_utf8_lossy(&o.stderr)));
        }
    };
    run(Command::new("cc").arg("-c").arg("-o").arg(&obj).arg(src), "assembling the stub");
    run(
        Command::new("ld")
            .args(["-m", "elf_x86_64", "-nostdlib", "-static", "-Ttext=0x6000", "--section-start=.note.Xen=0x5800"])
            .arg(format!("--defsym=STAGE={stage}"))
            .arg("-o")
            .arg(&elf)
            .arg(&obj),
        "linking the stub",
    );
    elf
}

/// The `virtio_mmio.device=` tokens QEMU gives its microvm devices (read off a boot it loads).
fn learn_mmio_tokens(kernel: &Path, image: &Path, backend: &vsock::Backend, mem: u32) -> Vec<String> {
    let mut cfg = VmConfig::new(Machine::Microvm { acpi: false }, kernel);
    cfg.mem_mib = mem;
    cfg.drives = vec![image.to_path_buf()];
    cfg.vhost_user_vsock = Some(backend.vhost_socket().to_path_buf());
    let vm = Vm::spawn(&cfg).unwrap_or_else(|e| die(&format!("qemu: {e}")));
    vm.wait_for("Command line:", Duration::from_secs(60)).unwrap_or_else(|e| fail(&vm, &e));
    let console = vm.console_text();
    let line = console.lines().find(|l| l.contains("Command line:")).unwrap_or_default();
    line.split_whitespace().filter(|t| t.starts_with("virtio_mmio.device=")).map(String::from).collect()
}

fn exec(client: &Client<BoundedVsock>, cmd: &str) -> (bool, String) {
    match client.exec(&ExecRequest::new(["/bin/sh", "-c", cmd]), None) {
        Ok(o) => (o.status.success(), String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Err(e) => (false, format!("exec failed: {e}")),
    }
}

fn main() {
    let a = parse();
    supermachine_guest_harness::require_tools(&["qemu-system-x86_64", "mksquashfs", "vhost-device-vsock"]);
    let dir = tempfile::Builder::new().prefix("sm-kvm-entry").tempdir().unwrap_or_else(|e| die(&e.to_string()));
    let d = dir.path();
    let p = payloads::x86_64();
    let kernel = match &a.kernel {
        Some(k) => k.clone(),
        None => {
            let k = d.join("bzImage");
            std::fs::write(&k, p.kernel).unwrap_or_else(|e| die(&e.to_string()));
            k
        }
    };
    let initrd = d.join("initrd.cpio");
    std::fs::write(&initrd, initramfs::supermachine(p.busybox, p.agent, &initramfs::Options::default()))
        .unwrap_or_else(|e| die(&e.to_string()));
    let tree = d.join("rootfs");
    rootfs::busybox_tree(&tree, p.busybox).unwrap_or_else(|e| die(&e.to_string()));
    let image = d.join("rootfs.squashfs");
    rootfs::squashfs(&tree, &image).unwrap_or_else(|e| die(&e.to_string()));
    let backend = vsock::Backend::start(d).unwrap_or_else(|e| die(&e.to_string()));

    let cached = a.mmio_tokens.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
    let tokens: Vec<String> = match cached {
        Some(text) => text.split_whitespace().map(String::from).collect(),
        None => learn_mmio_tokens(&kernel, &image, &backend, a.mem),
    };
    if tokens.len() != 2 {
        die(&format!("expected virtio_mmio tokens for the disk and vsock, got {tokens:?}"));
    }
    if let Some(f) = &a.mmio_tokens {
        std::fs::write(f, tokens.join(" ")).unwrap_or_else(|e| die(&format!("{}: {e}", f.display())));
    }
    let host_time =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|t| t.as_secs()).unwrap_or(0);
    let mut cmdline = format!("console=ttyS0 panic=-1 reboot=t tsi_hijack supermachine.host_time={host_time} tsc_early_khz={TSC_EARLY_KHZ} {}",
                              tokens.join(" "));
    if a.nokaslr {
        cmdline.push_str(" nokaslr");
    }

    let pieces = d.join("ram");
    let out = Command::new(&a.tool)
        .args(["--bzimage".as_ref(), kernel.as_os_str(), "--initrd".as_ref(), initrd.as_os_str()])
        .args(["--cmdline", &cmdline, "--mem-mib", &a.mem.to_string(), "--cpus", &a.cpus.to_string()])
        .arg("--out")
        .arg(&pieces)
        .output()
        .unwrap_or_else(|e| die(&format!("{}: {e}", a.tool.display())));
    if !out.status.success() {
        die(&format!("kvm-entry failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let stage = std::fs::read_to_string(pieces.join("stage"))
        .unwrap_or_else(|e| die(&format!("kvm-entry wrote no stage: {e}")));
    let stub = build_stub(&a.stub_src, stage.trim(), d);

    let mut cfg = VmConfig::new(Machine::Microvm { acpi: false }, &stub);
    cfg.mem_mib = a.mem;
    cfg.cpus = a.cpus;
    cfg.drives = vec![image.clone()];
    cfg.vhost_user_vsock = Some(backend.vhost_socket().to_path_buf());
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        cfg.extra_args.extend(["-device".to_string(), l.to_string()]);
    }
    let start = Instant::now();
    let vm = Vm::spawn(&cfg).unwrap_or_else(|e| die(&format!("qemu: {e}")));
    let client = Client::new(BoundedVsock::new(backend.uds_path(), 1028, Duration::from_secs(5)));
    let ready = loop {
        if let (true, _) = exec(&client, "true") {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(120) || vm.has_exited() {
            fail(&vm, "the agent never answered");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "kvm-entry-test[{}]: agent ready {ready:?} after launch (runtime loader, {} vCPUs, {} MiB{})",
        a.label,
        a.cpus,
        a.mem,
        if a.nokaslr { ", nokaslr" } else { "" }
    );

    let mut failures = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        eprintln!("kvm-entry-test: {name:<22} {} {detail}", if ok { "ok" } else { "FAIL" });
        if !ok {
            failures.push(name.to_string());
        }
    };
    let (_, got) = exec(&client, "cat /proc/cmdline");
    check("cmdline", got == cmdline, format!("{got:?}"));
    let (_, acpi) = exec(&client, "ls /sys/firmware/acpi/tables 2>/dev/null | wc -l");
    check("no_acpi", acpi == "0", format!("{acpi} ACPI tables"));
    let (_, n) = exec(&client, "nproc; cat /sys/devices/system/cpu/online");
    let online = if a.cpus == 1 { "0".to_string() } else { format!("0-{}", a.cpus - 1) };
    check("all_cpus_from_mptable", n == format!("{}\n{online}", a.cpus), n.replace('\n', " / "));
    let (_, e820) = exec(&client, "dmesg | grep 'BIOS-e820: \\[mem' ");
    let low = e820.contains("[mem 0x0000000000000000-0x000000000009fbff] usable");
    let high = e820.contains(&format!("[mem 0x0000000000100000-0x{:016x}] usable", (u64::from(a.mem) << 20) - 1));
    check("e820_runtime_ranges", low && high && e820.lines().count() == 2, e820.replace('\n', " | "));
    let (_, dmesg) = exec(&client, "dmesg");
    let bad = supermachine_guest_harness::suspicious_dmesg_lines(dmesg.lines());
    check("clean_dmesg", bad.is_empty(), format!("{:?}", &bad[..bad.len().min(3)]));
    let (_, rel) = exec(&client, "uname -r");
    check("agent_exec", !rel.is_empty(), rel);
    if !failures.is_empty() {
        fail(&vm, &format!("failed: {}", failures.join(", ")));
    }
    if let Some(p) = &a.json {
        let j = format!(
            "{{\"label\":\"{}\",\"cpus\":{},\"mem_mib\":{},\"nokaslr\":{},\"ready_ms\":{}}}",
            a.label,
            a.cpus,
            a.mem,
            a.nokaslr,
            ready.as_millis()
        );
        std::fs::write(p, j).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
    }
    eprintln!("kvm-entry-test: all checks passed");
}
