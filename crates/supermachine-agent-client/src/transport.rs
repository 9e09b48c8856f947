//! Opening connections to the agent: the [`Connector`] trait and Firecracker-style hybrid
//! vsock (`CONNECT <port>\n` → `OK …` on the VMM's Unix socket).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
