//! The [`Client`]: one connection per call through its [`Connector`], every exec and control
//! action as a method.

use crate::control::{control_on, field, get_b64};
use crate::error::{Error, Result};
use crate::exec::{Exec, ExitStatus, Output};
use crate::proto::{self, b64, read_full, Ack, ControlRequest, ExecRequest, ProbeReply, ReadChunkReply, StatReply};
use crate::transport::Connector;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{}-{t:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Files up to this size go in one `write_file`; larger ones use `write_file_chunk`.
pub const INLINE_WRITE_MAX: usize = proto::CHUNK_SIZE;

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
    use crate::exec::Event;
    use crate::proto::FrameType;
    use std::io::{self, Cursor};

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
