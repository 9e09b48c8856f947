//! The client's error type.

use crate::proto;
use std::fmt;
use std::io;

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
