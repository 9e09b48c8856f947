//! Thin wrappers over the libc calls the agent needs (no other system crates).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cvt_intr<F: FnMut() -> libc::c_int>(mut f: F) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sets errno to 0, for calls (readdir) that report errors only through it.
pub fn clear_errno() {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() = 0 };
}

/// `pipe2(O_CLOEXEC)` → (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    let fl = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let nf = if on { fl | libc::O_NONBLOCK } else { fl & !libc::O_NONBLOCK };
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, nf) })?;
    Ok(())
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let n = cvt_intr(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) as libc::c_int })?;
    Ok(n as usize)
}

/// Writes everything; blocks (polls) on a non-blocking fd.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    poll1(fd, libc::POLLOUT, -1)?;
                    continue;
                }
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Polls one fd; returns revents (0 on timeout).
pub fn poll1(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<libc::c_short> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    let n = cvt_intr(|| unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok(if n == 0 { 0 } else { p.revents })
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    Ok(cvt_intr(|| unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) })? as usize)
}

pub fn eventfd() -> io::Result<OwnedFd> {
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

// ---------------------------------------------------------------------------------------------
// pseudo-terminals

const TIOCSPTLCK: libc::c_ulong = 0x4004_5431;
const TIOCGPTN: libc::c_ulong = 0x8004_5430;
const TIOCGPTPEER: libc::c_ulong = 0x5441;

pub fn set_winsize(fd: RawFd, cols: u16, rows: u16) -> io::Result<()> {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// Opens a pty master (unlocked, with the given size).
pub fn open_pty_master(cols: u16, rows: u16) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe { libc::open(c"/dev/ptmx".as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let zero: libc::c_int = 0;
    cvt(unsafe { libc::ioctl(fd, TIOCSPTLCK as _, &zero) })?;
    set_winsize(fd, cols, rows)?;
    Ok(master)
}

/// Opens a new fd on the slave side of `master`.
pub fn open_pty_slave(master: RawFd) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    let r = unsafe { libc::ioctl(master, TIOCGPTPEER as _, flags) };
    if r >= 0 {
        return Ok(unsafe { OwnedFd::from_raw_fd(r) });
    }
    let mut n: libc::c_uint = 0;
    cvt(unsafe { libc::ioctl(master, TIOCGPTN as _, &mut n) })?;
    let path = cstring(&format!("/dev/pts/{n}"))?;
    let fd = cvt(unsafe { libc::open(path.as_ptr(), flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ---------------------------------------------------------------------------------------------
// fork + exec

pub enum ChildStdio<'a> {
    Pipes { stdin: RawFd, stdout: RawFd, stderr: RawFd },
    Tty { slave: &'a OwnedFd },
}

pub struct SpawnSpec<'a> {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: &'a [CString],
    pub cwd: Option<CString>,
    pub stdio: ChildStdio<'a>,
}

/// Why the child could not start: the failing step and errno.
#[derive(Debug)]
pub struct SpawnError {
    pub step: &'static str,
    pub err: io::Error,
}

const STEPS: [&str; 4] = ["setsid", "set up the terminal", "chdir", "exec"];

/// Forks and execs `spec` in a new session. `before_fork`/`after_fork` bracket the fork (the
/// reaper's registry lock is held across it so that the pid is registered before it can be
/// reaped). Returns the pid once the exec succeeded.
pub fn spawn(spec: &SpawnSpec, register: impl FnOnce(libc::pid_t)) -> Result<libc::pid_t, SpawnError> {
    let (rep_r, rep_w) = pipe().map_err(|err| SpawnError { step: "pipe", err })?;
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (a, b, c, tty) = match spec.stdio {
        ChildStdio::Pipes { stdin, stdout, stderr } => (stdin, stdout, stderr, false),
        ChildStdio::Tty { slave } => (slave.as_raw_fd(), slave.as_raw_fd(), slave.as_raw_fd(), true),
    };
    let cwd = spec.cwd.as_ref().map(|c| c.as_ptr());
    let path = spec.path.as_ptr();
    let rep = rep_w.as_raw_fd();

    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Child: async-signal-safe calls only.
        unsafe {
            let fail = |step: u8| -> ! {
                let e = *libc::__errno_location();
                let msg = [step, e as u8, (e >> 8) as u8, (e >> 16) as u8, (e >> 24) as u8];
                libc::write(rep, msg.as_ptr().cast(), 5);
                libc::_exit(127)
            };
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            for sig in 1..65 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if libc::setsid() < 0 {
                fail(0);
            }
            if tty && libc::ioctl(a, libc::TIOCSCTTY, 0) < 0 {
                fail(1);
            }
            // dup2 to a temporary high fd first would matter only if a/b/c were 0..2; the agent
            // keeps 0..2 occupied so pipe ends are always >= 3.
            if libc::dup2(a, 0) < 0 || libc::dup2(b, 1) < 0 || libc::dup2(c, 2) < 0 {
                fail(1);
            }
            if let Some(d) = cwd {
                if libc::chdir(d) < 0 {
                    fail(2);
                }
            }
            libc::execve(path, argv.as_ptr(), envp.as_ptr());
            fail(3);
        }
    }
    if pid < 0 {
        return Err(SpawnError { step: "fork", err: io::Error::last_os_error() });
    }
    register(pid);
    drop(rep_w);
    let mut msg = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        match read(rep_r.as_raw_fd(), &mut msg[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    if got == 5 {
        let e = i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]);
        return Err(SpawnError { step: STEPS.get(msg[0] as usize).copied().unwrap_or("exec"), err: io::Error::from_raw_os_error(e) });
    }
    Ok(pid)
}

/// Finds `cmd` on `path` like execvp does (returns `cmd` itself when it contains a slash).
pub fn resolve_command(cmd: &str, path: &str) -> Option<String> {
    if cmd.contains('/') {
        return Some(cmd.to_string());
    }
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = format!("{dir}/{cmd}");
        if let Ok(c) = CString::new(cand.as_bytes()) {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::stat(c.as_ptr(), &mut st) } == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFREG
                && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
            {
                return Some(cand);
            }
        }
    }
    None
}

pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
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

// ---------------------------------------------------------------------------------------------
// misc

pub fn getpid() -> libc::pid_t {
    unsafe { libc::getpid() }
}

pub fn mount(src: &CStr, target: &CStr, fstype: &CStr, flags: libc::c_ulong, data: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, data.as_ptr().cast()) }).map(|_| ())
}

pub fn shutdown(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    cvt(unsafe { libc::shutdown(fd, how) }).map(|_| ())
}

pub fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    let n = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Makes sure fds 0, 1 and 2 are open (on /dev/null if need be), so that no pipe end gets one of
/// those numbers.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            let n = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            if n >= 0 && n != fd {
                unsafe {
                    libc::dup2(n, fd);
                    libc::close(n);
                }
            } else if n < 0 {
                // No /dev/null yet (PID 1 before mounting /dev): park a pipe there.
                let mut p = [0; 2];
                unsafe { libc::pipe(p.as_mut_ptr()) };
            }
        }
    }
}
