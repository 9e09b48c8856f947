//! Issue 6 on aarch64: init-oci as PID 1 under `qemu-system-aarch64 -M virt` (TCG). A squashfs
//! image with a JSON config boots, the entrypoint's output reaches the console, the agent runs
//! a command over vsock; the runtime's delta-layer files work too; a bad config prints its
//! error line and powers off (QEMU exits, no kernel panic).

use std::time::Duration;
use supermachine_agent_client::proto::ExecRequest;
use supermachine_guest_harness::oci::{ImageFile, OciGuest, OciOptions};
use supermachine_guest_harness::{payloads, require_tools};

const BOOT: Duration = Duration::from_secs(300);

fn opts() -> OciOptions {
    OciOptions::for_payloads(payloads::aarch64())
}

fn assert_no_panic(g: &OciGuest) {
    let console = g.vm.console_text();
    assert!(!console.contains("Kernel panic"), "kernel panic:\n{console}");
    assert!(!console.contains("Attempted to kill init"), "PID 1 exited:\n{console}");
}

const WORKLOAD: &str =
    "#!/bin/sh\necho \"@@ hello arch=$(uname -m) uid=$(id -u) pwd=$(pwd) greeting=$GREETING args=$*\"\n\
    while true; do sleep 1 & wait $!; done\n";

fn workload() -> ImageFile {
    ImageFile { path: "/bin/workload".into(), data: WORKLOAD.into(), mode: 0o755 }
}

#[test]
#[ignore = "needs qemu-system-aarch64, mksquashfs, vhost-device-vsock (scripts/test.sh runs it)"]
fn aarch64_entrypoint_output_and_agent_exec() {
    require_tools(&["qemu-system-aarch64", "mksquashfs", "vhost-device-vsock"]);
    let config = r#"{"config":{"Entrypoint":["/bin/workload"],"Cmd":["a","b"],"Env":["GREETING=hi arm"],"WorkingDir":"/srv","User":"65534:65534"}}"#;
    let o = OciOptions { config: Some(config.into()), files: vec![workload()], ..opts() };
    let mut g = OciGuest::boot(&o).expect("boot");
    g.vm.wait_for("@@ hello", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let console = g.vm.console_text();
    assert!(console.contains("@@ hello arch=aarch64 uid=65534 pwd=/srv greeting=hi arm args=a b"), "{console}");
    // The smpark announcement the runtime's serial scanner takes the state page's address from.
    let gpa = console.lines().find_map(|l| l.split("[SUPERMACHINE-SMPARK] state_gpa=0x").nth(1));
    assert!(
        gpa.is_some_and(|h| !h.trim().is_empty() && u64::from_str_radix(h.trim(), 16).is_ok()),
        "no smpark announcement: {console}"
    );
    let c = g.wait_agent(BOOT).unwrap_or_else(|e| panic!("{e}"));
    let out = c.exec(&ExecRequest::new(["/bin/sh", "-c", "uname -m; cat /proc/1/comm; id -u"]), None).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "aarch64\ninit\n0\n");
    // SIGTERM to PID 1: clean power-off, QEMU exits.
    let _ = c.exec(&ExecRequest::new(["/bin/kill", "-TERM", "1"]), None);
    let st = g.vm.wait_exit(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    assert!(g.vm.console_text().contains("init-oci: exit status 0"));
    assert!(st.success(), "qemu status {st:?}");
    assert_no_panic(&g);
}

/// The published runtime's layout on HVF: argv/workdir from the delta layer, the agent at
/// `/supermachine-agent`, env from vsock port 1026, the runtime's console markers.
#[test]
#[ignore = "needs qemu-system-aarch64, mksquashfs, vhost-device-vsock (scripts/test.sh runs it)"]
fn aarch64_runtime_delta_layer() {
    require_tools(&["qemu-system-aarch64", "mksquashfs", "vhost-device-vsock"]);
    let delta = vec![
        ImageFile::new("/.supermachine-cmd", "/bin/workload\nfrom-delta\n"),
        ImageFile::new("/.supermachine-workdir", "/work\n"),
    ];
    let env = r#"{"env":{"GREETING":"served","SUPERMACHINE_GUEST_STDIO":"1"},"secrets":{}}"#;
    let o = OciOptions {
        files: vec![workload(), ImageFile::new("/work/.keep", "")],
        agent: false,
        delta: Some(delta),
        delta_agent: true,
        env_json: Some(env.into()),
        ..opts()
    };
    let g = OciGuest::boot(&o).expect("boot");
    g.vm.wait_for("@@ hello", BOOT).unwrap_or_else(|e| panic!("{e}"));
    let console = g.vm.console_text();
    assert!(console.contains("@@ hello arch=aarch64 uid=0 pwd=/work greeting=served args=from-delta"), "{console}");
    assert!(console.contains("[SUPERMACHINE-INIT] heartbeat counter=1"), "{console}");
    let c = g.wait_agent(BOOT).unwrap_or_else(|e| panic!("{e}"));
    let out = c.exec(&ExecRequest::new(["/bin/sh", "-c", "cat /proc/$PPID/comm"]), None).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "supermachine-ag\n");
    // Execs see the workload's environment (the served env), and /tmp and /run are tmpfs 1777
    // whatever the delta layer's directories say (issue 26, items 1 and 2).
    let out = c
        .exec(
            &ExecRequest::new([
                "/bin/sh",
                "-c",
                "echo $GREETING; stat -c '%a %U' /tmp /run; grep -c ' /tmp tmpfs ' /proc/mounts",
            ]),
            None,
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "served\n1777 root\n1777 root\n1\n");
    // What else the runtime's init mounts and makes (issue 26, item 7).
    let out = c.exec(&ExecRequest::new(["/bin/sh", "-c", "grep -c ' /sys/fs/cgroup cgroup2 ' /proc/mounts; grep ' /dev/shm ' /proc/mounts | grep -c size=65536k; stat -c %a /tmp/.X11-unix /run/dbus"]), None).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n1\n1777\n755\n");
    // The runtime attaches the image first and the delta after it: vda is the (larger) image
    // layer, vdb the delta (the harness reverses `virt`'s slot order to match).
    let out = c
        .exec(
            &ExecRequest::new([
                "/bin/sh",
                "-c",
                "test $(cat /sys/block/vda/size) -gt $(cat /sys/block/vdb/size) && echo image-is-vda",
            ]),
            None,
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "image-is-vda\n");
    // The runtime's smnet0 for glibc's AI_ADDRCONFIG (issue 26, item 4).
    let out = c.exec(&ExecRequest::new(["/bin/busybox", "ip", "-4", "-o", "addr", "show", "smnet0"]), None).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("inet 198.18.0.1/30") && text.contains("scope link"),
        "smnet0: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_panic(&g);
}

#[test]
#[ignore = "needs qemu-system-aarch64, mksquashfs (scripts/test.sh runs it)"]
fn aarch64_bad_config_powers_off() {
    require_tools(&["qemu-system-aarch64", "mksquashfs"]);
    let o = OciOptions { config: Some(r#"{"config": {"Cmd": ["/bin/true"],}"#.into()), vsock: false, ..opts() };
    let mut g = OciGuest::boot(&o).expect("boot");
    let st = g.vm.wait_exit(BOOT).unwrap_or_else(|e| panic!("QEMU did not power off: {e}"));
    let console = g.vm.console_text();
    let errors: Vec<&str> = console.lines().filter(|l| l.contains("init-oci: error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line:\n{console}");
    assert!(errors[0].contains("/.supermachine/config.json: invalid JSON"), "{console}");
    assert!(console.contains("init-oci: exit status 30"), "{console}");
    assert!(st.success(), "qemu status {st:?}");
    assert_no_panic(&g);
}

/// In the runtime's mode a workload that cannot start ends as the runtime's init ends it (126 for
/// an unknown user, 127 for a missing program) and the VM stays up with a working agent; execs
/// carry `SUPERMACHINE_KCACHE_DONE=1`; SIGTERM to PID 1 is forwarded, not a power-off (issue 26,
/// item 6).
#[test]
#[ignore = "needs qemu-system-aarch64, mksquashfs, vhost-device-vsock (scripts/test.sh runs it)"]
fn aarch64_runtime_mode_keeps_the_vm_usable() {
    require_tools(&["qemu-system-aarch64", "mksquashfs", "vhost-device-vsock"]);
    let cases = [
        ("/bin/no-such-program\n", None, "parking PID 1 (exit=127)"),
        ("/bin/sleep\n3600\n", Some("nobody-here"), "parking PID 1 (exit=126)"),
        ("/bin/sleep\n3600\n", None, ""),
    ];
    for (cmd, user, parked) in cases {
        // A workdir the image lacks: logged, the workload runs in `/` (the runtime's rule).
        let mut delta =
            vec![ImageFile::new("/.supermachine-cmd", cmd), ImageFile::new("/.supermachine-workdir", "/missing\n")];
        if let Some(u) = user {
            delta.push(ImageFile::new("/.supermachine-user", u));
        }
        let o = OciOptions { agent: false, delta: Some(delta), delta_agent: true, ..opts() };
        let mut g = OciGuest::boot(&o).expect("boot");
        let c = g.wait_agent(BOOT).unwrap_or_else(|e| panic!("{e}"));
        if !parked.is_empty() {
            g.vm.wait_for(parked, BOOT).unwrap_or_else(|e| panic!("{cmd:?} {user:?}: {e}"));
        }
        let out = c.exec(&ExecRequest::new(["/bin/sh", "-c", "echo $SUPERMACHINE_KCACHE_DONE"]), None).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "{cmd:?} {user:?}");
        if parked.is_empty() {
            // SIGTERM to PID 1 reaches the workload (sleep dies of it) and the VM stays up.
            let _ = c.exec(&ExecRequest::new(["/bin/kill", "-TERM", "1"]), None);
            g.vm.wait_for("parking PID 1 (exit=143)", BOOT).unwrap_or_else(|e| panic!("{e}"));
            let out = c.exec(&ExecRequest::new(["/bin/true"]), None).unwrap();
            assert!(out.status.success() && !g.vm.has_exited(), "the VM went down after SIGTERM to PID 1");
        }
        let console = g.vm.console_text();
        assert!(
            console.contains("init-oci: chdir(/missing): not a directory in the image; the workload runs in /"),
            "{console}"
        );
        assert!(!console.contains("exit status"), "init-oci powered off:\n{console}");
        assert_no_panic(&g);
        let _ = g.vm.wait_exit(Duration::from_millis(1));
    }
}
