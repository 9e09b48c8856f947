//! The standard streams and raw writes both guest programs need as PID 1, where a console may
//! be missing and std's locked, buffered stderr is not wanted (e.g. in a panic hook).

use crate::cvt_intr;
use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;

/// Writes all of `buf` to `fd`, retrying on EINTR and waiting (poll) while a non-blocking fd
/// is full.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: writes at most `buf.len()` bytes from `buf`.
        match cvt_intr(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                // SAFETY: `p` is one valid pollfd, alive across the call.
                cvt_intr(|| unsafe { libc::poll(&mut p, 1, -1) })?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens every one of fds 0, 1 and 2 that is closed on `device` (not close-on-exec), so that no
/// later file or pipe lands on a standard stream's number. Returns how many could not be opened.
pub fn fill_std_fds(device: &CStr) -> usize {
    let mut missing = 0;
    for fd in 0..3 {
        // SAFETY: F_GETFD takes no argument; it only tells whether `fd` is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        // Lowest free fd first: with 0..fd-1 open, this lands on `fd` itself.
        // SAFETY: `device` is NUL-terminated and outlives the call.
        let n = unsafe { libc::open(device.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
        if n < 0 {
            missing += 1;
        } else if n != fd {
            // SAFETY: dup2 takes no pointers; the copy on `fd` is not close-on-exec.
            unsafe { libc::dup2(n, fd) };
            // SAFETY: `n` was just opened here and is owned by nothing else.
            unsafe { libc::close(n) };
        }
    }
    missing
}

/// A signal set holding `signals` (an invalid number is left out).
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain old data; sigemptyset below initialises it properly.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t to write.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: as above; an invalid number only makes the call fail.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}
