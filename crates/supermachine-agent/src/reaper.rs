//! The one place that waits for children.
//!
//! A single thread calls `wait4(-1)` for every child of the agent (including orphans reparented
//! to it as PID 1 or as a child subreaper) and hands the status of registered pids to their
//! [`Waiter`]s; statuses of unregistered pids (orphans) are dropped after reaping. Registration
//! happens under the registry lock held across `fork`, so a fast-exiting child can never be
//! reaped before its waiter exists.

use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Debug, Clone, Copy)]
pub struct ExitInfo {
    /// Raw wait status.
    pub status: i32,
    /// Peak RSS of the child (and its reaped descendants), KiB.
    pub maxrss_kib: u64,
}

impl ExitInfo {
    /// Exit code as a shell reports it: the exit status, or 128 + signal.
    pub fn code(&self) -> u32 {
        let s = self.status;
        if libc::WIFEXITED(s) {
            libc::WEXITSTATUS(s) as u32
        } else if libc::WIFSIGNALED(s) {
            128 + libc::WTERMSIG(s) as u32
        } else {
            255
        }
    }
}

pub struct WaitSlot {
    info: Mutex<Option<ExitInfo>>,
    cv: Condvar,
    efd: OwnedFd,
}

/// Receives the exit status of one child. Pollable through [`Waiter::fd`].
#[derive(Clone)]
pub struct Waiter(Arc<WaitSlot>);

impl Waiter {
    /// An eventfd that becomes readable once the status is known.
    pub fn fd(&self) -> RawFd {
        self.0.efd.as_raw_fd()
    }

    pub fn wait(&self) -> ExitInfo {
        let mut g = self.0.info.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = *g {
                return i;
            }
            g = self.0.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }
}

struct Registry {
    waiters: Vec<(libc::pid_t, Waiter)>,
    generation: u64,
}

static REG: Mutex<Registry> = Mutex::new(Registry { waiters: Vec::new(), generation: 0 });
static SPAWNED: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Registry> {
    REG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the reaper thread (idempotent; call before the first spawn).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = std::thread::Builder::new().name("reaper".into()).stack_size(64 * 1024).spawn(reap_loop) {
            crate::context::log(&format!("cannot start the reaper thread: {e}"));
        }
    });
}

/// Runs `f` (which forks) with the registry locked; `f` calls the given `register` closure with
/// the new pid. Returns `f`'s result and the waiter if a pid was registered.
pub fn spawn_registered<T>(f: impl FnOnce(&mut dyn FnMut(libc::pid_t)) -> T) -> io::Result<(T, Option<Waiter>)> {
    let efd = sys::eventfd()?;
    let waiter = Waiter(Arc::new(WaitSlot { info: Mutex::new(None), cv: Condvar::new(), efd }));
    let mut g = lock();
    let mut registered = false;
    let t = f(&mut |pid| {
        g.waiters.push((pid, waiter.clone()));
        g.generation += 1;
        registered = true;
    });
    drop(g);
    if registered {
        SPAWNED.notify_all();
    }
    Ok((t, registered.then_some(waiter)))
}

fn reap_loop() {
    loop {
        let gen = lock().generation;
        let mut status = 0;
        // SAFETY: rusage is plain old data; all-zero is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: writes the status and the rusage into locals alive across the call.
        let pid = unsafe { libc::wait4(-1, &mut status, 0, &mut ru) };
        if pid > 0 {
            let w = {
                let mut g = lock();
                g.waiters.iter().position(|(p, _)| *p == pid).map(|i| g.waiters.swap_remove(i).1)
            };
            if let Some(w) = w {
                let info = ExitInfo { status, maxrss_kib: ru.ru_maxrss.max(0) as u64 };
                *w.0.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
                w.0.cv.notify_all();
                sys::eventfd_signal(w.fd());
            }
            continue;
        }
        if sys::errno() != libc::EINTR {
            // ECHILD: no children at all (hence no descendants that could be orphaned to us).
            // Sleep until something is spawned.
            let mut g = lock();
            while g.generation == gen {
                g = SPAWNED.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}
