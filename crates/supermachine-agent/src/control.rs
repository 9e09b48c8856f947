//! CONTROL actions.

use crate::conn::Conn;
use crate::file_write::{self, ControlData};
use crate::input::Input;
use crate::{file_read, files, sys};
use serde_json::Value;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use supermachine_agent_proto::{self as proto, Ack, ControlRequest, FrameType};

fn ack() -> Ack {
    Ack::new()
}

fn with(mut a: Ack, k: &str, v: impl Into<Value>) -> Ack {
    a.insert(k.into(), v.into());
    a
}

fn err_at(what: &str, path: &str, e: io::Error) -> String {
    format!("{what} {path}: {e}")
}

/// Answers a control request (every action but `port_forward`, which takes over the
/// connection); `data` is its streamed `data_b64`.
pub fn serve(conn: &Conn, req: &ControlRequest, data: ControlData) {
    let reply = match req {
        ControlRequest::ReadFile { path, max_bytes } => match file_read::read_file(conn, path, *max_bytes) {
            Ok(_sent) => return,
            Err(msg) => Err(msg),
        },
        ControlRequest::ReadFileChunk { path, offset, len, max_bytes } => {
            match file_read::read_file_chunk(conn, path, *offset, *len, *max_bytes) {
                Ok(_sent) => return,
                Err(msg) => Err(msg),
            }
        }
        ControlRequest::WriteFile { path, data_b64, mode } => {
            file_write::write_file(path, *mode, data_b64, data).map(|n| with(ack(), "bytes", n))
        }
        ControlRequest::WriteFileChunk { path, offset, data_b64, last, token, mode } => {
            file_write::write_file_chunk(path, *offset, token, *last, *mode, data_b64, data)
                .map(|n| with(ack(), "bytes", n))
        }
        ControlRequest::Reseed { data_b64 } => file_write::reseed_data(data_b64, data).and_then(|d| {
            reseed(&d).map_err(|e| format!("reseed: {e}"))?;
            Ok(with(ack(), "bytes", d.len()))
        }),
        other => handle(other),
    };
    let reply = match reply {
        Ok(fields) => proto::ack_ok(fields),
        Err(msg) => proto::ack_err(&msg),
    };
    let _ = conn.send(FrameType::Control, &reply);
}

/// The actions that need neither the connection nor data.
fn handle(req: &ControlRequest) -> Result<Ack, String> {
    match req {
        ControlRequest::Probe => Ok(with(
            with(with(ack(), "protocol", proto::PROTOCOL_VERSION), "capabilities", proto::CAPABILITIES.to_vec()),
            "version",
            env!("CARGO_PKG_VERSION"),
        )),
        ControlRequest::ReadFile { .. }
        | ControlRequest::ReadFileChunk { .. }
        | ControlRequest::WriteFile { .. }
        | ControlRequest::WriteFileChunk { .. }
        | ControlRequest::Reseed { .. }
        | ControlRequest::PortForward { .. } => Err(format!("{}: needs the connection", req.action())),
        ControlRequest::Signal { signum } => {
            let pidfile = crate::context::config().run_dir.join("supermachine-workload.pid");
            let text = fs::read_to_string(&pidfile)
                .map_err(|e| format!("no workload pid recorded ({}: {e})", pidfile.display()))?;
            let pid: libc::pid_t =
                text.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("no workload pid recorded ({} holds {:?})", pidfile.display(), text.trim())
                })?;
            sys::kill(pid, *signum).map_err(|e| format!("kill({pid}, {signum}): {e}"))?;
            Ok(with(ack(), "pid", pid))
        }
        ControlRequest::SyncTime { host_unix_ns } => {
            let before = now_ns();
            let ts = libc::timespec {
                tv_sec: (*host_unix_ns / 1_000_000_000) as _,
                tv_nsec: (*host_unix_ns % 1_000_000_000) as _,
            };
            // SAFETY: reads one timespec, alive across the call.
            sys::cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
                .map_err(|e| format!("clock_settime: {e}"))?;
            Ok(with(ack(), "adjusted_ns", *host_unix_ns as i128 as i64 - before))
        }
        ControlRequest::Sync => {
            // SAFETY: sync takes no arguments.
            unsafe { libc::sync() };
            Ok(ack())
        }
        ControlRequest::DropVfsCaches => {
            // SAFETY: sync takes no arguments.
            unsafe { libc::sync() };
            let p = crate::context::config().sys_root.join("proc/sys/vm/drop_caches");
            fs::write(&p, b"3\n").map_err(|e| format!("drop_vfs_caches: {}: {e}", p.display()))?;
            Ok(ack())
        }
        ControlRequest::SmparkPark => smpark(false),
        ControlRequest::SmparkUnpark => smpark(true),
        ControlRequest::Stat { path, follow } => {
            let st = files::stat(path, follow.unwrap_or(true)).map_err(|e| err_at("stat", path, e))?;
            let a = with(with(ack(), "type", st.kind), "size", st.size);
            let a = with(with(a, "mode", st.mode), "mtime", st.mtime);
            Ok(with(with(a, "uid", st.uid), "gid", st.gid))
        }
        ControlRequest::Mkdir { path, parents, mode } => {
            files::mkdir(path, *parents, mode.unwrap_or(0o755)).map_err(|e| err_at("mkdir", path, e))?;
            Ok(ack())
        }
        ControlRequest::Remove { path, recursive } => {
            crate::remove::remove(path, *recursive).map_err(|e| format!("remove {path}: {e}"))?;
            Ok(ack())
        }
    }
}

#[allow(clippy::unnecessary_cast)] // time_t and c_long differ between targets
fn now_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

/// Parks (`online = false`) or releases the secondary CPUs: through the kernel's smpark driver
/// where it exists (the supermachine HVF VMM cannot bring a CPU taken offline back), else by
/// taking them offline and online through sysfs (VMMs with working PSCI CPU_OFF/ON: QEMU, KVM).
/// The ack lists the secondary CPUs (`cpus`) and, with the driver, `via`.
fn smpark(online: bool) -> Result<Ack, String> {
    let cpus = secondary_cpus()?;
    let device = supermachine_guest_sys::cpu::SMPARK_DEVICE;
    match supermachine_guest_sys::cpu::smpark(!online) {
        Ok(()) => return Ok(with(with(ack(), "cpus", cpus), "via", device)),
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(format!("{}: {device}: {e}", if online { "smpark_unpark" } else { "smpark_park" }));
        }
        Err(_) => {}
    }
    let dir = cpu_dir();
    let mut errors = Vec::new();
    for n in &cpus {
        let p = dir.join(format!("cpu{n}/online"));
        if let Err(e) = fs::write(&p, if online { b"1" } else { b"0" }) {
            errors.push(format!("cpu{n}: {e}"));
        }
    }
    if errors.is_empty() {
        Ok(with(ack(), "cpus", cpus))
    } else {
        Err(format!("smpark: {}", errors.join("; ")))
    }
}

fn cpu_dir() -> std::path::PathBuf {
    crate::context::config().sys_root.join("sys/devices/system/cpu")
}

/// The CPUs above 0 that can go offline (those with an `online` file), in order.
fn secondary_cpus() -> Result<Vec<u32>, String> {
    let dir = cpu_dir();
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cpus: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
        .filter(|n| *n >= 1)
        .filter(|n| dir.join(format!("cpu{n}/online")).exists())
        .collect();
    cpus.sort_unstable();
    Ok(cpus)
}

const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

fn reseed(data: &[u8]) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open("/dev/urandom")?;
    if !data.is_empty() {
        // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
        let mut v = Vec::with_capacity(8 + data.len());
        v.extend_from_slice(&((data.len() * 8) as i32).to_ne_bytes());
        v.extend_from_slice(&(data.len() as i32).to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(8 + data.len().div_ceil(4) * 4, 0);
        // SAFETY: RNDADDENTROPY reads a rand_pool_info: two ints, then buf_size bytes (`v` holds
        // them, padded to whole u32s as the kernel's struct is declared).
        sys::cvt(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), RNDADDENTROPY as _, v.as_ptr()) })?;
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    sys::cvt(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), RNDRESEEDCRNG as _) })?;
    Ok(())
}

/// `port_forward`: connect to 127.0.0.1:port, ack, then copy bytes both ways until both sides
/// are done.
pub fn port_forward(conn: Arc<Conn>, mut rd: Input, port: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = match TcpStream::connect_timeout(&addr, crate::limits::PORT_FORWARD_CONNECT_TIMEOUT) {
        Ok(t) => t,
        Err(e) => {
            let _ = conn.send(FrameType::Control, &proto::ack_err(&format!("port_forward: connect {addr}: {e}")));
            return;
        }
    };
    if conn.send(FrameType::Control, &proto::ack_ok(with(ack(), "port", port))).is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let up = match tcp.try_clone() {
        Ok(mut t) => std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
            // host → guest port (bytes already buffered behind the CONTROL frame go first)
            let _ = io::copy(&mut rd, &mut t);
            let _ = t.shutdown(Shutdown::Write);
        }),
        Err(_) => return,
    };
    let mut tcp_r = tcp;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tcp_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_raw(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    // The guest side is done: end the whole connection. A vsock half-close does not reach the
    // host through every backend (vhost-device-vsock 0.3 never turns it into EOF), and the
    // forwarding thread is blocked reading the host side until we shut it down too.
    conn.shutdown_write();
    conn.shutdown_read();
    if let Ok(h) = up {
        let _ = h.join();
    }
}
