//! Runs workload checks in a supermachine-style guest booted from a real root file system image,
//! one kernel at a time; `scripts/workload-test.sh` calls it once per kernel and compares.
//!
//! ```text
//! workload --arch x86_64|aarch64 --kernel FILE --image SQUASHFS --script CHECKS_SH
//!          --checks NAME[,NAME…] [--label NAME] [--mem MIB] [--cpus N] [--check-timeout S]
//!          [--cmdline TOKENS] [--stage HOST_FILE=GUEST_PATH]... [--json OUT]
//! ```
//! After each boot the check script is written to `/opt/sm-workload/checks.sh` in the guest
//! (so the cached image does not depend on it), and so is each `--stage` file (e.g. a test
//! program and its expected output, scripts/image-test.sh); each check is
//! `sh /opt/sm-workload/checks.sh run NAME`, run through the agent (ours, from the crate of
//! `--arch`, so only the kernel differs between runs). A check passes when it exits 0. A check
//! whose exec fails (the guest stopped answering) is a failure, and the guest is rebooted for
//! the checks after it. Prints one JSON object (also written to `--json`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use supermachine_agent_client::{proto::ExecRequest, Client};
use supermachine_guest_harness::cli::{self, die};
use supermachine_guest_harness::guest::{Guest, GuestOptions};
use supermachine_guest_harness::payloads::{self, GuestPayloads};

const CHECKS_SH: &str = "/opt/sm-workload/checks.sh";
/// Output kept per check in the report (the end of stdout+stderr).
const TAIL_BYTES: usize = 2000;

struct Args {
    payloads: GuestPayloads,
    image: PathBuf,
    script: Vec<u8>,
    checks: Vec<String>,
    label: String,
    mem_mib: u32,
    cpus: u32,
    /// Extra kernel command-line tokens (e.g. `slub_debug=U` to see who allocates).
    cmdline: String,
    check_timeout: Duration,
    json: Option<PathBuf>,
    /// Files written into the guest after each boot: (guest path, content).
    stage: Vec<(String, Vec<u8>)>,
}

fn parse_args() -> Args {
    let mut arch = String::from("x86_64");
    let (mut kernel, mut image, mut json) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut script = None::<PathBuf>;
    let (mut checks, mut label, mut cmdline) = (Vec::new(), String::from("guest"), String::new());
    let (mut mem_mib, mut cpus, mut check_timeout) = (1024u32, 2u32, 600u64);
    let mut stage = Vec::new();
    let mut args = cli::Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = args.value(&a),
            "--kernel" => kernel = Some(args.value(&a).into()),
            "--image" => image = Some(args.value(&a).into()),
            "--script" => script = Some(args.value(&a).into()),
            "--checks" => checks = args.value(&a).split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
            "--label" => label = args.value(&a),
            "--mem" => mem_mib = args.value(&a).parse().unwrap_or_else(|_| die("--mem takes MiB")),
            "--cpus" => cpus = args.value(&a).parse().unwrap_or_else(|_| die("--cpus takes a count")),
            "--check-timeout" => {
                check_timeout = args.value(&a).parse().unwrap_or_else(|_| die("--check-timeout takes seconds"))
            }
            "--cmdline" => cmdline = args.value(&a),
            "--json" => json = Some(args.value(&a).into()),
            "--stage" => stage.push(parse_stage(&args.value(&a))),
            _ => die(&format!("unknown argument {a} (see the header of src/bin/workload.rs)")),
        }
    }
    let base = payloads::for_arch(&arch).unwrap_or_else(|| die(&format!("--arch {arch}: x86_64 or aarch64")));
    let kernel = kernel.unwrap_or_else(|| die("--kernel FILE is required"));
    let payloads = base.with_kernel_file(&kernel).unwrap_or_else(|e| die(&e.to_string()));
    let image = image.unwrap_or_else(|| die("--image SQUASHFS is required"));
    let script = script.unwrap_or_else(|| die("--script CHECKS_SH is required"));
    let script = std::fs::read(&script).unwrap_or_else(|e| die(&format!("{}: {e}", script.display())));
    if checks.is_empty() {
        die("--checks NAME[,NAME…] is required");
    }
    Args {
        payloads,
        image,
        script,
        checks,
        label,
        mem_mib,
        cpus,
        cmdline,
        check_timeout: Duration::from_secs(check_timeout),
        json,
        stage,
    }
}

/// `HOST_FILE=GUEST_PATH`: the host file is read now, so a missing one is an error before boot.
fn parse_stage(spec: &str) -> (String, Vec<u8>) {
    let (host, guest) =
        spec.split_once('=').unwrap_or_else(|| die(&format!("--stage {spec}: expected HOST_FILE=GUEST_PATH")));
    if !guest.starts_with('/') {
        die(&format!("--stage {spec}: the guest path must be absolute"));
    }
    let bytes = std::fs::read(host).unwrap_or_else(|e| die(&format!("--stage {host}: {e}")));
    (guest.to_string(), bytes)
}

fn boot(args: &Args) -> Result<Guest, String> {
    let opts = GuestOptions {
        mem_mib: args.mem_mib,
        cpus: args.cpus,
        extra_cmdline: args.cmdline.clone(),
        image: Some(args.image.clone()),
        ready_timeout: Duration::from_secs(120),
        ..GuestOptions::for_payloads(args.payloads)
    };
    let guest = Guest::boot(&opts).map_err(|e| format!("boot failed: {e}"))?;
    guest.install(CHECKS_SH, &args.script)?;
    for (path, bytes) in &args.stage {
        guest.install(path, bytes)?;
    }
    Ok(guest)
}

struct CheckResult {
    name: String,
    ok: bool,
    secs: f64,
    detail: String,
}

fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Runs one check; `Err` means the guest stopped answering (reboot before the next one).
fn run_check(guest: &Guest, name: &str, timeout: Duration) -> Result<CheckResult, CheckResult> {
    // The in-guest `timeout` ends the check first; the host bound only catches a dead guest.
    let client = Client::new(guest.client.connector().with_read_timeout(timeout + Duration::from_secs(60)));
    let mut req = ExecRequest::new(["/bin/sh", CHECKS_SH, "run", name]);
    req.env.insert("SM_CHECK_TIMEOUT".into(), timeout.as_secs().to_string());
    req.env.insert("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let start = Instant::now();
    match client.exec(&req, None) {
        Ok(out) => {
            let mut all = out.stdout.clone();
            all.extend_from_slice(&out.stderr);
            Ok(CheckResult {
                name: name.into(),
                ok: out.status.success(),
                secs: start.elapsed().as_secs_f64(),
                detail: tail(&all),
            })
        }
        Err(e) => Err(CheckResult {
            name: name.into(),
            ok: false,
            secs: start.elapsed().as_secs_f64(),
            detail: format!("guest stopped answering: {e}\nconsole:\n{}", tail(guest.vm.console_text().as_bytes())),
        }),
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn report(args: &Args, ready: Option<Duration>, results: &[CheckResult], kernel_release: &str) -> String {
    let checks: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"name\":{},\"ok\":{},\"secs\":{:.1},\"detail\":{}}}",
                json_str(&r.name),
                r.ok,
                r.secs,
                json_str(&r.detail)
            )
        })
        .collect();
    format!(
        "{{\"label\":{},\"arch\":{},\"kernel_release\":{},\"ready_ms\":{},\"checks\":[{}]}}",
        json_str(&args.label),
        json_str(args.payloads.arch),
        json_str(kernel_release),
        ready.map(|d| d.as_millis().to_string()).unwrap_or_else(|| "null".into()),
        checks.join(",")
    )
}

fn uname_r(guest: &Guest) -> String {
    guest
        .client
        .exec(&ExecRequest::new(["/bin/uname", "-r"]), None)
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let args = parse_args();
    for tool in [args.payloads.qemu, "vhost-device-vsock"] {
        if supermachine_guest_harness::require_tool(tool).is_none() {
            die(&format!("{tool} is needed (scripts/install-prereqs.sh installs it)"));
        }
    }
    if !Path::new(&args.image).is_file() {
        die(&format!("{}: no such image", args.image.display()));
    }
    let mut results = Vec::new();
    // One retry of the first boot: once in ~40 boots on 2026-12-07 the agent logged "listening"
    // and the host's vhost-device-vsock connections still went unanswered for 180 s (TCG, a
    // quiet host). The failed attempt's console stays in the log; a second failure is fatal.
    let mut guest = match boot(&args) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("workload[{}]: first boot failed, retrying once: {e}", args.label);
            Some(boot(&args).unwrap_or_else(|e| die(&e)))
        }
    };
    let ready = guest.as_ref().map(|g| g.timings.kernel_to_agent_ready);
    let release = guest.as_ref().map(uname_r).unwrap_or_default();
    eprintln!("workload[{}]: {} ready in {:?}", args.label, release, ready.unwrap_or_default());
    for name in &args.checks {
        if guest.is_none() {
            guest = match boot(&args) {
                Ok(g) => Some(g),
                Err(e) => {
                    results.push(CheckResult { name: name.clone(), ok: false, secs: 0.0, detail: e });
                    continue;
                }
            };
        }
        let g = guest.as_ref().expect("booted above");
        let r = match run_check(g, name, args.check_timeout) {
            Ok(r) => r,
            Err(r) => {
                guest = None; // dropped: QEMU killed; the next check boots afresh
                r
            }
        };
        eprintln!("workload[{}]: {:<28} {} ({:.1} s)", args.label, r.name, if r.ok { "ok" } else { "FAIL" }, r.secs);
        results.push(r);
        // Rewritten after every check: a long run stopped half-way keeps what it measured.
        if let Some(path) = &args.json {
            let partial = report(&args, ready, &results, &release);
            std::fs::write(path, partial).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
        }
    }
    drop(guest);
    let json = report(&args, ready, &results, &release);
    if let Some(path) = &args.json {
        std::fs::write(path, &json).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    }
    println!("{json}");
}
