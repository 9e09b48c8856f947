//! The Firecracker "hybrid vsock" front the test harness already speaks: a client connects to
//! the Unix socket, writes `CONNECT <port>\n`, gets `OK <port>\n` once the guest accepted, then
//! exchanges raw bytes. Nothing listening in the guest (RST) means EOF instead of `OK`, as with
//! vhost-device-vsock. The stream itself is handed to the runtime's muxer
//! (`open_native_to_guest`, the path the runtime's own exec bridge uses), so after the `OK`
//! line the bytes flow exactly as they do in production.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use supermachine::devices::virtio::vsock::muxer_thread::MuxerStream;

use crate::shared::Shared;
use crate::watch::{Outcome, MAX_WAITERS};

/// How long a client may take to send its CONNECT line.
const LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest may take to answer the REQUEST (it may not be up yet). Then: EOF.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// `CONNECT 4294967295` is 18 bytes; anything much longer is not a CONNECT line.
const MAX_LINE: usize = 64;

/// Binds `path` (replacing a stale socket file) and serves it on a thread.
pub fn start(path: &Path, shared: Arc<Shared>) -> Result<(), String> {
    let listener =
        bind_unix(path).map_err(|e| format!("cannot listen on hybrid-vsock socket {}: {e}", path.display()))?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("tsi-hybrid-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        log!("hybrid: accept: {e}");
                        continue;
                    }
                };
                // One thread per client only while its handshake runs; bounded like the watch.
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_WAITERS {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    log!("hybrid: {MAX_WAITERS} handshakes in flight; closing a new client");
                    continue;
                }
                let (shared, done) = (shared.clone(), busy.clone());
                let spawned = std::thread::Builder::new().name("tsi-hybrid-conn".into()).spawn(move || {
                    handshake(conn, &shared);
                    done.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    log!("hybrid: cannot spawn a connection thread: {e}");
                }
            }
        })
        .map_err(|e| format!("spawning the hybrid-vsock acceptor: {e}"))?;
    Ok(())
}

/// Binds a Unix listener, removing a leftover socket file first (ours from an earlier run).
pub fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    remove_stale_socket(path)?;
    UnixListener::bind(path)
}

/// Removes `path` if it is a socket (a previous run's); refuses to touch any other file.
pub fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn handshake(mut client: UnixStream, shared: &Shared) {
    let port = match read_line(&mut client).and_then(|l| parse_connect_line(&l).map_err(io::Error::other)) {
        Ok(p) => p,
        Err(e) => {
            log!("hybrid: bad CONNECT line ({e}); closing");
            return;
        }
    };
    let (Ok(writer), Ok(control)) = (client.try_clone(), client.try_clone()) else {
        log!("hybrid: cannot clone the client socket");
        return;
    };
    // The muxer reads this socket from now on; it must not inherit our line timeout.
    let _ = client.set_read_timeout(None);
    let (tx, rx) = mpsc::channel();
    let answer = Box::new(move |outcome: Outcome| {
        match outcome {
            // Written before the muxer sees the RESPONSE, so it precedes any guest byte.
            Outcome::Connected { .. } => {
                if let Err(e) = (&writer).write_all(format!("OK {port}\n").as_bytes()) {
                    log!("hybrid: writing OK to the client of guest port {port}: {e}");
                }
            }
            Outcome::Refused => {
                let _ = writer.shutdown(Shutdown::Both);
            }
        }
        let _ = tx.send(outcome);
    });
    let id = match shared.watch.expect(port, answer) {
        Ok(id) => id,
        Err(e) => {
            log!("hybrid: CONNECT {port}: {e}; closing");
            return;
        }
    };
    if let Err(e) = shared.muxer().open_native_to_guest(MuxerStream::Unix(client), port) {
        shared.watch.cancel(id);
        log!("hybrid: CONNECT {port}: open_native_to_guest: {e}");
        let _ = control.shutdown(Shutdown::Both);
        return;
    }
    let outcome = match rx.recv_timeout(HANDSHAKE_TIMEOUT) {
        Ok(o) => Some(o),
        Err(_) if shared.watch.cancel(id) => None,
        // The answer raced the timeout: the callback has run or is running.
        Err(_) => rx.recv_timeout(Duration::from_secs(1)).ok(),
    };
    match outcome {
        Some(Outcome::Connected { host_port }) => {
            log!("hybrid: CONNECT {port}: connected (host port {host_port:#x})")
        }
        Some(Outcome::Refused) => {
            log!("hybrid: CONNECT {port}: refused by the guest (nothing listening?)")
        }
        None => {
            let _ = control.shutdown(Shutdown::Both);
            log!("hybrid: CONNECT {port}: no answer from the guest in {HANDSHAKE_TIMEOUT:?}; closed");
        }
    }
}

/// Reads one line byte by byte, so nothing after the newline is consumed.
fn read_line(s: &mut UnixStream) -> io::Result<Vec<u8>> {
    s.set_read_timeout(Some(LINE_TIMEOUT))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a newline"));
        }
        if b[0] == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_LINE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        line.push(b[0]);
    }
}

/// `CONNECT <port>` (without the newline; a trailing `\r` is tolerated) → the guest port.
pub fn parse_connect_line(line: &[u8]) -> Result<u32, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let port = text.strip_prefix("CONNECT ").ok_or_else(|| format!("expected `CONNECT <port>`, got {text:?}"))?;
    if port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("bad port {port:?}"));
    }
    port.parse().map_err(|_| format!("port {port:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 1028"), Ok(1028));
        assert_eq!(parse_connect_line(b"CONNECT 1028\r"), Ok(1028));
        assert_eq!(parse_connect_line(b"CONNECT 4294967295"), Ok(u32::MAX));
        assert_eq!(parse_connect_line(b"CONNECT 0"), Ok(0));
        for bad in [
            &b"CONNECT 4294967296"[..],
            b"CONNECT",
            b"CONNECT ",
            b"CONNECT -1",
            b"CONNECT +5",
            b"CONNECT 10 ",
            b"connect 1028",
            b"OK 1028",
            b"",
            b"CONNECT \xff",
        ] {
            assert!(parse_connect_line(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn line_reader_stops_at_the_newline() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"CONNECT 5\nrest").unwrap();
        assert_eq!(read_line(&mut a).unwrap(), b"CONNECT 5");
        let mut rest = [0u8; 4];
        a.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");
        b.write_all(&[b'x'; MAX_LINE + 1]).unwrap();
        assert!(read_line(&mut a).is_err());
        drop(b);
        assert!(read_line(&mut a).is_err());
    }
}
