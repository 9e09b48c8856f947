//! The input side of an exec: STDIN, RESIZE and SIGNAL frames from the host.
//!
//! One thread polls the connection and the process's stdin together. Frames are decoded as they
//! arrive, never whole: STDIN bytes go to the process (or, while it does not read, into a queue
//! of at most [`STDIN_QUEUE_MAX`] bytes leased from the shared budget), and a SIGNAL or RESIZE
//! is acted on as soon as it is decoded, whatever stdin is still queued before it. Only a full
//! queue stops the reading (backpressure).
//!
//! Stdin EOF — an empty STDIN frame, the host half-closing, or input that cannot go on (an
//! oversized or truncated frame) — closes the pipe once the queue is written; on a terminal it
//! types `^D` (once) instead. A host that goes away entirely gets its process group killed.

use crate::budget::Lease;
use crate::conn::Conn;
use crate::exec_shared::Shared;
use crate::input::Input;
use crate::limits::STDIN_QUEUE_MAX;
use crate::sys;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use supermachine_agent_proto::{self as proto, FrameError, FrameType, HEADER_LEN};

/// RESIZE and SIGNAL payloads are a few bytes; longer ones are skipped and refused.
const SMALL_MAX: usize = 64;
/// How often a connection stalled on an empty shared budget retries.
const BUDGET_RETRY_MS: i32 = 20;
/// The terminal's EOF character (VEOF, `^D`).
const VEOF: u8 = 4;

/// Where the decoder is within the input stream.
enum State {
    Header,
    /// STDIN payload bytes still to come.
    Stdin(usize),
    /// A RESIZE or SIGNAL payload being collected.
    Small {
        kind: FrameType,
        left: usize,
        buf: Vec<u8>,
    },
    /// Payload bytes to drop (a frame that does not belong in an exec).
    Skip(usize),
}

/// Stdin bytes not written to the process yet, and what to do after them.
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    len: usize,
    lease: Lease,
    /// Close stdin (a pipe) once the queue is written.
    close_after: bool,
}

pub struct StdinInput<'a> {
    conn: &'a Conn,
    sh: &'a Shared,
    input: Input,
    /// The process's stdin: the pipe's write end or the terminal master (non-blocking).
    stdin: Option<OwnedFd>,
    tty: bool,
    state: State,
    queue: Queue,
    /// The host sends nothing more (EOF, or input we could not follow).
    input_done: bool,
    /// EOF was given on the terminal already (`^D` typed once).
    tty_eof_sent: bool,
    /// Payload length of the frame being decoded (for the truncation message).
    frame_len: usize,
}

impl<'a> StdinInput<'a> {
    pub fn new(conn: &'a Conn, sh: &'a Shared, input: Input, stdin: Option<OwnedFd>, tty: bool) -> Self {
        let queue = Queue { chunks: VecDeque::new(), len: 0, lease: Lease::default(), close_after: false };
        StdinInput {
            conn,
            sh,
            input,
            stdin,
            tty,
            state: State::Header,
            queue,
            input_done: false,
            tty_eof_sent: false,
            frame_len: 0,
        }
    }

    /// Runs until `stop` becomes readable (the exec ended) or the host went away.
    pub fn run(mut self, stop: RawFd) {
        loop {
            let stalled = self.decode();
            let mut pfds = Vec::with_capacity(4);
            pfds.push(libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 });
            let want_input = !self.input_done && !stalled;
            // The output side tells a host that went away (POLLHUP/POLLERR; events 0). On a
            // socket it is the input fd too; a pipe's read end hangs up on a mere EOF.
            let out_at = pfds.len();
            let both = self.conn.wfd == self.conn.rfd;
            pfds.push(libc::pollfd {
                fd: self.conn.wfd,
                events: if both && want_input { libc::POLLIN } else { 0 },
                revents: 0,
            });
            let in_at = if both || !want_input {
                out_at
            } else {
                pfds.push(libc::pollfd { fd: self.conn.rfd, events: libc::POLLIN, revents: 0 });
                pfds.len() - 1
            };
            let stdin_at = pfds.len();
            if let (Some(fd), true) = (&self.stdin, self.queue.len > 0) {
                pfds.push(libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
            }
            let timeout = if stalled && self.queue.len == 0 { BUDGET_RETRY_MS } else { -1 };
            if sys::poll(&mut pfds, timeout).is_err() {
                return;
            }
            if pfds[0].revents != 0 {
                return;
            }
            let out = pfds[out_at].revents;
            if out & (libc::POLLHUP | libc::POLLERR) != 0 && out & libc::POLLIN == 0 {
                self.sh.disconnect();
                return;
            }
            if pfds.get(stdin_at).is_some_and(|p| p.revents != 0) {
                self.flush_queue();
            }
            if want_input && pfds[in_at].revents != 0 {
                match self.input.fill() {
                    Ok(0) => self.end_input(true),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted || e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => self.end_input(true),
                }
            }
        }
    }

    /// Decodes what is buffered. Returns true when stdin bytes wait for room in the queue.
    fn decode(&mut self) -> bool {
        loop {
            let avail = self.input.buffered().len();
            match &mut self.state {
                State::Header => {
                    let Some(h) = self.input.buffered().first_chunk::<HEADER_LEN>().copied() else { return false };
                    self.input.consume(HEADER_LEN);
                    self.on_header(&h);
                    if self.input_done {
                        return false;
                    }
                }
                State::Stdin(0) => {
                    self.state = State::Header;
                }
                State::Stdin(left) => {
                    if avail == 0 {
                        return false;
                    }
                    let n = avail.min(*left);
                    let taken = self.take_stdin(n);
                    if let State::Stdin(left) = &mut self.state {
                        *left -= taken;
                    }
                    if taken < n {
                        return true;
                    }
                }
                State::Small { left: 0, .. } => {
                    let State::Small { kind, buf, .. } = std::mem::replace(&mut self.state, State::Header) else {
                        unreachable!()
                    };
                    self.on_small(kind, &buf);
                }
                State::Small { left, buf, .. } => {
                    if avail == 0 {
                        return false;
                    }
                    let n = avail.min(*left);
                    buf.extend_from_slice(&self.input.buffered()[..n]);
                    *left -= n;
                    self.input.consume(n);
                }
                State::Skip(0) => self.state = State::Header,
                State::Skip(left) => {
                    if avail == 0 {
                        return false;
                    }
                    let n = avail.min(*left);
                    *left -= n;
                    self.input.consume(n);
                }
            }
        }
    }

    fn on_header(&mut self, h: &[u8; HEADER_LEN]) {
        let header = match proto::parse_header(h) {
            Ok(h) => h,
            Err(e) => {
                self.conn.send_error(&format!("{e}; no more input is read for this exec"));
                return self.end_input(false);
            }
        };
        let len = header.len as usize;
        self.frame_len = len;
        self.state = match header.kind() {
            Ok(FrameType::Stdin) if len == 0 => {
                self.stdin_eof();
                State::Header
            }
            Ok(FrameType::Stdin) => State::Stdin(len),
            Ok(kind @ (FrameType::Resize | FrameType::Signal)) if len <= SMALL_MAX => {
                State::Small { kind, left: len, buf: Vec::with_capacity(len) }
            }
            Ok(kind @ (FrameType::Resize | FrameType::Signal)) => {
                self.conn.send_error(&format!("{} payload of {len} bytes is too long (ignored)", kind.name()));
                State::Skip(len)
            }
            Ok(k) => {
                self.conn.send_error(&format!("unexpected {k} frame during an exec (ignored)"));
                State::Skip(len)
            }
            Err(e @ FrameError::UnknownType { .. }) => {
                self.conn.send_error(&format!("{e} (ignored)"));
                State::Skip(len)
            }
            Err(e) => {
                self.conn.send_error(&e.to_string());
                State::Skip(len)
            }
        };
    }

    fn on_small(&mut self, kind: FrameType, payload: &[u8]) {
        let r = match kind {
            FrameType::Resize => proto::parse_resize(payload).map(|(c, r)| {
                if let Some(m) = self.sh.master {
                    let _ = sys::set_winsize(m, c, r);
                }
            }),
            _ => proto::parse_signal(payload).map(|s| self.sh.signal(s)),
        };
        if let Err(e) = r {
            self.conn.send_error(&e);
        }
    }

    /// Moves up to `n` buffered STDIN bytes towards the process; returns how many were taken
    /// (fewer when the queue is full or the shared budget is empty).
    fn take_stdin(&mut self, n: usize) -> usize {
        if self.stdin.is_none() || (self.queue.close_after && !self.tty) {
            // stdin was closed: the bytes have nowhere to go.
            self.input.consume(n);
            return n;
        }
        let mut done = 0;
        if self.queue.len == 0 {
            done = self.write_stdin_now(n);
            self.input.consume(done);
        }
        let rest = (n - done).min(STDIN_QUEUE_MAX - self.queue.len);
        if rest > 0 && self.queue.lease.try_grow(rest) {
            self.queue.chunks.push_back(self.input.buffered()[..rest].to_vec());
            self.queue.len += rest;
            self.input.consume(rest);
            done += rest;
        }
        done
    }

    /// Writes buffered bytes straight to the process as far as it takes them without blocking.
    fn write_stdin_now(&mut self, n: usize) -> usize {
        let Some(fd) = self.stdin.as_ref().map(|f| f.as_raw_fd()) else { return n };
        match write_some(fd, &self.input.buffered()[..n]) {
            Ok(w) => w,
            Err(_) => {
                self.stdin_broken();
                n
            }
        }
    }

    /// Writes queued bytes the process can take now; then closes stdin if EOF is pending.
    fn flush_queue(&mut self) {
        let Some(fd) = self.stdin.as_ref().map(|f| f.as_raw_fd()) else { return };
        while let Some(chunk) = self.queue.chunks.front_mut() {
            match write_some(fd, chunk) {
                Ok(w) => {
                    self.queue.len -= w;
                    self.queue.lease.shrink(w);
                    if w < chunk.len() {
                        chunk.drain(..w);
                        return;
                    }
                    self.queue.chunks.pop_front();
                }
                Err(_) => return self.stdin_broken(),
            }
        }
        if self.queue.close_after && !self.tty {
            self.stdin = None;
        }
    }

    /// The process closed its stdin (EPIPE): what is queued or still coming is dropped.
    fn stdin_broken(&mut self) {
        if !self.tty {
            self.stdin = None;
        }
        self.queue.chunks.clear();
        self.queue.lease.shrink(self.queue.len);
        self.queue.len = 0;
    }

    /// Stdin EOF from the host: `^D` on a terminal (once, queued after the data), closing the
    /// pipe otherwise (once the queue is written).
    fn stdin_eof(&mut self) {
        if self.tty {
            if !std::mem::replace(&mut self.tty_eof_sent, true) {
                self.queue.chunks.push_back(vec![VEOF]);
                self.queue.len += 1;
                self.queue.lease.try_grow(1);
            }
        } else {
            self.queue.close_after = true;
            if self.queue.len == 0 {
                self.stdin = None;
            }
        }
    }

    /// The host sends nothing more: its stream ended (`at_eof`), or a frame could not be used.
    fn end_input(&mut self, at_eof: bool) {
        if std::mem::replace(&mut self.input_done, true) {
            return;
        }
        if at_eof {
            let partial = self.input.buffered().len();
            let truncated = match self.state {
                State::Header if partial > 0 => Some((HEADER_LEN, partial)),
                State::Stdin(left) | State::Skip(left) | State::Small { left, .. } if left > 0 => {
                    Some((HEADER_LEN + self.frame_len, HEADER_LEN + self.frame_len - left))
                }
                _ => None,
            };
            if let Some((expected, got)) = truncated {
                let e = FrameError::Truncated { expected, got };
                self.conn.send_error(&format!("{e}; no more input is read for this exec"));
            }
        }
        self.state = State::Header;
        if !(self.tty && self.tty_eof_sent) {
            self.stdin_eof();
        }
    }
}

/// One non-blocking write; `Ok(0)` when the fd would block.
fn write_some(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid slice; `fd` is open for the duration of the call.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match sys::errno() {
            libc::EINTR => {}
            libc::EAGAIN => return Ok(0),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}
