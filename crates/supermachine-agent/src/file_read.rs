//! `read_file` and `read_file_chunk`: replies streamed from the file.
//!
//! The reply `{"ok":true,"data_b64":"...",...}` is one CONTROL frame, as in protocol v5, but it
//! is written piece by piece (read a block, encode it, send it), so a reply of any size costs
//! one block of memory. The frame length is announced from the size `stat` gave; a file that
//! shrinks while it is read ends the JSON early, which is then padded with spaces (still one
//! valid JSON document, as a v5 client expects). A file whose size `stat` does not know (/proc:
//! 0) is first copied into a spool, outside the heap, to learn its length.

use crate::conn::Conn;
use crate::fileio::open_regular;
use crate::spool::Spool;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use supermachine_agent_proto::{b64, FrameType, CHUNK_SIZE, MAX_INLINE_READ};

use crate::limits::FILE_READ_BLOCK as BLOCK;

const PREFIX: &[u8] = br#"{"ok":true,"data_b64":""#;

/// What to send: `len` bytes of `file` from `start`.
struct Source<'a> {
    file: &'a File,
    start: u64,
    len: u64,
}

/// Sends `{"ok":true,"data_b64":"<source>` + `tail(got, hit_eof)`. `planned_tail` is what the
/// tail is when the whole source is there; a shorter actual reply is padded with spaces.
fn send_b64(conn: &Conn, src: Source, planned_tail: &str, tail: impl FnOnce(u64, bool) -> String) -> io::Result<()> {
    let planned = PREFIX.len() + b64::encoded_len(src.len as usize) + planned_tail.len();
    conn.send_streamed(FrameType::Control, planned, |send| {
        send(PREFIX)?;
        let mut raw = vec![0u8; BLOCK];
        let mut text = Vec::with_capacity(b64::encoded_len(BLOCK));
        let mut got = 0u64;
        let mut hit_eof = false;
        while got < src.len && !hit_eof {
            let want = (src.len - got).min(BLOCK as u64) as usize;
            let n = read_full_at(src.file, &mut raw[..want], src.start + got)?;
            hit_eof = n < want;
            text.clear();
            b64::encode_into(&raw[..n], &mut text);
            send(&text)?;
            got += n as u64;
        }
        let tail = tail(got, hit_eof);
        send(tail.as_bytes())?;
        let used = PREFIX.len() + b64::encoded_len(got as usize) + tail.len();
        let pad = vec![b' '; planned.saturating_sub(used)];
        send(&pad)
    })
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// `read_file`: the whole file. `Err` is a message to send as `ok:false` (nothing was sent);
/// `Ok(Err)` a failure after the reply started (the connection is then unusable).
pub fn read_file(conn: &Conn, path: &str, max_bytes: Option<u64>) -> Result<io::Result<()>, String> {
    let at = |e: &dyn std::fmt::Display| format!("read_file {path}: {e}");
    let (f, md) = open_regular(path).map_err(|e| at(&e))?;
    let limit = max_bytes.unwrap_or(MAX_INLINE_READ as u64).min(MAX_INLINE_READ as u64);
    let too_big = |n: u64| at(&format!("file is {n} bytes, more than max_bytes {limit}; use read_file_chunk"));
    if md.len() > limit {
        return Err(too_big(md.len()));
    }
    let tail = |_: u64, _: bool| "\"}".to_string();
    if md.len() > 0 {
        return Ok(send_b64(conn, Source { file: &f, start: 0, len: md.len() }, "\"}", tail));
    }
    // Size unknown (/proc): copy it out first (at most limit + 1 bytes, to tell "too big").
    let mut spool = Spool::new().map_err(|e| at(&e))?;
    spool.fill_from(&f, 0, limit + 1).map_err(|e| at(&e))?;
    if spool.len() > limit {
        return Err(too_big(spool.len()));
    }
    Ok(send_b64(conn, Source { file: spool.file(), start: 0, len: spool.len() }, "\"}", tail))
}

/// The reply tail of `read_file_chunk` (keys in the order v5 agents send them).
fn chunk_tail(eof: bool, total: u64) -> String {
    format!("\",\"eof\":{eof},\"total_len\":{total}}}")
}

/// `total_len` and `eof` of a chunk of `got` bytes at `offset` of a file `stat` said was `size`
/// bytes; `hit_eof` when reading reached its end (which then tells its real length).
fn chunk_facts(size: u64, offset: u64, got: u64, hit_eof: bool) -> (bool, u64) {
    let end = offset + got;
    let total = match (got, hit_eof) {
        (0, _) => size,
        (_, true) => end,
        (_, false) => size.max(end),
    };
    (hit_eof || end >= total, total)
}

/// `read_file_chunk`: up to `len` (at most [`CHUNK_SIZE`]) bytes at `offset`.
pub fn read_file_chunk(
    conn: &Conn,
    path: &str,
    offset: u64,
    len: u64,
    max_bytes: Option<u64>,
) -> Result<io::Result<()>, String> {
    let at = |e: &dyn std::fmt::Display| format!("read_file_chunk {path}: {e}");
    let (f, md) = open_regular(path).map_err(|e| at(&e))?;
    let size = md.len();
    if let Some(m) = max_bytes.filter(|m| size > *m) {
        return Err(at(&format!("file is {size} bytes, more than max_bytes {m}")));
    }
    let len = len.min(CHUNK_SIZE as u64);
    if size > 0 {
        let expected = len.min(size.saturating_sub(offset));
        let (eof, total) = chunk_facts(size, offset, expected, expected < len);
        let tail = |got, hit_eof| {
            let (eof, total) = chunk_facts(size, offset, got, hit_eof || (got < expected));
            chunk_tail(eof, total)
        };
        return Ok(send_b64(conn, Source { file: &f, start: offset, len: expected }, &chunk_tail(eof, total), tail));
    }
    // Size unknown (/proc): read the chunk into a spool to learn what is there.
    let mut spool = Spool::new().map_err(|e| at(&e))?;
    let (got, hit_eof) = spool.fill_from(&f, offset, len).map_err(|e| at(&e))?;
    let (eof, total) = chunk_facts(size, offset, got, hit_eof);
    let t = chunk_tail(eof, total);
    Ok(send_b64(conn, Source { file: spool.file(), start: 0, len: got }, &t, |_, _| t.clone()))
}
