//! Streaming split of a first frame's JSON: file data out, the rest kept for serde.
//!
//! A REQUEST or CONTROL payload can be 16 MiB, nearly all of it the base64 of file data
//! (`data_b64` of a CONTROL request, `stage_files[i].data_b64` of a REQUEST). The scanner reads
//! the payload from the connection piece by piece, decodes those strings' base64 on the fly and
//! hands the bytes to an [`Extract`] (a file, a spool), and keeps everything else — with each
//! extracted string replaced by `""` — as the *rest*, which is what serde then parses. The rest
//! is capped ([`MAX_REQUEST_JSON`] bytes, [`MAX_REQUEST_STRINGS`] strings) and leased from the
//! shared budget, so the memory a first frame costs no longer grows with its file data.
//!
//! The scanner only follows the structure (strings, escapes, nesting); malformed JSON is left
//! for serde to report on the rest. A key written with escapes (`"data\u005fb64"`) is not
//! recognised: its value stays in the rest (correct, only not streamed).

use crate::budget::Lease;
use crate::input::Input;
use crate::limits::{MAX_REQUEST_JSON, MAX_REQUEST_STRINGS, REQUEST_STRING_COST};
use std::fmt;
use supermachine_agent_proto::{b64, FrameError, HEADER_LEN};

/// Which string is being extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `data_b64` of a CONTROL request.
    Top,
    /// `stage_files[i].data_b64` of a REQUEST.
    Stage(usize),
}

/// Where extracted data goes.
pub trait Extract {
    /// A string to extract starts. `partial` is the rest so far, closed into a complete JSON
    /// document (the value as `""`), for looking up fields sent before it.
    fn begin(&mut self, slot: Slot, partial: &[u8]) -> Result<(), String>;
    /// Decoded bytes of that string.
    fn data(&mut self, bytes: &[u8]) -> Result<(), String>;
    /// The string ended.
    fn end(&mut self) -> Result<(), String>;
}

/// Which strings are extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Control,
    Request,
}

/// Why a payload could not be scanned.
#[derive(Debug)]
pub enum ScanError {
    /// The stream failed (truncated, timed out, I/O).
    Frame(FrameError),
    /// The JSON without file data is over [`MAX_REQUEST_JSON`] bytes.
    TooLarge,
    /// It holds more than [`MAX_REQUEST_STRINGS`] strings.
    TooManyStrings,
    /// The shared budget cannot hold it now.
    Busy(usize),
    /// Bad base64, or the [`Extract`] refused (its message, with the slot).
    Data(Slot, String),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::Frame(e) => write!(f, "{e}"),
            ScanError::TooLarge => write!(
                f,
                "the JSON without file data (data_b64) is larger than {MAX_REQUEST_JSON} bytes, the agent's limit"
            ),
            ScanError::TooManyStrings => write!(f, "the JSON holds more than {MAX_REQUEST_STRINGS} strings (argv, env, ...), the agent's limit"),
            ScanError::Busy(n) => write!(
                f,
                "agent busy: its shared memory budget cannot hold this request's {n} bytes now (other connections use it); try again"
            ),
            ScanError::Data(Slot::Stage(i), m) if !m.starts_with("stage_files[") => write!(f, "stage_files[{i}]: {m}"),
            ScanError::Data(_, m) => f.write_str(m),
        }
    }
}

/// The JSON without the extracted strings, and the budget it holds.
pub struct Rest {
    pub json: Vec<u8>,
    pub lease: Lease,
}

#[derive(Debug)]
enum Ctx {
    /// An object: the key being read or last read (its first bytes), and whether the next
    /// string is a key.
    Obj {
        key: [u8; 16],
        key_len: usize,
        key_long: bool,
        want_key: bool,
    },
    Arr {
        index: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    None,
    Key,
    Value,
    Extract,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Esc {
    None,
    Backslash,
    /// `\u`: hex digits read so far and their value.
    Unicode(u8, u32),
}

struct Scanner<'a> {
    mode: Mode,
    ex: &'a mut dyn Extract,
    stack: Vec<Ctx>,
    string: Str,
    esc: Esc,
    slot: Slot,
    decoder: b64::Decoder,
    decoded: Vec<u8>,
    rest: Rest,
    strings: usize,
}

/// Reads `len` payload bytes from `input`, extracting as `mode` says into `ex`.
pub fn scan(input: &mut Input, len: usize, mode: Mode, ex: &mut dyn Extract) -> Result<Rest, ScanError> {
    let mut s = Scanner {
        mode,
        ex,
        stack: Vec::new(),
        string: Str::None,
        esc: Esc::None,
        slot: Slot::Top,
        decoder: b64::Decoder::default(),
        decoded: Vec::with_capacity(DECODED_FLUSH + 3),
        rest: Rest { json: Vec::new(), lease: Lease::default() },
        strings: 0,
    };
    let mut left = len;
    while left > 0 {
        if input.buffered().is_empty() {
            match input.fill() {
                Ok(0) => {
                    return Err(ScanError::Frame(FrameError::Truncated {
                        expected: HEADER_LEN + len,
                        got: HEADER_LEN + len - left,
                    }))
                }
                Ok(_) => {}
                Err(e) => return Err(ScanError::Frame(FrameError::Io(e))),
            }
        }
        let n = input.buffered().len().min(left);
        let fed = s.feed(&input.buffered()[..n]);
        input.consume(n);
        left -= n;
        if let Err(e) = fed {
            // Read the rest of the frame anyway, so that a client still writing it does not
            // fail on a closed connection before it can read why.
            skip(input, left);
            return Err(e);
        }
    }
    s.flush_decoded()?;
    Ok(s.rest)
}

/// Reads and drops `left` bytes (up to the end of the stream or a timeout).
fn skip(input: &mut Input, mut left: usize) {
    while left > 0 {
        if input.buffered().is_empty() && !matches!(input.fill(), Ok(n) if n > 0) {
            return;
        }
        let n = input.buffered().len().min(left);
        input.consume(n);
        left -= n;
    }
}

/// Decoded bytes are handed on in pieces of about this size.
const DECODED_FLUSH: usize = 16 * 1024;

impl Scanner<'_> {
    fn feed(&mut self, mut buf: &[u8]) -> Result<(), ScanError> {
        while !buf.is_empty() {
            if self.string == Str::Extract && self.esc == Esc::None {
                // Bulk path: base64 text up to the next quote or backslash.
                let run = buf.iter().position(|&c| c == b'"' || c == b'\\').unwrap_or(buf.len());
                self.decode(&buf[..run])?;
                buf = &buf[run..];
                if buf.is_empty() {
                    break;
                }
            }
            let c = buf[0];
            buf = &buf[1..];
            self.byte(c)?;
        }
        Ok(())
    }

    fn byte(&mut self, c: u8) -> Result<(), ScanError> {
        if self.string != Str::None {
            return self.string_byte(c);
        }
        match c {
            b'"' => {
                self.strings += 1;
                if self.strings > MAX_REQUEST_STRINGS {
                    return Err(ScanError::TooManyStrings);
                }
                self.string = self.classify();
                if self.string == Str::Extract {
                    self.slot = match (self.mode, self.stack.get(1)) {
                        (Mode::Request, Some(Ctx::Arr { index })) => Slot::Stage(*index),
                        _ => Slot::Top,
                    };
                    let partial = self.closed_partial();
                    self.ex.begin(self.slot, &partial).map_err(|m| ScanError::Data(self.slot, m))?;
                    self.decoder = b64::Decoder::default();
                }
                if let Some(Ctx::Obj { key_len, key_long, want_key: true, .. }) = self.stack.last_mut() {
                    *key_len = 0;
                    *key_long = false;
                }
                self.push(c)?;
            }
            b'{' => {
                self.stack.push(Ctx::Obj { key: [0; 16], key_len: 0, key_long: false, want_key: true });
                self.push(c)?;
            }
            b'[' => {
                self.stack.push(Ctx::Arr { index: 0 });
                self.push(c)?;
            }
            b'}' | b']' => {
                self.stack.pop();
                self.push(c)?;
            }
            b',' => {
                match self.stack.last_mut() {
                    Some(Ctx::Obj { want_key, .. }) => *want_key = true,
                    Some(Ctx::Arr { index }) => *index += 1,
                    None => {}
                }
                self.push(c)?;
            }
            _ => self.push(c)?,
        }
        Ok(())
    }

    /// What the string starting now is.
    fn classify(&self) -> Str {
        match self.stack.last() {
            Some(Ctx::Obj { want_key: true, .. }) => Str::Key,
            Some(Ctx::Obj { .. }) if self.extract_here() => Str::Extract,
            _ => Str::Value,
        }
    }

    fn extract_here(&self) -> bool {
        let key_is = |ctx: &Ctx, name: &str| matches!(ctx, Ctx::Obj { key, key_len, key_long: false, .. } if &key[..*key_len] == name.as_bytes());
        match (self.mode, self.stack.as_slice()) {
            (Mode::Control, [top]) => key_is(top, "data_b64"),
            (Mode::Request, [top, Ctx::Arr { .. }, file]) => key_is(top, "stage_files") && key_is(file, "data_b64"),
            _ => false,
        }
    }

    fn string_byte(&mut self, c: u8) -> Result<(), ScanError> {
        let kind = self.string;
        match (self.esc, c) {
            (Esc::None, b'"') => {
                self.string = Str::None;
                if kind == Str::Extract {
                    self.flush_decoded()?;
                    let d = std::mem::take(&mut self.decoder);
                    let mut out = std::mem::take(&mut self.decoded);
                    d.finish(&mut out).map_err(|m| ScanError::Data(self.slot, m))?;
                    self.ex.data(&out).map_err(|m| ScanError::Data(self.slot, m))?;
                    out.clear();
                    self.decoded = out;
                    self.ex.end().map_err(|m| ScanError::Data(self.slot, m))?;
                }
                if let Some(Ctx::Obj { want_key, .. }) = self.stack.last_mut() {
                    if kind == Str::Key {
                        *want_key = false;
                    }
                }
                return self.push(c);
            }
            (Esc::None, b'\\') => self.esc = Esc::Backslash,
            (Esc::Backslash, b'u') => self.esc = Esc::Unicode(0, 0),
            (Esc::Backslash, _) => {
                self.esc = Esc::None;
                if kind == Str::Extract {
                    let plain = match c {
                        b'/' => b'/',
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' | b'f' => b' ',
                        other => other,
                    };
                    return self.decode(&[plain]);
                }
            }
            (Esc::Unicode(n, v), _) => {
                let v = v << 4 | (c as char).to_digit(16).unwrap_or(0xff);
                self.esc = if n == 3 { Esc::None } else { Esc::Unicode(n + 1, v) };
                if n == 3 && kind == Str::Extract {
                    // Base64 is ASCII; anything else is an error the decoder reports.
                    return self.decode(&[u8::try_from(v).unwrap_or(b'*')]);
                }
            }
            (Esc::None, _) => {
                if kind == Str::Extract {
                    return self.decode(&[c]);
                }
            }
        }
        if kind == Str::Key {
            if let Some(Ctx::Obj { key, key_len, key_long, .. }) = self.stack.last_mut() {
                if *key_len < key.len() {
                    key[*key_len] = c;
                    *key_len += 1;
                } else {
                    *key_long = true;
                }
            }
        }
        if kind != Str::Extract {
            self.push(c)?;
        }
        Ok(())
    }

    fn decode(&mut self, text: &[u8]) -> Result<(), ScanError> {
        self.decoder.push(text, &mut self.decoded).map_err(|m| ScanError::Data(self.slot, m))?;
        if self.decoded.len() >= DECODED_FLUSH {
            self.flush_decoded()?;
        }
        Ok(())
    }

    fn flush_decoded(&mut self) -> Result<(), ScanError> {
        if !self.decoded.is_empty() {
            self.ex.data(&self.decoded).map_err(|m| ScanError::Data(self.slot, m))?;
            self.decoded.clear();
        }
        Ok(())
    }

    /// Appends to the rest, within its caps and the shared budget.
    fn push(&mut self, c: u8) -> Result<(), ScanError> {
        let json = &mut self.rest.json;
        if json.len() >= MAX_REQUEST_JSON {
            return Err(ScanError::TooLarge);
        }
        // What this request costs: its JSON, and what parsing its strings allocates.
        let cost = json.len() + 1 + self.strings * REQUEST_STRING_COST;
        let lease = &mut self.rest.lease;
        if cost > lease.held() + FREE_COST {
            let more = (cost - FREE_COST - lease.held()).max(LEASE_STEP);
            if !lease.try_grow(more) {
                return Err(ScanError::Busy(cost));
            }
        }
        json.push(c);
        Ok(())
    }

    /// The rest so far, closed into a complete document with the current value as `""`.
    fn closed_partial(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.rest.json.len() + 2 + self.stack.len());
        p.extend_from_slice(&self.rest.json);
        p.extend_from_slice(b"\"\"");
        for ctx in self.stack.iter().rev() {
            p.push(if matches!(ctx, Ctx::Obj { .. }) { b'}' } else { b']' });
        }
        p
    }
}

/// Cost of a first frame that needs no lease from the shared budget (a usual request).
const FREE_COST: usize = 64 * 1024;
/// The lease grows in steps of this size.
const LEASE_STEP: usize = 64 * 1024;
