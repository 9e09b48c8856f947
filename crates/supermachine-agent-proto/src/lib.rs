//! Wire protocol of the supermachine guest agent, version 5.
//!
//! The host talks to the agent (PID 1 in the guest, AF_VSOCK port [`DEFAULT_PORT`]) over a
//! byte stream. One connection carries exactly one exec or one control call. Everything on the
//! wire is a *frame*:
//!
//! ```text
//! +---------+-----------------+-------------------+
//! | u8 type | u32 BE length N | N bytes payload   |
//! +---------+-----------------+-------------------+
//! ```
//!
//! with `N <= MAX_PAYLOAD` (16 MiB). See [`FrameType`] for the types and `docs/PROTOCOL.md` in
//! the repository for the full description.
//!
//! This crate has the frame codec ([`encode_frame`], [`decode_frame`], [`read_frame`],
//! [`write_frame`]), the typed JSON messages ([`ExecRequest`], [`ControlRequest`], the reply
//! types), the small binary payloads ([`resize_payload`], [`exit_payload`], ...) and a tiny
//! base64 codec ([`b64`]).
//!
//! # Example
//!
//! ```
//! use supermachine_agent_proto::{encode_frame, decode_frame, Decoded, FrameType};
//!
//! let bytes = encode_frame(FrameType::Stdout, b"hi\n");
//! assert_eq!(bytes, [1, 0, 0, 0, 3, b'h', b'i', b'\n']);
//! match decode_frame(&bytes).unwrap() {
//!     Decoded::Frame(frame, used) => {
//!         assert_eq!(frame.kind, FrameType::Stdout);
//!         assert_eq!(frame.payload, b"hi\n");
//!         assert_eq!(used, bytes.len());
//!     }
//!     Decoded::NeedMore(_) => unreachable!(),
//! }
//! ```
#![forbid(unsafe_code)]

pub mod b64;
mod msg;

pub use msg::*;

use std::fmt;
use std::io::{self, Read, Write};

/// Protocol version spoken by this crate (the host requires `>= 5`).
pub const PROTOCOL_VERSION: u32 = 5;
/// Default AF_VSOCK port the agent listens on.
pub const DEFAULT_PORT: u32 = 1028;
/// The vsock CID of the host; the agent accepts connections only from it.
pub const HOST_CID: u32 = 2;
/// Largest payload a frame may carry (16 MiB).
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;
/// Size of the frame header (type + length).
pub const HEADER_LEN: usize = 5;
/// Chunk size used for chunked uploads (`write_file_chunk`) and downloads.
pub const CHUNK_SIZE: usize = 8 * 1024 * 1024;
/// Largest file `read_file` returns inline: its base64 form plus the JSON around it must fit in
/// one frame.
pub const MAX_INLINE_READ: usize = 12 * 1024 * 1024 - 64 * 1024;

/// The frame types of protocol v5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Host → agent, first frame: JSON [`ExecRequest`].
    Request = 0xff,
    /// Host → agent, first frame: JSON [`ControlRequest`]; agent → host: the JSON ack.
    Control = 0xfe,
    /// Host → agent: bytes for the process's stdin; an empty payload means EOF.
    Stdin = 0,
    /// Agent → host: bytes the process wrote to stdout (or to the tty).
    Stdout = 1,
    /// Agent → host: bytes the process wrote to stderr.
    Stderr = 2,
    /// Host → agent: `u16 BE cols, u16 BE rows` for a tty exec.
    Resize = 3,
    /// Host → agent: a signal number for the running exec.
    Signal = 4,
    /// Agent → host: `u32 BE exit code`, then `u64 BE peak RSS in KiB`.
    Exit = 5,
    /// Agent → host: a UTF-8 error message; the connection ends after it.
    Error = 6,
}

impl FrameType {
    /// Maps a type byte to a frame type, `None` for an unknown byte.
    pub fn from_u8(b: u8) -> Option<FrameType> {
        Some(match b {
            0xff => FrameType::Request,
            0xfe => FrameType::Control,
            0 => FrameType::Stdin,
            1 => FrameType::Stdout,
            2 => FrameType::Stderr,
            3 => FrameType::Resize,
            4 => FrameType::Signal,
            5 => FrameType::Exit,
            6 => FrameType::Error,
            _ => return None,
        })
    }

    /// Upper-case name used in messages (`"STDIN"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FrameType::Request => "REQUEST",
            FrameType::Control => "CONTROL",
            FrameType::Stdin => "STDIN",
            FrameType::Stdout => "STDOUT",
            FrameType::Stderr => "STDERR",
            FrameType::Resize => "RESIZE",
            FrameType::Signal => "SIGNAL",
            FrameType::Exit => "EXIT",
            FrameType::Error => "ERROR",
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), *self as u8)
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameType,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: FrameType, payload: impl Into<Vec<u8>>) -> Frame {
        Frame { kind, payload: payload.into() }
    }
}

/// Why a frame could not be decoded.
#[derive(Debug)]
pub enum FrameError {
    /// The header announced a payload larger than [`MAX_PAYLOAD`]. The payload is not read, so
    /// the stream cannot be resynchronised after this.
    Oversized { kind: u8, len: u32 },
    /// The type byte is not a v5 frame type. The payload was consumed (the stream is still in
    /// sync) when this comes from [`read_frame`].
    UnknownType { kind: u8, len: u32 },
    /// The stream ended inside a frame: `got` of `expected` bytes (header included) arrived.
    Truncated { expected: usize, got: usize },
    /// An I/O error from the underlying stream.
    Io(io::Error),
}

impl FrameError {
    /// True when the stream is still positioned at a frame boundary after this error.
    pub fn resynchronisable(&self) -> bool {
        matches!(self, FrameError::UnknownType { .. })
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Oversized { kind, len } => write!(
                f,
                "frame too large: type 0x{kind:02x} announces a {len}-byte payload, the maximum is {MAX_PAYLOAD} bytes"
            ),
            FrameError::UnknownType { kind, len } => {
                write!(f, "unknown frame type 0x{kind:02x} (payload {len} bytes)")
            }
            FrameError::Truncated { expected, got } => {
                write!(f, "truncated frame: the stream ended after {got} of {expected} bytes")
            }
            FrameError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        match e {
            FrameError::Io(e) => e,
            FrameError::Truncated { .. } => io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Builds the 5-byte header of a frame.
pub fn header(kind: FrameType, len: usize) -> [u8; HEADER_LEN] {
    let l = (len as u32).to_be_bytes();
    [kind as u8, l[0], l[1], l[2], l[3]]
}

/// Encodes one frame into a new buffer.
///
/// # Panics
/// If `payload` is longer than [`MAX_PAYLOAD`].
pub fn encode_frame(kind: FrameType, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_PAYLOAD, "frame payload over {MAX_PAYLOAD} bytes");
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&header(kind, payload.len()));
    v.extend_from_slice(payload);
    v
}

/// Result of [`decode_frame`] on a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame, and how many bytes of the buffer it used.
    Frame(Frame, usize),
    /// The buffer holds a valid prefix; this many bytes in total are needed.
    NeedMore(usize),
}

/// Decodes the frame at the start of `buf` (for callers that buffer input themselves).
///
/// ```
/// use supermachine_agent_proto::{decode_frame, Decoded, FrameError};
/// assert_eq!(decode_frame(&[1, 0, 0]).unwrap(), Decoded::NeedMore(5));
/// assert!(matches!(decode_frame(&[9, 0, 0, 0, 0]), Err(FrameError::UnknownType { kind: 9, .. })));
/// assert!(matches!(decode_frame(&[1, 1, 0, 0, 1]), Err(FrameError::Oversized { len: 16777217, .. })));
/// ```
pub fn decode_frame(buf: &[u8]) -> Result<Decoded, FrameError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::NeedMore(HEADER_LEN));
    };
    let h = parse_header(h)?;
    let kind = h.kind()?;
    let total = HEADER_LEN + h.len as usize;
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total));
    }
    Ok(Decoded::Frame(Frame { kind, payload: buf[HEADER_LEN..total].to_vec() }, total))
}

/// A frame header whose length is within [`MAX_PAYLOAD`]; the type byte may be unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind_byte: u8,
    pub len: u32,
}

impl Header {
    /// The frame type, or [`FrameError::UnknownType`].
    pub fn kind(&self) -> Result<FrameType, FrameError> {
        FrameType::from_u8(self.kind_byte).ok_or(FrameError::UnknownType { kind: self.kind_byte, len: self.len })
    }
}

/// Checks a 5-byte header: a length over [`MAX_PAYLOAD`] is [`FrameError::Oversized`] (the type
/// byte is not judged here, so that callers can skip the payload of an unknown type).
///
/// ```
/// use supermachine_agent_proto::{parse_header, FrameError, Header};
/// assert_eq!(parse_header(&[0x42, 0, 0, 1, 0]).unwrap(), Header { kind_byte: 0x42, len: 256 });
/// assert!(matches!(parse_header(&[0, 0x7f, 0, 0, 0]), Err(FrameError::Oversized { .. })));
/// ```
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    if len as usize > MAX_PAYLOAD {
        return Err(FrameError::Oversized { kind: h[0], len });
    }
    Ok(Header { kind_byte: h[0], len })
}

/// Reads until `buf` is full or the stream ends, retrying `Interrupted`; returns the bytes read
/// (less than `buf.len()` only at the end of the stream). Unlike `read_exact`, a short stream is
/// not an error, so callers can tell a clean end (0) from a truncated frame.
///
/// ```
/// let mut buf = [0u8; 4];
/// assert_eq!(supermachine_agent_proto::read_full(&mut &b"ab"[..], &mut buf).unwrap(), 2);
/// ```
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads one frame header (for callers that stream the payload themselves). `Ok(None)` means
/// the stream ended cleanly at a frame boundary.
pub fn read_header<R: Read + ?Sized>(r: &mut R) -> Result<Option<Header>, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    let got = read_full(r, &mut h)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated { expected: HEADER_LEN, got });
    }
    parse_header(&h).map(Some)
}

/// Reads one frame. `Ok(None)` means the stream ended cleanly at a frame boundary.
///
/// An oversized length is reported without reading the payload; an unknown type is reported
/// after its payload has been consumed (so the caller may go on reading).
pub fn read_frame<R: Read + ?Sized>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let Some(h) = read_header(r)? else { return Ok(None) };
    let len = h.len as usize;
    // Grow the buffer as data arrives rather than trusting the announced length up front.
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    let n = r.take(len as u64).read_to_end(&mut payload)?;
    if n < len {
        return Err(FrameError::Truncated { expected: HEADER_LEN + len, got: HEADER_LEN + n });
    }
    Ok(Some(Frame { kind: h.kind()?, payload }))
}

/// Writes one frame (header and payload in a single `write_all` when small).
pub fn write_frame<W: Write + ?Sized>(w: &mut W, kind: FrameType, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame payload of {} bytes exceeds the {MAX_PAYLOAD}-byte maximum", payload.len()),
        ));
    }
    if payload.len() <= 4096 {
        let mut buf = [0u8; HEADER_LEN + 4096];
        buf[..HEADER_LEN].copy_from_slice(&header(kind, payload.len()));
        buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        w.write_all(&buf[..HEADER_LEN + payload.len()])?;
    } else {
        w.write_all(&header(kind, payload.len()))?;
        w.write_all(payload)?;
    }
    w.flush()
}

/// Payload of a RESIZE frame.
pub fn resize_payload(cols: u16, rows: u16) -> [u8; 4] {
    let c = cols.to_be_bytes();
    let r = rows.to_be_bytes();
    [c[0], c[1], r[0], r[1]]
}

/// Parses a RESIZE payload into `(cols, rows)`.
pub fn parse_resize(p: &[u8]) -> Result<(u16, u16), String> {
    if p.len() != 4 {
        return Err(format!("RESIZE payload must be 4 bytes (u16 BE cols, u16 BE rows), got {}", p.len()));
    }
    Ok((u16::from_be_bytes([p[0], p[1]]), u16::from_be_bytes([p[2], p[3]])))
}

/// Payload of a SIGNAL frame as this crate sends it: the signal number as `u32` BE.
pub fn signal_payload(signum: i32) -> [u8; 4] {
    (signum as u32).to_be_bytes()
}

/// Parses a SIGNAL payload. Accepts a 1-byte number, ASCII decimal digits, or a 2-, 4- or
/// 8-byte big-endian integer.
///
/// ```
/// use supermachine_agent_proto::parse_signal;
/// assert_eq!(parse_signal(&[0, 0, 0, 15]), Ok(15));
/// assert_eq!(parse_signal(&[9]), Ok(9));
/// assert_eq!(parse_signal(b"15"), Ok(15));
/// assert!(parse_signal(&[]).is_err());
/// ```
pub fn parse_signal(p: &[u8]) -> Result<i32, String> {
    let n: u64 = if p.len() == 1 {
        p[0] as u64
    } else if !p.is_empty() && p.len() <= 3 && p.iter().all(u8::is_ascii_digit) {
        p.iter().fold(0u64, |a, d| a * 10 + (d - b'0') as u64)
    } else {
        match p.len() {
            2 => u16::from_be_bytes([p[0], p[1]]) as u64,
            4 => u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as u64,
            8 => u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]),
            n => return Err(format!("SIGNAL payload must be a signal number (1, 2, 4 or 8 bytes BE), got {n} bytes")),
        }
    };
    if n == 0 || n > 64 {
        return Err(format!("SIGNAL payload: {n} is not a valid signal number"));
    }
    Ok(n as i32)
}

/// Payload of an EXIT frame: exit code then peak RSS in KiB.
pub fn exit_payload(code: u32, peak_rss_kib: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&code.to_be_bytes());
    b[4..].copy_from_slice(&peak_rss_kib.to_be_bytes());
    b
}

/// Parses an EXIT payload into `(code, peak RSS KiB if present)`.
pub fn parse_exit(p: &[u8]) -> Result<(u32, Option<u64>), String> {
    match p.len() {
        4 => Ok((u32::from_be_bytes([p[0], p[1], p[2], p[3]]), None)),
        12 => Ok((
            u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
            Some(u64::from_be_bytes([p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11]])),
        )),
        n => Err(format!("EXIT payload must be 4 or 12 bytes, got {n}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_types() {
        for b in [0xffu8, 0xfe, 0, 1, 2, 3, 4, 5, 6] {
            let t = FrameType::from_u8(b).unwrap();
            assert_eq!(t as u8, b);
            let enc = encode_frame(t, b"abc");
            let mut cur = io::Cursor::new(&enc);
            let f = read_frame(&mut cur).unwrap().unwrap();
            assert_eq!(f, Frame::new(t, b"abc".to_vec()));
            assert!(read_frame(&mut cur).unwrap().is_none());
        }
        for b in 7u8..0xfe {
            assert!(FrameType::from_u8(b).is_none());
        }
    }

    #[test]
    fn oversized_names_length() {
        let mut cur = io::Cursor::new(vec![0xff, 0x01, 0x00, 0x00, 0x01]);
        let e = read_frame(&mut cur).unwrap_err();
        assert!(matches!(e, FrameError::Oversized { len: 16_777_217, .. }));
        assert!(e.to_string().contains("16777217"), "{e}");
        // exactly the maximum is fine (header only check)
        assert_eq!(decode_frame(&[1, 1, 0, 0, 0]).unwrap(), Decoded::NeedMore(HEADER_LEN + MAX_PAYLOAD));
    }

    #[test]
    fn truncated() {
        let e = read_frame(&mut io::Cursor::new(vec![1, 0, 0])).unwrap_err();
        assert!(matches!(e, FrameError::Truncated { expected: 5, got: 3 }), "{e}");
        let e = read_frame(&mut io::Cursor::new(vec![1, 0, 0, 0, 10, b'x'])).unwrap_err();
        assert!(matches!(e, FrameError::Truncated { expected: 15, got: 6 }), "{e}");
        assert!(e.to_string().contains("truncated"));
    }

    #[test]
    fn unknown_type_keeps_sync() {
        let mut v = vec![0x42, 0, 0, 0, 2, 9, 9];
        v.extend(encode_frame(FrameType::Stdin, b""));
        let mut cur = io::Cursor::new(v);
        let e = read_frame(&mut cur).unwrap_err();
        assert!(e.resynchronisable());
        assert!(e.to_string().contains("0x42"));
        assert_eq!(read_frame(&mut cur).unwrap().unwrap(), Frame::new(FrameType::Stdin, vec![]));
    }

    #[test]
    fn binary_payloads() {
        assert_eq!(parse_resize(&resize_payload(132, 43)), Ok((132, 43)));
        assert!(parse_resize(&[1, 2, 3]).is_err());
        assert_eq!(parse_signal(&signal_payload(9)), Ok(9));
        assert!(parse_signal(&[0, 0, 0, 0]).is_err());
        assert!(parse_signal(&[1, 2, 3, 4, 5]).is_err());
        assert_eq!(parse_exit(&exit_payload(137, 2048)), Ok((137, Some(2048))));
        assert_eq!(parse_exit(&[0, 0, 0, 3]), Ok((3, None)));
        assert!(parse_exit(&[0]).is_err());
    }

    #[test]
    fn write_frame_large_and_small() {
        let mut out = Vec::new();
        write_frame(&mut out, FrameType::Stdout, &[7u8; 10]).unwrap();
        write_frame(&mut out, FrameType::Stderr, &vec![8u8; 100_000]).unwrap();
        let mut cur = io::Cursor::new(out);
        assert_eq!(read_frame(&mut cur).unwrap().unwrap().payload.len(), 10);
        let f = read_frame(&mut cur).unwrap().unwrap();
        assert_eq!((f.kind, f.payload.len()), (FrameType::Stderr, 100_000));
        assert!(write_frame(&mut Vec::new(), FrameType::Stdout, &vec![0u8; MAX_PAYLOAD + 1]).is_err());
    }
}
