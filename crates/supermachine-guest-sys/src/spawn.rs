//! fork + exec with an errno pipe: the parent learns which step of the child's set-up failed, and
//! with which errno, or that the exec succeeded (the CLOEXEC pipe closed without a message).

use crate::{cvt, cvt_intr, errno};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the child's fds 0, 1 and 2 become.
#[derive(Debug, Clone, Copy)]
pub enum Stdio {
    /// dup2'ed onto 0, 1, 2 (an fd already at its place is left as it is). They must not be
    /// 0..2 in another order: the dup2s run in sequence.
    Fds([RawFd; 3]),
    /// A terminal's slave side: made the controlling terminal, then dup2'ed onto 0, 1, 2.
    Terminal(RawFd),
}

/// The ids the child switches to before the exec.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a> {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups.
    pub groups: &'a [libc::gid_t],
}

/// A program to start; everything is converted before the fork (the child cannot allocate).
#[derive(Debug)]
pub struct Command<'a> {
    /// The program (a path; no PATH lookup here, see [`crate::path::find_program`]).
    pub path: &'a CStr,
    pub argv: &'a [CString],
    pub envp: &'a [CString],
    /// Folder to change to; `None` keeps the parent's.
    pub cwd: Option<&'a CStr>,
    pub stdio: Stdio,
    /// `None` keeps the parent's ids.
    pub ids: Option<Ids<'a>>,
}

/// Why the child did not start: the failing step (its name, e.g. `chdir`, `exec`) and errno.
#[derive(Debug)]
pub struct SpawnError {
    pub step: &'static str,
    pub err: io::Error,
}

/// The child's set-up steps, by the code it reports (index into this table).
const STEPS: [&str; 8] =
    ["setsid", "set up the terminal", "set up stdio", "setgroups", "setgid", "setuid", "chdir", "exec"];
const SETSID: u8 = 0;
const TERMINAL: u8 = 1;
const STDIO: u8 = 2;
const SETGROUPS: u8 = 3;
const SETGID: u8 = 4;
const SETUID: u8 = 5;
const CHDIR: u8 = 6;
const EXEC: u8 = 7;

/// `pipe2(O_CLOEXEC)` → (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the 2-element array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 just created this fd and nothing else owns it.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let write_end = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((read_end, write_end))
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut ptrs = Vec::with_capacity(strings.len() + 1);
    for s in strings {
        ptrs.push(s.as_ptr());
    }
    ptrs.push(std::ptr::null());
    ptrs
}

/// Forks and execs `cmd` in a new session, with every signal handler reset and no signal
/// blocked. `register` gets the pid right after the fork, before the child can have been waited
/// for (the agent's reaper needs that). Returns the pid once the exec succeeded; on failure the
/// child has exited with status 127 (not waited for here).
pub fn spawn(cmd: &Command, register: impl FnOnce(libc::pid_t)) -> Result<libc::pid_t, SpawnError> {
    let (report_r, report_w) = pipe().map_err(|err| SpawnError { step: "pipe", err })?;
    let argv = null_terminated(cmd.argv);
    let envp = null_terminated(cmd.envp);
    // SAFETY: the child (pid 0) runs only async-signal-safe calls on memory prepared before the
    // fork, then execs or _exits: it never returns from `in_child`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        in_child(cmd, &argv, &envp, report_w.as_raw_fd());
    }
    if pid < 0 {
        return Err(SpawnError { step: "fork", err: io::Error::last_os_error() });
    }
    register(pid);
    drop(report_w);
    let mut msg = [0u8; 5];
    let mut got = 0;
    while got < msg.len() {
        let rest = &mut msg[got..];
        // SAFETY: reads at most `rest.len()` bytes into `rest`.
        match cvt_intr(|| unsafe { libc::read(report_r.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) }) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as usize,
        }
    }
    if got < msg.len() {
        return Ok(pid);
    }
    let err = io::Error::from_raw_os_error(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]));
    Err(SpawnError { step: STEPS.get(msg[0] as usize).copied().unwrap_or("exec"), err })
}

/// The child's side: async-signal-safe calls only (no allocation, no locks).
fn in_child(cmd: &Command, argv: &[*const libc::c_char], envp: &[*const libc::c_char], report: RawFd) -> ! {
    let fail = |step: u8| -> ! {
        let e = errno().to_le_bytes();
        let msg = [step, e[0], e[1], e[2], e[3]];
        // SAFETY: writes the 5 bytes of `msg`; the pipe holds them atomically (< PIPE_BUF).
        unsafe { libc::write(report, msg.as_ptr().cast(), msg.len()) };
        // SAFETY: _exit takes no pointers and runs no atexit handlers (not async-signal-unsafe).
        unsafe { libc::_exit(127) }
    };
    reset_signals();
    // A pinned agent's children run on every CPU (crate::cpu).
    crate::cpu::allow_all_cpus();
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        fail(SETSID);
    }
    let (fds, step) = match cmd.stdio {
        Stdio::Fds(fds) => (fds, STDIO),
        Stdio::Terminal(fd) => {
            // SAFETY: TIOCSCTTY takes an int argument, no pointer.
            if unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } < 0 {
                fail(TERMINAL);
            }
            ([fd; 3], TERMINAL)
        }
    };
    for (target, fd) in fds.into_iter().enumerate() {
        // SAFETY: dup2 takes no pointers; a same-number dup2 is a no-op.
        if fd != target as RawFd && unsafe { libc::dup2(fd, target as RawFd) } < 0 {
            fail(step);
        }
    }
    if let Some(ids) = cmd.ids {
        // SAFETY: `groups` points to `groups.len()` gids.
        if unsafe { libc::setgroups(ids.groups.len(), ids.groups.as_ptr()) } != 0 {
            fail(SETGROUPS);
        }
        // SAFETY: setgid takes no pointers.
        if unsafe { libc::setgid(ids.gid) } != 0 {
            fail(SETGID);
        }
        // SAFETY: setuid takes no pointers.
        if unsafe { libc::setuid(ids.uid) } != 0 {
            fail(SETUID);
        }
    }
    if let Some(dir) = cmd.cwd {
        // SAFETY: `dir` is NUL-terminated and lives in the parent's (copied) memory.
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            fail(CHDIR);
        }
    }
    // SAFETY: path is NUL-terminated; argv and envp are NULL-terminated arrays of pointers to
    // NUL-terminated strings, all alive until the exec replaces the image.
    unsafe { libc::execve(cmd.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    fail(EXEC)
}

/// Default handlers and an empty mask (handlers first, so that no pending signal reaches a
/// handler of the parent's once unblocked).
fn reset_signals() {
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: SIG_DFL is always a valid disposition; out-of-range numbers just fail.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    let empty = crate::stdio::sigset(&[]);
    // SAFETY: reads `empty`; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(pid: libc::pid_t) -> libc::c_int {
        let mut status = 0;
        // SAFETY: writes the status into `status`.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    fn run(path: &CStr, argv: &[&str], cwd: Option<&CStr>) -> Result<libc::c_int, SpawnError> {
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let cmd = Command { path, argv: &argv, envp: &[], cwd, stdio: Stdio::Fds([0, 1, 2]), ids: None };
        let mut forked = None;
        match spawn(&cmd, |pid| forked = Some(pid)) {
            Ok(pid) => Ok(wait(pid)),
            Err(e) => {
                assert_eq!(wait(forked.expect("forked")), 127 << 8, "a failed child exits 127");
                Err(e)
            }
        }
    }

    #[test]
    fn exit_status_and_failed_steps() {
        assert_eq!(run(c"/bin/sh", &["sh", "-c", "exit 7"], None).unwrap(), 7 << 8);
        let e = run(c"/no/such/program", &["x"], None).unwrap_err();
        assert_eq!((e.step, e.err.raw_os_error()), ("exec", Some(libc::ENOENT)));
        let e = run(c"/bin/sh", &["sh"], Some(c"/no/such/dir")).unwrap_err();
        assert_eq!((e.step, e.err.raw_os_error()), ("chdir", Some(libc::ENOENT)));
    }
}
