//! Where the file data of a first frame goes while it streams in (see `jsonscan`), and the
//! actions that use it: `write_file`, `write_file_chunk` and `reseed` (a REQUEST's `stage_files`
//! go through `stage`).
//!
//! For a CONTROL request the fields sent before `data_b64` decide: with the `path` (and for a
//! chunk the `token` and `offset`) known, the bytes go straight into the temp file beside the
//! target; otherwise (a client that orders its keys differently) into a spool, copied to the
//! target once the whole request is parsed.

use crate::jsonscan::{Extract, Slot};
use crate::limits::RESEED_MAX;
use crate::spool::Spool;
use crate::tmpfile::{self, TmpFile};
use crate::upload::{self, Claim};
use supermachine_agent_proto::{b64, parse_control_request, ControlRequest};

/// The decoded `data_b64` of a CONTROL request, where it went.
#[derive(Default)]
pub enum Data {
    /// No `data_b64` was streamed (absent, or sent in a form the scanner leaves in the JSON).
    #[default]
    None,
    /// `write_file`: into a temp file beside the target.
    File(TmpFile),
    /// `write_file_chunk`: into the upload's temp file.
    Chunk(Claim),
    /// `reseed`: kept in memory (at most [`RESEED_MAX`] bytes).
    Memory(Vec<u8>),
    /// The destination was not known yet.
    Spool(Spool),
    /// An action that takes no data.
    Discard,
}

/// The [`Extract`] of a CONTROL request.
#[derive(Default)]
pub struct ControlData {
    pub data: Data,
    /// Decoded bytes received.
    pub bytes: u64,
    seen: bool,
}

impl Extract for ControlData {
    fn begin(&mut self, _slot: Slot, partial: &[u8]) -> Result<(), String> {
        if std::mem::replace(&mut self.seen, true) {
            return Err("invalid request: duplicate field `data_b64`".into());
        }
        // The fields sent so far (the data as ""): all a request needs when it sends its data
        // last, as our client does.
        self.data = match parse_control_request(partial) {
            Ok(ControlRequest::WriteFile { path, .. }) => {
                Data::File(TmpFile::beside(&path).map_err(|e| format!("write_file {path}: {e}"))?)
            }
            Ok(ControlRequest::WriteFileChunk { path, offset, token, .. }) => {
                Data::Chunk(upload::claim(&path, &token, offset).map_err(|e| format!("write_file_chunk {path}: {e}"))?)
            }
            Ok(ControlRequest::Reseed { .. }) => Data::Memory(Vec::new()),
            Ok(_) => Data::Discard,
            Err(_) => Data::Spool(Spool::new().map_err(|e| format!("cannot create a spool file: {e}"))?),
        };
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.bytes += bytes.len() as u64;
        let r = match &mut self.data {
            Data::File(t) => t.append(bytes),
            Data::Chunk(c) => c.write(bytes),
            Data::Spool(s) => s.append(bytes),
            Data::Memory(m) if m.len() + bytes.len() > RESEED_MAX => {
                return Err(format!("reseed: data_b64 holds more than {RESEED_MAX} bytes"));
            }
            Data::Memory(m) => {
                m.extend_from_slice(bytes);
                Ok(())
            }
            Data::None | Data::Discard => Ok(()),
        };
        r.map_err(|e| match &self.data {
            Data::File(t) => format!("write_file {}: {e}", t.target().display()),
            Data::Chunk(_) => format!("write_file_chunk: {e}"),
            _ => format!("cannot spool the data: {e}"),
        })
    }

    fn end(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Bytes of a `data_b64` left in the JSON (not streamed): decoded now.
fn inline(data_b64: &str) -> Result<Vec<u8>, String> {
    b64::decode(data_b64)
}

/// `write_file`; returns the byte count.
pub fn write_file(path: &str, mode: Option<u32>, data_b64: &str, got: ControlData) -> Result<u64, String> {
    let at = |e: std::io::Error| format!("write_file {path}: {e}");
    match got.data {
        Data::File(t) if t.target() == std::path::Path::new(path) => t.commit(mode).map_err(at)?,
        Data::Spool(s) => {
            let mut t = TmpFile::beside(path).map_err(at)?;
            s.copy_to(0, s.len(), t.file(), 0).map_err(at)?;
            t.grew(s.len());
            t.commit(mode).map_err(at)?;
        }
        Data::None => {
            let data = inline(data_b64)?;
            tmpfile::atomic_write(path, &data, mode).map_err(at)?;
            return Ok(data.len() as u64);
        }
        _ => return Err(format!("write_file {path}: the request changed its path")),
    }
    Ok(got.bytes)
}

/// `write_file_chunk`; returns the byte count of this chunk.
pub fn write_file_chunk(
    path: &str,
    offset: u64,
    token: &str,
    last: bool,
    mode: Option<u32>,
    data_b64: &str,
    got: ControlData,
) -> Result<u64, String> {
    let at = |e: std::io::Error| format!("write_file_chunk {path}: {e}");
    let claim = match got.data {
        Data::Chunk(c) if c.is_for(path, token, offset) => c,
        Data::Spool(s) => {
            let mut c = upload::claim(path, token, offset).map_err(at)?;
            c.copy_from(&s, 0, s.len()).map_err(at)?;
            c
        }
        Data::None => {
            let data = inline(data_b64)?;
            let mut c = upload::claim(path, token, offset).map_err(at)?;
            c.write(&data).map_err(at)?;
            c
        }
        _ => return Err(format!("write_file_chunk {path}: the request changed its path, token or offset")),
    };
    let n = claim.written();
    claim.finish(last, mode).map_err(at)?;
    Ok(n)
}

/// The data of `reseed`.
pub fn reseed_data(data_b64: &str, got: ControlData) -> Result<Vec<u8>, String> {
    match got.data {
        Data::Memory(m) => Ok(m),
        _ => inline(data_b64),
    }
}
