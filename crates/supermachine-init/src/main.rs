//! `init-oci`: PID 1 of a supermachine guest that boots an OCI image.
//!
//! Mounts the API file systems, overlays the squashfs image layers with a tmpfs, mounts the
//! requested volumes, switches root, then stays PID 1 and supervises two children: the agent
//! (`/.supermachine/agent`) and the image's entrypoint. docs/INIT-OCI.md has the whole story
//! and the exit-status table. The PID-1 half is in `pid1/`, one module per job; the
//! host-testable parsing is the library (`lib.rs`).
//!
//! Never exits as PID 1 (that panics the kernel): every failure prints one
//! `init-oci: error: ...` line and `init-oci: exit status N`, then powers the VM off.

#[cfg(not(target_os = "linux"))]
compile_error!("init-oci runs only on Linux");

#[macro_use]
mod pid1;

use std::io;
use supermachine_init::cmdline::Cmdline;
use supermachine_init::config::ImageConfig;
use supermachine_init::process::Process;
use supermachine_init::{Fatal, Status};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::process::id() != 1 {
        std::process::exit(host_mode(&args));
    }
    std::panic::set_hook(Box::new(|info| {
        log!("error: internal error: {}", info.to_string().replace('\n', " "));
        pid1::shutdown(Status::Internal);
    }));
    // SAFETY: umask takes no pointers and cannot fail.
    unsafe { libc::umask(0o022) };
    supermachine_guest_sys::power::disable_ctrl_alt_del();
    pid1::supervise::take_signals();
    match pid1::boot::boot() {
        Ok(sup) => sup.run(),
        Err(f) => pid1::fail(f),
    }
}

/// Outside a VM: `init-oci --version`, or `init-oci --check CONFIG.json ['CMDLINE']` to see the
/// process a config resolves to. Returns the exit code.
fn host_mode(args: &[String]) -> i32 {
    match args.get(1).map(String::as_str) {
        Some("--version") => {
            println!("init-oci {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("--check") if args.len() >= 3 => {
            let cmdline = match Cmdline::parse(args.get(3).map(String::as_str).unwrap_or("")) {
                Ok(c) => c,
                Err(e) => return report(Fatal::new(Status::BadCmdline, e)),
            };
            let image = match std::fs::read(&args[2]) {
                Ok(b) => match ImageConfig::parse(&b) {
                    Ok(c) => Some(c),
                    Err(e) => return report(Fatal::new(Status::BadConfig, format!("{}: {e}", args[2]))),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return report(Fatal::new(Status::BadConfig, format!("{}: {e}", args[2]))),
            };
            match Process::resolve(image.as_ref(), &cmdline.overrides, &args[2]) {
                Ok(p) => {
                    println!("args: {:?}\nenv: {:?}\ncwd: {}\nuser: {:?}", p.args, p.env, p.cwd, p.user);
                    0
                }
                Err(f) => report(f),
            }
        }
        _ => {
            eprintln!(
                "init-oci: error: must run as PID 1 (the guest kernel's init)\n\
                       usage: init-oci --version | init-oci --check CONFIG.json ['KERNEL CMDLINE']"
            );
            Status::Internal.code() as i32
        }
    }
}

fn report(f: Fatal) -> i32 {
    eprintln!("init-oci: error: {}\ninit-oci: exit status {}", f.msg, f.status.code());
    f.status.code() as i32
}
