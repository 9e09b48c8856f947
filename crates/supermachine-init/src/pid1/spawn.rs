//! Starting the agent and the entrypoint: where the agent comes from, and fork+exec with the
//! image user's ids and the runtime's stdio rules.

use super::in_root;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use supermachine_guest_sys::path::is_executable_file;
use supermachine_guest_sys::spawn::{self as sys_spawn, Command, Ids as ChildIds, SpawnError, Stdio};
use supermachine_init::runtime;
use supermachine_init::user::Ids;
use supermachine_init::{Fatal, Status};

/// A program to start, with everything converted before fork.
pub struct Spawn {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub ids: Option<Ids>,
    /// stdout/stderr to /dev/null (the runtime's default for the workload).
    pub quiet: bool,
    /// stdin is the console (fd 0) instead of /dev/null.
    pub console_stdin: bool,
}

/// Forks and execs `s` (stdin on /dev/null unless `console_stdin`); a child that failed to start
/// is waited for here.
pub fn spawn(s: &Spawn) -> Result<libc::pid_t, SpawnError> {
    let null = super::mounts::open_device(c"/dev/null").ok();
    let stdio = match &null {
        Some(n) if s.quiet => Stdio::Fds([n.as_raw_fd(); 3]),
        Some(_) if s.console_stdin => Stdio::Fds([0, 1, 2]),
        Some(n) => Stdio::Fds([n.as_raw_fd(), 1, 2]),
        None => Stdio::Fds([0, 1, 2]),
    };
    let ids = s.ids.as_ref().map(|i| ChildIds { uid: i.uid, gid: i.gid, groups: &i.groups });
    let cmd = Command { path: &s.path, argv: &s.argv, envp: &s.envp, cwd: Some(&s.cwd), stdio, ids };
    let mut child = None;
    let result = sys_spawn::spawn(&cmd, |pid| child = Some(pid));
    if let (Err(_), Some(pid)) = (&result, child) {
        // SAFETY: a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    result
}

pub fn is_exec(p: &str) -> bool {
    is_executable_file(p)
}

/// Makes sure the agent is in the new root: the image's own, else the initramfs's copy
/// (`/supermachine-agent`, the runtime's initramfs layout, or `/.supermachine/agent`).
/// With the default path, an image that only has the runtime's `/supermachine-agent` (its delta
/// layer) uses that one. Returns the agent's path inside the new root.
pub fn place_agent(agent: &str) -> Result<String, Fatal> {
    let target = in_root(agent);
    if is_exec(&target) {
        return Ok(agent.to_string());
    }
    if agent == supermachine_init::DEFAULT_AGENT_PATH && is_exec(&in_root(runtime::AGENT_PATH)) {
        return Ok(runtime::AGENT_PATH.to_string());
    }
    for src in ["/supermachine-agent", "/.supermachine/agent"] {
        if is_exec(src) {
            let copy = || -> io::Result<()> {
                if let Some(dir) = Path::new(&target).parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let _ = std::fs::remove_file(&target);
                std::fs::copy(src, &target)?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            };
            return copy()
                .map(|()| agent.to_string())
                .map_err(|e| Fatal::new(Status::Agent, format!("cannot copy the agent {src} to {agent}: {e}")));
        }
    }
    Err(Fatal::new(
        Status::Agent,
        format!("agent {agent} not found in the image or the initramfs (sm.agent=none runs without one)"),
    ))
}
