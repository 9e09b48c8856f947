//! Guest networking (TSI) through the supermachine runtime's own host muxer, under QEMU TCG.
//!
//! ```text
//! tsi-test --arch x86_64|aarch64 --kernel FILE --image SQUASHFS --backend TSI_BACKEND
//!          [--host-ip 10.200.0.1] [--token HEX64] [--mismatch] [--label NAME] [--json OUT]
//!          [--only CHECK[,CHECK...]]
//! ```
//! Run by `scripts/tsi-test.sh` inside a network namespace of its own whose loopback carries
//! `--host-ip`: the host's servers (HTTP, bulk source and sink, UDP echo, DNS on port 53) bind
//! there, and the guest, for which that address is not its own, reaches them through TSI. The
//! guest boots the supermachine way with `tsi_hijack` (and `supermachine.tsi_token=` when given)
//! on its command line; its vsock backend is `tools/tsi-backend`, whose device model is the
//! runtime's `VsockMuxer`, so every packet is handled by the runtime's own code. Each check runs
//! `scripts/tsi/guest.py` in the guest (Python from the image) or drives the runtime's ingress
//! (`Vm::expose_tcp`'s path: the muxer's Unix socket and its `SMUX-PORT-V1` header) from the
//! host. `--mismatch` arms the backend with a token the guest does not have: outbound
//! connections must fail with a timeout, bounded, and the guest must stay responsive.
//! Prints one line per check and a JSON report (the backend's log beside it, `OUT.backend.log`);
//! exit status 1 if any check fails.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use supermachine_agent_client::{proto::ExecRequest, Client};
use supermachine_guest_harness::cli::{self, die};
use supermachine_guest_harness::guest::{Guest, GuestOptions};
use supermachine_guest_harness::payloads::{self, GuestPayloads};
use supermachine_guest_harness::tsi;
use supermachine_guest_harness::vsock::BackendKind;

const GUEST_PY: &str = "/opt/sm-tsi/guest.py";
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

struct Args {
    payloads: GuestPayloads,
    image: PathBuf,
    backend: PathBuf,
    host_ip: IpAddr,
    token: Option<String>,
    mismatch: bool,
    label: String,
    json: Option<PathBuf>,
    only: Vec<String>,
}

fn parse_args() -> Args {
    let (mut arch, mut kernel, mut image, mut backend) = (String::from("x86_64"), None::<PathBuf>, None, None);
    let (mut host_ip, mut token, mut mismatch, mut label, mut json) =
        ("10.200.0.1".to_string(), None, false, String::from("ours"), None);
    let mut only = Vec::new();
    let mut args = cli::Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--arch" => arch = args.value(&a),
            "--kernel" => kernel = Some(PathBuf::from(args.value(&a))),
            "--image" => image = Some(PathBuf::from(args.value(&a))),
            "--backend" => backend = Some(PathBuf::from(args.value(&a))),
            "--host-ip" => host_ip = args.value(&a),
            "--token" => token = Some(args.value(&a)),
            "--mismatch" => mismatch = true,
            "--label" => label = args.value(&a),
            "--json" => json = Some(PathBuf::from(args.value(&a))),
            "--only" => only = args.value(&a).split(',').map(String::from).collect(),
            _ => die(&format!("unknown argument {a} (see the header of src/bin/tsi-test.rs)")),
        }
    }
    let base = payloads::for_arch(&arch).unwrap_or_else(|| die(&format!("--arch {arch}: x86_64 or aarch64")));
    let kernel = kernel.unwrap_or_else(|| die("--kernel FILE is required"));
    if let Some(t) = &token {
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            die("--token takes 64 hex digits");
        }
    }
    if mismatch && token.is_none() {
        die("--mismatch needs --token (the backend is armed with it, the guest gets another)");
    }
    Args {
        payloads: base.with_kernel_file(&kernel).unwrap_or_else(|e| die(&e.to_string())),
        image: image.unwrap_or_else(|| die("--image SQUASHFS (with python3) is required")),
        backend: backend.unwrap_or_else(|| die("--backend TSI_BACKEND is required")),
        host_ip: host_ip.parse().unwrap_or_else(|_| die("--host-ip takes an IP address")),
        token,
        mismatch,
        label,
        json,
        only,
    }
}

/// The token the guest's command line carries: the backend's, or (with --mismatch) another.
fn guest_token(args: &Args) -> Option<String> {
    let t = args.token.as_ref()?;
    Some(if args.mismatch { t.chars().rev().collect() } else { t.clone() })
}

fn boot(args: &Args) -> Guest {
    let mut cmdline = String::from("tsi_hijack");
    if let Some(t) = guest_token(args) {
        cmdline.push_str(&format!(" supermachine.tsi_token={t}"));
    }
    let backend_args = args.token.iter().flat_map(|t| ["--tsi-token".to_string(), t.clone()]).collect();
    let opts = GuestOptions {
        mem_mib: 1024,
        cpus: 1,
        extra_cmdline: cmdline,
        image: Some(args.image.clone()),
        backend: BackendKind::Tsi { program: args.backend.clone(), args: backend_args },
        ready_timeout: Duration::from_secs(180),
        ..GuestOptions::for_payloads(args.payloads)
    };
    let guest = Guest::boot(&opts).unwrap_or_else(|e| die(&format!("boot failed: {e}")));
    let script = std::fs::read(workspace_file("scripts/tsi/guest.py"))
        .unwrap_or_else(|e| die(&format!("scripts/tsi/guest.py: {e}")));
    guest.install(GUEST_PY, &script).unwrap_or_else(|e| die(&e));
    guest
}

fn workspace_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

struct Outcome {
    name: &'static str,
    ok: bool,
    secs: f64,
    detail: String,
}

/// Runs argv in the guest; ok when it exits 0. Output: stdout then stderr.
fn guest_run(guest: &Guest, argv: &[&str]) -> (bool, String) {
    let client = Client::new(guest.client.connector().with_read_timeout(CHECK_TIMEOUT));
    let mut req = ExecRequest::new(argv.iter().copied());
    req.env.insert("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    match client.exec(&req, None) {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            (o.status.success(), s.trim().to_string())
        }
        Err(e) => (false, format!("exec failed: {e}")),
    }
}

fn py(guest: &Guest, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["python3", GUEST_PY];
    argv.extend_from_slice(args);
    guest_run(guest, &argv)
}

fn check(args: &Args, results: &mut Vec<Outcome>, name: &'static str, f: impl FnOnce() -> (bool, String)) {
    if !args.only.is_empty() && !args.only.iter().any(|o| o == name) {
        return;
    }
    let start = Instant::now();
    let (ok, detail) = f();
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "tsi-test: {name:<20} {} ({secs:.1} s) {}",
        if ok { "ok" } else { "FAIL" },
        detail.lines().last().unwrap_or("")
    );
    results.push(Outcome { name, ok, secs, detail });
}

/// A port on the host address that nothing listens on.
fn closed_port(ip: IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| die(&format!("bind {ip}: {e}")));
    l.local_addr().map(|a| a.port()).unwrap_or(1)
}

fn backend_log(guest: &Guest) -> String {
    std::fs::read_to_string(guest.scratch().join("backend.log")).unwrap_or_default()
}

fn ingress_check(mux: &Path, port: Option<u16>, want: &str) -> (bool, String) {
    match tsi::ingress_get(mux, port, "/") {
        Ok(r) => (r.contains("200 OK") && r.contains(want), r.lines().last().unwrap_or("").to_string()),
        Err(e) => (false, format!("ingress through {}: {e}", mux.display())),
    }
}

fn run_checks(args: &Args, guest: &Guest, results: &mut Vec<Outcome>) {
    let ip = args.host_ip;
    let ips = ip.to_string();
    let (http, source, sink) = tsi::spawn_tcp_servers(ip).unwrap_or_else(|e| die(&e.to_string()));
    let udp = tsi::spawn_udp_echo(ip).unwrap_or_else(|e| die(&e.to_string()));
    let udp2 = tsi::spawn_udp_echo(ip).unwrap_or_else(|e| die(&e.to_string()));
    let dns: SocketAddr = tsi::spawn_dns(ip).unwrap_or_else(|e| die(&e.to_string()));
    let closed = closed_port(ip);
    let url = format!("http://{ips}:{}/", http.port());
    let want = "hello from the host";
    let mux = guest.scratch().join("mux.sock");

    if let Ok(cmd) = std::env::var("TSI_TEST_SHELL") {
        // Debugging aid: a shell command in the guest, with the servers' ports in its
        // environment (HTTP, SOURCE, SINK, UDP, HOST).
        let env = format!(
            "HOST={ips} HTTP={} SOURCE={} SINK={} UDP={}; ",
            http.port(),
            source.port(),
            sink.port(),
            udp.port()
        );
        check(args, results, "shell", || guest_run(guest, &["/bin/sh", "-c", &format!("{env}{cmd}")]));
    }
    check(args, results, "agent_output_4mib", || {
        // Guest -> host on the agent's own (native vsock) stream, through the runtime's muxer.
        let client = Client::new(guest.client.connector().with_read_timeout(CHECK_TIMEOUT));
        match client.exec(&ExecRequest::new(["/bin/sh", "-c", "head -c 4194304 /dev/zero"]), None) {
            Ok(o) => {
                (o.status.success() && o.stdout.len() == 4 << 20, format!("{} bytes of exec output", o.stdout.len()))
            }
            Err(e) => (false, format!("exec: {e}")),
        }
    });
    check(args, results, "tcp_egress", || py(guest, &["http", &url, want]));
    check(args, results, "nonblocking_connect", || py(guest, &["nonblocking", &ips, &http.port().to_string(), want]));
    check(args, results, "refused", || py(guest, &["refused", &ips, &closed.to_string()]));
    check(args, results, "peer_names", || py(guest, &["names", &ips, &http.port().to_string()]));
    check(args, results, "bulk_host_to_guest", || py(guest, &["source", &ips, &source.port().to_string(), "8388608"]));
    check(args, results, "bulk_guest_to_host", || {
        // Below, at and past the host's 8 MiB window (its credit updates come every 4 MiB).
        for n in ["1048576", "8388608", "12582912"] {
            let (ok, out) = py(guest, &["sink", &ips, &sink.port().to_string(), n]);
            if !ok {
                return (false, format!("{n} bytes: {out}"));
            }
        }
        (true, "1, 8 and 12 MiB guest -> host, host checksums match".into())
    });
    check(args, results, "udp_echo", || py(guest, &["udp", &ips, &udp.port().to_string()]));
    check(args, results, "udp_two_destinations", || {
        py(guest, &["udp2", &ips, &udp.port().to_string(), &udp2.port().to_string()])
    });
    check(args, results, "loopback_refused", || {
        let (ok, out) = py(guest, &["refused", "127.0.0.1", "9199"]);
        let leaked = backend_log(guest).lines().any(|l| l.contains("CONNECT") && l.contains(":9199"));
        (ok && !leaked, if leaked { format!("{out}; but the host saw a CONNECT to port 9199") } else { out })
    });
    check(args, results, "dns", || {
        let (ok, out) = guest_run(
            guest,
            &[
                "/bin/sh",
                "-c",
                &format!("printf 'nameserver {}\\noptions timeout:2 attempts:2\\n' > /etc/resolv.conf", dns.ip()),
            ],
        );
        if !ok {
            return (false, out);
        }
        py(guest, &["dns", "anything.tsi.test", &IpAddr::from(tsi::DNS_ANSWER).to_string()])
    });
    check(args, results, "parallel_connections", || py(guest, &["many", &ips, &http.port().to_string(), "40", want]));
    check(args, results, "loopback_stays_local", || {
        let (ok, out) = py(guest, &["serve", "9100", "127.0.0.1"]);
        if !ok {
            return (false, out);
        }
        let (ok, out) = py(guest, &["http", "http://127.0.0.1:9100/", "guest server 9100"]);
        let leaked = backend_log(guest).lines().any(|l| l.contains("CONNECT") && l.contains(":9100"));
        (ok && !leaked, if leaked { format!("{out}; but the host saw a CONNECT to port 9100") } else { out })
    });
    check(args, results, "ingress_ipv4_listener", || {
        let (ok, out) = py(guest, &["serve", "8080", "0.0.0.0"]);
        if !ok {
            return (false, out);
        }
        ingress_check(&mux, Some(8080), "guest server 8080")
    });
    check(args, results, "ingress_dual_stack", || {
        let (ok, out) = py(guest, &["serve", "8081", "::"]);
        if !ok {
            return (false, out);
        }
        ingress_check(&mux, Some(8081), "guest server 8081 peer ::ffff:127.0.0.1")
    });
    check(args, results, "ingress_no_header", || ingress_check(&mux, None, "guest server 8080"));
    check(args, results, "listener_restart", || {
        let (ok, out) = guest_run(guest, &["/bin/sh", "-c", "kill $(cat /run/sm-tsi-8080.pid) && sleep 0.5"]);
        if !ok {
            return (false, format!("stopping the server: {out}"));
        }
        let (ok, out) = py(guest, &["serve", "8080", "0.0.0.0"]);
        if !ok {
            return (false, out);
        }
        ingress_check(&mux, Some(8080), "guest server 8080")
    });
    check(args, results, "snapshot_restore", || {
        // The runtime's capture -> reset -> restore: listeners come back, new connections work.
        let reply = match tsi::control(&guest.scratch().join("control.sock"), "snapshot") {
            Ok(r) => r,
            Err(e) => return (false, format!("control.sock: {e}")),
        };
        let (ok, out) = ingress_check(&mux, Some(8080), "guest server 8080");
        if !ok {
            return (false, format!("after `{reply}`: ingress: {out}"));
        }
        let (ok, out) = py(guest, &["http", &url, want]);
        (ok, format!("{reply}; ingress and a new connection work: {out}"))
    });
    if let Some(t) = &args.token {
        check(args, results, "token_hidden", || {
            let (ok, out) = guest_run(guest, &["/bin/sh", "-c", "cat /proc/cmdline; dmesg"]);
            let leaked = out.to_ascii_lowercase().contains(&t.to_ascii_lowercase());
            let masked = out.contains(&format!("supermachine.tsi_token={}", "*".repeat(64)));
            (
                ok && !leaked && masked,
                format!("token in /proc/cmdline or dmesg: {leaked}; masked in /proc/cmdline: {masked}"),
            )
        });
    }
}

fn run_mismatch(args: &Args, guest: &Guest, results: &mut Vec<Outcome>) {
    let (http, _, _) = tsi::spawn_tcp_servers(args.host_ip).unwrap_or_else(|e| die(&e.to_string()));
    let url = format!("http://{}:{}/", args.host_ip, http.port());
    check(args, results, "mismatch_times_out", || {
        let start = Instant::now();
        let (ok, out) = py(guest, &["http", &url, "hello"]);
        let secs = start.elapsed().as_secs_f64();
        let timed_out = !ok && (out.contains("timed out") || out.contains("Errno 110"));
        (timed_out && secs < 30.0, format!("{:.1} s: {}", secs, out.lines().last().unwrap_or("")))
    });
    check(args, results, "mismatch_fails_fast_after", || {
        let start = Instant::now();
        let (ok, out) = py(guest, &["http", &url, "hello"]);
        let secs = start.elapsed().as_secs_f64();
        (!ok && secs < 5.0, format!("{:.1} s: {}", secs, out.lines().last().unwrap_or("")))
    });
    check(args, results, "guest_responsive", || guest_run(guest, &["/bin/true"]));
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn main() {
    let args = parse_args();
    for tool in [args.payloads.qemu] {
        if supermachine_guest_harness::require_tool(tool).is_none() {
            die(&format!("{tool} is needed (scripts/install-prereqs.sh installs it)"));
        }
    }
    let guest = boot(&args);
    let release = guest_run(&guest, &["uname", "-r"]).1;
    eprintln!("tsi-test[{}]: {} ready in {:?}", args.label, release, guest.timings.kernel_to_agent_ready);
    let mut results = Vec::new();
    if args.mismatch {
        run_mismatch(&args, &guest, &mut results);
    } else {
        run_checks(&args, &guest, &mut results);
    }
    let checks: Vec<String> = results
        .iter()
        .map(|r| {
            format!(
                "{{\"name\":{},\"ok\":{},\"secs\":{:.1},\"detail\":{}}}",
                json_str(r.name),
                r.ok,
                r.secs,
                json_str(&r.detail)
            )
        })
        .collect();
    let json = format!(
        "{{\"label\":{},\"arch\":{},\"kernel_release\":{},\"mismatch\":{},\"checks\":[{}]}}",
        json_str(&args.label),
        json_str(args.payloads.arch),
        json_str(&release),
        args.mismatch,
        checks.join(",")
    );
    if let Some(p) = &args.json {
        std::fs::write(p, &json).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
        let _ = std::fs::write(p.with_extension("backend.log"), backend_log(&guest));
    }
    println!("{json}");
    drop(guest);
    if results.iter().any(|r| !r.ok) {
        std::process::exit(1);
    }
}
