//! One exec on one stream: the REQUEST, then stdout/stderr/EXIT frames, with stdin sent from
//! the same or another thread.

use crate::error::{Error, Result};
use crate::proto::{self, ExecRequest, FrameType};
use std::io::{self, Read, Write};

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
