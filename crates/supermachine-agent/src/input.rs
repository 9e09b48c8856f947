//! The input side of a connection: one fixed buffer, and reads that give up after a deadline.

use crate::conn::Conn;
use crate::sys;
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a read may wait for the peer.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    Forever,
    /// Until this instant (fails with `TimedOut` after it).
    Until(Instant),
    /// At most this long for each read (a stream that keeps moving never times out).
    Idle(Duration),
}

/// Buffered reader over a connection's input fd.
pub struct Input {
    conn: Arc<Conn>,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    wait: Wait,
}

impl Input {
    pub fn new(conn: Arc<Conn>, capacity: usize) -> Input {
        Input { conn, buf: vec![0u8; capacity].into_boxed_slice(), pos: 0, len: 0, wait: Wait::Forever }
    }

    pub fn set_wait(&mut self, wait: Wait) {
        self.wait = wait;
    }

    /// Bytes read from the peer but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..self.len]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }

    /// Reads more from the peer into the buffer (after what is buffered). Returns how many bytes
    /// arrived; 0 means end of stream. Waits as set by [`Input::set_wait`].
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.len == self.buf.len() {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            return Err(io::Error::other("input buffer full"));
        }
        self.wait_readable()?;
        let n = sys::read(self.conn.rfd, &mut self.buf[self.len..])?;
        self.len += n;
        Ok(n)
    }

    fn wait_readable(&self) -> io::Result<()> {
        let ms = match self.wait {
            Wait::Forever => return Ok(()),
            Wait::Until(t) => t.saturating_duration_since(Instant::now()).as_millis(),
            Wait::Idle(d) => d.as_millis(),
        };
        let ms = ms.min(i32::MAX as u128) as i32;
        if sys::poll1(self.conn.rfd, libc::POLLIN, ms)? == 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the peer"));
        }
        Ok(())
    }
}

impl Read for Input {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len && self.fill()? == 0 {
            return Ok(0);
        }
        let n = out.len().min(self.len - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
