//! Exec sessions: run argv (and the `chain`) with streamed stdio.
//!
//! Threads: the connection thread spawns each step and pumps its stdout/stderr (or the pty) to
//! the connection — one bounded buffer, so a slow host blocks the pump, the pipe fills and the
//! child blocks (backpressure). A reader thread takes STDIN/RESIZE/SIGNAL frames and notices a
//! host that went away, in which case the process group is killed.

use crate::conn::Conn;
use crate::input::Input;
use crate::reaper::{self, Waiter};
use crate::sys::{self, ChildStdio, SpawnSpec};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supermachine_agent_proto::{self as proto, ExecRequest, FrameError, FrameType, HEADER_LEN};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PUMP_BUF: usize = 128 * 1024;
/// After the process exited, output still arriving (from a background process holding the pipe)
/// is forwarded while it keeps coming at least every DRAIN_IDLE, for at most DRAIN_MAX.
const DRAIN_IDLE_MS: i32 = 50;
const DRAIN_MAX: Duration = Duration::from_secs(1);

struct Shared {
    /// Pid (= process group) of the step running now.
    pid: Mutex<Option<libc::pid_t>>,
    finished: AtomicBool,
    disconnected: AtomicBool,
    /// Where STDIN bytes go: the pipe to the child, or the pty master.
    stdin: Mutex<Option<OwnedFd>>,
    master: Option<RawFd>,
}

impl Shared {
    fn disconnect(&self) {
        self.disconnected.store(true, Ordering::SeqCst);
        if let Some(pid) = *self.pid.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = sys::kill_group(pid, libc::SIGKILL);
        }
    }
}

fn build_env(req: &ExecRequest) -> (Vec<CString>, String) {
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    let mut set = |k: &str, v: &str, overwrite: bool| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) if overwrite => e.1 = v.to_string(),
        Some(_) => {}
        None => env.push((k.to_string(), v.to_string())),
    };
    set("PATH", DEFAULT_PATH, false);
    set("HOME", "/root", false);
    if req.tty {
        set("TERM", "xterm-256color", false);
    }
    for (k, v) in &req.env {
        set(k, v, true);
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
    let c = env.into_iter().filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok()).collect();
    (c, path)
}

/// Runs an exec request on `conn` to completion.
pub fn run(conn: Arc<Conn>, rd: Input, req: ExecRequest) {
    for (i, f) in req.stage_files.iter().enumerate() {
        let data = match proto::b64::decode(&f.data_b64) {
            Ok(d) => d,
            Err(e) => return conn.send_error(&format!("stage_files[{i}] {}: {e}", f.path)),
        };
        if let Err(e) = crate::control::atomic_write(&f.path, &data, f.mode) {
            return conn.send_error(&format!("stage_files[{i}]: cannot write {}: {e}", f.path));
        }
    }
    let (envp, path_var) = build_env(&req);
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
    let sh = Arc::new(Shared {
        pid: Mutex::new(None),
        finished: AtomicBool::new(false),
        disconnected: AtomicBool::new(false),
        stdin: Mutex::new(stdin_w),
        master: master.as_ref().map(|m| m.as_raw_fd()),
    });
    let reader = {
        let (conn, sh) = (conn.clone(), sh.clone());
        let tty = req.tty;
        std::thread::Builder::new()
            .name("exec-in".into())
            .stack_size(128 * 1024)
            .spawn(move || reader_loop(&conn, rd, &sh, tty))
    };

    let mut code = 0u32;
    let mut rss = 0u64;
    let steps = std::iter::once(&req.argv).chain(req.chain.iter());
    for argv in steps {
        if sh.disconnected.load(Ordering::SeqCst) {
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
        *sh.pid.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        if sh.disconnected.load(Ordering::SeqCst) {
            let _ = sys::kill_group(pid, libc::SIGKILL);
        }
        pump(&conn, &mut outs, &waiter, &sh);
        let info = waiter.wait();
        *sh.pid.lock().unwrap_or_else(|e| e.into_inner()) = None;
        code = info.code();
        rss = rss.max(info.maxrss_kib);
        if code != 0 {
            break;
        }
    }
    sh.finished.store(true, Ordering::SeqCst);
    drop(sh.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
    drop(stdin_r);
    if !sh.disconnected.load(Ordering::SeqCst) {
        let _ = conn.send(FrameType::Exit, &proto::exit_payload(code, rss));
    }
    if conn.shutdown_read() {
        if let Ok(h) = reader {
            let _ = h.join();
        }
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
    let prog = sys::resolve_command(&argv[0], path_var).ok_or_else(|| fail(127, format!("{}: command not found", argv[0])))?;
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
            ChildStdio::Tty { slave: &slave }
        }
        (None, Some(r)) => {
            let (or, ow) = sys::pipe().map_err(io_err)?;
            let (er, ew) = sys::pipe().map_err(io_err)?;
            unsafe { libc::fcntl(or.as_raw_fd(), libc::F_SETPIPE_SZ, 256 * 1024) };
            let s = ChildStdio::Pipes { stdin: r.as_raw_fd(), stdout: ow.as_raw_fd(), stderr: ew.as_raw_fd() };
            outs.push((or, FrameType::Stdout));
            outs.push((er, FrameType::Stderr));
            child_ends.push(ow);
            child_ends.push(ew);
            s
        }
        (None, None) => return Err(fail(126, "no stdin".into())),
    };
    let spec = SpawnSpec { path, argv: cargv, envp: envp.to_vec(), cwd: cwd.cloned(), stdio };
    let (res, waiter) = reaper::spawn_registered(|reg| sys::spawn(&spec, reg)).map_err(io_err)?;
    drop(spec);
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
    let mut buf = vec![0u8; HEADER_LEN + PUMP_BUF];
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

fn reader_loop(conn: &Conn, mut rd: Input, sh: &Shared, tty: bool) {
    loop {
        if sh.finished.load(Ordering::SeqCst) {
            return;
        }
        match proto::read_frame(&mut rd) {
            Ok(Some(f)) => match f.kind {
                FrameType::Stdin if f.payload.is_empty() => {
                    if tty {
                        write_stdin(conn, sh, &[4]); // VEOF (^D)
                    } else {
                        drop(sh.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
                    }
                }
                FrameType::Stdin => write_stdin(conn, sh, &f.payload),
                FrameType::Resize => match proto::parse_resize(&f.payload) {
                    Ok((c, r)) => {
                        if let Some(m) = sh.master {
                            let _ = sys::set_winsize(m, c, r);
                        }
                    }
                    Err(e) => conn.send_error(&e),
                },
                FrameType::Signal => match proto::parse_signal(&f.payload) {
                    Ok(s) => {
                        if let Some(pid) = *sh.pid.lock().unwrap_or_else(|e| e.into_inner()) {
                            let _ = sys::kill_group(pid, s);
                        }
                    }
                    Err(e) => conn.send_error(&e),
                },
                k => conn.send_error(&format!("unexpected {k} frame during an exec (ignored)")),
            },
            Ok(None) | Err(FrameError::Io(_)) => break,
            Err(e) if e.resynchronisable() => conn.send_error(&format!("{e} (ignored)")),
            Err(e) => {
                conn.send_error(&format!("{e}; no more input is read for this exec"));
                break;
            }
        }
    }
    // The host sent no more input: that is stdin EOF for a pipe. Keep watching for the host going
    // away entirely while the exec runs.
    if !tty {
        drop(sh.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
    while !sh.finished.load(Ordering::SeqCst) {
        match sys::poll1(conn.wfd, 0, 100) {
            Ok(r) if r & (libc::POLLHUP | libc::POLLERR) != 0 => {
                sh.disconnect();
                return;
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn write_stdin(conn: &Conn, sh: &Shared, mut data: &[u8]) {
    let mut g = sh.stdin.lock().unwrap_or_else(|e| e.into_inner());
    let Some(fd) = g.as_ref().map(|f| f.as_raw_fd()) else { return };
    while !data.is_empty() {
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n as usize..];
            continue;
        }
        match sys::errno() {
            libc::EINTR => {}
            libc::EAGAIN => {
                let mut p = [
                    libc::pollfd { fd, events: libc::POLLOUT, revents: 0 },
                    libc::pollfd { fd: conn.wfd, events: 0, revents: 0 },
                ];
                let _ = sys::poll(&mut p, 100);
                if p[1].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                    drop(g);
                    sh.disconnect();
                    return;
                }
                if sh.finished.load(Ordering::SeqCst) {
                    return;
                }
            }
            _ => {
                // EPIPE: the process closed its stdin; the rest is discarded.
                if sh.master.is_none() {
                    *g = None;
                }
                return;
            }
        }
    }
}
