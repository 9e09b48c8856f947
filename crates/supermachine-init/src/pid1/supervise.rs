//! PID 1 after boot: forwards signals to the workload, reaps every child, restarts the agent,
//! and powers off on SIGTERM/SIGPWR (after the stop grace; not in the supervisor runtime's mode,
//! where they are only forwarded, as its init does) or when the workload ends with
//! `sm.on_exit=poweroff`.

use super::shutdown;
use super::spawn::{spawn, Spawn};
use std::time::{Duration, Instant};
use supermachine_init::cmdline::{Cmdline, OnExit};
use supermachine_init::{Status, WORKLOAD_PID_FILE};

/// Signals forwarded to the workload: every one a process can be sent and catch, as the
/// runtime's init forwards, except SIGCHLD (PID 1's own), the synchronous fault signals (ILL,
/// TRAP, BUS, FPE, SEGV: blocked, a fault of PID 1's own would kill it) and SIGPIPE (PID 1's own
/// writes to a closed vsock would queue one for the workload; Rust ignores it in PID 1).
const FORWARDED: [libc::c_int; 22] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGABRT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGSTKFLT,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGWINCH,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSYS,
];

/// Signals PID 1 takes with sigtimedwait: SIGCHLD and the [`FORWARDED`] ones.
pub fn handled() -> impl Iterator<Item = libc::c_int> {
    std::iter::once(libc::SIGCHLD).chain(FORWARDED)
}

/// The [`handled`] signals as a set.
pub fn handled_set() -> libc::sigset_t {
    supermachine_guest_sys::stdio::sigset(&handled().collect::<Vec<_>>())
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Blocks the [`handled`] signals (the supervisor takes them with sigtimedwait) and gives them
/// a no-op handler (a default-ignored SIGCHLD would otherwise never be queued).
pub fn take_signals() {
    for s in handled() {
        // SAFETY: `on_signal` is an extern "C" fn that does nothing: async-signal-safe.
        unsafe { libc::signal(s, on_signal as *const () as libc::sighandler_t) };
    }
    let set = handled_set();
    // SAFETY: reads `set`; a null old-set pointer is allowed.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

pub struct Supervisor {
    pub workload: Option<libc::pid_t>,
    pub agent: Option<libc::pid_t>,
    pub agent_spec: Option<Spawn>,
    pub agent_restarts: u32,
    pub agent_restart_at: Option<Instant>,
    pub stop_deadline: Option<Instant>,
    pub cmdline: Cmdline,
    /// The supervisor runtime's mode (a delta layer): SIGTERM/SIGPWR to PID 1 are forwarded
    /// only; the host ends the VM.
    pub runtime_mode: bool,
}

fn describe(status: libc::c_int) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("ended ({status:#x})")
    }
}

fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill takes no pointers.
    unsafe { libc::kill(pid, sig) };
}

impl Supervisor {
    /// A supervisor with no children yet.
    pub fn new(agent_spec: Option<Spawn>, cmdline: Cmdline, runtime_mode: bool) -> Supervisor {
        Supervisor {
            workload: None,
            agent: None,
            agent_spec,
            agent_restarts: 0,
            agent_restart_at: None,
            stop_deadline: None,
            cmdline,
            runtime_mode,
        }
    }

    pub fn run(mut self) -> ! {
        let set = handled_set();
        loop {
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
            // SAFETY: reads `set` and `ts`; a null siginfo pointer is allowed.
            let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
            match sig {
                libc::SIGTERM | libc::SIGPWR if !self.runtime_mode && self.stop_deadline.is_none() => self.stop(),
                s if FORWARDED.contains(&s) => {
                    if let Some(pid) = self.workload {
                        kill(pid, s);
                    }
                }
                _ => {}
            }
            self.reap();
            if let Some(deadline) = self.stop_deadline {
                if self.workload.is_none() || Instant::now() >= deadline {
                    if let Some(pid) = self.workload {
                        log!(
                            "entrypoint pid {pid} still running after {} s; killing it",
                            self.cmdline.stop_timeout_secs
                        );
                    }
                    log!("powering off");
                    shutdown(Status::Ok);
                }
            }
            if self.agent_restart_at.is_some_and(|t| Instant::now() >= t) {
                self.agent_restart_at = None;
                if let Some(spec) = &self.agent_spec {
                    match spawn(spec) {
                        Ok(pid) => self.agent = Some(pid),
                        Err(e) => log!("warning: cannot restart the agent: {}: {}", e.step, e.err),
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        let grace = self.cmdline.stop_timeout_secs;
        self.stop_deadline = Some(Instant::now() + Duration::from_secs(grace as u64));
        match self.workload {
            Some(pid) => {
                log!("SIGTERM: stopping entrypoint pid {pid} (grace {grace} s)");
                kill(pid, libc::SIGTERM);
            }
            None => log!("SIGTERM: stopping"),
        }
    }

    /// The workload is over with exit `code` (also one that never started): PID 1 parks,
    /// keeping the agent, unless `sm.on_exit=poweroff`.
    pub fn workload_ended(&mut self, code: i32) {
        log!("parking PID 1 (exit={code})");
        if self.cmdline.on_exit == OnExit::Poweroff && self.stop_deadline.is_none() {
            log!("powering off (sm.on_exit=poweroff)");
            shutdown(Status::Ok);
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: writes the status into `status`; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if Some(pid) == self.workload {
                self.workload = None;
                let _ = std::fs::remove_file(WORKLOAD_PID_FILE);
                log!("entrypoint pid {pid} {}", describe(status));
                let code =
                    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
                self.workload_ended(code);
            } else if Some(pid) == self.agent {
                self.agent = None;
                log!("agent pid {pid} {}", describe(status));
                if self.stop_deadline.is_none() && self.agent_restarts < 10 {
                    self.agent_restarts += 1;
                    self.agent_restart_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
        }
    }
}
