//! What only PID 1 does: mount the API filesystems, bring up loopback, turn SIGTERM into an
//! orderly poweroff, and never exit (a PID 1 exit panics the kernel).

use crate::context::log;
use std::os::unix::fs::MetadataExt;
use supermachine_guest_sys::mounts::{self, MountSpec, API_MOUNTS, RUN_MOUNT};
use supermachine_guest_sys::{net, power};

/// Signals that power the VM off (SIGHUP is only swallowed).
const STOP_SIGNALS: [libc::c_int; 5] = [libc::SIGTERM, libc::SIGINT, libc::SIGPWR, libc::SIGUSR2, libc::SIGHUP];

/// True when `path` is a mount point (its device differs from its parent's).
fn is_mountpoint(path: &str) -> bool {
    let parent = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() == b.ino(),
        _ => false,
    }
}

fn mount_api(m: &MountSpec) {
    // A tmpfs over a folder that already has entries would hide them: the launch script
    // writes /run/supermachine-workload.pid before exec'ing us, on a writable overlay.
    let populated = m.fstype == "tmpfs" && std::fs::read_dir(m.target).map(|mut d| d.next().is_some()).unwrap_or(false);
    if populated || is_mountpoint(m.target) {
        return;
    }
    let _ = std::fs::create_dir_all(m.target);
    if let Err(e) = m.mount() {
        log(&format!("mount {} on {}: {e}", m.fstype, m.target));
    }
}

pub fn init() {
    std::panic::set_hook(Box::new(|info| {
        log(&format!("panic: {info}"));
        poweroff("panic");
    }));
    for m in API_MOUNTS.iter().chain([&RUN_MOUNT]) {
        mount_api(m);
    }
    mounts::create_dev_symlinks();
    crate::sys::ensure_std_fds();
    if let Err(e) = net::loopback_up() {
        log(&format!("cannot bring up lo: {e}"));
    }
    power::disable_ctrl_alt_del();
    // SIGTERM/SIGINT/SIGPWR/SIGUSR2 → poweroff, handled by a thread with sigwait. Blocked here,
    // before any other thread exists, so every thread inherits the mask (children get an empty
    // mask in guest_sys::spawn).
    let set = crate::sys::sigset(&STOP_SIGNALS);
    // SAFETY: reads `set`; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let _ = std::thread::Builder::new().name("signals".into()).stack_size(64 * 1024).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: reads `set` and writes the signal number into `sig`, both alive across the call.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 && sig != libc::SIGHUP {
            poweroff(&format!("signal {sig}"));
        }
    });
}

/// Orderly poweroff: TERM everyone, wait up to [`POWEROFF_GRACE`](crate::limits::POWEROFF_GRACE),
/// KILL the rest, sync, power off. Never returns.
pub fn poweroff(why: &str) -> ! {
    log(&format!("powering off ({why})"));
    power::stop_all_processes(crate::limits::POWEROFF_GRACE);
    power::power_off()
}
