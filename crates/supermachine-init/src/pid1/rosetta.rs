//! Rosetta for linux/amd64 images, as the runtime's init sets it up (only when the runtime
//! shared the Rosetta directory, i.e. `/run/rosetta/rosetta` exists): binfmt_misc registration,
//! `rosettad`, one warm-up run. Every step logs and the boot goes on if it fails, as there.

use super::cstr;
use super::spawn::{spawn, Spawn};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use supermachine_guest_sys::mounts::mount;
use supermachine_init::rosetta::{registration, warmup_program, CACHE_DIR, DAEMON, INTERPRETER, WARMUP_PATH};

const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// How long the warm-up program may take (the first translation); then it is killed.
const WARMUP_LIMIT: Duration = Duration::from_secs(5);

/// Sets Rosetta up in the (switched) image root, when the runtime shared it.
pub fn setup() {
    if !Path::new(INTERPRETER).exists() {
        return;
    }
    if let Err(e) = register() {
        log!("rosetta: binfmt_misc: {e}");
        return;
    }
    for dir in [CACHE_DIR, "/run/rosettad"] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            log!("rosetta: mkdir {dir}: {e}");
        }
    }
    let daemon = Spawn {
        path: cstr(DAEMON),
        argv: vec![cstr(DAEMON), cstr("daemon"), cstr(CACHE_DIR)],
        envp: vec![cstr("HOME=/root"), cstr(&format!("PATH={}", supermachine_guest_sys::path::DEFAULT_PATH))],
        cwd: cstr("/"),
        ids: None,
        quiet: false,
        console_stdin: false,
    };
    match spawn(&daemon) {
        Ok(pid) => log!("rosettad spawned pid={pid} (cache={CACHE_DIR})"),
        Err(e) => log!("rosetta: cannot start {DAEMON}: {}: {}", e.step, e.err),
    }
    std::thread::sleep(Duration::from_millis(100));
    warm_up();
    log!("Rosetta-in-VM ready (binfmt_misc amd64 -> {INTERPRETER})");
}

/// binfmt_misc mounted (already mounted is fine) and the `amd64` entry registered (already
/// registered is fine).
fn register() -> std::io::Result<()> {
    match mount("binfmt_misc", BINFMT_DIR, "binfmt_misc", 0, "") {
        Err(e) if e.raw_os_error() != Some(libc::EBUSY) => return Err(e),
        _ => {}
    }
    match std::fs::write(format!("{BINFMT_DIR}/register"), registration()) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
        _ => Ok(()),
    }
}

/// Runs the 129-byte x86-64 `exit(0)` program once, so the first workload binary does not pay
/// for starting the translator; bounded by [`WARMUP_LIMIT`].
fn warm_up() {
    let write = || -> std::io::Result<()> {
        std::fs::write(WARMUP_PATH, warmup_program())?;
        std::fs::set_permissions(WARMUP_PATH, std::fs::Permissions::from_mode(0o755))
    };
    if let Err(e) = write() {
        log!("rosetta: warm-up: {WARMUP_PATH}: {e}");
        return;
    }
    let run = Spawn {
        path: cstr(WARMUP_PATH),
        argv: vec![cstr(WARMUP_PATH)],
        envp: vec![cstr("HOME=/root")],
        cwd: cstr("/"),
        ids: None,
        quiet: true,
        console_stdin: false,
    };
    match spawn(&run) {
        Ok(pid) => {
            let t = Instant::now();
            let mut status = 0;
            // SAFETY: writes the status into `status`; WNOHANG never blocks.
            while unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == 0 {
                if t.elapsed() > WARMUP_LIMIT {
                    log!("rosetta: warm-up still running after {} s; killed", WARMUP_LIMIT.as_secs());
                    // SAFETY: kill takes no pointers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    // SAFETY: a null status pointer is allowed.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    let _ = std::fs::remove_file(WARMUP_PATH);
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            log!("rosetta warmup done ({} ms, status {status:#x})", t.elapsed().as_millis());
        }
        Err(e) => log!("rosetta: warm-up: {}: {}", e.step, e.err),
    }
    let _ = std::fs::remove_file(WARMUP_PATH);
}
