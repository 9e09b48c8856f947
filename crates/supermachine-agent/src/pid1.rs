//! What only PID 1 does: mount the API filesystems, bring up loopback, turn SIGTERM into an
//! orderly poweroff, and never exit (a PID 1 exit panics the kernel).

use crate::{log, sys};
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

struct MountSpec {
    target: &'static str,
    fstype: &'static str,
    flags: libc::c_ulong,
    data: &'static str,
}

const MOUNTS: &[MountSpec] = &[
    MountSpec { target: "/proc", fstype: "proc", flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, data: "" },
    MountSpec { target: "/sys", fstype: "sysfs", flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC, data: "" },
    MountSpec { target: "/dev", fstype: "devtmpfs", flags: libc::MS_NOSUID, data: "mode=0755" },
    MountSpec { target: "/dev/pts", fstype: "devpts", flags: libc::MS_NOSUID | libc::MS_NOEXEC, data: "mode=0620,ptmxmode=0666,gid=5" },
    MountSpec { target: "/dev/shm", fstype: "tmpfs", flags: libc::MS_NOSUID | libc::MS_NODEV, data: "mode=1777" },
    MountSpec { target: "/run", fstype: "tmpfs", flags: libc::MS_NOSUID | libc::MS_NODEV, data: "mode=0755" },
];

/// True when `path` is a mount point (its device differs from its parent's).
fn is_mountpoint(path: &str) -> bool {
    let parent = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new("/"));
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev() || a.ino() == b.ino(),
        _ => false,
    }
}

pub fn init() {
    std::panic::set_hook(Box::new(|info| {
        log(&format!("panic: {info}"));
        poweroff("panic");
    }));
    for m in MOUNTS {
        // A tmpfs over a folder that already has entries would hide them: the launch script
        // writes /run/supermachine-workload.pid before exec'ing us, on a writable overlay.
        let populated = m.fstype == "tmpfs"
            && std::fs::read_dir(m.target).map(|mut d| d.next().is_some()).unwrap_or(false);
        if populated || is_mountpoint(m.target) {
            continue;
        }
        let _ = std::fs::create_dir_all(m.target);
        let (Ok(t), Ok(f), Ok(d)) = (CString::new(m.target), CString::new(m.fstype), CString::new(m.data)) else { continue };
        if let Err(e) = sys::mount(&f, &t, &f, m.flags, &d) {
            log(&format!("mount {} on {}: {e}", m.fstype, m.target));
        }
    }
    if std::fs::symlink_metadata("/dev/ptmx").is_err() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", "/dev/ptmx");
    }
    sys::ensure_std_fds();
    loopback_up();
    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reboot.
    unsafe { libc::reboot(libc::RB_DISABLE_CAD) };
    // SIGTERM/SIGINT/SIGPWR/SIGUSR2 → poweroff, handled by a thread with sigwait. Blocked here,
    // before any other thread exists, so every thread inherits the mask (children get an empty
    // mask in sys::spawn).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGPWR, libc::SIGUSR2, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let set_copy = set;
        let _ = std::thread::Builder::new().name("signals".into()).stack_size(64 * 1024).spawn(move || loop {
            let mut sig = 0;
            if libc::sigwait(&set_copy, &mut sig) == 0 && sig != libc::SIGHUP {
                poweroff(&format!("signal {sig}"));
            }
        });
    }
}

fn loopback_up() {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) == 0 {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) != 0 {
                log(&format!("cannot bring up lo: {}", std::io::Error::last_os_error()));
            }
        }
        libc::close(fd);
    }
}

/// Orderly poweroff: TERM everyone, wait up to 2 s, KILL the rest, sync, power off. Never returns.
pub fn poweroff(why: &str) -> ! {
    log(&format!("powering off ({why})"));
    unsafe {
        libc::kill(-1, libc::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if libc::kill(-1, 0) < 0 && sys::errno() == libc::ESRCH {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
        // Still here (no permission?): never exit as PID 1.
        libc::sync();
        libc::reboot(libc::RB_HALT_SYSTEM);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
