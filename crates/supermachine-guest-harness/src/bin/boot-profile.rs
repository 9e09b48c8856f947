//! Boot profile of the supermachine-style guest: one timeline per boot, from QEMU launch to the
//! first exec answered, with named phases (see `profile.rs` and docs/BOOT-PROFILE.md).
//!
//! ```text
//! boot-profile --arch x86_64|aarch64 --image-busybox PATH [--clk PATH]
//!              --config NAME=KERNEL,AGENT,BUSYBOX [--config …]
//!              [--runs N] [--icount OPTS] [--tsc-khz KHZ] [--mem MIB] [--timeout S] [--cmdline STR]
//!              [--keep-dmesg] [--floor-kernel PATH] [--probe-step CMD]
//! ```
//! Every configuration boots the same flow as `bench-guest` (`initramfs::supermachine`: squashfs
//! image → overlay → `switch_root` → agent as PID 1), but with the traced `/init`
//! (`profile::traced_initramfs`) and `quiet initcall_debug printk.time=1 printk.devkmsg=on
//! log_buf_len=1M` on the cmdline. The image (a busybox tree, the "container image") is the same
//! for all configurations (`--image-busybox`); only kernel, agent and the initramfs busybox differ.
//! Boots are interleaved (config 1, config 2, …, repeated `--runs` times).
//!
//! After the agent answers, the guest's `dmesg` is read through the agent and turned into the
//! timeline. `--icount OPTS` (e.g. `shift=0`) runs QEMU with `-icount OPTS`: times are
//! then guest-virtual (anchored by the `--clk` counter helper, which is required then); otherwise
//! they are wall-clock (printk clock anchored by the host's arrival time of the first marker line;
//! on x86 the guest's TSC rate is set to the host's, `--tsc-khz`, so printk times are real time).
//!
//! `--probe-step CMD` (a diagnostic) runs CMD in `/init` as its own step just before the mounts are
//! moved, e.g. `chroot /newroot /bin/sh -c true` (the first exec of an image binary).
//!
//! `--floor-kernel K` instead times the floor: the same VMM launch with kernel K and an initramfs
//! whose `/init` is the counter helper (launch → /init, host and, under `--icount`, virtual).
//!
//! Prints one JSON object per boot on stdout. Not part of `cargo test`; `scripts/boot-profile.sh`
//! runs it.
#![forbid(unsafe_code)]

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use supermachine_agent_client::{connect_hybrid_vsock_once, proto::ExecRequest, Client, HybridVsock};
use supermachine_guest_harness::cli::{die, tail_lines, Args};
use supermachine_guest_harness::initramfs::Options as InitOptions;
use supermachine_guest_harness::profile::{self, HostTimes};
use supermachine_guest_harness::qemu::{Machine, Vm, VmConfig};
use supermachine_guest_harness::{rootfs, vsock};

const AGENT_PORT: u32 = 1028;

struct Config {
    name: String,
    kernel: PathBuf,
    initrd: PathBuf,
}

struct Settings {
    machine: Machine,
    cmdline: String,
    icount: Option<String>,
    tsc_khz: Option<u32>,
    mem: u32,
    timeout: Duration,
    image: PathBuf,
    keep_dmesg: bool,
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())))
}

/// A running guest with its vsock backend and the folder the backend's sockets live in. Fields
/// drop in order: QEMU first, then the backend, then the folder.
struct Launched {
    vm: Vm,
    backend: vsock::Backend,
    _run: tempfile::TempDir,
}

/// The one VMM launch every profiled boot uses (the floor included, so it differs only in
/// kernel and initramfs): `s`'s machine, memory, image drive, vsock, TSC rate, cmdline, icount.
fn launch(s: &Settings, kernel: &Path, initrd: &Path, dir: &Path) -> Result<Launched, String> {
    let run = tempfile::Builder::new().prefix("run").tempdir_in(dir).map_err(|e| e.to_string())?;
    let backend = vsock::Backend::start(run.path()).map_err(|e| e.to_string())?;
    let mut cfg = VmConfig::new(s.machine, kernel);
    cfg.initrd = Some(initrd.to_path_buf());
    cfg.mem_mib = s.mem;
    cfg.drives = vec![s.image.clone()];
    cfg.vhost_user_vsock = Some(backend.vhost_socket().to_path_buf());
    cfg.tsc_khz = s.tsc_khz;
    cfg.append = format!("panic=-1 {}", s.cmdline);
    if let Some(o) = &s.icount {
        cfg.extra_args = vec!["-icount".into(), o.clone()];
    }
    let vm = Vm::spawn(&cfg).map_err(|e| e.to_string())?;
    Ok(Launched { vm, backend, _run: run })
}

fn boot(c: &Config, s: &Settings, dir: &Path) -> Result<serde_json::Value, String> {
    let launched = launch(s, &c.kernel, &c.initrd, dir)?;
    let vm = &launched.vm;
    let uds = launched.backend.uds_path().to_path_buf();
    let fail =
        |what: &str, vm: &Vm| format!("{}: {what}; console tail:\n{}", c.name, tail_lines(&vm.console_text(), 20));
    let init_start = vm
        .wait_for(&format!("{} init-start", profile::MARK), s.timeout)
        .map_err(|e| format!("{}: {}", c.name, tail_lines(&e, 20)))?;
    // Probe only once the launch script is about to exec the agent: every refused connection
    // costs the guest some work, and under -icount that work would depend on the host's timing.
    vm.wait_for(&format!("{} agent-exec", profile::MARK), s.timeout)
        .map_err(|e| format!("{}: {}", c.name, tail_lines(&e, 20)))?;
    let probe_uds = uds.clone();
    let probe = Client::new(move || connect_hybrid_vsock_once(&probe_uds, AGENT_PORT, Duration::from_secs(5)));
    let first = ExecRequest::new(["/bin/sh", "-c", "echo '<3>smprof: first-exec' > /dev/kmsg"]);
    let deadline = Instant::now() + s.timeout;
    let mut probes = 0u32;
    loop {
        probes += 1;
        if matches!(probe.exec(&first, None), Ok(out) if out.status.success()) {
            break;
        }
        if vm.has_exited() || Instant::now() > deadline {
            return Err(fail("agent never answered", vm));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let ready = vm.elapsed();
    let client = Client::new(HybridVsock::new(&uds, AGENT_PORT, Duration::from_secs(60)));
    // The published agent sometimes closes a connection before EXIT (docs/BENCHMARKS.md): retry.
    let req = ExecRequest::new(["/bin/busybox", "dmesg", "-s", "1048576"]);
    let mut dmesg = Err(String::new());
    for _ in 0..5 {
        match client.exec(&req, None) {
            Ok(out) if out.status.success() => {
                dmesg = Ok(String::from_utf8_lossy(&out.stdout).to_string());
                break;
            }
            Ok(out) => dmesg = Err(format!("exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr))),
            Err(e) => dmesg = Err(e.to_string()),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let dmesg = dmesg.map_err(|e| fail(&format!("dmesg: {e}"), vm))?;
    let console = vm.lines();
    drop(launched);
    let recs = profile::parse_dmesg(&dmesg);
    let host = HostTimes {
        clk_virtual_ms: profile::clk_ms(&recs),
        init_start_host_ms: Some(ms(init_start)),
        first_exec_host_ms: Some(ms(ready)),
    };
    let t = profile::build(&recs, &host, s.icount.is_some())
        .map_err(|e| format!("{}: {e}; dmesg tail:\n{}", c.name, tail_lines(&dmesg, 20)))?;
    // Host arrival of a few console lines (wall clock, whatever the mode).
    let marks: Vec<_> = [
        "Decompressing Linux",
        "Booting the kernel",
        "Linux version",
        "smprof: init-start",
        "smprof: switch-root",
        "smprof: agent-exec",
    ]
    .iter()
    .filter_map(|m| console.iter().find(|(_, l)| l.contains(m)).map(|(t, _)| json!([m, r3(ms(*t))])))
    .collect();
    let first_console = console.iter().find(|(_, l)| !l.starts_with("qemu: ")).map(|(t, _)| r3(ms(*t)));
    Ok(json!({
        "config": c.name,
        "mode": if s.icount.is_some() { "icount" } else { "wall" },
        "icount": s.icount,
        "events": t.events.iter().map(|(n, v)| json!([n, r3(*v)])).collect::<Vec<_>>(),
        "phases": t.phases.iter().map(|(n, v)| json!([n, r3(*v)])).collect::<Vec<_>>(),
        "initcalls": t.initcalls.iter().map(|i| json!([i.name, r3(i.start * 1000.0), i.usecs, i.reported_usecs])).collect::<Vec<_>>(),
        "notes": t.notes.iter().map(|(n, v)| json!([n, r3(*v)])).collect::<Vec<_>>(),
        "host": {"init_start_ms": r3(ms(init_start)), "first_exec_ms": r3(ms(ready)), "probes": probes,
                 "first_console_ms": first_console, "console_marks": marks},
        "dmesg_lines": recs.len(),
        "dmesg": if s.keep_dmesg { json!(dmesg) } else { json!(null) },
    }))
}

/// The floor: the same VMM launch (devices, memory, cmdline) with `kernel`, an initramfs whose
/// `/init` is the counter helper (its kmsg record reaches the console), timed to that line.
fn floor(kernel: &Path, clk: &[u8], s: &Settings, dir: &Path) -> Result<serde_json::Value, String> {
    let mut a = supermachine_guest_harness::cpio::Archive::new();
    a.dir("dev", 0o755)
        .char_dev("dev/console", 0o600, 5, 1)
        .char_dev("dev/kmsg", 0o644, 1, 11)
        .file("init", 0o755, clk);
    let initrd = dir.join("floor.cpio");
    std::fs::write(&initrd, a.finish()).map_err(|e| e.to_string())?;
    let launched = launch(s, kernel, &initrd, dir)?;
    let vm = &launched.vm;
    let t = vm.wait_for(&format!("{} clk ", profile::MARK), s.timeout).map_err(|e| tail_lines(&e, 20))?;
    let line = vm.lines().into_iter().find(|(_, l)| l.contains("smprof: clk ")).map(|(_, l)| l).unwrap_or_default();
    let text = line.split_once("smprof:").map(|(_, r)| format!("smprof:{r}")).unwrap_or_default();
    let virt = profile::clk_ms(&[profile::Record { t: 0.0, text }]);
    Ok(json!({"config": "floor", "mode": if s.icount.is_some() { "icount" } else { "wall" },
              "init_host_ms": r3(ms(t)), "init_virtual_ms": virt.map(r3), "console": line}))
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let (mut arch, mut image_bb, mut clk, mut runs) =
        (String::from("x86_64"), None::<PathBuf>, None::<PathBuf>, 1usize);
    let (mut icount, mut tsc_khz, mut mem, mut timeout) = (None::<String>, None::<u32>, 256u32, 300u64);
    let mut extra = String::new();
    let mut keep_dmesg = false;
    let mut probe_step = None::<String>;
    let mut floor_kernel = None::<PathBuf>;
    let mut configs: Vec<(String, PathBuf, PathBuf, PathBuf)> = Vec::new();
    let mut args = Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = args.value(&a),
            "--image-busybox" => image_bb = Some(args.value(&a).into()),
            "--clk" => clk = Some(args.value(&a).into()),
            "--config" => {
                let v = args.value(&a);
                let (name, files) =
                    v.split_once('=').unwrap_or_else(|| die("--config takes NAME=KERNEL,AGENT,BUSYBOX"));
                let f: Vec<&str> = files.split(',').collect();
                if f.len() != 3 {
                    die("--config takes NAME=KERNEL,AGENT,BUSYBOX");
                }
                configs.push((name.into(), f[0].into(), f[1].into(), f[2].into()));
            }
            "--runs" => runs = args.value(&a).parse().unwrap_or_else(|_| die("--runs takes a number")),
            "--icount" => icount = Some(args.value(&a)),
            "--tsc-khz" => tsc_khz = Some(args.value(&a).parse().unwrap_or_else(|_| die("--tsc-khz takes kHz"))),
            "--mem" => mem = args.value(&a).parse().unwrap_or_else(|_| die("--mem takes MiB")),
            "--timeout" => timeout = args.value(&a).parse().unwrap_or_else(|_| die("--timeout takes seconds")),
            "--cmdline" => extra = args.value(&a),
            "--keep-dmesg" => keep_dmesg = true,
            "--probe-step" => probe_step = Some(args.value(&a)),
            "--floor-kernel" => floor_kernel = Some(PathBuf::from(args.value(&a))),
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let machine = match arch.as_str() {
        "x86_64" => Machine::Microvm { acpi: true },
        "aarch64" => Machine::Virt,
        a => die(&format!("unknown arch {a}")),
    };
    if configs.is_empty() && floor_kernel.is_none() {
        die("give at least one --config NAME=KERNEL,AGENT,BUSYBOX (or --floor-kernel)");
    }
    if icount.is_some() && clk.is_none() {
        die("--icount needs --clk (the counter helper anchors the guest's printk clock)");
    }
    if icount.is_some() && arch == "x86_64" {
        // -icount shift=0: the TCG TSC advances one tick per virtual ns.
        tsc_khz = Some(1_000_000);
    }
    let image_bb =
        image_bb.unwrap_or_else(|| die("--image-busybox is needed (the same image for every configuration)"));
    let clk_bytes = clk.as_deref().map(read);
    let dir = tempfile::Builder::new().prefix("boot-profile").tempdir().unwrap_or_else(|e| die(&e.to_string()));
    let tree = dir.path().join("rootfs");
    rootfs::busybox_tree(&tree, &read(&image_bb)).unwrap_or_else(|e| die(&e.to_string()));
    let image = dir.path().join("rootfs.squashfs");
    rootfs::squashfs(&tree, &image).unwrap_or_else(|e| die(&e.to_string()));
    let prepared: Vec<Config> = configs
        .iter()
        .map(|(name, k, a, b)| {
            let initrd = dir.path().join(format!("{name}.cpio"));
            let bytes = profile::traced_initramfs(
                &read(b),
                &read(a),
                &InitOptions::default(),
                clk_bytes.as_deref(),
                probe_step.as_deref(),
            );
            std::fs::write(&initrd, bytes).unwrap_or_else(|e| die(&e.to_string()));
            Config { name: name.clone(), kernel: k.clone(), initrd }
        })
        .collect();
    let cmdline = format!("quiet initcall_debug printk.time=1 printk.devkmsg=on log_buf_len=1M {extra}");
    let s = Settings {
        machine,
        cmdline: cmdline.trim().to_string(),
        icount,
        tsc_khz,
        mem,
        timeout: Duration::from_secs(timeout),
        image,
        keep_dmesg,
    };
    let mut failed = 0;
    if let Some(k) = &floor_kernel {
        let clk = clk_bytes.as_deref().unwrap_or_else(|| die("--floor-kernel needs --clk"));
        // The floor has no initcall_debug work to do; keep the rest of the cmdline the same.
        let s = Settings { cmdline: s.cmdline.replace("initcall_debug ", ""), ..s };
        for r in 0..runs {
            match floor(k, clk, &s, dir.path()) {
                Ok(mut v) => {
                    v["run"] = json!(r + 1);
                    v["arch"] = json!(arch);
                    eprintln!(
                        "floor run {}: /init at {} ms host, {} ms virtual",
                        r + 1,
                        v["init_host_ms"],
                        v["init_virtual_ms"]
                    );
                    println!("{v}");
                }
                Err(e) => {
                    eprintln!("floor run {}: FAILED: {e}", r + 1);
                    failed += 1;
                }
            }
        }
        std::process::exit(if failed > 0 { 1 } else { 0 });
    }
    for r in 0..runs {
        for c in &prepared {
            match boot(c, &s, dir.path()) {
                Ok(mut v) => {
                    v["run"] = json!(r + 1);
                    v["arch"] = json!(arch);
                    v["cmdline"] = json!(s.cmdline);
                    let end =
                        v["events"].as_array().and_then(|e| e.last()).and_then(|e| e[1].as_f64()).unwrap_or(f64::NAN);
                    eprintln!(
                        "run {} {} ({}): first exec answered at {:.1} ms",
                        r + 1,
                        c.name,
                        v["mode"].as_str().unwrap_or(""),
                        end
                    );
                    println!("{v}");
                }
                Err(e) => {
                    eprintln!("run {} {}: FAILED: {e}", r + 1, c.name);
                    failed += 1;
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("boot-profile: {failed} boot(s) failed");
        std::process::exit(1);
    }
}
