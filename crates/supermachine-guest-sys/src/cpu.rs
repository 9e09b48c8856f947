//! vCPU placement and parking for the supermachine runtime's snapshots: the agent runs on CPU 0
//! (the one the host never parks) while `/dev/smpark` parks the others; the programs it starts
//! may run anywhere again.

use crate::cvt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

/// The smpark driver's device (kernel-patches/aarch64/0002-smpark).
pub const SMPARK_DEVICE: &str = "/dev/smpark";
/// `_IO('M', 1)`: park every CPU but 0.
const SMPARK_PARK: libc::c_ulong = 0x4d01;
/// `_IO('M', 2)`: release them.
const SMPARK_UNPARK: libc::c_ulong = 0x4d02;

/// Parks (`true`) or releases (`false`) the secondary CPUs through `/dev/smpark`.
pub fn smpark(park: bool) -> io::Result<()> {
    let dev = OpenOptions::new().read(true).open(SMPARK_DEVICE)?;
    let request = if park { SMPARK_PARK } else { SMPARK_UNPARK };
    // SAFETY: these two requests take no argument; the fd is open for the whole call.
    cvt(unsafe { libc::ioctl(dev.as_raw_fd(), request as _, 0) })?;
    Ok(())
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: `set` is a whole cpu_set_t and the size passed is its size; pid 0 is this thread.
    cvt(unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) })?;
    Ok(())
}

/// Keeps the calling thread, and the threads it creates from now on, on CPU 0.
pub fn pin_to_cpu0() -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU 0 lies inside the set (CPU_SETSIZE bits).
    unsafe { libc::CPU_SET(0, &mut set) };
    set_affinity(&set)
}

/// Lets the calling thread run on every CPU again (a child of a pinned agent, before exec).
/// Only a system call: safe between fork and exec.
pub fn allow_all_cpus() {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in 0..libc::CPU_SETSIZE as usize {
        // SAFETY: every cpu below CPU_SETSIZE lies inside the set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // The kernel keeps the CPUs that exist; failing leaves the inherited set, which still works.
    let _ = set_affinity(&set);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_then_release_in_a_thread() {
        std::thread::spawn(|| {
            pin_to_cpu0().unwrap();
            // SAFETY: sched_getcpu takes no arguments.
            assert_eq!(unsafe { libc::sched_getcpu() }, 0);
            allow_all_cpus();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn smpark_without_the_device_is_an_error() {
        if !std::path::Path::new(SMPARK_DEVICE).exists() {
            assert_eq!(smpark(true).unwrap_err().kind(), io::ErrorKind::NotFound);
        }
    }
}
