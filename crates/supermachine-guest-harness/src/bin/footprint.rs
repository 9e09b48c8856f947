//! How much of guest RAM a snapshot at agent ready has to keep, for several kernel + agent pairs
//! read from files, interleaved (issue 28; `scripts/bench.sh`, section `footprint`).
//!
//! ```text
//! footprint --arch x86_64|aarch64 --guest NAME=KERNEL,AGENT[,PARAMS] [--guest …] [--busybox PATH]
//!           [--mem MIB] [--runs N] [--image SQUASHFS] [--exec CMD] [--settle-ms MS]
//!           [--flow runtime|init-oci]
//! ```
//! Each guest boots the supermachine flow (`guest::Guest`: busybox, the agent and the runtime's
//! `/init` in the initramfs, the squashfs image from the busybox tree or `--image`). At agent
//! ready (after `--exec CMD` has run through the agent, when given, and `--settle-ms`), QEMU is
//! stopped as a VMM stops its vCPUs for a snapshot, guest RAM is read from QEMU's memory file,
//! and its 4 KiB pages are counted: non-zero (what the runtime's snapshot keeps) and distinct
//! non-zero (what a deduplicating store keeps). Then the guest runs on and, where it has
//! `/proc/kpageflags`, says who holds each non-zero page. Prints one JSON object per guest:
//! medians over the runs, the owners of the last run. `PARAMS` are kernel parameters for that
//! guest only (e.g. `init_on_free=1`, to measure a cut against the same kernel without it).
//!
//! `--flow init-oci` boots the HVF flow instead: `/init` = the guest's init-oci (the third field
//! of `--guest` is then its file), the busybox image plus the runtime's delta layer
//! (`/.supermachine-cmd` = `/bin/sleep 3600`, `/supermachine-agent`, and `/init` for an init that
//! re-execs itself from there, as the published one does), and the snapshot point is the
//! runtime's `[SUPERMACHINE-INIT] heartbeat counter=1` on the console.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use supermachine_agent_client::proto::ExecRequest;
use supermachine_agent_client::Client;
use supermachine_guest_harness::cli::{die, guest_spec, leak_file, Args};
use supermachine_guest_harness::footprint::{self, Footprint};
use supermachine_guest_harness::guest::{BoundedVsock, Guest, GuestOptions};
use supermachine_guest_harness::oci::{ImageFile, OciGuest, OciOptions};
use supermachine_guest_harness::payloads::{self, GuestPayloads};

struct Spec {
    name: String,
    payloads: GuestPayloads,
    params: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// The runtime's KVM flow (its generated `/init`), snapshot at agent ready.
    Runtime,
    /// The runtime's HVF flow (init-oci and the delta layer), snapshot at the heartbeat.
    InitOci,
}

const HEARTBEAT: &str = "[SUPERMACHINE-INIT] heartbeat counter=1";

/// The init-oci flow to its heartbeat: RAM at that point, and the agent's client for the rest.
fn init_oci_ram(spec: &Spec, mem: u32, settle: Duration) -> Result<(Vec<u8>, OciGuest), String> {
    let delta = vec![
        ImageFile::new("/.supermachine-cmd", "/bin/sleep\n3600\n"),
        ImageFile { path: "/init".into(), data: spec.payloads.init_oci.to_vec(), mode: 0o755 },
    ];
    let o = OciOptions {
        agent: false,
        delta: Some(delta),
        delta_agent: true,
        mem_mib: mem,
        extra_cmdline: format!("quiet {}", spec.params),
        ..OciOptions::for_payloads(spec.payloads)
    };
    let g = OciGuest::boot(&o).map_err(|e| format!("{}: {e}", spec.name))?;
    g.vm.wait_for(HEARTBEAT, Duration::from_secs(300)).map_err(|e| format!("{}: {e}", spec.name))?;
    std::thread::sleep(settle);
    g.vm.pause().map_err(|e| e.to_string())?;
    let ram = g.vm.read_guest_ram();
    g.vm.resume().map_err(|e| e.to_string())?;
    Ok((ram.map_err(|e| format!("{}: reading guest RAM: {e}", spec.name))?, g))
}

/// Who holds the non-zero pages of `ram`, from the guest's `/proc/kpageflags`, read once after
/// the snapshot point (the read itself touches a few pages); empty where the kernel has none.
/// With `FOOTPRINT_REGIONS` set, also prints where each owner's pages lie.
fn owners(spec: &Spec, client: &Client<BoundedVsock>, ram: &[u8]) -> Vec<(&'static str, usize)> {
    let flags = match client.exec(&ExecRequest::new(["cat", "/proc/kpageflags"]), None) {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => o.stdout,
        _ => return Vec::new(),
    };
    let base = spec.payloads.machine.ram_base();
    if std::env::var_os("FOOTPRINT_REGIONS").is_some() {
        for (owner, runs) in footprint::owner_regions(ram, base, &flags) {
            let runs: Vec<String> = runs.iter().map(|(a, b, n)| format!("{a}-{b} MiB: {n}")).collect();
            eprintln!("{} {owner}: {}", spec.name, runs.join(", "));
        }
    }
    footprint::nonzero_by_owner(ram, base, &flags)
}

struct Run {
    fp: Footprint,
    ready_ms: f64,
    owners: Vec<(&'static str, usize)>,
    meminfo: Vec<(String, u64)>,
}

fn one(
    spec: &Spec,
    flow: Flow,
    mem: u32,
    image: &Option<PathBuf>,
    exec: &Option<String>,
    settle: Duration,
) -> Result<Run, String> {
    if flow == Flow::InitOci {
        let (ram, g) = init_oci_ram(spec, mem, settle)?;
        let c = g.wait_agent(Duration::from_secs(300))?;
        let owners = owners(spec, &c, &ram);
        let ready_ms =
            g.vm.lines().iter().find(|(_, l)| l.contains(HEARTBEAT)).map_or(f64::NAN, |(t, _)| t.as_secs_f64() * 1e3);
        return Ok(Run { fp: footprint::measure(&ram), ready_ms, owners, meminfo: Vec::new() });
    }
    let opts = GuestOptions {
        mem_mib: mem,
        extra_cmdline: format!("quiet {}", spec.params),
        image: image.clone(),
        ..GuestOptions::for_payloads(spec.payloads)
    };
    let g = Guest::boot(&opts).map_err(|e| format!("{}: {e}", spec.name))?;
    let ready_ms = g.timings.kernel_to_agent_ready.as_secs_f64() * 1e3;
    let sh = |cmd: &str| g.client.exec(&ExecRequest::new(["/bin/sh", "-c", cmd]), None);
    if let Some(cmd) = exec {
        match sh(cmd) {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!("{}: `{cmd}`: {:?} {}", spec.name, o.status, String::from_utf8_lossy(&o.stderr)))
            }
            Err(e) => return Err(format!("{}: `{cmd}`: {e}", spec.name)),
        }
    }
    std::thread::sleep(settle);
    g.vm.pause().map_err(|e| e.to_string())?;
    let ram = g.vm.read_guest_ram();
    g.vm.resume().map_err(|e| e.to_string())?;
    let ram = ram.map_err(|e| format!("{}: reading guest RAM: {e}", spec.name))?;
    let fp = footprint::measure(&ram);
    let owners = owners(spec, &g.client, &ram);
    if std::env::var_os("FOOTPRINT_REGIONS").is_some() {
        if let Ok(o) = sh("cat /proc/iomem; dmesg | grep -i -E 'initrd|Freeing|Memory:|reserved'") {
            eprintln!("{}", String::from_utf8_lossy(&o.stdout));
        }
    }
    let meminfo = match sh("cat /proc/meminfo") {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.to_string(), v.split_whitespace().next()?.parse().ok()?))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let _ = g.poweroff(Duration::from_secs(30));
    Ok(Run { fp, ready_ms, owners, meminfo })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn main() {
    let (mut arch, mut busybox, mut mem, mut runs) = (String::from("x86_64"), None::<PathBuf>, 256u32, 2usize);
    let (mut image, mut exec, mut settle_ms, mut flow) = (None::<PathBuf>, None::<String>, 500u64, Flow::Runtime);
    let mut guests: Vec<(String, PathBuf, PathBuf, String)> = Vec::new();
    let mut args = Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = args.value(&a),
            "--busybox" => busybox = Some(args.value(&a).into()),
            "--guest" => guests.push(guest_spec(&a, &args.value(&a))),
            "--mem" => mem = args.value(&a).parse().unwrap_or_else(|_| die("--mem takes MiB")),
            "--runs" => runs = args.value(&a).parse().unwrap_or_else(|_| die("--runs takes a number")),
            "--image" => image = Some(args.value(&a).into()),
            "--exec" => exec = Some(args.value(&a)),
            "--flow" => {
                flow = match args.value(&a).as_str() {
                    "runtime" => Flow::Runtime,
                    "init-oci" => Flow::InitOci,
                    f => die(&format!("--flow {f}: runtime or init-oci")),
                }
            }
            "--settle-ms" => settle_ms = args.value(&a).parse().unwrap_or_else(|_| die("--settle-ms takes ms")),
            _ => die(&format!("unknown argument {a} (see the header of src/bin/footprint.rs)")),
        }
    }
    let base = payloads::for_arch(&arch).unwrap_or_else(|| die(&format!("--arch {arch}: x86_64 or aarch64")));
    if guests.is_empty() {
        die("give at least one --guest NAME=KERNEL,AGENT");
    }
    let busybox = busybox.as_deref().map_or(base.busybox, leak_file);
    let specs: Vec<Spec> = guests
        .iter()
        .map(|(name, k, ag, third)| {
            // In the init-oci flow the third field is the init-oci file, not kernel parameters.
            let (init_oci, params) = match flow {
                Flow::InitOci if third.is_empty() => die("--flow init-oci: --guest NAME=KERNEL,AGENT,INIT_OCI"),
                Flow::InitOci => (leak_file(Path::new(third)), String::new()),
                Flow::Runtime => (&[][..], third.clone()),
            };
            let payloads = GuestPayloads { kernel: leak_file(k), busybox, agent: leak_file(ag), init_oci, ..base };
            Spec { name: name.clone(), payloads, params }
        })
        .collect();
    let settle = Duration::from_millis(settle_ms);
    let mut results: Vec<Vec<Run>> = specs.iter().map(|_| Vec::new()).collect();
    for r in 0..runs.max(1) {
        for (i, s) in specs.iter().enumerate() {
            match one(s, flow, mem, &image, &exec, settle) {
                Ok(run) => {
                    eprintln!(
                        "run {} {}: {} non-zero pages ({} distinct) of {}, agent ready {:.0} ms",
                        r + 1,
                        s.name,
                        run.fp.nonzero,
                        run.fp.distinct,
                        run.fp.pages,
                        run.ready_ms
                    );
                    results[i].push(run);
                }
                Err(e) => eprintln!("run {} {}: FAILED: {e}", r + 1, s.name),
            }
        }
    }
    for (s, rs) in specs.iter().zip(&results) {
        let Some(last) = rs.last() else {
            println!("{{\"name\":{:?},\"arch\":{:?},\"runs\":0}}", s.name, arch);
            continue;
        };
        let owners: Vec<String> = last.owners.iter().map(|(o, n)| format!("[{o:?},{n}]")).collect();
        let meminfo: Vec<String> = last.meminfo.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
        println!(
            "{{\"name\":{:?},\"arch\":{:?},\"params\":{:?},\"mem_mib\":{mem},\"runs\":{},\"pages\":{},\"nonzero\":{},\
             \"distinct\":{},\"nonzero_runs\":{:?},\"ready_ms\":{:.0},\"owners\":[{}],\"meminfo_kib\":{{{}}}}}",
            s.name,
            arch,
            s.params,
            rs.len(),
            last.fp.pages,
            median(rs.iter().map(|r| r.fp.nonzero as f64).collect()),
            median(rs.iter().map(|r| r.fp.distinct as f64).collect()),
            rs.iter().map(|r| r.fp.nonzero).collect::<Vec<_>>(),
            median(rs.iter().map(|r| r.ready_ms).collect()),
            owners.join(","),
            meminfo.join(",")
        );
    }
}
