//! CONTROL actions.

use crate::conn::Conn;
use crate::input::Input;
use crate::sys;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use supermachine_agent_proto::{self as proto, b64, Ack, ControlRequest, FrameType, CHUNK_SIZE, MAX_INLINE_READ};

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

/// Handles every action except `port_forward` (which takes over the connection).
pub fn handle(req: &ControlRequest) -> Result<Ack, String> {
    match req {
        ControlRequest::Probe => Ok(with(
            with(with(ack(), "protocol", proto::PROTOCOL_VERSION), "capabilities", proto::CAPABILITIES.to_vec()),
            "version",
            env!("CARGO_PKG_VERSION"),
        )),
        ControlRequest::WriteFile { path, data_b64, mode } => {
            let data = b64::decode(data_b64)?;
            atomic_write(path, &data, *mode).map_err(|e| err_at("write_file", path, e))?;
            Ok(with(ack(), "bytes", data.len()))
        }
        ControlRequest::WriteFileChunk { path, offset, data_b64, last, token, mode } => {
            let data = b64::decode(data_b64)?;
            write_chunk(path, *offset, &data, *last, token, *mode).map_err(|e| err_at("write_file_chunk", path, e))?;
            Ok(with(ack(), "bytes", data.len()))
        }
        ControlRequest::ReadFile { path, max_bytes } => {
            let limit = max_bytes.unwrap_or(MAX_INLINE_READ as u64).min(MAX_INLINE_READ as u64);
            let data = read_limited(path, limit)?;
            Ok(with(ack(), "data_b64", b64::encode(&data)))
        }
        ControlRequest::ReadFileChunk { path, offset, len, max_bytes } => read_chunk(path, *offset, *len, *max_bytes),
        ControlRequest::Signal { signum } => {
            let pidfile = crate::config().run_dir.join("supermachine-workload.pid");
            let text = fs::read_to_string(&pidfile)
                .map_err(|e| format!("no workload pid recorded ({}: {e})", pidfile.display()))?;
            let pid: libc::pid_t = text
                .trim()
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("no workload pid recorded ({} holds {:?})", pidfile.display(), text.trim()))?;
            sys::kill(pid, *signum).map_err(|e| format!("kill({pid}, {signum}): {e}"))?;
            Ok(with(ack(), "pid", pid))
        }
        ControlRequest::SyncTime { host_unix_ns } => {
            let before = now_ns();
            let ts = libc::timespec {
                tv_sec: (*host_unix_ns / 1_000_000_000) as _,
                tv_nsec: (*host_unix_ns % 1_000_000_000) as _,
            };
            sys::cvt(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })
                .map_err(|e| format!("clock_settime: {e}"))?;
            Ok(with(ack(), "adjusted_ns", *host_unix_ns as i128 as i64 - before))
        }
        ControlRequest::Sync => {
            unsafe { libc::sync() };
            Ok(ack())
        }
        ControlRequest::DropVfsCaches => {
            unsafe { libc::sync() };
            let p = crate::config().sys_root.join("proc/sys/vm/drop_caches");
            fs::write(&p, b"3\n").map_err(|e| format!("drop_vfs_caches: {}: {e}", p.display()))?;
            Ok(ack())
        }
        ControlRequest::SmparkPark => smpark(false),
        ControlRequest::SmparkUnpark => smpark(true),
        ControlRequest::Reseed { data_b64 } => {
            let data = b64::decode(data_b64)?;
            reseed(&data).map_err(|e| format!("reseed: {e}"))?;
            Ok(with(ack(), "bytes", data.len()))
        }
        ControlRequest::PortForward { .. } => Err("port_forward needs the connection".into()),
        ControlRequest::Stat { path, follow } => {
            let md = if follow.unwrap_or(true) { fs::metadata(path) } else { fs::symlink_metadata(path) }
                .map_err(|e| err_at("stat", path, e))?;
            let ft = md.file_type();
            let kind = if ft.is_file() {
                "file"
            } else if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "other"
            };
            let a = with(with(ack(), "type", kind), "size", md.len());
            let a = with(with(a, "mode", md.mode()), "mtime", md.mtime());
            Ok(with(with(a, "uid", md.uid()), "gid", md.gid()))
        }
        ControlRequest::Mkdir { path, parents, mode } => {
            let mode = mode.unwrap_or(0o755);
            if *parents && Path::new(path).is_dir() {
                return Ok(ack());
            }
            fs::DirBuilder::new().recursive(*parents).mode(mode).create(path).map_err(|e| err_at("mkdir", path, e))?;
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
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
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as i64 * 1_000_000_000 + ts.tv_nsec as i64
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn split(path: &str) -> io::Result<(PathBuf, String)> {
    let p = Path::new(path);
    let name = p
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

fn final_mode(target: &Path, mode: Option<u32>) -> u32 {
    mode.or_else(|| fs::metadata(target).ok().map(|m| m.mode() & 0o7777)).unwrap_or(0o644)
}

fn commit(file: File, tmp: &Path, target: &Path, mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, target)?;
    if let Some(d) = target.parent() {
        if let Ok(f) = File::open(if d.as_os_str().is_empty() { Path::new(".") } else { d }) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

/// Writes `data` to a temporary file beside `path`, fsyncs it and renames it over `path`: a
/// reader sees the old or the new content, never a torn file. Parent directories are created.
/// Without `mode` an existing file keeps its mode (new files get 0644).
pub fn atomic_write(path: &str, data: &[u8], mode: Option<u32>) -> io::Result<()> {
    let (dir, name) = split(path)?;
    fs::create_dir_all(&dir)?;
    let target = Path::new(path);
    let mode = final_mode(target, mode);
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.sm-tmp.{}.{n}", std::process::id()));
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        commit(f, &tmp, target, mode)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn write_chunk(path: &str, offset: u64, data: &[u8], last: bool, token: &str, mode: Option<u32>) -> io::Result<()> {
    let (dir, name) = split(path)?;
    let tok: String = token
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' { (b as char).to_string() } else { format!("%{b:02x}") })
        .collect();
    if tok.is_empty() || tok.len() > 128 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "token must be 1..=128 characters"));
    }
    let tmp = dir.join(format!(".{name}.sm-chunk.{tok}"));
    let f = if offset == 0 {
        fs::create_dir_all(&dir)?;
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?
    } else {
        OpenOptions::new().write(true).open(&tmp).map_err(|e| {
            io::Error::new(e.kind(), format!("no upload in progress for token {token:?} (send offset 0 first): {e}"))
        })?
    };
    f.write_all_at(data, offset)?;
    if last {
        let target = Path::new(path);
        let m = final_mode(target, mode);
        if let Err(e) = commit(f, &tmp, target, m) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    }
    Ok(())
}

fn open_for(what: &str, path: &str) -> Result<(File, fs::Metadata), String> {
    crate::fileio::open_regular(path).map_err(|e| format!("{what} {path}: {e}"))
}

fn read_limited(path: &str, limit: u64) -> Result<Vec<u8>, String> {
    let (f, md) = open_for("read_file", path)?;
    let size = md.len();
    let too_big = |n: u64| format!("read_file {path}: file is {n} bytes, more than max_bytes {limit}; use read_file_chunk");
    if size > limit {
        return Err(too_big(size));
    }
    let mut data = Vec::with_capacity(size as usize);
    f.take(limit + 1).read_to_end(&mut data).map_err(|e| err_at("read_file", path, e))?;
    if data.len() as u64 > limit {
        return Err(too_big(data.len() as u64));
    }
    Ok(data)
}

fn read_chunk(path: &str, offset: u64, len: u64, max_bytes: Option<u64>) -> Result<Ack, String> {
    let (f, md) = open_for("read_file_chunk", path)?;
    let size = md.len();
    if let Some(m) = max_bytes {
        if size > m {
            return Err(format!("read_file_chunk {path}: file is {size} bytes, more than max_bytes {m}"));
        }
    }
    // Read up to `len` bytes whatever the size says: /proc files report 0.
    let len = len.min(CHUNK_SIZE as u64);
    let mut buf = Vec::new();
    let mut at = offset;
    let mut eof = false;
    let mut block = [0u8; 16 * 1024];
    while (buf.len() as u64) < len {
        let want = (len - buf.len() as u64).min(block.len() as u64) as usize;
        match f.read_at(&mut block[..want], at) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => {
                buf.extend_from_slice(&block[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err_at("read_file_chunk", path, e)),
        }
    }
    let end = offset + buf.len() as u64;
    // Reaching the end tells the real length (a /proc file's size is 0, a file may shrink).
    let total = match (buf.is_empty(), eof) {
        (true, _) => size,
        (false, true) => end,
        (false, false) => size.max(end),
    };
    let eof = eof || end >= total;
    let a = with(ack(), "data_b64", b64::encode(&buf));
    Ok(with(with(a, "total_len", total), "eof", eof))
}

/// Takes the secondary CPUs offline (`online = false`) or back online through sysfs.
fn smpark(online: bool) -> Result<Ack, String> {
    let dir = crate::config().sys_root.join("sys/devices/system/cpu");
    let entries = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cpus: Vec<u32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok())
        .filter(|n| *n >= 1)
        .filter(|n| dir.join(format!("cpu{n}/online")).exists())
        .collect();
    cpus.sort_unstable();
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
        sys::cvt(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), RNDADDENTROPY as _, v.as_ptr()) })?;
    }
    sys::cvt(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), RNDRESEEDCRNG as _) })?;
    Ok(())
}

/// `port_forward`: connect to 127.0.0.1:port, ack, then copy bytes both ways until both sides
/// are done.
pub fn port_forward(conn: Arc<Conn>, mut rd: Input, port: u16) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
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
