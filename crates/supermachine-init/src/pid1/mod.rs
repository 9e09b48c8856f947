//! The PID-1 half of init-oci, one job per module: `mounts` (API file systems, volumes, switch
//! root), `layers` (finding and stacking the image layers), `spawn` (starting the agent and the
//! entrypoint), `supervise` (signals, reaping, restarts, power-off), `runtime_io` (what the
//! supermachine runtime exchanges with us: clock, pause points, served env, network files),
//! `rosetta` (linux/amd64 images on Apple Silicon) and
//! `boot` (the order of it all).

/// `log!("fmt", args...)`: one `init-oci: ...` line on the console (the arguments are formatted
/// once, into the line itself).
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::pid1::log_line(format_args!($($arg)*))
    };
}

pub mod boot;
pub mod layers;
pub mod mounts;
pub mod rosetta;
pub mod runtime_io;
pub mod spawn;
pub mod supervise;

use std::ffi::CString;
use std::time::{Duration, Instant};
use supermachine_guest_sys::power;
use supermachine_init::{Fatal, Status};

/// Where the image root is assembled before the switch.
pub const NEWROOT: &str = "/newroot";

/// `p` (absolute, inside the image) as a path under [`NEWROOT`], before the switch.
pub fn in_root(p: &str) -> String {
    format!("{NEWROOT}{p}")
}

/// Writes one `init-oci: ...` line to stderr (the console); see [`log!`].
#[inline(never)]
pub fn log_line(args: std::fmt::Arguments) {
    write_stderr(format!("init-oci: {args}\n").as_bytes());
}

/// Writes all of `bytes` to fd 2 without std's stderr lock (safe in a panic hook); a console
/// that fails is not reported anywhere.
pub fn write_stderr(bytes: &[u8]) {
    let _ = supermachine_guest_sys::stdio::write_all(2, bytes);
}

/// A C string of a path we built or a string the config parser checked for NUL bytes
/// (`Process::resolve` refuses them), so the conversion cannot fail; a NUL would be a bug.
#[inline(never)] // called at many sites; one copy of the panic path
pub fn cstr(s: &str) -> CString {
    supermachine_guest_sys::cstring(s).expect("strings reaching exec were checked for NUL bytes")
}

/// Prints the error and its exit status, then powers off.
pub fn fail(f: Fatal) -> ! {
    log!("error: {}", f.msg);
    shutdown(f.status)
}

/// Ends the VM: TERM everyone, up to 1 s for them to go, KILL the rest, sync, print the exit
/// status, power off.
pub fn shutdown(status: Status) -> ! {
    power::stop_all_processes(Duration::from_secs(1));
    log!("exit status {}", status.code());
    power::power_off()
}

/// Waits up to 2 s for `cond` (devices can still be probing when init starts).
pub fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() > Duration::from_secs(2) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
