//! Blocking host-side client for the supermachine guest agent (protocol v5).
//!
//! The agent serves one exec or one control call per connection, so the [`Client`] holds a
//! [`Connector`] that opens a fresh stream (`Read + Write`) per call: a closure, or
//! [`HybridVsock`] for a Firecracker-style hybrid vsock Unix socket (`CONNECT <port>\n` → `OK ...`).
//! The single-connection building blocks ([`Exec`], [`control_on`]) work on any stream.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use supermachine_agent_client::{Client, HybridVsock, proto::ExecRequest};
//!
//! let client = Client::new(HybridVsock::new("/run/vm.vsock", 1028, Duration::from_secs(10)));
//! assert!(client.probe()?.protocol >= 5);
//! let out = client.exec(&ExecRequest::new(["uname", "-r"]), None)?;
//! println!("{} (exit {})", String::from_utf8_lossy(&out.stdout), out.status.code);
//! client.write_file("/etc/motd", b"hello\n", Some(0o644))?;
//! assert_eq!(client.read_file("/etc/motd", None)?, b"hello\n");
//! # Ok::<(), supermachine_agent_client::Error>(())
//! ```
//!
//! Streaming with stdin fed from another thread (needs a stream that can be split, e.g. a
//! `UnixStream` and its `try_clone`):
//!
//! ```no_run
//! # use std::os::unix::net::UnixStream;
//! use supermachine_agent_client::{Exec, ExecInput, proto::ExecRequest};
//! let stream = UnixStream::connect("/tmp/agent.sock")?;
//! let mut input = ExecInput::new(stream.try_clone()?);
//! let exec = Exec::start(stream, &ExecRequest::new(["wc", "-c"]))?;
//! let feeder = std::thread::spawn(move || -> std::io::Result<()> {
//!     input.send_stdin(&vec![b'x'; 100 << 20])?;
//!     input.close_stdin()
//! });
//! let status = exec.wait_with(|out| print!("{}", String::from_utf8_lossy(out)), |_| {})?;
//! feeder.join().unwrap()?;
//! assert_eq!(status.code, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub use supermachine_agent_proto as proto;

use proto::{b64, read_full, Ack, ControlRequest, ExecRequest, FrameType, ProbeReply, ReadChunkReply, StatReply};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Client errors.
#[derive(Debug)]
pub enum Error {
    /// The transport failed.
    Io(io::Error),
    /// The agent refused: an ERROR frame, or a `{"ok":false,"error":...}` ack (the message).
    Agent(String),
    /// The agent sent something this client does not understand.
    Protocol(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "agent connection: {e}"),
            Error::Agent(m) => write!(f, "agent: {m}"),
            Error::Protocol(m) => write!(f, "agent protocol: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<proto::FrameError> for Error {
    fn from(e: proto::FrameError) -> Self {
        match e {
            proto::FrameError::Io(e) => Error::Io(e),
            other => Error::Protocol(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Opens one new connection to the agent per call.
pub trait Connector {
    type Stream: Read + Write;
    fn connect(&self) -> io::Result<Self::Stream>;
}

impl<F, S> Connector for F
where
    F: Fn() -> io::Result<S>,
    S: Read + Write,
{
    type Stream = S;
    fn connect(&self) -> io::Result<S> {
        self()
    }
}

// ---------------------------------------------------------------------------------------------
// hybrid vsock

/// Connects to guest vsock `port` through a Firecracker-style hybrid vsock Unix socket: sends
/// `CONNECT <port>\n` and expects a line starting with `OK `. Until `timeout` passes, refused
/// connections and handshakes that end in EOF (nothing listening in the guest yet) are retried.
pub fn connect_hybrid_vsock(uds: impl AsRef<Path>, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        let err = match try_hybrid(uds.as_ref(), port, deadline) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(
                err.kind(),
                format!("hybrid vsock {} port {port}: {err}", uds.as_ref().display()),
            ));
        }
        std::thread::sleep(delay.min(deadline - now));
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// One hybrid-vsock handshake attempt, no retry: `CONNECT <port>\n` → `OK …`, the reply read
/// within `timeout`. For callers that poll themselves (e.g. readiness benchmarks).
pub fn connect_hybrid_vsock_once(uds: impl AsRef<Path>, port: u32, timeout: Duration) -> io::Result<UnixStream> {
    try_hybrid(uds.as_ref(), port, Instant::now() + timeout)
}

fn try_hybrid(uds: &Path, port: u32, deadline: Instant) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds)?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
    s.set_read_timeout(Some(left))?;
    s.write_all(format!("CONNECT {port}\n").as_bytes())?;
    // Read the reply byte by byte: nothing after the newline may be consumed.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b)? {
            0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed during CONNECT")),
            _ if b[0] == b'\n' => break,
            _ => line.push(b[0]),
        }
        if line.len() > 512 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "CONNECT reply line too long"));
        }
    }
    if !line.starts_with(b"OK ") {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("CONNECT refused: {:?}", String::from_utf8_lossy(&line)),
        ));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// A [`Connector`] for a Firecracker-style hybrid vsock socket.
#[derive(Debug, Clone)]
pub struct HybridVsock {
    pub path: PathBuf,
    pub port: u32,
    pub timeout: Duration,
}

impl HybridVsock {
    pub fn new(path: impl Into<PathBuf>, port: u32, timeout: Duration) -> HybridVsock {
        HybridVsock { path: path.into(), port, timeout }
    }
}

impl Connector for HybridVsock {
    type Stream = UnixStream;
    fn connect(&self) -> io::Result<UnixStream> {
        connect_hybrid_vsock(&self.path, self.port, self.timeout)
    }
}

// ---------------------------------------------------------------------------------------------
// exec on one stream

/// How an exec ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code; 128 + signal number when the process was killed by a signal.
    pub code: u32,
    /// Peak resident set size of the process in KiB, when the agent reported it.
    pub peak_rss_kib: Option<u64>,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// Collected result of [`Client::exec`].
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Something the agent sent during an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// A non-fatal complaint from the agent (e.g. an ignored frame).
    Error(String),
    Exit(ExitStatus),
}

/// The input side of an exec: STDIN, RESIZE and SIGNAL frames. Works on the stream itself or on
/// a clone of it used from another thread.
pub struct ExecInput<W: Write> {
    w: W,
}

impl<W: Write> ExecInput<W> {
    pub fn new(w: W) -> Self {
        ExecInput { w }
    }

    /// Sends stdin bytes (split into 1 MiB frames). An empty slice sends nothing.
    pub fn send_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        for c in data.chunks(1 << 20) {
            proto::write_frame(&mut self.w, FrameType::Stdin, c)?;
        }
        Ok(())
    }

    /// Sends EOF (an empty STDIN frame). On a tty the agent types ^D.
    pub fn close_stdin(&mut self) -> io::Result<()> {
        proto::write_frame(&mut self.w, FrameType::Stdin, &[])
    }

    /// Resizes the exec's terminal.
    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        proto::write_frame(&mut self.w, FrameType::Resize, &proto::resize_payload(cols, rows))
    }

    /// Sends a signal to the running process (its process group).
    pub fn signal(&mut self, signum: i32) -> io::Result<()> {
        proto::write_frame(&mut self.w, FrameType::Signal, &proto::signal_payload(signum))
    }

    pub fn into_inner(self) -> W {
        self.w
    }
}

/// A running exec on one connection.
pub struct Exec<S: Read + Write> {
    input: ExecInput<S>,
    errors: Vec<String>,
    done: bool,
}

impl<S: Read + Write> Exec<S> {
    /// Sends the REQUEST frame.
    pub fn start(mut stream: S, req: &ExecRequest) -> Result<Exec<S>> {
        let json = serde_json::to_vec(req).map_err(|e| Error::Protocol(e.to_string()))?;
        proto::write_frame(&mut stream, FrameType::Request, &json)?;
        Ok(Exec { input: ExecInput::new(stream), errors: Vec::new(), done: false })
    }

    pub fn send_stdin(&mut self, data: &[u8]) -> io::Result<()> {
        self.input.send_stdin(data)
    }

    pub fn close_stdin(&mut self) -> io::Result<()> {
        self.input.close_stdin()
    }

    pub fn resize(&mut self, cols: u16, rows: u16) -> io::Result<()> {
        self.input.resize(cols, rows)
    }

    pub fn signal(&mut self, signum: i32) -> io::Result<()> {
        self.input.signal(signum)
    }

    /// The next event. After [`Event::Exit`] the exec is over. A connection that ends before
    /// EXIT gives [`Error::Agent`] with the agent's ERROR message(s), if any.
    pub fn next_event(&mut self) -> Result<Event> {
        if self.done {
            return Err(Error::Protocol("the exec already ended".into()));
        }
        let f = match proto::read_frame(&mut self.input.w)? {
            Some(f) => f,
            None => {
                self.done = true;
                return Err(if self.errors.is_empty() {
                    Error::Protocol("connection closed before EXIT".into())
                } else {
                    Error::Agent(self.errors.join("; "))
                });
            }
        };
        Ok(match f.kind {
            FrameType::Stdout => Event::Stdout(f.payload),
            FrameType::Stderr => Event::Stderr(f.payload),
            FrameType::Error => {
                let m = String::from_utf8_lossy(&f.payload).into_owned();
                self.errors.push(m.clone());
                Event::Error(m)
            }
            FrameType::Exit => {
                self.done = true;
                let (code, peak_rss_kib) = proto::parse_exit(&f.payload).map_err(Error::Protocol)?;
                Event::Exit(ExitStatus { code, peak_rss_kib })
            }
            k => return Err(Error::Protocol(format!("unexpected {k} frame from the agent"))),
        })
    }

    /// Streams output to the callbacks until EXIT.
    pub fn wait_with(
        mut self,
        mut on_stdout: impl FnMut(&[u8]),
        mut on_stderr: impl FnMut(&[u8]),
    ) -> Result<ExitStatus> {
        loop {
            match self.next_event()? {
                Event::Stdout(b) => on_stdout(&b),
                Event::Stderr(b) => on_stderr(&b),
                Event::Error(_) => {}
                Event::Exit(s) => return Ok(s),
            }
        }
    }

    /// Collects output until EXIT.
    pub fn wait_output(self) -> Result<Output> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = self.wait_with(|b| stdout.extend_from_slice(b), |b| stderr.extend_from_slice(b))?;
        Ok(Output { status, stdout, stderr })
    }

    /// The underlying stream.
    pub fn into_inner(self) -> S {
        self.input.into_inner()
    }
}

// ---------------------------------------------------------------------------------------------
// control on one stream

/// Sends raw CONTROL JSON and returns the ack as a JSON object, whatever its `ok`.
pub fn control_raw<S: Read + Write>(stream: &mut S, json: &[u8]) -> Result<Ack> {
    proto::write_frame(stream, FrameType::Control, json)?;
    let f = proto::read_frame(stream)?
        .ok_or_else(|| Error::Protocol("connection closed before the CONTROL reply".into()))?;
    match f.kind {
        FrameType::Control => {
            serde_json::from_slice(&f.payload).map_err(|e| Error::Protocol(format!("bad CONTROL reply: {e}")))
        }
        FrameType::Error => Err(Error::Agent(String::from_utf8_lossy(&f.payload).into_owned())),
        k => Err(Error::Protocol(format!("expected a CONTROL reply, got {k}"))),
    }
}

/// Runs one control call; `{"ok":false}` becomes [`Error::Agent`].
pub fn control_on<S: Read + Write>(stream: &mut S, req: &ControlRequest) -> Result<Ack> {
    let ack = control_raw(stream, &req.to_json())?;
    if ack.get("ok").and_then(|v| v.as_bool()) == Some(true) {
        Ok(ack)
    } else {
        Err(Error::Agent(
            ack.get("error").and_then(|v| v.as_str()).unwrap_or("request failed (no message)").to_string(),
        ))
    }
}

fn field<T: serde::de::DeserializeOwned>(ack: Ack) -> Result<T> {
    serde_json::from_value(serde_json::Value::Object(ack)).map_err(|e| Error::Protocol(format!("bad reply: {e}")))
}

fn get_b64(ack: &Ack) -> Result<Vec<u8>> {
    let s =
        ack.get("data_b64").and_then(|v| v.as_str()).ok_or_else(|| Error::Protocol("reply has no data_b64".into()))?;
    b64::decode(s).map_err(Error::Protocol)
}

fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{t:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Files up to this size go in one `write_file`; larger ones use `write_file_chunk`.
pub const INLINE_WRITE_MAX: usize = proto::CHUNK_SIZE;

// ---------------------------------------------------------------------------------------------
// the client

/// A client that opens one connection per call through its [`Connector`].
pub struct Client<C: Connector> {
    connector: C,
}

impl<C: Connector> Client<C> {
    pub fn new(connector: C) -> Self {
        Client { connector }
    }

    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// A new raw connection.
    pub fn connect(&self) -> Result<C::Stream> {
        Ok(self.connector.connect()?)
    }

    /// Starts an exec and returns it for streaming.
    pub fn start_exec(&self, req: &ExecRequest) -> Result<Exec<C::Stream>> {
        Exec::start(self.connect()?, req)
    }

    /// Runs a command, optionally feeding `stdin` (then EOF), and collects its output.
    ///
    /// The stdin bytes are written before output is read: keep them smaller than what the
    /// transport buffers, or use [`Exec`] with an [`ExecInput`] on another thread.
    pub fn exec(&self, req: &ExecRequest, stdin: Option<&[u8]>) -> Result<Output> {
        let mut e = self.start_exec(req)?;
        if let Some(d) = stdin {
            e.send_stdin(d)?;
            e.close_stdin()?;
        }
        e.wait_output()
    }

    /// Runs a command with output streamed to callbacks.
    pub fn exec_streaming(
        &self,
        req: &ExecRequest,
        stdin: Option<&[u8]>,
        on_stdout: impl FnMut(&[u8]),
        on_stderr: impl FnMut(&[u8]),
    ) -> Result<ExitStatus> {
        let mut e = self.start_exec(req)?;
        if let Some(d) = stdin {
            e.send_stdin(d)?;
            e.close_stdin()?;
        }
        e.wait_with(on_stdout, on_stderr)
    }

    /// Any control request; `{"ok":false}` becomes [`Error::Agent`].
    pub fn control(&self, req: &ControlRequest) -> Result<Ack> {
        control_on(&mut self.connect()?, req)
    }

    /// `probe`: protocol version, capabilities, agent version.
    pub fn probe(&self) -> Result<ProbeReply> {
        field(self.control(&ControlRequest::Probe)?)
    }

    /// `write_file`: atomic write (temp file + rename) of a file that fits one frame.
    pub fn write_file(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<()> {
        self.control(&ControlRequest::WriteFile { path: path.into(), data_b64: b64::encode(data), mode })?;
        Ok(())
    }

    /// Chunked upload with `write_file_chunk` (8 MiB chunks, one connection each); the file
    /// appears atomically after the last chunk.
    pub fn write_file_chunked(&self, path: &str, mut data: impl Read, mode: Option<u32>) -> Result<u64> {
        let token = new_token();
        let mut buf = vec![0u8; proto::CHUNK_SIZE];
        let mut offset = 0u64;
        // Read one chunk ahead so the last one carries `last: true`.
        let mut n = read_full(&mut data, &mut buf)?;
        loop {
            let mut next = vec![0u8; proto::CHUNK_SIZE];
            let m = if n == buf.len() { read_full(&mut data, &mut next)? } else { 0 };
            let last = m == 0;
            self.control(&ControlRequest::WriteFileChunk {
                path: path.into(),
                offset,
                data_b64: b64::encode(&buf[..n]),
                last,
                token: token.clone(),
                mode: if last { mode } else { None },
            })?;
            offset += n as u64;
            if last {
                return Ok(offset);
            }
            buf = next;
            n = m;
        }
    }

    /// Uploads `data`, in one call or chunked depending on its size.
    pub fn upload(&self, path: &str, data: &[u8], mode: Option<u32>) -> Result<()> {
        if data.len() <= INLINE_WRITE_MAX {
            self.write_file(path, data, mode)
        } else {
            self.write_file_chunked(path, data, mode).map(|_| ())
        }
    }

    /// `read_file` (the file must fit one frame, about 12 MiB; `max_bytes` lowers that).
    pub fn read_file(&self, path: &str, max_bytes: Option<u64>) -> Result<Vec<u8>> {
        get_b64(&self.control(&ControlRequest::ReadFile { path: path.into(), max_bytes })?)
    }

    /// One `read_file_chunk` call: `(data, total_len)`.
    pub fn read_file_chunk(&self, path: &str, offset: u64, len: u64, max_bytes: Option<u64>) -> Result<(Vec<u8>, u64)> {
        let r: ReadChunkReply =
            field(self.control(&ControlRequest::ReadFileChunk { path: path.into(), offset, len, max_bytes })?)?;
        Ok((b64::decode(&r.data_b64).map_err(Error::Protocol)?, r.total_len))
    }

    /// Downloads a file of any size with `read_file_chunk` into `out`; returns its length.
    pub fn read_file_chunked(&self, path: &str, max_bytes: Option<u64>, mut out: impl Write) -> Result<u64> {
        let mut offset = 0u64;
        loop {
            let (data, total) = self.read_file_chunk(path, offset, proto::CHUNK_SIZE as u64, max_bytes)?;
            out.write_all(&data)?;
            offset += data.len() as u64;
            if offset >= total || data.is_empty() {
                return Ok(offset);
            }
        }
    }

    /// `signal`: signals the workload (pid from /run/supermachine-workload.pid); returns the pid.
    pub fn signal(&self, signum: i32) -> Result<i64> {
        let a = self.control(&ControlRequest::Signal { signum })?;
        Ok(a.get("pid").and_then(|v| v.as_i64()).unwrap_or(0))
    }

    /// `sync_time` to the given wall-clock time.
    pub fn sync_time(&self, host_unix_ns: u64) -> Result<()> {
        self.control(&ControlRequest::SyncTime { host_unix_ns }).map(|_| ())
    }

    /// `sync_time` to this host's current time.
    pub fn sync_time_now(&self) -> Result<()> {
        let ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        self.sync_time(ns)
    }

    pub fn sync(&self) -> Result<()> {
        self.control(&ControlRequest::Sync).map(|_| ())
    }

    pub fn drop_vfs_caches(&self) -> Result<()> {
        self.control(&ControlRequest::DropVfsCaches).map(|_| ())
    }

    /// Takes the secondary vCPUs offline; returns their numbers.
    pub fn smpark_park(&self) -> Result<Vec<u32>> {
        cpus(self.control(&ControlRequest::SmparkPark)?)
    }

    /// Brings the secondary vCPUs back online; returns their numbers.
    pub fn smpark_unpark(&self) -> Result<Vec<u32>> {
        cpus(self.control(&ControlRequest::SmparkUnpark)?)
    }

    /// `reseed`: mixes `entropy` into the guest RNG (credited) and forces a CRNG reseed.
    pub fn reseed(&self, entropy: &[u8]) -> Result<()> {
        self.control(&ControlRequest::Reseed { data_b64: b64::encode(entropy) }).map(|_| ())
    }

    /// `port_forward`: returns the connection, which now carries raw bytes to and from
    /// `127.0.0.1:port` in the guest.
    pub fn port_forward(&self, port: u16) -> Result<C::Stream> {
        let mut s = self.connect()?;
        control_on(&mut s, &ControlRequest::PortForward { port })?;
        Ok(s)
    }

    /// `stat` (follows symlinks).
    pub fn stat(&self, path: &str) -> Result<StatReply> {
        field(self.control(&ControlRequest::Stat { path: path.into(), follow: None })?)
    }

    /// `stat` without following a final symlink.
    pub fn lstat(&self, path: &str) -> Result<StatReply> {
        field(self.control(&ControlRequest::Stat { path: path.into(), follow: Some(false) })?)
    }

    pub fn mkdir(&self, path: &str, parents: bool, mode: Option<u32>) -> Result<()> {
        self.control(&ControlRequest::Mkdir { path: path.into(), parents, mode }).map(|_| ())
    }

    pub fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.control(&ControlRequest::Remove { path: path.into(), recursive }).map(|_| ())
    }
}

fn cpus(a: Ack) -> Result<Vec<u32>> {
    match a.get("cpus") {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| Error::Protocol(e.to_string())),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A fake stream: reads come from a canned buffer, writes are recorded.
    struct Fake {
        rx: Cursor<Vec<u8>>,
        tx: Vec<u8>,
    }
    impl Read for Fake {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.rx.read(b)
        }
    }
    impl Write for Fake {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.tx.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frames(fs: &[(FrameType, &[u8])]) -> Vec<u8> {
        fs.iter().flat_map(|(k, p)| proto::encode_frame(*k, p)).collect()
    }

    #[test]
    fn exec_collects_and_sends_request() {
        let rx = frames(&[
            (FrameType::Stdout, b"a"),
            (FrameType::Error, b"warn"),
            (FrameType::Stderr, b"b"),
            (FrameType::Exit, &proto::exit_payload(3, 77)),
        ]);
        let mut e = Exec::start(Fake { rx: Cursor::new(rx), tx: vec![] }, &ExecRequest::new(["x"])).unwrap();
        e.send_stdin(b"in").unwrap();
        e.close_stdin().unwrap();
        e.resize(10, 20).unwrap();
        e.signal(15).unwrap();
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut e2 = e;
        let st = loop {
            match e2.next_event().unwrap() {
                Event::Stdout(b) => out.extend(b),
                Event::Stderr(b) => err.extend(b),
                Event::Error(m) => assert_eq!(m, "warn"),
                Event::Exit(s) => break s,
            }
        };
        assert_eq!((out.as_slice(), err.as_slice()), (&b"a"[..], &b"b"[..]));
        assert_eq!(st, ExitStatus { code: 3, peak_rss_kib: Some(77) });
        let tx = e2.into_inner().tx;
        let mut cur = Cursor::new(tx);
        let kinds: Vec<FrameType> =
            std::iter::from_fn(|| proto::read_frame(&mut cur).unwrap()).map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [FrameType::Request, FrameType::Stdin, FrameType::Stdin, FrameType::Resize, FrameType::Signal]
        );
    }

    #[test]
    fn exec_error_then_eof() {
        let rx = frames(&[(FrameType::Error, b"REQUEST: invalid")]);
        let e = Exec::start(Fake { rx: Cursor::new(rx), tx: vec![] }, &ExecRequest::new(["x"])).unwrap();
        match e.wait_output() {
            Err(Error::Agent(m)) => assert_eq!(m, "REQUEST: invalid"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_ack_and_refusal() {
        let mut f =
            Fake { rx: Cursor::new(frames(&[(FrameType::Control, br#"{"ok":false,"error":"nope"}"#)])), tx: vec![] };
        match control_on(&mut f, &ControlRequest::Sync) {
            Err(Error::Agent(m)) => assert_eq!(m, "nope"),
            other => panic!("{other:?}"),
        }
        let mut f = Fake { rx: Cursor::new(frames(&[(FrameType::Error, b"bad")])), tx: vec![] };
        assert!(matches!(control_on(&mut f, &ControlRequest::Sync), Err(Error::Agent(_))));
        let mut f = Fake { rx: Cursor::new(vec![]), tx: vec![] };
        assert!(matches!(control_on(&mut f, &ControlRequest::Sync), Err(Error::Protocol(_))));
    }
}
