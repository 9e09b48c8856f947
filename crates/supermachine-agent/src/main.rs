//! `supermachine-agent`: PID 1 in a supermachine guest. Serves protocol v5 (see the
//! `supermachine-agent-proto` crate and docs/PROTOCOL.md) on AF_VSOCK port 1028, or one session
//! on stdin/stdout with `--exec-stdio`.
//!
//! ```text
//! supermachine-agent [--port N] [--exec-stdio] [--run-dir DIR] [--sys-root DIR] [--version]
//! ```
//!
//! PID-1 duties (mounts, orphan reaping, poweroff instead of exit, SIGTERM handling) are done only
//! when the process really is PID 1. Otherwise the agent makes itself a child subreaper so that
//! orphans of its execs are still reaped by it.

#[cfg(not(target_os = "linux"))]
compile_error!("supermachine-agent runs only on Linux");

mod budget;
mod conn;
mod context;
mod control;
mod exec;
mod exec_input;
mod exec_shared;
mod file_read;
mod file_write;
mod fileio;
mod files;
mod input;
mod jsonscan;
mod limits;
mod listen;
mod pid1;
mod reaper;
mod remove;
mod session;
mod spool;
mod stage;
mod sys;
mod tmpfile;
mod upload;

use context::{fatal, log, Config};
use std::path::PathBuf;
use std::sync::Arc;

const USAGE: &str =
    "usage: supermachine-agent [--port N | --exec-stdio | --listen-unix PATH] [--run-dir DIR] [--sys-root DIR] [--version]\n";

fn main() {
    sys::ensure_std_fds();
    let pid1 = sys::getpid() == 1;
    let mut port = supermachine_agent_proto::DEFAULT_PORT;
    let mut stdio = false;
    let mut run_dir = PathBuf::from("/run");
    let mut sys_root = PathBuf::from("/");
    let mut unix: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--exec-stdio" => stdio = true,
            "--port" => match value().and_then(|v| v.parse().ok()) {
                Some(p) => port = p,
                None => bad_usage(pid1, "--port needs a number"),
            },
            "--run-dir" => match value() {
                Some(v) => run_dir = v.into(),
                None => bad_usage(pid1, "--run-dir needs a directory"),
            },
            "--sys-root" => match value() {
                Some(v) => sys_root = v.into(),
                None => bad_usage(pid1, "--sys-root needs a directory"),
            },
            // Testing aid: serve on a Unix socket instead of vsock (same accept loop).
            "--listen-unix" => match value() {
                Some(v) => unix = Some(v.into()),
                None => bad_usage(pid1, "--listen-unix needs a path"),
            },
            "--version" | "-V" => {
                println!(
                    "supermachine-agent {} (protocol {})",
                    env!("CARGO_PKG_VERSION"),
                    supermachine_agent_proto::PROTOCOL_VERSION
                );
                return;
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                return;
            }
            // As PID 1 the kernel passes unknown command-line words through: ignore them.
            other => log(&format!("ignoring unknown argument {other:?}")),
        }
    }
    context::set(Config { run_dir, sys_root, pid1 });

    // With smpark the host parks every CPU but 0 around a snapshot: the agent, and the threads
    // it starts from here on, must stay on CPU 0 to keep answering (its children run anywhere).
    if std::path::Path::new(supermachine_guest_sys::cpu::SMPARK_DEVICE).exists() {
        if let Err(e) = supermachine_guest_sys::cpu::pin_to_cpu0() {
            log(&format!("cannot pin to CPU 0 for smpark: {e}"));
        }
    }

    if pid1 {
        pid1::init();
    } else {
        // Orphans of our execs are reparented to us, not to the real init.
        // SAFETY: PR_SET_CHILD_SUBREAPER takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    reaper::init();
    upload::sweep_idle();

    if stdio {
        session::serve(Arc::new(conn::Conn::stdio()));
        if pid1 {
            pid1::poweroff("--exec-stdio session ended");
        }
        std::process::exit(0);
    }
    let err = match unix {
        Some(path) => listen::unix(&path),
        None => listen::vsock(port),
    };
    fatal(&err);
}

fn bad_usage(pid1: bool, msg: &str) {
    log(msg);
    if !pid1 {
        eprint!("{USAGE}");
        std::process::exit(2);
    }
}
