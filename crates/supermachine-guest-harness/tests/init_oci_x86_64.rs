//! Issue 6: init-oci as PID 1 on x86_64 (QEMU microvm, TCG). A squashfs image with a JSON
//! config boots; the entrypoint runs with the configured env/cwd/user and prints to the console;
//! the agent answers over vsock; signals reach the workload; SIGTERM to PID 1 powers off; bad
//! configs print their `init-oci: error:` line and power off cleanly (no kernel panic).
#![cfg(target_arch = "x86_64")]

use std::time::Duration;
use supermachine_agent_client::proto::{ControlRequest, ExecRequest};
use supermachine_guest_harness::oci::{wait_for_count, ImageFile, OciGuest, OciOptions, HOST_TIME};
use supermachine_guest_harness::require_tools;

const BOOT: Duration = Duration::from_secs(180);

fn assert_no_panic(g: &OciGuest) {
    let console = g.vm.console_text();
    assert!(!console.contains("Kernel panic"), "kernel panic:\n{console}");
    assert!(!console.contains("Attempted to kill init"), "PID 1 exited:\n{console}");
}

/// The workload: reports its identity, traps HUP (forwarded by PID 1) and TERM, stays alive.
const WORKLOAD: &str = r#"#!/bin/sh
trap 'echo "@@ got HUP"' HUP
trap 'echo "@@ got TERM"; exit 0' TERM
echo "@@ who uid=$(id -u) gid=$(id -g) groups=$(id -G) pwd=$(pwd) greeting=$GREETING home=$HOME path=$PATH"
echo "@@ args $0 $1"
echo "@@ ready"
while true; do sleep 1 & wait $!; done
"#;

fn config() -> String {
    // The full OCI image-config shape, {"config": {...}} with extra fields around it.
    r#"{"architecture":"amd64","os":"linux",
        "config":{"User":"app","Env":["PATH=/bin:/usr/bin","GREETING=hello from the image"],
                   "Entrypoint":["/bin/workload"],"Cmd":["first-arg"],"WorkingDir":"/srv/app"},
        "rootfs":{"type":"layers","diff_ids":[]}}"#
        .to_string()
}

fn users() -> Vec<ImageFile> {
    vec![
        ImageFile::new("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
        ImageFile::new("/etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n"),
        ImageFile { path: "/bin/workload".into(), data: WORKLOAD.into(), mode: 0o755 },
    ]
}

#[test]
#[ignore = "needs qemu-system-x86_64, mksquashfs, vhost-device-vsock (scripts/test.sh runs it)"]
fn entrypoint_runs_as_configured_and_agent_answers_over_vsock() {
    require_tools(&["qemu-system-x86_64", "mksquashfs", "vhost-device-vsock"]);
    let opts = OciOptions { config: Some(config()), files: users(), ..OciOptions::default() };
    let mut g = OciGuest::boot(&opts).expect("boot");
    g.vm.wait_for("@@ ready", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let console = g.vm.console_text();
    assert!(console.contains("@@ who uid=1000 gid=1000 groups=1000 2000 pwd=/srv/app greeting=hello from the image home=/home/app path=/bin:/usr/bin"),
            "wrong identity/env/cwd:\n{console}");
    assert!(console.contains("@@ args /bin/workload first-arg"), "argv not Entrypoint+Cmd:\n{console}");

    let c = g.wait_agent(BOOT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.probe().expect("probe").protocol, 5);
    // init-oci stays PID 1; the agent is its child; the workload pid is recorded and alive.
    let out = c
        .exec(
            &ExecRequest::new([
                "/bin/sh",
                "-c",
                "cat /proc/1/comm; cat /proc/$PPID/comm 2>/dev/null; p=$(cat /run/supermachine-workload.pid); \
         tr '\\0' ' ' < /proc/$p/cmdline; echo; stat -c %u /proc/$p; id -u; cat /proc/mounts",
            ]),
            None,
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(out.status.success(), "{text}");
    assert_eq!(lines[0], "init", "PID 1 is not init-oci (/init): {text}");
    assert_eq!(lines[1], "agent", "execs should come from /.supermachine/agent: {text}");
    assert_eq!(lines[2], "/bin/sh /bin/workload first-arg ", "workload pid file points elsewhere: {text}");
    assert_eq!(lines[3], "1000", "workload not running as uid 1000: {text}");
    assert_eq!(lines[4], "0", "agent execs should run as root: {text}");
    for m in [
        "overlay / overlay",
        "proc /proc proc",
        "sysfs /sys sysfs",
        "devtmpfs /dev devtmpfs",
        "devpts /dev/pts devpts",
        "/dev/shm tmpfs",
        "/run tmpfs",
    ] {
        assert!(text.contains(m), "mount {m:?} missing:\n{text}");
    }
    // The image is writable (tmpfs upper layer) and the clock came from the cmdline.
    let out = c
        .exec(&ExecRequest::new(["/bin/sh", "-c", "echo x > /srv/app/new && cat /srv/app/new && date -u +%s"]), None)
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (written, clock) = text.split_once('\n').unwrap_or_else(|| panic!("{text:?}"));
    assert_eq!(written, "x");
    // Set from supermachine.host_time= (HOST_TIME), then a boot's worth of seconds later.
    let clock: u64 = clock.trim().parse().unwrap_or_else(|_| panic!("date printed {clock:?}"));
    assert!((HOST_TIME..HOST_TIME + BOOT.as_secs()).contains(&clock), "clock {clock}, host_time {HOST_TIME}");

    // A signal to PID 1 is forwarded to the workload; the agent's signal action reaches it too.
    c.exec(&ExecRequest::new(["/bin/kill", "-HUP", "1"]), None).unwrap();
    g.vm.wait_for("@@ got HUP", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    c.control(&ControlRequest::Signal { signum: 1 }).expect("the agent's signal action (SIGHUP to the recorded pid)");
    wait_for_count(&g.vm, "@@ got HUP", 2, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));

    // SIGTERM to PID 1: TERM forwarded, the workload exits, clean power-off.
    let _ = c.exec(&ExecRequest::new(["/bin/kill", "-TERM", "1"]), None);
    let st = g.vm.wait_exit(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    let console = g.vm.console_text();
    assert!(console.contains("@@ got TERM"), "TERM not forwarded:\n{console}");
    assert!(console.contains("init-oci: exit status 0"), "no orderly power-off:\n{console}");
    assert!(st.success(), "qemu status {st:?}");
    assert_no_panic(&g);
}

/// Boots a config that must fail; returns the console after QEMU exited by itself.
fn expect_failure(opts: OciOptions, error: &str, status: u8) {
    let mut g = OciGuest::boot(&opts).expect("boot");
    let st = g.vm.wait_exit(BOOT).unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let console = g.vm.console_text();
    let errors: Vec<&str> = console.lines().filter(|l| l.contains("init-oci: error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{console}");
    assert!(errors[0].contains(error), "error line {:?} lacks {error:?}:\n{console}", errors[0]);
    assert!(console.contains(&format!("init-oci: exit status {status}")), "status {status} missing:\n{console}");
    assert!(st.success(), "qemu status {st:?}");
    assert_no_panic(&g);
}

#[test]
#[ignore = "needs qemu-system-x86_64, mksquashfs (scripts/test.sh runs it)"]
fn invalid_json_prints_its_error_and_powers_off() {
    require_tools(&["qemu-system-x86_64", "mksquashfs"]);
    let opts = OciOptions {
        config: Some(r#"{"config": {"Cmd": ["/bin/true"],}"#.into()),
        vsock: false,
        ..OciOptions::default()
    };
    expect_failure(opts, "init-oci: error: /.supermachine/config.json: invalid JSON", 30);
}

#[test]
#[ignore = "needs qemu-system-x86_64, mksquashfs (scripts/test.sh runs it)"]
fn missing_entrypoint_prints_its_error_and_powers_off() {
    require_tools(&["qemu-system-x86_64", "mksquashfs"]);
    let opts = OciOptions {
        config: Some(r#"{"config": {"Env": ["A=1"], "Entrypoint": null}}"#.into()),
        vsock: false,
        ..OciOptions::default()
    };
    expect_failure(opts, "no entrypoint", 31);
}

#[test]
#[ignore = "needs qemu-system-x86_64, mksquashfs (scripts/test.sh runs it)"]
fn entrypoint_not_in_image_and_no_rootfs_power_off_with_their_status() {
    require_tools(&["qemu-system-x86_64", "mksquashfs"]);
    let opts = OciOptions {
        config: Some(r#"{"Cmd": ["/usr/bin/missing-server"]}"#.into()),
        vsock: false,
        ..OciOptions::default()
    };
    expect_failure(opts, "\"/usr/bin/missing-server\" not found", 32);
    let opts = OciOptions { image: false, vsock: false, ..OciOptions::default() };
    expect_failure(opts, "no image rootfs", 20);
}

/// No config file: the cmdline alone says what to run (`sm.cmd`, `sm.env`, `sm.workdir`,
/// `sm.user`), no agent (`sm.agent=none`), and `sm.on_exit=poweroff` ends the VM when it exits.
#[test]
#[ignore = "needs qemu-system-x86_64, mksquashfs (scripts/test.sh runs it)"]
fn cmdline_overrides_without_config_file() {
    require_tools(&["qemu-system-x86_64", "mksquashfs"]);
    let script = ImageFile {
        path: "/bin/report".into(),
        mode: 0o755,
        data: b"#!/bin/sh\necho \"@@ report x=$X uid=$(id -u) gid=$(id -g) pwd=$(pwd) args=$*\"\n".to_vec(),
    };
    let opts = OciOptions {
        config: None, vsock: false, agent: false, files: vec![script],
        extra_cmdline: r#"sm.cmd="report one two" sm.env=X=cmdline sm.workdir=/tmp sm.user=65534:65534 sm.agent=none sm.on_exit=poweroff"#.into(),
        ..OciOptions::default()
    };
    let mut g = OciGuest::boot(&opts).expect("boot");
    let st = g.vm.wait_exit(BOOT).unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let console = g.vm.console_text();
    assert!(console.contains("@@ report x=cmdline uid=65534 gid=65534 pwd=/tmp args=one two"), "{console}");
    assert!(console.contains("init-oci: exit status 0"), "{console}");
    assert!(st.success(), "qemu status {st:?}");
    assert_no_panic(&g);
}

/// The published supermachine runtime's contract (0.7.108 on HVF): no config.json argv, the
/// workload comes from the files it writes into the image's top "delta" layer
/// (`/.supermachine-cmd`, `-workdir`, `-user`, `-hostname`), the agent is `/supermachine-agent`
/// in that layer, and the env comes from the host's env service on vsock port 1026.
#[test]
#[ignore = "needs qemu-system-x86_64, mksquashfs, vhost-device-vsock (scripts/test.sh runs it)"]
fn runtime_delta_layer_files_and_env_service() {
    require_tools(&["qemu-system-x86_64", "mksquashfs", "vhost-device-vsock"]);
    let workload = "#!/bin/sh\ntrap 'exit 0' TERM\n\
        echo \"@@ delta uid=$(id -u) gid=$(id -g) pwd=$(pwd) host=$(hostname) greeting=$GREETING token=$TOKEN path=$PATH n=$# args=$*\"\n\
        echo @@ ready\nwhile true; do sleep 1 & wait $!; done\n";
    let mut files = users();
    files.push(ImageFile { path: "/bin/delta-workload".into(), data: workload.into(), mode: 0o755 });
    // The workdir exists in the image (the runtime's init does not create a missing one).
    files.push(ImageFile::new("/srv/delta/.keep", ""));
    let delta = vec![
        ImageFile::new("/.supermachine-cmd", "/bin/delta-workload\nfirst arg\nsecond\n"),
        ImageFile::new("/.supermachine-workdir", "/srv/delta\n"),
        ImageFile::new("/.supermachine-user", "app\n"),
        ImageFile::new("/.supermachine-hostname", "deltabox\n"),
    ];
    let env = r#"{"env":{"PATH":"/bin:/usr/bin","GREETING":"from the env service","SUPERMACHINE_GUEST_STDIO":"console"},"secrets":{"TOKEN":"s3cret"}}"#;
    let opts = OciOptions {
        config: Some(config()),
        files,
        agent: false,
        delta: Some(delta),
        delta_agent: true,
        env_json: Some(env.into()),
        extra_cmdline: "tsi_hijack".into(),
        ..OciOptions::default()
    };
    let g = OciGuest::boot(&opts).expect("boot");
    g.vm.wait_for("@@ ready", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let console = g.vm.console_text();
    assert!(console.contains("@@ delta uid=1000 gid=1000 pwd=/srv/delta host=deltabox greeting=from the env service token=s3cret path=/bin:/usr/bin n=2 args=first arg second"),
            "delta-layer process wrong:\n{console}");
    for m in ["[SUPERMACHINE-INIT] heartbeat counter=1", "init-oci: workload-pre-exec"] {
        assert!(console.contains(m), "marker {m:?} missing:\n{console}");
    }
    let c = g.wait_agent(BOOT).unwrap_or_else(|e| panic!("{e}"));
    let out = c
        .exec(
            &ExecRequest::new([
                "/bin/sh",
                "-c",
                "cat /proc/$PPID/comm; cat /etc/resolv.conf; ls /run/supermachine-agent-ready",
            ]),
            None,
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(text, "supermachine-ag\nnameserver 1.1.1.1\noptions timeout:2 attempts:2 no-aaaa single-request\n/run/supermachine-agent-ready\n",
               "agent not /supermachine-agent, or not the runtime's resolv.conf: {text}");
    // The workload ends: PID 1 parks (the runtime's marker), the VM stays up.
    // Every exec inherits the workload's environment, secrets included, as on the runtime.
    let out = c.exec(&ExecRequest::new(["/bin/sh", "-c", "echo $GREETING/$TOKEN"]), None).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the env service/s3cret\n");
    c.control(&ControlRequest::Signal { signum: 15 }).expect("signal");
    g.vm.wait_for("init-oci: parking PID 1 (exit=0)", Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.exec(&ExecRequest::new(["/bin/true"]), None).unwrap().status.success());
    assert_no_panic(&g);
}
