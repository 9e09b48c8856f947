//! Chunked uploads (`write_file_chunk`): one temp file per token, written strictly in order.
//!
//! Each chunk comes on its own connection (in `--exec-stdio` mode even to its own agent
//! process), so the state of an upload is its temp file `.<name>.sm-chunk.<token>` beside the
//! target: its size is where the next chunk must start, an exclusive `flock` on it marks a chunk
//! being written. A chunk that does not start at that size (a gap, an overlap), a chunk at offset
//! 0 for a token in use, and a chunk for a token with no upload are refused — never a silent
//! hole. An upload is abandoned, its temp file removed, when a chunk fails half-way (e.g. the
//! connection drops in the middle of it) and when it had no chunk for [`UPLOAD_IDLE_TIMEOUT`].
//! The temp files in use are listed in `<run dir>/supermachine-uploads`, which is how the idle
//! ones are found again (at start and with each connection) wherever they are.

use crate::limits::UPLOAD_IDLE_TIMEOUT;
use crate::spool::Spool;
use crate::tmpfile;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// `flock` on `f`; false when another holder has it (`LOCK_NB`).
fn lock(f: &File, how: libc::c_int) -> io::Result<bool> {
    // SAFETY: `f` is an open file for the duration of the call.
    match crate::sys::cvt(unsafe { libc::flock(f.as_raw_fd(), how) }) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How long a chunk waits for the lock of the previous one (see [`lock_soon`]).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// An exclusive `flock` on `f`, waiting up to [`LOCK_WAIT`] for it: a lock can outlive the
/// chunk that held it by a moment, because a child the agent forks for an exec meanwhile holds
/// a copy of every fd until its `execve` closes them. False when it is still held after that
/// (another chunk of the upload is being written).
fn lock_soon(f: &File) -> io::Result<bool> {
    let t = Instant::now();
    loop {
        if lock(f, libc::LOCK_EX | libc::LOCK_NB)? {
            return Ok(true);
        }
        if t.elapsed() >= LOCK_WAIT {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The list of temp files of uploads in progress (NUL-separated paths), changed under a lock.
fn with_journal(change: impl FnOnce(&mut Vec<PathBuf>)) {
    let path = crate::context::config().run_dir.join("supermachine-uploads");
    let Ok(mut f) = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path)
    else {
        return;
    };
    if !matches!(lock(&f, libc::LOCK_EX), Ok(true)) {
        return;
    }
    let mut raw = Vec::new();
    if f.read_to_end(&mut raw).is_err() {
        return;
    }
    let mut list: Vec<PathBuf> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p)))
        .collect();
    let before = list.clone();
    change(&mut list);
    if list == before {
        return;
    }
    let mut out = Vec::new();
    for p in &list {
        out.extend_from_slice(p.as_os_str().as_bytes());
        out.push(0);
    }
    let _ = f.set_len(0).and_then(|_| f.rewind()).and_then(|_| f.write_all(&out));
}

/// True when `tmp` is an upload's temp file that had no chunk for [`UPLOAD_IDLE_TIMEOUT`] and
/// is not being written.
fn idle(tmp: &Path) -> bool {
    let Ok(f) = File::open(tmp) else { return false };
    let old = f
        .metadata()
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() >= UPLOAD_IDLE_TIMEOUT)
        .unwrap_or(false);
    old && matches!(lock(&f, libc::LOCK_EX | libc::LOCK_NB), Ok(true))
}

/// Removes the temp files of uploads that had no chunk for [`UPLOAD_IDLE_TIMEOUT`] (and drops
/// journal entries whose file is gone).
pub fn sweep_idle() {
    with_journal(|list| {
        list.retain(|tmp| {
            let is_chunk = tmp.file_name().is_some_and(|n| n.as_bytes().windows(10).any(|w| w == b".sm-chunk."));
            if !is_chunk || !tmp.exists() {
                return false;
            }
            if idle(tmp) {
                let _ = fs::remove_file(tmp);
                return false;
            }
            true
        })
    });
}

fn temp_path(path: &str, token: &str) -> io::Result<(PathBuf, PathBuf)> {
    let (dir, name) = tmpfile::split(path)?;
    // The limit is on the token as sent, not on its escaped form in the file name (which
    // `temp_name` keeps within NAME_MAX).
    if token.is_empty() || token.chars().count() > 128 {
        return Err(bad("token must be 1..=128 characters".into()));
    }
    let tok: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect();
    Ok((dir.join(tmpfile::temp_name(&name, ".sm-chunk.", &tok)), dir))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The right to write one chunk (the temp file, locked). Dropped without [`Claim::finish`], it
/// abandons the upload.
pub struct Claim {
    token: String,
    target: PathBuf,
    tmp: PathBuf,
    file: File,
    offset: u64,
    written: u64,
    finished: bool,
}

/// Claims the chunk of upload `token` to `path` that starts at `offset`.
pub fn claim(path: &str, token: &str, offset: u64) -> io::Result<Claim> {
    let (tmp, dir) = temp_path(path, token)?;
    let file = if offset == 0 {
        fs::create_dir_all(&dir)?;
        if tmp.exists() && idle(&tmp) {
            let _ = fs::remove_file(&tmp);
        }
        let f = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let size = fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
                return Err(bad(format!(
                    "token {token:?} is already used by an upload in progress ({size} bytes so far); every upload needs a new token"
                )));
            }
            Err(e) => return Err(e),
        };
        lock(&f, libc::LOCK_EX)?;
        with_journal(|list| list.push(tmp.clone()));
        f
    } else {
        let f = OpenOptions::new().write(true).open(&tmp).map_err(|e| {
            io::Error::new(e.kind(), format!("no upload in progress for token {token:?} (send offset 0 first): {e}"))
        })?;
        if !lock_soon(&f)? {
            return Err(bad(format!("a chunk of the upload with token {token:?} is being written now")));
        }
        // While we waited for the lock, the chunk holding it may have failed and abandoned the
        // upload (removed its file): then this is a file nobody will see.
        let md = f.metadata()?;
        if !fs::metadata(&tmp).is_ok_and(|now| (now.dev(), now.ino()) == (md.dev(), md.ino())) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no upload in progress for token {token:?} (it was abandoned: a chunk failed half-way)"),
            ));
        }
        let size = md.len();
        if offset != size {
            return Err(bad(format!(
                "chunk at offset {offset}, but the upload with token {token:?} has {size} bytes so far: chunks must follow each other without gaps"
            )));
        }
        f
    };
    Ok(Claim { token: token.to_string(), target: PathBuf::from(path), tmp, file, offset, written: 0, finished: false })
}

impl Claim {
    /// True when this claim is for that chunk.
    pub fn is_for(&self, path: &str, token: &str, offset: u64) -> bool {
        self.target == Path::new(path) && self.token == token && self.offset == offset
    }

    /// Bytes of this chunk written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.offset + self.written)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn copy_from(&mut self, spool: &Spool, start: u64, len: u64) -> io::Result<()> {
        spool.copy_to(start, len, &self.file, self.offset + self.written)?;
        self.written += len;
        Ok(())
    }

    /// The chunk is complete; with `last` the file is committed to its target.
    pub fn finish(mut self, last: bool, mode: Option<u32>) -> io::Result<()> {
        if last {
            tmpfile::commit(&self.file, &self.tmp, &self.target, mode)?;
            with_journal(|list| list.retain(|p| *p != self.tmp));
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.tmp);
            with_journal(|list| list.retain(|p| *p != self.tmp));
        }
    }
}
