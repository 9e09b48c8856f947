//! The runtime's HVF guest, published pieces against ours (issue 26): boots each side's kernel,
//! init-oci and agent the way the supermachine runtime boots them on Apple Silicon, collects
//! what a workload and the host can observe, and prints the differences from the first side.
//!
//! ```text
//! hvf-diff --side NAME=KERNEL,INIT_OCI,AGENT[,SMPARK_KO] [--side …] [--allowed docs/INIT-OCI.md] [--json OUT]
//! ```
//! Every side: `qemu-system-aarch64 -M virt` as the harness shapes it like the runtime's device
//! tree, 2 vCPUs, our busybox image layer (empty `/etc/hosts` and `/etc/resolv.conf`, as
//! `docker export` leaves them) under the runtime's delta layer (`/.supermachine-cmd` = the
//! probe workload `scripts/hvf-diff/probe-workload.sh`, a workdir the image lacks, a hostname,
//! `/supermachine-agent`, and `/init` = the side's init-oci, which the published one re-execs),
//! the runtime's initramfs (`/init` = the side's init-oci, plus `/supermachine-smpark.ko` when
//! the side ships one), the env service on vsock port 1026 (escapes and a secret in its JSON), the HVF command line.
//! Collected: `scripts/hvf-diff/collect.sh` through the agent (mounts, modes, /etc files, the
//! exec's and the workload's environment, network, smpark, processes), the console markers the
//! runtime reacts to, and vCPU parking through the agent and by the host writing byte 0 of the
//! announced state page. A difference from the first side whose key the `--allowed` document
//! lists (a table row starting `` | `key` ``; a key ending in `*` covers a prefix) is expected;
//! any other fails (exit 1).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use supermachine_agent_client::proto::ExecRequest;
use supermachine_guest_harness::cli::{die, leak_file, Args};
use supermachine_guest_harness::oci::{ImageFile, OciGuest, OciOptions};
use supermachine_guest_harness::payloads::{self, GuestPayloads};

const PROBE: &str = include_str!("../../../../scripts/hvf-diff/probe-workload.sh");
const COLLECT: &str = include_str!("../../../../scripts/hvf-diff/collect.sh");
const ENV_JSON: &str = "{\n  \"env\": {\n    \"GREETING\": \"hello\",\n    \"ESCAPED\": \"a\\\\b\",\n    \"LINES\": \"l1\\nl2\",\n    \"SUPERMACHINE_GUEST_STDIO\": \"0\"\n  },\n  \"secrets\": {\n    \"TOKEN\": \"s3cret\"\n  }\n}\n";
const HEARTBEAT: &str = "[SUPERMACHINE-INIT] heartbeat counter=1";
const GPA_LINE: &str = "[SUPERMACHINE-SMPARK] state_gpa=0x";

/// Boots one side and collects its facts (`key` → value).
fn collect(name: &str, p: GuestPayloads, smpark_ko: Option<&[u8]>) -> Result<BTreeMap<String, String>, String> {
    let files = vec![
        ImageFile { path: "/bin/probe-workload".into(), data: PROBE.into(), mode: 0o755 },
        ImageFile { path: "/usr/local/bin/collect.sh".into(), data: COLLECT.into(), mode: 0o755 },
        ImageFile::new("/etc/hosts", ""),
        ImageFile::new("/etc/resolv.conf", ""),
    ];
    let delta = vec![
        ImageFile::new("/.supermachine-cmd", "/bin/probe-workload\nfirst arg\nsecond\n"),
        ImageFile::new("/.supermachine-workdir", "/srv/missing\n"),
        ImageFile::new("/.supermachine-hostname", "diffhost\n"),
        ImageFile { path: "/init".into(), data: p.init_oci.to_vec(), mode: 0o755 },
    ];
    let o = OciOptions {
        files,
        agent: false,
        delta: Some(delta),
        delta_agent: true,
        env_json: Some(ENV_JSON.into()),
        cpus: 2,
        initramfs_files: smpark_ko
            .map(|ko| vec![ImageFile { path: "/supermachine-smpark.ko".into(), data: ko.to_vec(), mode: 0o644 }])
            .unwrap_or_default(),
        extra_cmdline: "tsi_hijack supermachine.host_ipv6=0".into(),
        ..OciOptions::for_payloads(p)
    };
    let g = OciGuest::boot(&o).map_err(|e| format!("{name}: {e}"))?;
    let c = g.wait_agent(Duration::from_secs(300)).map_err(|e| format!("{name}: {e}"))?;
    // Up to 3 tries: the published agent now and then closes a connection before EXIT (its
    // benchmark figures count such failures too).
    let sh = |cmd: &str| -> Result<String, String> {
        let req = ExecRequest::new(["/bin/sh", "-c", cmd]);
        let mut last = String::new();
        for _ in 0..3 {
            match c.exec(&req, None) {
                Ok(out) => return Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("{name}: `{cmd}`: {last}"))
    };
    // The workload writes its state as it starts; wait for it (≤ 10 s).
    let t = Instant::now();
    while sh("test -s /run/wl-state && echo y")?.trim() != "y" && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut facts = BTreeMap::new();
    for line in sh("sh /usr/local/bin/collect.sh")?.lines() {
        if let Some((k, v)) = line.split_once('\t') {
            facts.insert(k.to_string(), v.to_string());
        }
    }
    let console = g.vm.console_text();
    for (key, marker) in
        [("console.heartbeat", HEARTBEAT), ("console.pre_exec", "workload-pre-exec"), ("console.smpark_gpa", GPA_LINE)]
    {
        facts.insert(key.into(), if console.contains(marker) { "printed" } else { "absent" }.into());
    }
    // Parking: through the agent (once: a second PARK wedges the published module), then the
    // runtime's direct unpark, by a write of guest RAM at the announced page. Every call bounded
    // to 10 s: a guest that stops answering is a finding, not a hang.
    let c = g.client_with_timeout(Duration::from_secs(10));
    let ran = |what: &str| match c.exec(&ExecRequest::new(["/bin/sh", "-c", "taskset -c 1 echo ran"]), None) {
        Ok(o) if o.stdout == b"ran\n" => format!("{what}: cpu1 runs"),
        Ok(o) => format!("{what}: cpu1 {:?}", o.status),
        Err(e) => format!("{what}: no answer ({})", e.to_string().split(':').next().unwrap_or("")),
    };
    let park = |what: &str| match c.smpark_park() {
        Ok(_) => format!("{what} ok"),
        Err(e) => format!("{what} failed: {e}"),
    };
    let parked = park("park");
    let unparked = match c.smpark_unpark() {
        Ok(_) => "unpark ok".to_string(),
        Err(e) => format!("unpark failed: {e}"),
    };
    facts.insert("smpark.agent".into(), format!("{parked}, {unparked}, {}", ran("after")));
    let gpa =
        console.lines().find_map(|l| l.split(GPA_LINE).nth(1)).and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    let direct = match gpa {
        Some(gpa) => {
            let parked = park("park");
            match g.vm.write_guest_phys(gpa, &[1]) {
                Ok(()) => format!("{parked}, host write, {}", ran("after")),
                Err(e) => format!("{parked}, host write failed: {e}"),
            }
        }
        None => "no state page announced".into(),
    };
    facts.insert("smpark.host_direct".into(), direct);
    Ok(facts)
}

/// An expected difference: the fact's key (a trailing `*` covers a prefix) and, for the rows
/// under a `### …cross…` heading, the one side it is expected on.
struct Allowed {
    key: String,
    side: Option<String>,
}

/// The differences `doc` lists: the rows starting `` | `key` `` of the tables in its section
/// whose heading names `hvf-diff`; under a heading naming the crosses, the row's second cell
/// names the side.
fn allowed_keys(doc: &str) -> Vec<Allowed> {
    let section = doc.split("\n## ").find(|s| s.lines().next().is_some_and(|h| h.contains("hvf-diff"))).unwrap_or("");
    let mut crosses = false;
    let mut out = Vec::new();
    for line in section.lines() {
        if line.starts_with("### ") {
            crosses = line.contains("cross");
        }
        let Some((key, rest)) = line.strip_prefix("| `").and_then(|l| l.split_once('`')) else { continue };
        let side = crosses.then(|| rest.trim_start_matches(" |").split('|').next().unwrap_or("").trim().to_string());
        out.push(Allowed { key: key.to_string(), side });
    }
    out
}

fn is_allowed(key: &str, side: &str, allowed: &[Allowed]) -> bool {
    allowed.iter().any(|a| {
        let key_matches = match a.key.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => a.key == key,
        };
        key_matches && a.side.as_deref().is_none_or(|s| s == side)
    })
}

fn main() {
    let (mut sides, mut allowed_doc, mut json) = (Vec::new(), None::<PathBuf>, None::<PathBuf>);
    let mut args = Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--side" => {
                let v = args.value(&a);
                let bad = || die("--side takes NAME=KERNEL,INIT_OCI,AGENT[,SMPARK_KO]");
                let (name, files) = v.split_once('=').unwrap_or_else(bad);
                let f: Vec<&str> = files.split(',').collect();
                if !(3..=4).contains(&f.len()) {
                    bad();
                }
                let ko = f.get(3).map(PathBuf::from);
                sides.push((name.to_string(), PathBuf::from(f[0]), PathBuf::from(f[1]), PathBuf::from(f[2]), ko));
            }
            "--allowed" => allowed_doc = Some(args.value(&a).into()),
            "--json" => json = Some(args.value(&a).into()),
            _ => die(&format!("unknown argument {a} (see the header of src/bin/hvf-diff.rs)")),
        }
    }
    if sides.len() < 2 {
        die("give at least two --side NAME=KERNEL,INIT_OCI,AGENT (the first is the reference)");
    }
    let allowed = match &allowed_doc {
        Some(p) => allowed_keys(&std::fs::read_to_string(p).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())))),
        None => Vec::new(),
    };
    let base = payloads::aarch64();
    let mut results = Vec::new();
    for (name, k, init, agent, ko) in &sides {
        let p = GuestPayloads { kernel: leak_file(k), init_oci: leak_file(init), agent: leak_file(agent), ..base };
        eprintln!("hvf-diff: booting {name}");
        results.push((name.clone(), collect(name, p, ko.as_deref().map(leak_file)).unwrap_or_else(|e| die(&e))));
    }
    let (ref_name, reference) = &results[0];
    let mut unexpected = 0;
    println!("| fact | {ref_name} | side | value | listed |");
    println!("|---|---|---|---|---|");
    for (name, facts) in &results[1..] {
        let keys: std::collections::BTreeSet<&String> = reference.keys().chain(facts.keys()).collect();
        for key in keys {
            let (a, b) = (reference.get(key), facts.get(key));
            if a == b {
                continue;
            }
            let listed = is_allowed(key, name, &allowed);
            unexpected += usize::from(!listed);
            let show = |v: Option<&String>| v.map_or("(absent)".to_string(), |s| s.replace('|', "¦"));
            println!("| `{key}` | {} | {name} | {} | {} |", show(a), show(b), if listed { "yes" } else { "**NO**" });
        }
    }
    if let Some(p) = &json {
        let all: BTreeMap<&String, &BTreeMap<String, String>> = results.iter().map(|(n, f)| (n, f)).collect();
        std::fs::write(p, serde_json::to_string_pretty(&all).unwrap())
            .unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
    }
    if unexpected > 0 {
        eprintln!(
            "hvf-diff: {unexpected} difference(s) not listed with a reason in {}",
            allowed_doc.as_deref().map_or("(no --allowed document)".into(), |p| p.display().to_string())
        );
        std::process::exit(1);
    }
    eprintln!("hvf-diff: every difference is listed");
}
