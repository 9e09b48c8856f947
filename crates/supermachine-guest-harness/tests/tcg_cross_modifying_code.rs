//! The harness's QEMU command keeps cross-modifying code coherent on SMP guests.
//!
//! Linux patches its own text while other CPUs run it (static keys, `text_poke_bp`). QEMU's
//! multi-threaded TCG can keep running a block translated from bytes another vCPU has since
//! rewritten, which showed up as "Oops: int3" panics in our SMP boots; the harness therefore runs
//! every vCPU on one thread ([`TCG_ACCEL`]). This test boots a 2-vCPU guest with the harness's
//! own command line and runs `guest-programs/cross_modify.c`, the kernel's patching protocol
//! replayed in user space: with `thread=multi` it sees thousands of stale traps within seconds
//! (QEMU 7.2); with the harness's setting it must see none.
#![cfg(target_arch = "x86_64")]

use std::process::Command;
use std::time::Duration;
use supermachine_guest_harness::{
    cpio::Archive,
    qemu::{Machine, Vm, VmConfig, TCG_ACCEL},
    require_tools, workspace_root,
};
use supermachine_kernel as guest;

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
/bin/cross_modify 6
echo "@@ exit $?"
/bin/busybox poweroff -f
"#;

/// `XMC patches=N calls=N traps_in_flight=N traps_stale=N` as (name, value) pairs.
fn fields(line: &str) -> Vec<(String, u64)> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or_else(|_| panic!("bad value {v:?} for {k} in {line:?}"))))
        .collect()
}

#[test]
#[ignore = "needs qemu-system-x86_64 and a C compiler with static libc (scripts/test.sh runs it)"]
fn smp_guest_never_runs_code_memory_no_longer_holds() {
    require_tools(&["qemu-system-x86_64", "cc"]);
    let dir = tempfile::tempdir().unwrap();
    let prog = dir.path().join("cross_modify");
    let src = workspace_root().join("crates/supermachine-guest-harness/tests/guest-programs/cross_modify.c");
    let out = Command::new("cc").args(["-O2", "-static", "-pthread", "-o"]).arg(&prog).arg(&src).output().unwrap();
    assert!(out.status.success(), "cc {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));

    let kernel = dir.path().join("bzImage");
    guest::extract_kernel_to(&kernel).unwrap();
    let mut a = Archive::new();
    a.dir("bin", 0o755)
        .file("bin/busybox", 0o755, guest::BUSYBOX_BYTES)
        .file("bin/cross_modify", 0o755, &std::fs::read(&prog).unwrap())
        .file("init", 0o755, INIT.as_bytes());
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, a.finish()).unwrap();
    let mut cfg = VmConfig::new(Machine::Microvm { acpi: true }, &kernel);
    cfg.initrd = Some(initrd);
    cfg.cpus = 2;
    cfg.append = "panic=-1".into();

    let mut vm = Vm::spawn(&cfg).unwrap();
    vm.wait_for("@@ exit", Duration::from_secs(180)).unwrap_or_else(|e| panic!("{e}"));
    vm.wait_exit(Duration::from_secs(60)).unwrap();
    let console = vm.console_text();
    let line = console
        .lines()
        .find(|l| l.starts_with("XMC "))
        .unwrap_or_else(|| panic!("no XMC line from the guest program:\n{console}"));
    let f = fields(line);
    let get =
        |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap_or_else(|| panic!("{k} missing in {line:?}"));
    // The race window was exercised: patches completed and the executor hit in-flight int3s.
    assert!(get("patches") >= 50, "too few patches to say anything: {line}");
    assert!(get("traps_in_flight") > 0, "the executor never met a patch in flight: {line}");
    assert_eq!(get("traps_stale"), 0, "with -accel {TCG_ACCEL}, a vCPU ran stale code: {line}");
}
