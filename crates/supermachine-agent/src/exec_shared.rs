//! The state an exec's threads share: which step (process group) runs now, signals that
//! arrived before it started, and whether the host went away. Shared by the connection thread
//! (`exec`) and the input thread (`exec_input`), below both.

use crate::sys;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// What the exec's threads share.
pub struct Shared {
    step: Mutex<Step>,
    disconnected: AtomicBool,
    /// The pty master, for RESIZE.
    pub master: Option<RawFd>,
}

/// The step running now, and signals that arrived while none was.
#[derive(Default)]
struct Step {
    /// Pid (= process group) of the step running now.
    pid: Option<libc::pid_t>,
    /// SIGNALs decoded before the step started (the host may send one right after REQUEST):
    /// delivered when it starts.
    pending: Vec<i32>,
}

/// Signals kept for a step that has not started yet; more are dropped.
const PENDING_SIGNALS_MAX: usize = 8;

impl Shared {
    /// No step running yet; `master` is the pty master, if any.
    pub fn new(master: Option<RawFd>) -> Shared {
        Shared { step: Mutex::new(Step::default()), disconnected: AtomicBool::new(false), master }
    }

    /// True once the host went away.
    pub fn is_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::SeqCst)
    }

    fn step(&self) -> std::sync::MutexGuard<'_, Step> {
        self.step.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SIGNAL from the host: to the running step's process group, or to the next one to start.
    pub fn signal(&self, sig: i32) {
        let mut step = self.step();
        match step.pid {
            Some(pid) => {
                let _ = sys::kill_group(pid, sig);
            }
            None if step.pending.len() < PENDING_SIGNALS_MAX => step.pending.push(sig),
            None => {}
        }
    }

    /// A step started (`Some`) or ended (`None`).
    pub fn set_pid(&self, pid: Option<libc::pid_t>) {
        let mut step = self.step();
        step.pid = pid;
        if let Some(pid) = pid {
            if self.disconnected.load(Ordering::SeqCst) {
                step.pending.push(libc::SIGKILL);
            }
            for sig in std::mem::take(&mut step.pending) {
                let _ = sys::kill_group(pid, sig);
            }
        }
    }

    /// The host went away: kill the running step's process group; run nothing more.
    pub fn disconnect(&self) {
        self.disconnected.store(true, Ordering::SeqCst);
        if let Some(pid) = self.step().pid {
            let _ = sys::kill_group(pid, libc::SIGKILL);
        }
    }
}
