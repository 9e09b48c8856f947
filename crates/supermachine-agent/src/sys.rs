//! Thin wrappers over the libc calls only the agent needs; the PID-1 building blocks it shares
//! with init-oci (spawn, mounts, poweroff, PATH lookup) are in `supermachine-guest-sys`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

pub use supermachine_guest_sys::spawn::pipe;
pub use supermachine_guest_sys::stdio::{sigset, write_all};
pub use supermachine_guest_sys::{cstring, cvt, cvt_intr, errno};

/// Takes ownership of an fd a syscall just returned (`cvt` checked it is not -1).
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass an fd the kernel just created for us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sets errno to 0, for calls (readdir) that report errors only through it.
pub fn clear_errno() {
    // SAFETY: __errno_location takes no arguments and never fails.
    let slot = unsafe { libc::__errno_location() };
    // SAFETY: `slot` is this thread's errno, valid and aligned for the thread's life.
    unsafe { *slot = 0 };
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no pointer argument.
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let nf = if on { fl | libc::O_NONBLOCK } else { fl & !libc::O_NONBLOCK };
    // SAFETY: F_SETFL takes an int argument.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, nf) })?;
    Ok(())
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into `buf`.
    let n = cvt_intr(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(n as usize)
}

/// Polls one fd; returns revents (0 on timeout).
pub fn poll1(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: `p` is one valid pollfd, alive across the call.
    let n = cvt_intr(|| unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(if n == 0 { 0 } else { p.revents })
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` holds `fds.len()` valid pollfds.
    Ok(cvt_intr(|| unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) })? as usize)
}

pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }).map(owned)
}

pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of `one`.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

// ---------------------------------------------------------------------------------------------
// pseudo-terminals

const TIOCSPTLCK: libc::c_ulong = 0x4004_5431;
const TIOCGPTN: libc::c_ulong = 0x8004_5430;
const TIOCGPTPEER: libc::c_ulong = 0x5441;

pub fn set_winsize(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize, alive across the call.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// Opens a pty master (unlocked, with the given size).
pub fn open_pty_master(cols: u16, rows: u16) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: the path is a NUL-terminated literal.
    let master = cvt(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) }).map(owned)?;
    let zero: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int, alive across the call.
    cvt(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&master), TIOCSPTLCK as _, &zero) })?;
    set_winsize(std::os::fd::AsRawFd::as_raw_fd(&master), cols, rows)?;
    Ok(master)
}

/// Opens a new fd on the slave side of `master`.
pub fn open_pty_slave(master: RawFd) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags as an int, no pointer.
    if let Ok(fd) = cvt(unsafe { libc::ioctl(master, TIOCGPTPEER as _, flags) }) {
        return Ok(owned(fd));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into `n`.
    cvt(unsafe { libc::ioctl(master, TIOCGPTN as _, &mut n) })?;
    let path = cstring(&format!("/dev/pts/{n}"))?;
    // SAFETY: `path` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::open(path.as_ptr(), flags) }).map(owned)
}

// ---------------------------------------------------------------------------------------------
// processes

/// Finds `cmd` on `path` like execvp does (returns `cmd` itself when it contains a slash: the
/// exec then reports what is wrong with it).
pub fn resolve_command(cmd: &str, path: &str) -> Option<String> {
    if cmd.contains('/') {
        return Some(cmd.to_string());
    }
    supermachine_guest_sys::path::find_program(cmd, path, supermachine_guest_sys::path::is_executable_file)
}

pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes no pointers.
    cvt(unsafe { libc::kill(pid, sig) }).map(|_| ())
}

/// Signals the process group of `pid` (the exec runs in its own session), falling back to the
/// process itself.
pub fn kill_group(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    kill(-pid, sig).or_else(|_| kill(pid, sig))
}

pub fn getpid() -> libc::pid_t {
    std::process::id() as libc::pid_t
}

// ---------------------------------------------------------------------------------------------
// fds

pub fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: shutdown takes no pointers.
    cvt(unsafe { libc::shutdown(fd, how) }).map(|_| ())
}

pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes an int argument (the lowest acceptable fd).
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) }).map(owned)
}

/// Points `fd` at /dev/null (closing what it was), or just closes it when /dev/null cannot be
/// opened.
pub fn replace_with_dev_null(fd: RawFd) {
    // SAFETY: the path is a NUL-terminated literal.
    match cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) }).map(owned) {
        // SAFETY: dup2 takes no pointers; it closes the old `fd` atomically.
        Ok(null) => unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) },
        // SAFETY: `fd` is not owned by any Rust object (a standard stream), so no double close.
        Err(_) => unsafe { libc::close(fd) },
    };
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if need be), so that no pipe end gets one of
/// those numbers.
pub fn ensure_std_fds() {
    if supermachine_guest_sys::stdio::fill_std_fds(c"/dev/null") == 0 {
        return;
    }
    // No /dev/null yet (PID 1 before mounting /dev): park pipes there (kept open for the agent's
    // life on purpose).
    for fd in 0..3 {
        // SAFETY: F_GETFD takes no argument; it only tells whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            let mut p = [0; 2];
            // SAFETY: pipe writes two fds into the 2-element array.
            unsafe { libc::pipe(p.as_mut_ptr()) };
        }
    }
}
