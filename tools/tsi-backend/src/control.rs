//! RUN_DIR/control.sock: one command per line, one reply line each, for tests.
//!
//! ```text
//! snapshot   capture_tsi_listeners → reset → restore_tsi_listeners (a snapshot/restore as
//!            the runtime does it); reply `OK captured=N restored=M`
//! reset      reset without keeping listeners (the runtime's pool reset before a new tenant);
//!            reply `OK restored=0`
//! listeners  reply `OK listeners=N`, then one line per listener, then `.`
//! ```
//! Anything else: `ERR unknown command`. Clients are served one at a time.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::hybrid::bind_unix;
use crate::shared::Shared;

const MAX_LINE: usize = 256;

pub fn start(path: &Path, shared: Arc<Shared>) -> Result<(), String> {
    let listener = bind_unix(path).map_err(|e| format!("cannot listen on control socket {}: {e}", path.display()))?;
    std::thread::Builder::new()
        .name("tsi-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = serve(c, &shared) {
                            log!("control: {e}");
                        }
                    }
                    Err(e) => log!("control: accept: {e}"),
                }
            }
        })
        .map_err(|e| format!("spawning the control thread: {e}"))?;
    Ok(())
}

fn serve(conn: UnixStream, shared: &Shared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn).take(64 * 1024);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            out.write_all(b"ERR line too long\n")?;
            return Ok(());
        }
        let reply = run(line.trim(), shared);
        out.write_all(reply.as_bytes())?;
    }
}

/// Runs one command; returns the reply, newline-terminated.
fn run(cmd: &str, shared: &Shared) -> String {
    match cmd {
        "snapshot" => {
            let (captured, restored) = shared.reset_transport(true);
            log!("snapshot: captured {captured} TSI listener(s), reset the muxer, restored; {restored} registered now");
            format!("OK captured={captured} restored={restored}\n")
        }
        "reset" => {
            let (_, left) = shared.reset_transport(false);
            log!("reset: muxer reset without restoring listeners; {left} registered now");
            format!("OK restored={left}\n")
        }
        "listeners" => {
            let snaps = shared.muxer().capture_tsi_listeners();
            let mut s = format!("OK listeners={}\n", snaps.len());
            for l in snaps {
                let inet = l.inet_port.map_or("none".to_string(), |p| p.to_string());
                s += &format!(
                    "cid={} peer_port={:#x} vm_port={:#x} family={} type={} inet_port={inet}\n",
                    l.cid, l.peer_port, l.vm_port, l.family, l.socktype
                );
            }
            s + ".\n"
        }
        _ => "ERR unknown command (snapshot | reset | listeners)\n".to_string(),
    }
}
