//! `scripts/demo.sh [--arch aarch64] [--mem MIB] [--cmdline STR] [--kernel PATH] [COMMAND...]`:
//! boot the bundled guest under QEMU, run COMMAND in it through the agent, print its output and
//! where the time went. With no command, a self-check: uname, kernel config options, a file round
//! trip. `--mem` sets the guest's RAM (default 256 MiB), e.g. to read `/proc/meminfo` near the
//! lowest RAM that boots; `--cmdline` adds kernel parameters (e.g. `initcall_debug`, then read
//! `dmesg`); `--kernel` boots a kernel you built (a bzImage or arm64 Image) instead of the bundled one.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};
use supermachine_agent_client::proto::ExecRequest;
use supermachine_guest_harness::guest::{Guest, GuestOptions};
use supermachine_guest_harness::payloads;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut p = payloads::x86_64();
    if args.first().map(String::as_str) == Some("--arch") {
        let arch = args.get(1).map(String::as_str);
        p = arch
            .and_then(payloads::for_arch)
            .unwrap_or_else(|| fail(&format!("--arch takes x86_64 or aarch64, not {arch:?}")));
        args.drain(..2);
    }
    let mut opts = GuestOptions::for_payloads(p);
    while let Some(flag @ ("--mem" | "--cmdline" | "--kernel")) = args.first().map(String::as_str) {
        let Some(val) = args.get(1).cloned() else { fail(&format!("{flag} needs a value")) };
        match flag {
            "--mem" => {
                opts.mem_mib = val.parse().unwrap_or_else(|_| fail(&format!("--mem takes a size in MiB, not {val:?}")))
            }
            "--kernel" => {
                opts.payloads =
                    opts.payloads.with_kernel_file(val.as_ref()).unwrap_or_else(|e| fail(&format!("--kernel {e}")));
            }
            _ => opts.extra_cmdline = val,
        }
        args.drain(..2);
    }
    eprintln!(
        "==> booting the {} guest under {} (TCG, {} MiB) ...",
        opts.payloads.arch, opts.payloads.qemu, opts.mem_mib
    );
    let g = Guest::boot(&opts).unwrap_or_else(|e| fail(&format!("boot failed: {e}")));
    let t = &g.timings;
    eprintln!("==> agent ready after {:.2} s", t.kernel_to_agent_ready.as_secs_f64());

    let start = Instant::now();
    let code = if args.is_empty() { self_check(&g) } else { run(&g, &args) };
    let exec = start.elapsed();

    eprintln!("\n==> timing");
    for (what, d) in [
        ("extract payloads", t.extract),
        ("build initramfs", t.initramfs),
        ("build squashfs image", t.rootfs),
        ("start VMM + vsock backend", t.vmm_start),
        ("launch → agent ready", t.kernel_to_agent_ready),
        (if args.is_empty() { "self-check" } else { "exec round trip" }, exec),
    ] {
        eprintln!("    {what:<26} {:>9.1} ms", d.as_secs_f64() * 1000.0);
    }
    if let Err(e) = g.poweroff(Duration::from_secs(30)) {
        eprintln!("warning: the guest did not power off cleanly: {e}");
    }
    std::process::exit(code);
}

fn run(g: &Guest, argv: &[String]) -> i32 {
    let out =
        g.client.exec(&ExecRequest::new(argv.iter().cloned()), None).unwrap_or_else(|e| fail(&format!("exec: {e}")));
    use std::io::Write;
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    out.status.code as i32
}

fn self_check(g: &Guest) -> i32 {
    let c = &g.client;
    let mut failures = 0;
    let mut check = |name: &str, ok: bool, detail: String| {
        println!("{} {name}: {detail}", if ok { "ok  " } else { "FAIL" });
        failures += usize::from(!ok);
    };
    let uname =
        c.exec(&ExecRequest::new(["uname", "-a"]), None).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    check("uname", uname.is_ok(), uname.unwrap_or_else(|e| e.to_string()));
    let probe = c.probe();
    check("agent protocol", probe.as_ref().map(|p| p.protocol >= 5).unwrap_or(false), format!("{probe:?}"));
    let wanted = [
        "CONFIG_VIRTIO_VSOCKETS=y",
        "CONFIG_SQUASHFS_ZSTD=y",
        "CONFIG_OVERLAY_FS=y",
        "CONFIG_VIRTIO_FS=y",
        "CONFIG_SECCOMP_FILTER=y",
    ];
    let config = c
        .exec(&ExecRequest::new(["zcat", "/proc/config.gz"]), None)
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    for opt in wanted {
        check("kernel config", config.lines().any(|l| l == opt), opt.to_string());
    }
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let round_trip =
        c.write_file("/tmp/self-check", &data, Some(0o644)).and_then(|()| c.read_file("/tmp/self-check", None));
    check("write_file/read_file", round_trip.as_ref().map(|b| *b == data).unwrap_or(false), "1 MiB round trip".into());
    i32::from(failures > 0)
}

fn fail(msg: &str) -> ! {
    eprintln!("demo: {msg}");
    std::process::exit(2)
}
