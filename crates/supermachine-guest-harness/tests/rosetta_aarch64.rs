//! Issue 26, the Rosetta path without macOS: init-oci in the runtime's mode on
//! `qemu-system-aarch64 -M virt` (TCG), a virtio-fs share with tag `rosetta` named by the delta
//! layer's `/.supermachine-virtiofs-binds` (as the runtime bakes it), served by QEMU's
//! `virtiofsd`. The share holds a stand-in for Apple's translator: Debian's arm64
//! `qemu-x86_64-static` as `rosetta` (it reads the binary from `AT_EXECFD`, as binfmt_misc's `O`
//! flag hands it) and a script as `rosettad`. A real x86-64 static program (our x86_64 busybox)
//! then runs in the arm64 guest through binfmt_misc. `scripts/rosetta-test.sh` fetches the
//! stand-in and runs this test.

use std::path::PathBuf;
use std::time::Duration;
use supermachine_agent_client::proto::ExecRequest;
use supermachine_guest_harness::oci::{ImageFile, OciGuest, OciOptions};
use supermachine_guest_harness::{payloads, require_tools};

/// The arm64 `qemu-x86_64-static` to stand in for `/run/rosetta/rosetta`.
const STANDIN_VAR: &str = "ROSETTA_STANDIN";

#[test]
#[ignore = "needs root, /usr/lib/qemu/virtiofsd, qemu-system-aarch64, mksquashfs, vhost-device-vsock and ROSETTA_STANDIN (scripts/rosetta-test.sh runs it)"]
fn aarch64_rosetta_runs_an_amd64_program() {
    require_tools(&[
        "qemu-system-aarch64",
        "mksquashfs",
        "vhost-device-vsock",
        supermachine_guest_harness::virtiofs::VIRTIOFSD,
    ]);
    let standin = std::env::var_os(STANDIN_VAR).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{STANDIN_VAR} is not set: run scripts/rosetta-test.sh, which fetches Debian's arm64 qemu-x86_64-static")
    });
    let share = tempfile::tempdir().unwrap();
    std::fs::copy(&standin, share.path().join("rosetta")).unwrap_or_else(|e| panic!("{}: {e}", standin.display()));
    std::fs::write(
        share.path().join("rosettad"),
        "#!/bin/sh\necho \"@@ rosettad argv: $0 $*\" >/dev/console\nexec sleep 3600\n",
    )
    .unwrap();
    for f in ["rosetta", "rosettad"] {
        std::fs::set_permissions(share.path().join(f), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let delta = vec![
        ImageFile::new("/.supermachine-cmd", "/bin/sleep\n3600\n"),
        ImageFile::new("/.supermachine-virtiofs-binds", "rosetta\t/run/rosetta\n"),
    ];
    let amd64 = ImageFile { path: "/opt/amd64/busybox".into(), data: payloads::x86_64().busybox.to_vec(), mode: 0o755 };
    let o = OciOptions {
        files: vec![amd64],
        agent: false,
        delta: Some(delta),
        delta_agent: true,
        virtiofs: vec![("rosetta".into(), share.path().to_path_buf())],
        ..OciOptions::for_payloads(payloads::aarch64())
    };
    let g = OciGuest::boot(&o).expect("boot");
    let c = g.wait_agent(Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let console = g.vm.console_text();
    for line in [
        "mounted virtio-fs rosetta -> /run/rosetta",
        "rosettad spawned pid=",
        "rosetta warmup done",
        "Rosetta-in-VM ready",
        "@@ rosettad argv: /run/rosetta/rosettad daemon /var/cache/rosettad",
    ] {
        assert!(console.contains(line), "no {line:?} on the console:\n{console}");
    }
    let sh = |cmd: &str| {
        let o = c.exec(&ExecRequest::new(["/bin/sh", "-c", cmd]), None).unwrap();
        (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // The entry as the runtime registers it.
    let (entry, err) = sh("cat /proc/sys/fs/binfmt_misc/amd64");
    assert!(
        entry.contains("enabled\ninterpreter /run/rosetta/rosetta\nflags: OCF\noffset 0\n")
            && entry.contains("magic 7f454c4602010100000000000000000002003e00\n")
            && entry.contains("mask fffffffffffefe00fffffffffffffffffeffffff"),
        "{entry}{err}"
    );
    // A real x86-64 static program runs in the arm64 guest, through the share's interpreter.
    let (out, err) =
        sh("uname -m; /opt/amd64/busybox uname -m; /opt/amd64/busybox echo amd64-ok; echo HOME=$HOME; ls /run");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("aarch64"), "{out}{err}");
    assert_eq!(lines.next(), Some("x86_64"), "the amd64 busybox did not run translated: {out}{err}");
    assert_eq!(lines.next(), Some("amd64-ok"), "{out}{err}");
    assert_eq!(lines.next(), Some("HOME=/root"), "{out}{err}");
    let run: Vec<&str> = lines.collect();
    assert!(run.contains(&"rosetta") && run.contains(&"rosettad"), "/run: {run:?}");
    assert!(!console.contains("Kernel panic"), "{console}");
}
