//! Times kernel boots under QEMU TCG: launch → first line printed by /init.
//!
//! ```text
//! boot-bench [--kernel PATH]... [--machine microvm|pc|virt] [--runs N] [--mem MIB] [--min-mem]
//!            [--busybox PATH]
//! ```
//! Several `--kernel`s are run interleaved (a, b, a, b, …) so machine noise hits all alike.
//! Without `--kernel` the embedded kernel is used. Prints one JSON object per kernel.
//! `--min-mem` bisects the lowest guest RAM (MiB) in which /init is reached. `--busybox` replaces
//! the embedded (host-arch) busybox, e.g. with an aarch64 one for `--machine virt`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;
use supermachine_guest_harness::cli::{die, Args};
use supermachine_guest_harness::{
    cpio::Archive,
    qemu::{Machine, Vm, VmConfig},
};
use supermachine_kernel as guest;

const INIT: &str = "#!/bin/busybox sh\n/bin/busybox echo '@@ init reached'\n/bin/busybox poweroff -f\n";

fn main() {
    let mut kernels: Vec<PathBuf> = Vec::new();
    let mut busybox: Option<PathBuf> = None;
    let (mut machine, mut runs, mut mem, mut min_mem) = (Machine::Microvm { acpi: true }, 5usize, 128u32, false);
    let mut args = Args::from_env();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kernel" => kernels.push(args.value(&a).into()),
            "--machine" => {
                machine = match args.value(&a).as_str() {
                    "microvm" => Machine::Microvm { acpi: true },
                    "pc" => Machine::Pc,
                    "virt" => Machine::Virt,
                    m => die(&format!("unknown machine {m}")),
                }
            }
            "--runs" => runs = args.value(&a).parse().unwrap_or_else(|_| die("--runs takes a number")),
            "--mem" => mem = args.value(&a).parse().unwrap_or_else(|_| die("--mem takes MiB")),
            "--min-mem" => min_mem = true,
            "--busybox" => busybox = Some(args.value(&a).into()),
            _ => die(&format!("unknown argument {a}")),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    if kernels.is_empty() {
        let k = dir.path().join("kernel");
        guest::extract_kernel_to(&k).unwrap();
        kernels.push(k);
    }
    let initrd = dir.path().join("initrd.cpio");
    let mut a = Archive::new();
    let busybox = match &busybox {
        Some(p) => std::fs::read(p).unwrap_or_else(|e| die(&format!("{}: {e}", p.display()))),
        None => guest::BUSYBOX_BYTES.to_vec(),
    };
    a.dir("bin", 0o755).file("bin/busybox", 0o755, &busybox).file("init", 0o755, INIT.as_bytes());
    std::fs::write(&initrd, a.finish()).unwrap();

    if min_mem {
        for k in &kernels {
            let (mut lo, mut hi) = (8u32, 512u32); // lo fails (assumed), hi boots (checked)
            if boot_once(machine, k, &initrd, hi).is_none() {
                println!("{{\"kernel\":{:?},\"min_mem_mib\":null}}", k.display().to_string());
                continue;
            }
            while hi - lo > 1 {
                let mid = (lo + hi) / 2;
                if boot_once(machine, k, &initrd, mid).is_some() {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            println!("{{\"kernel\":{:?},\"min_mem_mib\":{hi}}}", k.display().to_string());
        }
        return;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kernels.len()];
    for _ in 0..runs {
        for (i, k) in kernels.iter().enumerate() {
            match boot_once(machine, k, &initrd, mem) {
                Some(t) => times[i].push(t.as_secs_f64() * 1000.0),
                None => eprintln!("boot of {} failed", k.display()),
            }
        }
    }
    for (k, mut t) in kernels.iter().zip(times) {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let (min, med) = if t.is_empty() { (f64::NAN, f64::NAN) } else { (t[0], t[t.len() / 2]) };
        println!(
            "{{\"kernel\":{:?},\"runs\":{},\"init_ms_min\":{min:.0},\"init_ms_median\":{med:.0}}}",
            k.display().to_string(),
            t.len()
        );
    }
}

fn boot_once(machine: Machine, kernel: &Path, initrd: &Path, mem: u32) -> Option<Duration> {
    let mut cfg = VmConfig::new(machine, kernel);
    cfg.initrd = Some(initrd.to_path_buf());
    cfg.mem_mib = mem;
    cfg.append = "panic=-1 quiet".into();
    let mut vm = Vm::spawn(&cfg).ok()?;
    let t = vm.wait_for("@@ init reached", Duration::from_secs(60)).ok();
    let _ = vm.wait_exit(Duration::from_secs(10));
    t
}
