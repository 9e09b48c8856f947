//! Times the supermachine-style guest (the flow of `guest.rs`) for several kernel + agent pairs
//! read from files, interleaved: QEMU launch → `/init` starts → the agent answers `/bin/true`.
//!
//! ```text
//! bench-guest --arch x86_64|aarch64 --busybox PATH --guest NAME=KERNEL,AGENT[,PARAMS] [--guest …]
//!             [--runs N] [--mem MIB] [--execs N] [--cmdline STR] [--timeout S]
//!             [--min-mem [--min-mem-step MIB] [--min-mem-boots N]]
//! ```
//! Every guest is booted from the same busybox and the same initramfs flow (`initramfs::
//! supermachine`: squashfs image → overlay → `switch_root` → agent as PID 1), with `/init` printing a
//! marker first (`initramfs::Options::marker`), so one boot yields both segments. Readiness is the
//! runtime's check (exec `/bin/true` until it succeeds), polled every few milliseconds. After
//! readiness each boot reads the agent's RSS from `/proc/1/status` and times `--execs / --runs`
//! execs of `/bin/true` over vsock (one connection each, like the runtime).
//!
//! Prints one JSON object per guest. `--min-mem` instead bisects the lowest guest RAM (MiB) in
//! which the guest boots AND answers an exec in every one of `--min-mem-boots` boots (default 3):
//! near the limit a boot passes or fails with the timing of the init's copies and the agent's
//! start, and the figure is what a runtime can rely on, not the luckiest boot. Not part of
//! `cargo test`; `scripts/bench.sh` runs it.
//!
//! `PARAMS` (optional) are kernel parameters for that guest only, after `--cmdline`: to time a
//! boot parameter against the same kernel without it, interleaved (e.g.
//! `--guest ours=K,A --guest ours-psi0=K,A,psi=0`).
#![forbid(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use supermachine_agent_client::{connect_hybrid_vsock_once, proto::ExecRequest, Client, HybridVsock};
use supermachine_guest_harness::cli::{die, guest_spec, leak_file, tail_lines, Args};
use supermachine_guest_harness::initramfs::{self, Options as InitOptions};
use supermachine_guest_harness::payloads::{self, GuestPayloads};
use supermachine_guest_harness::qemu::{Machine, Vm, VmConfig};
use supermachine_guest_harness::{rootfs, vsock};

const MARKER: &str = "@@ bench-guest init";
const AGENT_PORT: u32 = 1028;

/// `GuestPayloads` from files; `base` gives the arch, machine and QEMU binary.
fn payloads_from_files(base: GuestPayloads, kernel: &Path, busybox: &'static [u8], agent: &Path) -> GuestPayloads {
    GuestPayloads { kernel: leak_file(kernel), busybox, agent: leak_file(agent), init_oci: &[], ..base }
}

/// One guest's files on disk, built once (not timed).
struct Prepared {
    name: String,
    p: GuestPayloads,
    dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
    image: PathBuf,
    /// Kernel parameters of this guest only, appended after `--cmdline`.
    params: String,
}

fn prepare(name: &str, p: GuestPayloads, params: &str) -> io::Result<Prepared> {
    let dir = tempfile::Builder::new().prefix("bench-guest").tempdir()?;
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, p.kernel)?;
    let init = InitOptions { marker: Some(MARKER.into()), ..InitOptions::default() };
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, initramfs::supermachine(p.busybox, p.agent, &init))?;
    let tree = dir.path().join("rootfs");
    rootfs::busybox_tree(&tree, p.busybox)?;
    let image = dir.path().join("rootfs.squashfs");
    rootfs::squashfs(&tree, &image)?;
    Ok(Prepared { name: name.to_string(), p, dir, kernel, initrd, image, params: params.to_string() })
}

#[derive(Default)]
struct Boot {
    init: Duration,
    ready: Duration,
    execs: Vec<Duration>,
    exec_errors: Vec<String>,
    rss_kib: Option<u64>,
}

struct Settings {
    machine: Machine,
    cmdline: String,
    timeout: Duration,
}

/// Boots `g` in `mem` MiB, waits for the agent, then runs `execs` timed execs.
fn boot(g: &Prepared, s: &Settings, mem: u32, execs: usize) -> Result<Boot, String> {
    let run = tempfile::Builder::new().prefix("run").tempdir_in(g.dir.path()).map_err(|e| e.to_string())?;
    let backend = vsock::Backend::start(run.path()).map_err(|e| e.to_string())?;
    let mut cfg = VmConfig::new(s.machine, &g.kernel);
    cfg.initrd = Some(g.initrd.clone());
    cfg.mem_mib = mem;
    cfg.drives = vec![g.image.clone()];
    cfg.vhost_user_vsock = Some(backend.vhost_socket().to_path_buf());
    cfg.append = format!("panic=-1 {} {}", s.cmdline, g.params);
    let vm = Vm::spawn(&cfg).map_err(|e| e.to_string())?;
    let uds = backend.uds_path().to_path_buf();
    // Readiness: one connect attempt per probe, retried every few ms so the first answer is seen
    // promptly; a handshake in progress is never abandoned early (an agent may not cope).
    let probe_uds = uds.clone();
    let probe = Client::new(move || connect_hybrid_vsock_once(&probe_uds, AGENT_PORT, Duration::from_secs(5)));
    let t_true = ExecRequest::new(["/bin/true"]);
    let deadline = Instant::now() + s.timeout;
    // Probe only once /init runs: the vsock driver is up by then, and connection requests that
    // reach the backend before the guest driver exists can wedge vhost-device-vsock.
    let init = vm
        .wait_for(MARKER, s.timeout)
        .map_err(|e| format!("{}: /init not reached in {mem} MiB: {}", g.name, tail_lines(&e, 15)))?;
    loop {
        if matches!(probe.exec(&t_true, None), Ok(out) if out.status.success()) {
            break;
        }
        if vm.has_exited() || Instant::now() > deadline {
            return Err(format!(
                "{}: agent not ready in {mem} MiB after {:?}; console tail:\n{}",
                g.name,
                vm.elapsed(),
                tail_lines(&vm.console_text(), 15)
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut b = Boot { init, ready: vm.elapsed(), ..Default::default() };
    let client = Client::new(HybridVsock::new(&uds, AGENT_PORT, Duration::from_secs(5)));
    if execs > 0 {
        std::thread::sleep(Duration::from_millis(300));
        let status = ExecRequest::new(["/bin/cat", "/proc/1/status"]);
        for _ in 0..3 {
            match client.exec(&status, None) {
                Ok(out) => {
                    b.rss_kib = String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()?.parse().ok()));
                    break;
                }
                Err(e) => b.exec_errors.push(format!("reading /proc/1/status: {e}")),
            }
        }
    }
    // A failed exec (e.g. the connection closed before EXIT) is counted, not timed, and the
    // next one is tried; a guest that stops answering ends the boot with an error.
    let mut in_a_row = 0;
    while b.execs.len() < execs {
        let t0 = Instant::now();
        match client.exec(&t_true, None) {
            Ok(out) if out.status.success() => {
                b.execs.push(t0.elapsed());
                in_a_row = 0;
            }
            r => {
                b.exec_errors.push(match r {
                    Ok(out) => format!("/bin/true: {:?}", out.status),
                    Err(e) => e.to_string(),
                });
                in_a_row += 1;
                if in_a_row >= 10 || vm.has_exited() {
                    return Err(format!(
                        "{}: execs keep failing ({}); console tail:\n{}",
                        g.name,
                        b.exec_errors.last().unwrap(),
                        tail_lines(&vm.console_text(), 15)
                    ));
                }
            }
        }
    }
    drop(vm);
    drop(backend);
    Ok(b)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sorted copy; `q`-quantile by nearest rank.
fn pct(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)]
}

fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}

fn min(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NAN, f64::min)
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "null".into()
    }
}

fn json_list(v: &[f64]) -> String {
    format!("[{}]", v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(","))
}

fn main() {
    let (mut arch, mut busybox, mut runs, mut mem, mut execs) =
        (String::from("x86_64"), None::<PathBuf>, 5usize, 256u32, 200usize);
    let (mut cmdline, mut timeout, mut min_mem, mut step, mut machine) =
        (String::from("quiet"), 120u64, false, 1u32, None);
    let mut min_mem_boots = 3usize;
    let mut guests: Vec<(String, PathBuf, PathBuf, String)> = Vec::new();
    let mut args = Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = args.value(&a),
            "--busybox" => busybox = Some(args.value(&a).into()),
            "--guest" => guests.push(guest_spec(&a, &args.value(&a))),
            "--runs" => runs = args.value(&a).parse().unwrap_or_else(|_| die("--runs takes a number")),
            "--mem" => mem = args.value(&a).parse().unwrap_or_else(|_| die("--mem takes MiB")),
            "--execs" => execs = args.value(&a).parse().unwrap_or_else(|_| die("--execs takes a number")),
            "--cmdline" => cmdline = args.value(&a),
            "--timeout" => timeout = args.value(&a).parse().unwrap_or_else(|_| die("--timeout takes seconds")),
            "--machine" => {
                machine = Some(match args.value(&a).as_str() {
                    "microvm" => Machine::Microvm { acpi: true },
                    "microvm-noacpi" => Machine::Microvm { acpi: false },
                    "pc" => Machine::Pc,
                    "virt" => Machine::Virt,
                    m => die(&format!("unknown machine {m}")),
                })
            }
            "--min-mem" => min_mem = true,
            "--min-mem-step" => step = args.value(&a).parse().unwrap_or_else(|_| die("--min-mem-step takes MiB")),
            "--min-mem-boots" => {
                min_mem_boots =
                    args.value(&a).parse::<usize>().unwrap_or_else(|_| die("--min-mem-boots takes a number")).max(1)
            }
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let base = payloads::for_arch(&arch).unwrap_or_else(|| die(&format!("unknown arch {arch}")));
    let busybox = match &busybox {
        Some(p) => leak_file(p),
        None => base.busybox,
    };
    if guests.is_empty() {
        die("give at least one --guest NAME=KERNEL,AGENT");
    }
    let s = Settings { machine: machine.unwrap_or(base.machine), cmdline, timeout: Duration::from_secs(timeout) };
    let prepared: Vec<Prepared> = guests
        .iter()
        .map(|(n, k, a, params)| {
            prepare(n, payloads_from_files(base, k, busybox, a), params).unwrap_or_else(|e| die(&format!("{n}: {e}")))
        })
        .collect();

    if min_mem {
        for g in &prepared {
            // A size passes only if every boot does (`all` stops at the first failure).
            let ok = |m: u32| {
                (1..=min_mem_boots).all(|i| match boot(g, &s, m, 0) {
                    Ok(_) => {
                        eprintln!("{}: {m} MiB boots and answers (boot {i})", g.name);
                        true
                    }
                    Err(e) => {
                        eprintln!("{}: {m} MiB fails (boot {i}): {}", g.name, e.lines().next().unwrap_or(""));
                        false
                    }
                })
            };
            let (mut lo, mut hi) = (8u32, 512u32); // lo fails (assumed), hi works (checked)
            if !ok(hi) {
                println!("{{\"name\":{:?},\"arch\":{:?},\"min_mem_mib\":null}}", g.name, g.p.arch);
                continue;
            }
            while hi - lo > step.max(1) {
                let mid = (lo + hi) / 2;
                if ok(mid) {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            println!(
                "{{\"name\":{:?},\"arch\":{:?},\"min_mem_mib\":{hi},\"step_mib\":{},\"boots\":{}}}",
                g.name,
                g.p.arch,
                step.max(1),
                min_mem_boots
            );
        }
        return;
    }

    let per_boot = execs.div_ceil(runs.max(1));
    let mut results: Vec<Vec<Boot>> = prepared.iter().map(|_| Vec::new()).collect();
    let mut failures = vec![0usize; prepared.len()];
    for r in 0..runs {
        for (i, g) in prepared.iter().enumerate() {
            let n = per_boot.min(execs.saturating_sub(r * per_boot));
            match boot(g, &s, mem, n) {
                Ok(b) => {
                    eprintln!(
                        "run {} {}: /init {:.0} ms, agent ready {:.0} ms, {} execs p50 {:.2} ms{}",
                        r + 1,
                        g.name,
                        ms(b.init),
                        ms(b.ready),
                        b.execs.len(),
                        median(&b.execs.iter().map(|d| ms(*d)).collect::<Vec<_>>()),
                        if b.exec_errors.is_empty() {
                            String::new()
                        } else {
                            format!(", {} failed execs (first: {})", b.exec_errors.len(), b.exec_errors[0])
                        }
                    );
                    results[i].push(b);
                }
                Err(e) => {
                    eprintln!("run {} {}: FAILED: {e}", r + 1, g.name);
                    failures[i] += 1;
                }
            }
        }
    }
    for ((g, bs), fails) in prepared.iter().zip(&results).zip(&failures) {
        let init: Vec<f64> = bs.iter().map(|b| ms(b.init)).collect();
        let ready: Vec<f64> = bs.iter().map(|b| ms(b.ready)).collect();
        let seg: Vec<f64> = bs.iter().map(|b| ms(b.ready) - ms(b.init)).collect();
        let ex: Vec<f64> = bs.iter().flat_map(|b| b.execs.iter().map(|d| ms(*d))).collect();
        let rss: Vec<f64> = bs.iter().filter_map(|b| b.rss_kib.map(|v| v as f64)).collect();
        let errors: Vec<&String> = bs.iter().flat_map(|b| b.exec_errors.iter()).collect();
        println!(concat!("{{\"name\":{:?},\"arch\":{:?},\"mem_mib\":{},\"runs\":{},\"failed\":{},",
                         "\"init_ms\":{},\"ready_ms\":{},\"init_ms_min\":{},\"init_ms_median\":{},",
                         "\"ready_ms_min\":{},\"ready_ms_median\":{},\"init_to_ready_ms_min\":{},\"init_to_ready_ms_median\":{},",
                         "\"execs\":{},\"exec_errors\":{},\"exec_error_first\":{:?},\"exec_ms_p50\":{},\"exec_ms_p99\":{},\"exec_ms_min\":{},\"agent_rss_kib\":{}}}"),
                 g.name, g.p.arch, mem, bs.len(), fails,
                 json_list(&init), json_list(&ready), json_num(min(&init)), json_num(median(&init)),
                 json_num(min(&ready)), json_num(median(&ready)), json_num(min(&seg)), json_num(median(&seg)),
                 ex.len(), errors.len(), errors.first().map(|e| e.as_str()).unwrap_or(""), json_num(pct(&ex, 0.5)), json_num(pct(&ex, 0.99)), json_num(min(&ex)),
                 if rss.is_empty() { "null".into() } else { format!("{}", median(&rss) as u64) });
    }
}
