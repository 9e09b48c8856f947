//! Exec sessions: run argv (and the `chain`) with streamed stdio.
//!
//! Threads: the connection thread spawns each step and pumps its stdout/stderr (or the pty) to
//! the connection — one bounded buffer, so a slow host blocks the pump, the pipe fills and the
//! child blocks (backpressure). An input thread (`exec_input`) takes STDIN/RESIZE/SIGNAL frames
//! and notices a host that went away, in which case the process group is killed.

use crate::conn::Conn;
use crate::exec_input::StdinInput;
use crate::exec_shared::Shared;
use crate::input::Input;
use crate::limits::{INPUT_STACK, OUTPUT_BUF};
use crate::reaper::{self, Waiter};
use crate::stage::StageData;
use crate::sys;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use supermachine_agent_proto::{self as proto, ExecRequest, FrameType, HEADER_LEN};
use supermachine_guest_sys::path::DEFAULT_PATH;
use supermachine_guest_sys::spawn::{self, Command, Stdio};

/// After the process exited, output still arriving (from a background process holding the pipe)
/// is forwarded while it keeps coming at least every DRAIN_IDLE, for at most DRAIN_MAX.
const DRAIN_IDLE_MS: i32 = 50;
const DRAIN_MAX: Duration = Duration::from_secs(1);

/// The environment of the exec's processes: the request's variables over the agent's own, and
/// a default `PATH` and `HOME` (and `TERM` on a tty) where neither has one. Linear in the number
/// of variables (one map, no search per variable). Also returns the `PATH` to search.
fn build_env(req_env: BTreeMap<String, String>, tty: bool) -> (Vec<CString>, String) {
    let mut env = req_env;
    for (k, v) in std::env::vars_os() {
        env.entry(k.to_string_lossy().into_owned()).or_insert_with(|| v.to_string_lossy().into_owned());
    }
    env.entry("PATH".into()).or_insert_with(|| DEFAULT_PATH.into());
    env.entry("HOME".into()).or_insert_with(|| "/root".into());
    if tty {
        env.entry("TERM".into()).or_insert_with(|| "xterm-256color".into());
    }
    let path = env.get("PATH").cloned().unwrap_or_default();
    let c = env.into_iter().filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()).collect();
    (c, path)
}

/// Runs an exec request on `conn` to completion.
pub fn run(conn: Arc<Conn>, rd: Input, mut req: ExecRequest, stage: StageData) {
    for (i, f) in req.stage_files.iter().enumerate() {
        if let Err(e) = stage.write(i, f) {
            return conn.send_error(&e);
        }
    }
    drop(stage);
    let (envp, path_var) = build_env(std::mem::take(&mut req.env), req.tty);
    let cwd = match req.cwd.as_deref().filter(|c| !c.is_empty()).map(sys::cstring).transpose() {
        Ok(c) => c,
        Err(e) => return conn.send_error(&format!("cwd: {e}")),
    };

    // stdin side, shared by every step of the chain
    let mut master: Option<OwnedFd> = None;
    let mut stdin_r: Option<OwnedFd> = None;
    let stdin_w = if req.tty {
        let m = match sys::open_pty_master(req.cols.unwrap_or(80), req.rows.unwrap_or(24)) {
            Ok(m) => m,
            Err(e) => return conn.send_error(&format!("cannot open a pseudo-terminal: {e}")),
        };
        let _ = sys::set_nonblocking(m.as_raw_fd(), true);
        let w = sys::dup(m.as_raw_fd()).ok();
        master = Some(m);
        w
    } else {
        match sys::pipe() {
            Ok((r, w)) => {
                let _ = sys::set_nonblocking(w.as_raw_fd(), true);
                stdin_r = Some(r);
                Some(w)
            }
            Err(e) => return conn.send_error(&format!("cannot create a pipe: {e}")),
        }
    };
    let sh = Arc::new(Shared::new(master.as_ref().map(|m| m.as_raw_fd())));
    let stop = match sys::eventfd() {
        Ok(e) => e,
        Err(e) => return conn.send_error(&format!("cannot create an eventfd: {e}")),
    };
    let stop_fd = stop.as_raw_fd();
    let reader = {
        let (conn, sh) = (conn.clone(), sh.clone());
        let tty = req.tty;
        std::thread::Builder::new()
            .name("exec-in".into())
            .stack_size(INPUT_STACK)
            .spawn(move || StdinInput::new(&conn, &sh, rd, stdin_w, tty).run(stop_fd))
    };

    let mut code = 0u32;
    let mut rss = 0u64;
    let steps = std::iter::once(&req.argv).chain(req.chain.iter());
    for argv in steps {
        if sh.is_disconnected() {
            break;
        }
        let started = start_step(argv, &envp, &path_var, cwd.as_ref(), stdin_r.as_ref(), master.as_ref());
        let (pid, waiter, mut outs) = match started {
            Ok(s) => s,
            Err((c, msg)) => {
                let _ = conn.send(FrameType::Stderr, msg.as_bytes());
                code = c;
                break;
            }
        };
        sh.set_pid(Some(pid));
        pump(&conn, &mut outs, &waiter, &sh);
        let info = waiter.wait();
        sh.set_pid(None);
        code = info.code();
        rss = rss.max(info.maxrss_kib);
        if code != 0 {
            break;
        }
    }
    drop(stdin_r);
    if !sh.is_disconnected() {
        // The last frame: an ERROR the input thread may still want to send (a frame it decodes
        // meanwhile) must not follow it.
        let _ = conn.send_last(FrameType::Exit, &proto::exit_payload(code, rss));
    }
    sys::eventfd_signal(stop.as_raw_fd());
    if let Ok(h) = reader {
        let _ = h.join();
    }
    drop(master);
}

type Started = (libc::pid_t, Waiter, Vec<(OwnedFd, FrameType)>);

fn start_step(
    argv: &[String],
    envp: &[CString],
    path_var: &str,
    cwd: Option<&CString>,
    stdin_r: Option<&OwnedFd>,
    master: Option<&OwnedFd>,
) -> Result<Started, (u32, String)> {
    let fail = |code: u32, what: String| (code, format!("supermachine-agent: {what}\n"));
    let prog =
        sys::resolve_command(&argv[0], path_var).ok_or_else(|| fail(127, format!("{}: command not found", argv[0])))?;
    let cargv: Vec<CString> = argv.iter().filter_map(|a| CString::new(a.as_bytes()).ok()).collect();
    let path = sys::cstring(&prog).map_err(|e| fail(127, format!("{prog}: {e}")))?;
    let io_err = |e: std::io::Error| fail(126, format!("cannot set up stdio: {e}"));

    let mut outs = Vec::new();
    let mut child_ends = Vec::new();
    let slave;
    let stdio = match (master, stdin_r) {
        (Some(m), _) => {
            slave = sys::open_pty_slave(m.as_raw_fd()).map_err(io_err)?;
            outs.push((sys::dup(m.as_raw_fd()).map_err(io_err)?, FrameType::Stdout));
            Stdio::Terminal(slave.as_raw_fd())
        }
        (None, Some(r)) => {
            let (or, ow) = sys::pipe().map_err(io_err)?;
            let (er, ew) = sys::pipe().map_err(io_err)?;
            // A bigger pipe: fewer wake-ups for a chatty child (best effort).
            let or_fd = or.as_raw_fd();
            // SAFETY: F_SETPIPE_SZ takes an int argument.
            unsafe { libc::fcntl(or_fd, libc::F_SETPIPE_SZ, 256 * 1024) };
            let s = Stdio::Fds([r.as_raw_fd(), ow.as_raw_fd(), ew.as_raw_fd()]);
            outs.push((or, FrameType::Stdout));
            outs.push((er, FrameType::Stderr));
            child_ends.push(ow);
            child_ends.push(ew);
            s
        }
        (None, None) => return Err(fail(126, "no stdin".into())),
    };
    let cmd = Command { path: &path, argv: &cargv, envp, cwd: cwd.map(|c| c.as_c_str()), stdio, ids: None };
    let (res, waiter) = reaper::spawn_registered(|reg| spawn::spawn(&cmd, reg)).map_err(io_err)?;
    drop(child_ends);
    match (res, waiter) {
        (Ok(pid), Some(w)) => {
            for (fd, _) in &outs {
                let _ = sys::set_nonblocking(fd.as_raw_fd(), true);
            }
            Ok((pid, w, outs))
        }
        (Err(e), w) => {
            if let Some(w) = w {
                w.wait();
            }
            let code = match (e.step, e.err.raw_os_error()) {
                ("exec", Some(libc::ENOENT)) => 127,
                ("chdir", _) => 1,
                _ => 126,
            };
            let target = if e.step == "chdir" { spec_cwd(cwd) } else { prog };
            Err(fail(code, format!("{} {target}: {}", e.step, e.err)))
        }
        (Ok(_), None) => Err(fail(126, "internal error: child not registered".into())),
    }
}

fn spec_cwd(cwd: Option<&CString>) -> String {
    cwd.map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Forwards the step's output until the process exited and its output ended (or went quiet).
fn pump(conn: &Conn, outs: &mut Vec<(OwnedFd, FrameType)>, waiter: &Waiter, sh: &Shared) {
    let mut buf = vec![0u8; HEADER_LEN + OUTPUT_BUF];
    let mut exited_at: Option<Instant> = None;
    loop {
        let mut pfds: Vec<libc::pollfd> =
            outs.iter().map(|(fd, _)| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        if exited_at.is_none() {
            pfds.push(libc::pollfd { fd: waiter.fd(), events: libc::POLLIN, revents: 0 });
        }
        if pfds.is_empty() {
            return;
        }
        let timeout = match exited_at {
            Some(t) if t.elapsed() >= DRAIN_MAX => return,
            Some(_) => DRAIN_IDLE_MS,
            None => -1,
        };
        let n = match sys::poll(&mut pfds, timeout) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return; // drained: exited and quiet
        }
        let mut closed = Vec::new();
        for (i, p) in pfds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            if i >= outs.len() {
                exited_at = Some(Instant::now());
                continue;
            }
            match sys::read(p.fd, &mut buf[HEADER_LEN..]) {
                Ok(0) => closed.push(i),
                Ok(n) => {
                    if conn.send_prefixed(outs[i].1, &mut buf[..HEADER_LEN + n]).is_err() {
                        sh.disconnect();
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => closed.push(i), // EIO: the pty has no slave left
            }
        }
        for i in closed.into_iter().rev() {
            outs.remove(i);
        }
        if outs.is_empty() {
            if exited_at.is_none() {
                // Output ended; only the exit is missing.
                let _ = sys::poll1(waiter.fd(), libc::POLLIN, -1);
            }
            return;
        }
    }
}
