//! The two directions of a connection, and sending frames on it.

use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use supermachine_agent_proto::{self as proto, FrameType, HEADER_LEN};

/// Both directions of a connection: one socket (vsock) or stdin/stdout (`--exec-stdio`).
pub struct Conn {
    pub rfd: RawFd,
    pub wfd: RawFd,
    /// The socket (closed when the `Conn` is dropped); `None` for stdin/stdout.
    socket: Option<OwnedFd>,
    /// Held while a frame is written; true once the last frame (EXIT) went out: frames other
    /// threads try to send after it (e.g. an input thread's ERROR) are dropped.
    wlock: Mutex<bool>,
}

impl Conn {
    /// A connection on one socket.
    pub fn socket(fd: OwnedFd) -> Conn {
        Conn { rfd: fd.as_raw_fd(), wfd: fd.as_raw_fd(), socket: Some(fd), wlock: Mutex::new(false) }
    }

    /// The process's stdin and stdout (not closed on drop).
    pub fn stdio() -> Conn {
        Conn { rfd: 0, wfd: 1, socket: None, wlock: Mutex::new(false) }
    }

    fn is_socket(&self) -> bool {
        self.socket.is_some()
    }

    /// The write lock, or an error when the last frame was sent already.
    fn writer(&self) -> io::Result<std::sync::MutexGuard<'_, bool>> {
        let g = self.wlock.lock().unwrap_or_else(|e| e.into_inner());
        if *g {
            return Err(io::Error::other("the conversation ended (its last frame was sent)"));
        }
        Ok(g)
    }

    /// Sends one frame.
    pub fn send(&self, kind: FrameType, payload: &[u8]) -> io::Result<()> {
        let _g = self.writer()?;
        self.write_frame(kind, payload)
    }

    /// Sends the last frame of the conversation (EXIT): nothing is sent after it.
    pub fn send_last(&self, kind: FrameType, payload: &[u8]) -> io::Result<()> {
        let mut g = self.writer()?;
        *g = true;
        self.write_frame(kind, payload)
    }

    fn write_frame(&self, kind: FrameType, payload: &[u8]) -> io::Result<()> {
        if payload.len() <= 4096 {
            let mut b = [0u8; HEADER_LEN + 4096];
            b[..HEADER_LEN].copy_from_slice(&proto::header(kind, payload.len()));
            b[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
            self.write_raw(&b[..HEADER_LEN + payload.len()])
        } else {
            self.write_raw(&proto::header(kind, payload.len()))?;
            self.write_raw(payload)
        }
    }

    /// Sends one frame of `len` payload bytes that `body` writes piece by piece (through the
    /// given function) — a reply too large to build in memory. `body` must write exactly `len`
    /// bytes; on error the connection is unusable.
    pub fn send_streamed(
        &self,
        kind: FrameType,
        len: usize,
        body: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> io::Result<()> {
        let _g = self.writer()?;
        self.write_raw(&proto::header(kind, len))?;
        let mut sent = 0usize;
        body(&mut |piece: &[u8]| {
            sent += piece.len();
            if sent > len {
                return Err(io::Error::other("streamed frame longer than announced"));
            }
            self.write_raw(piece)
        })?;
        if sent != len {
            return Err(io::Error::other("streamed frame shorter than announced"));
        }
        Ok(())
    }

    /// Sends a frame whose payload is `buf[HEADER_LEN..]`; the header is filled in place.
    pub fn send_prefixed(&self, kind: FrameType, buf: &mut [u8]) -> io::Result<()> {
        let h = proto::header(kind, buf.len() - HEADER_LEN);
        buf[..HEADER_LEN].copy_from_slice(&h);
        let _g = self.writer()?;
        self.write_raw(buf)
    }

    /// Writes bytes to the peer. On sockets, in slices of at most 16 KiB: the guest kernel
    /// turns one write into virtio-vsock packets of up to 64 KiB, and vhost-device-vsock 0.3
    /// loses a whole packet that its host socket cannot take at once.
    pub fn write_raw(&self, buf: &[u8]) -> io::Result<()> {
        if !self.is_socket() {
            return sys::write_all(self.wfd, buf);
        }
        for slice in buf.chunks(16 * 1024) {
            sys::write_all(self.wfd, slice)?;
        }
        Ok(())
    }

    pub fn send_error(&self, msg: &str) {
        let _ = self.send(FrameType::Error, msg.as_bytes());
    }

    /// Wakes a reader blocked on this connection; false when that is impossible (a pipe).
    pub fn shutdown_read(&self) -> bool {
        sys::shutdown(self.rfd, libc::SHUT_RD).is_ok()
    }

    /// Waits (bounded) for the peer to close before we do. Closing a vsock right after the last
    /// write lets some backends drop the tail of the reply (vhost-device-vsock 0.3 does); the
    /// host closes as soon as it has the whole reply, so this normally returns at once.
    pub fn linger(&self) {
        if !self.is_socket() {
            return;
        }
        let tv = libc::timeval { tv_sec: 10, tv_usec: 0 };
        let tv_len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        // SAFETY: SO_RCVTIMEO reads one timeval of `tv_len` bytes, alive across the call.
        unsafe {
            libc::setsockopt(
                self.rfd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                tv_len,
            )
        };
        let mut scratch = [0u8; 512];
        while matches!(sys::read(self.rfd, &mut scratch), Ok(n) if n > 0) {}
    }

    /// Signals EOF to the peer.
    pub fn shutdown_write(&self) {
        if sys::shutdown(self.wfd, libc::SHUT_WR).is_err() && !self.is_socket() {
            // stdout is a pipe: only closing our end signals EOF. /dev/null takes its place, so
            // that fd 1 never names some later file.
            sys::replace_with_dev_null(self.wfd);
        }
    }
}
