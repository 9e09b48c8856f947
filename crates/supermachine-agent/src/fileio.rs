//! Opening files for the file actions without ever blocking on them.
//!
//! `read_file` and `read_file_chunk` serve regular files only. A FIFO, a terminal or another
//! device could block the connection's thread for good (a FIFO without a writer) or have side
//! effects on open (`/dev/ptmx` allocates a terminal), so those are refused before they are
//! opened, and the file is opened with `O_NONBLOCK` in case it was swapped in between.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

/// Why a path could not be opened for reading.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    /// The path names something other than a regular file (its kind, e.g. `"fifo"`).
    NotRegular(&'static str),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "{e}"),
            OpenError::NotRegular(kind) => write!(f, "not a regular file ({kind}); only regular files can be read"),
        }
    }
}

/// What kind of file `ft` is, in words.
pub fn kind_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "unknown file type"
    }
}

fn check_regular(md: &std::fs::Metadata) -> Result<(), OpenError> {
    if md.file_type().is_file() {
        Ok(())
    } else {
        Err(OpenError::NotRegular(kind_name(md.file_type())))
    }
}

/// Opens `path` (following symlinks) for reading if it is a regular file. Never blocks.
pub fn open_regular(path: &str) -> Result<(File, std::fs::Metadata), OpenError> {
    check_regular(&std::fs::metadata(path).map_err(OpenError::Io)?)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(OpenError::Io)?;
    let md = f.metadata().map_err(OpenError::Io)?;
    check_regular(&md)?;
    Ok((f, md))
}
