//! An anonymous file to park bytes in, outside the agent's heap: a `memfd` (or, without one, an
//! unlinked file in the run directory). Used for file data whose destination is not known yet
//! when it arrives, and for /proc-style files whose length is only known once read.

use std::fs::File;
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

pub struct Spool {
    file: File,
    len: u64,
}

/// Piece size for copies through user space.
const COPY_BUF: usize = 16 * 1024;

impl Spool {
    pub fn new() -> io::Result<Spool> {
        // SAFETY: the name is a NUL-terminated literal; the returned fd is owned below.
        let fd = unsafe { libc::memfd_create(c"supermachine-spool".as_ptr(), libc::MFD_CLOEXEC) };
        let file = if fd >= 0 {
            // SAFETY: `fd` is a new open file descriptor nobody else owns.
            unsafe { File::from_raw_fd(fd) }
        } else {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(&crate::context::config().run_dir)?
        };
        Ok(Spool { file, len: 0 })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    /// Copies `len` bytes of `src` from `offset` to the end of the spool; stops early at the end
    /// of `src`. Returns how many were copied and whether the end was reached.
    pub fn fill_from(&mut self, src: &File, offset: u64, len: u64) -> io::Result<(u64, bool)> {
        let mut buf = vec![0u8; COPY_BUF];
        let mut got = 0u64;
        while got < len {
            let want = (len - got).min(COPY_BUF as u64) as usize;
            match src.read_at(&mut buf[..want], offset + got) {
                Ok(0) => return Ok((got, true)),
                Ok(n) => {
                    self.append(&buf[..n])?;
                    got += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((got, false))
    }

    /// Copies the bytes `start..start + len` to `dst` at `dst_offset`.
    pub fn copy_to(&self, start: u64, len: u64, dst: &File, dst_offset: u64) -> io::Result<()> {
        let mut buf = vec![0u8; COPY_BUF.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], start + done)?;
            dst.write_all_at(&buf[..n], dst_offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}
