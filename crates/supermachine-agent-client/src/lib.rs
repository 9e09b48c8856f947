//! Blocking host-side client for the supermachine guest agent (protocol v5).
//!
//! The agent serves one exec or one control call per connection, so the [`Client`] holds a
//! [`Connector`] that opens a fresh stream (`Read + Write`) per call: a closure, or
//! [`HybridVsock`] for a Firecracker-style hybrid vsock Unix socket (`CONNECT <port>\n` → `OK ...`).
//! The single-connection building blocks ([`Exec`], [`control_on`]) work on any stream.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use supermachine_agent_client::{Client, HybridVsock, proto::ExecRequest};
//!
//! let client = Client::new(HybridVsock::new("/run/vm.vsock", 1028, Duration::from_secs(10)));
//! assert!(client.probe()?.protocol >= 5);
//! let out = client.exec(&ExecRequest::new(["uname", "-r"]), None)?;
//! println!("{} (exit {})", String::from_utf8_lossy(&out.stdout), out.status.code);
//! client.write_file("/etc/motd", b"hello\n", Some(0o644))?;
//! assert_eq!(client.read_file("/etc/motd", None)?, b"hello\n");
//! # Ok::<(), supermachine_agent_client::Error>(())
//! ```
//!
//! Streaming with stdin fed from another thread (needs a stream that can be split, e.g. a
//! `UnixStream` and its `try_clone`):
//!
//! ```no_run
//! # use std::os::unix::net::UnixStream;
//! use supermachine_agent_client::{Exec, ExecInput, proto::ExecRequest};
//! let stream = UnixStream::connect("/tmp/agent.sock")?;
//! let mut input = ExecInput::new(stream.try_clone()?);
//! let exec = Exec::start(stream, &ExecRequest::new(["wc", "-c"]))?;
//! let feeder = std::thread::spawn(move || -> std::io::Result<()> {
//!     input.send_stdin(&vec![b'x'; 100 << 20])?;
//!     input.close_stdin()
//! });
//! let status = exec.wait_with(|out| print!("{}", String::from_utf8_lossy(out)), |_| {})?;
//! feeder.join().unwrap()?;
//! assert_eq!(status.code, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub use supermachine_agent_proto as proto;

mod client;
mod control;
mod error;
mod exec;
mod transport;

pub use client::{Client, INLINE_WRITE_MAX};
pub use control::{control_on, control_raw};
pub use error::{Error, Result};
pub use exec::*;
pub use transport::{connect_hybrid_vsock, connect_hybrid_vsock_once, Connector, HybridVsock};
