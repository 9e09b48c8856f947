//! Ending the VM the way PID 1 must: stop every process, sync, power off, never return (a PID 1
//! exit panics the kernel).

use crate::errno;
use std::time::{Duration, Instant};

/// Makes Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once.
pub fn disable_ctrl_alt_del() {
    // SAFETY: reboot() with a command constant takes no pointers.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
}

/// SIGTERM to every other process, up to `grace` for them to go (reaping our children as they
/// exit), SIGKILL to the rest, then sync.
pub fn stop_all_processes(grace: Duration) {
    signal_all(libc::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        // SAFETY: a null status pointer is allowed; WNOHANG never blocks.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        if signal_all(0) < 0 && errno() == libc::ESRCH {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_all(libc::SIGKILL);
    sync();
}

/// kill(-1, sig): every process but PID 1 and the caller.
fn signal_all(sig: libc::c_int) -> libc::c_int {
    // SAFETY: kill() takes no pointers.
    unsafe { libc::kill(-1, sig) }
}

fn sync() {
    // SAFETY: sync() takes no arguments.
    unsafe { libc::sync() };
}

/// Powers the machine off; halts when that is refused. Never returns, whatever happens.
pub fn power_off() -> ! {
    sync();
    // SAFETY: reboot() with a command constant takes no pointers.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
    // Still here (no permission?): try a halt, and never exit as PID 1.
    sync();
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_HALT_SYSTEM) };
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
