//! Test harness: runs the real agent binary inside `unshare --pid --fork --mount-proc` under a
//! `sh` that stays PID 1 of the namespace (so the agent is not PID 1 and does no PID-1 duties),
//! with its run dir and sys root in a private temp dir.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use supermachine_agent_client::Client;

pub const AGENT: &str = env!("CARGO_BIN_EXE_supermachine-agent");

/// The binary under test: the cargo-built one, or `$SUPERMACHINE_AGENT_BIN` (e.g. the static
/// payload build from scripts/agent-build.sh).
pub fn agent_bin() -> String {
    std::env::var("SUPERMACHINE_AGENT_BIN").unwrap_or_else(|_| AGENT.to_string())
}

/// The agent's `comm` in /proc (the file name, cut to 15 bytes).
pub fn agent_comm() -> String {
    let b = agent_bin();
    let name = Path::new(&b).file_name().unwrap().to_string_lossy().into_owned();
    name.chars().take(15).collect()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("sm-agent-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("run")).unwrap();
        std::fs::create_dir_all(p.join("sysroot")).unwrap();
        TempDir(p)
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    pub fn s(&self, rel: &str) -> String {
        self.path(rel).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Options for starting the sandboxed agent.
#[derive(Clone, Default)]
pub struct Opts {
    /// Prefix the agent with `setpriv` dropping these capabilities (e.g. "-sys_time").
    pub drop_caps: Option<String>,
    /// Keep the namespace alive this many seconds after the agent exits.
    pub linger_secs: u32,
}

/// Whether the sandbox is also a user namespace (not root: see [`sandbox_cmd`]), where the
/// test's own uid and gid appear as 0.
pub fn in_user_namespace() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() != 0 }
}

/// A file's owner as the sandboxed agent sees it.
pub fn seen_owner(md: &std::fs::Metadata) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    if in_user_namespace() {
        (0, 0)
    } else {
        (md.uid(), md.gid())
    }
}

fn sandbox_cmd(dir: &TempDir, opts: &Opts, agent_args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    // If the test process dies (e.g. a "does not hang" deadline panicked while a thread still
    // waits on this agent), the sandbox goes with it instead of holding cargo's output pipe.
    let die_with_parent = || {
        // SAFETY: PR_SET_PDEATHSIG takes integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        Ok(())
    };
    // SAFETY: the hook only calls prctl, which is async-signal-safe and touches no memory of
    // the parent.
    unsafe { std::os::unix::process::CommandExt::pre_exec(&mut c, die_with_parent) };
    // A PID namespace needs root; elsewhere a user namespace (root inside it) makes one.
    if in_user_namespace() {
        c.args(["--user", "--map-root-user"]);
    }
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c"]);
    // Not `exec`: sh stays PID 1 of the namespace and the agent is its child.
    c.arg(format!("\"$0\" \"$@\"; rc=$?; sleep {}; exit $rc", opts.linger_secs));
    if let Some(caps) = &opts.drop_caps {
        c.args(["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"]);
    }
    c.arg(agent_bin());
    c.args(["--run-dir", &dir.s("run"), "--sys-root", &dir.s("sysroot")]);
    c.args(agent_args);
    c
}

/// One `--exec-stdio` agent process = one connection.
pub struct StdioAgent {
    pub child: Child,
    pub stdin: Arc<Mutex<Option<ChildStdin>>>,
    pub stdout: Option<ChildStdout>,
}

impl StdioAgent {
    pub fn spawn(dir: &TempDir, opts: &Opts) -> io::Result<StdioAgent> {
        let mut child = sandbox_cmd(dir, opts, &["--exec-stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        Ok(StdioAgent { child, stdin: Arc::new(Mutex::new(stdin)), stdout })
    }

    /// A second handle on the agent's input, for feeding stdin from another thread.
    pub fn writer(&self) -> SharedWriter {
        SharedWriter(self.stdin.clone())
    }

    /// Closes both pipes (the host "disconnects") without killing anything.
    pub fn disconnect(&mut self) {
        self.stdin.lock().unwrap().take();
        self.stdout.take();
    }

    /// Host pid of the agent process itself (unshare → sh → agent).
    pub fn agent_pid(&self) -> Option<u32> {
        find_descendant(self.child.id(), &agent_comm())
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for StdioAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Read for StdioAgent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stdout.as_mut() {
            Some(s) => s.read(buf),
            None => Ok(0),
        }
    }
}

impl Write for StdioAgent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        SharedWriter(self.stdin.clone()).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct SharedWriter(Arc<Mutex<Option<ChildStdin>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock().unwrap().as_mut() {
            Some(s) => s.write(buf),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client whose every call starts a fresh sandboxed `--exec-stdio` agent.
pub fn stdio_client(dir: &TempDir, opts: Opts) -> Client<impl Fn() -> io::Result<StdioAgent> + '_> {
    Client::new(move || StdioAgent::spawn(dir, &opts))
}

/// One sandboxed agent serving many connections on a Unix socket (`--listen-unix`).
pub struct ListeningAgent {
    pub child: Child,
    pub socket: PathBuf,
}

impl ListeningAgent {
    pub fn spawn(dir: &TempDir, opts: &Opts) -> ListeningAgent {
        let socket = dir.path("agent.sock");
        let child = sandbox_cmd(dir, opts, &["--listen-unix", &socket.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
        let ready = dir.path("run/supermachine-agent-ready");
        let t = Instant::now();
        while !(ready.exists() && socket.exists()) {
            assert!(t.elapsed() < Duration::from_secs(10), "agent did not become ready");
            std::thread::sleep(Duration::from_millis(10));
        }
        ListeningAgent { child, socket }
    }

    pub fn client(&self) -> Client<impl Fn() -> io::Result<UnixStream> + '_> {
        Client::new(move || UnixStream::connect(&self.socket))
    }

    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(&self.socket).unwrap()
    }

    pub fn agent_pid(&self) -> Option<u32> {
        find_descendant(self.child.id(), &agent_comm())
    }

    /// Stops the agent and returns what it logged on stderr.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for ListeningAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (pid, ppid, comm, state) of every process.
pub fn processes() -> Vec<(u32, u32, String, char)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let (Some(l), Some(r)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[l + 1..r].to_string();
        let rest: Vec<&str> = stat[r + 2..].split(' ').collect();
        let state = rest[0].chars().next().unwrap_or('?');
        let ppid = rest[1].parse().unwrap_or(0);
        v.push((pid, ppid, comm, state));
    }
    v
}

pub fn descendants(root: u32) -> Vec<(u32, u32, String, char)> {
    let all = processes();
    let mut out: Vec<(u32, u32, String, char)> = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for x in all.iter().filter(|x| x.1 == p) {
            frontier.push(x.0);
            out.push(x.clone());
        }
    }
    out
}

pub fn find_descendant(root: u32, comm: &str) -> Option<u32> {
    descendants(root).into_iter().find(|x| x.2 == comm).map(|x| x.0)
}

pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn read_all_frames(r: &mut impl Read) -> Vec<supermachine_agent_proto::Frame> {
    let mut v = Vec::new();
    while let Ok(Some(f)) = supermachine_agent_proto::read_frame(r) {
        v.push(f);
    }
    v
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Runs `f` on its own thread and returns its result, or panics with `what` if it has not
/// returned after `secs` seconds: the "does not hang" deadline of a test. (A hung thread is left
/// behind; the test binary ends it when it exits.)
pub fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {secs} s (the agent hangs)"),
    }
}
