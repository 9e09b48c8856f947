//! What PID 1 exchanges with the host runtime: the clock, the pause points, the served
//! environment (vsock port 1026), and the network files of the image.

use super::{in_root, write_stderr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use supermachine_guest_sys::{cvt, errno, net};
use supermachine_init::cmdline::Cmdline;
use supermachine_init::runtime;

/// Sets the wall clock (from `supermachine.host_time=`); failure is a warning.
pub fn set_clock(secs: i64, nanos: i64) {
    let ts = libc::timespec { tv_sec: secs as _, tv_nsec: nanos as _ };
    // SAFETY: reads one timespec, alive across the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        log!("warning: cannot set the clock: {}", io::Error::last_os_error());
    }
}

/// The runtime's pause points (`supermachine.kcache=1`, `supermachine.pre_exec_sync=1`): print
/// `[SUPERMACHINE-<what>] ready`, wait up to 30 s for a line on the console (the host pushes
/// `R\n` / `P\n` after its snapshot), print `resumed token=…` or `timeout`.
pub fn pause_point(what: &str) {
    write_stderr(format!("[SUPERMACHINE-{what}] ready\n").as_bytes());
    let mut pfd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    let mut tok = [0u8; 16];
    // SAFETY: `pfd` is one valid pollfd, alive across the call.
    let n = if unsafe { libc::poll(&mut pfd, 1, 30_000) } > 0 {
        // SAFETY: reads at most `tok.len()` bytes into `tok`.
        unsafe { libc::read(0, tok.as_mut_ptr().cast(), tok.len()) }
    } else {
        -1
    };
    let msg = if n > 0 {
        let t = String::from_utf8_lossy(&tok[..n as usize]).trim_end().to_string();
        format!("[SUPERMACHINE-{what}] resumed token={t}\n")
    } else {
        format!("[SUPERMACHINE-{what}] timeout rn={n} errno={}\n", errno())
    };
    write_stderr(msg.as_bytes());
}

/// Sets a socket option whose value is a timeval.
fn set_timeval(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, secs: u8) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: secs.into(), tv_usec: 0 };
    let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: reads one timeval of `len` bytes, alive across the call.
    cvt(unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&tv as *const libc::timeval).cast(), len) }).map(drop)
}

/// A connected stream to the host's vsock `port`, with a 1 s connect and 2 s read timeout.
fn connect_host(port: u32) -> io::Result<std::fs::File> {
    // SAFETY: socket takes no pointers; the result is checked before use.
    let fd = cvt(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket() just created `fd`; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    const SO_VM_SOCKETS_CONNECT_TIMEOUT: libc::c_int = 6;
    let _ = set_timeval(&sock, libc::AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, 1);
    let _ = set_timeval(&sock, libc::SOL_SOCKET, libc::SO_RCVTIMEO, 2);
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as _;
    addr.svm_cid = libc::VMADDR_CID_HOST;
    addr.svm_port = port;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_vm of `len` bytes, alive across the call.
    cvt(unsafe { libc::connect(sock.as_raw_fd(), (&addr as *const libc::sockaddr_vm).cast(), len) })?;
    Ok(std::fs::File::from(sock))
}

/// Fetches `{"env":{..},"secrets":{..}}` from the host's vsock port 1026 (the runtime's env
/// service). 1 s to connect, 2 s to read; any failure is a warning and gives no variables.
pub fn fetch_served_env() -> Vec<String> {
    let fetch = || -> Result<Vec<u8>, String> {
        let mut stream =
            connect_host(runtime::ENV_PORT).map_err(|e| format!("connect to host port {}: {e}", runtime::ENV_PORT))?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Until EOF, a read error or timeout, or more than 1 MiB.
        while out.len() <= 1 << 20 {
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        Ok(out)
    };
    match fetch().and_then(|b| runtime::parse_env_json(&b)) {
        Ok(env) => env,
        Err(e) => {
            log!("warning: no env from the runtime's env service: {e}");
            Vec::new()
        }
    }
}

/// What the supermachine runtime's init writes (0.7.108, `oci/init-oci.c`): one nameserver on
/// purpose (TSI replies carry no source address, so a second one confused musl), short timeouts.
const RESOLV_CONF: &str = "nameserver 1.1.1.1\noptions timeout:2 attempts:2 no-aaaa single-request\n";
/// /etc/hosts when the image has none, an empty one or one without `localhost`.
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
/// /etc/gai.conf with `supermachine.host_ipv6=0`: glibc's getaddrinfo prefers IPv4 (the stack
/// stays up for `[::]` binds and `::1`).
const GAI_CONF_V4_FIRST: &str = "# supermachine: host has no IPv6 route \u{2014} prefer A over AAAA.
precedence ::ffff:0:0/96  100
precedence ::1/128         50
precedence ::/0            40
precedence 2002::/16       30
precedence ::/96           20
precedence fec0::/10       10
precedence fc00::/7         3
precedence 2001:0::/32      1
";

/// Does the image's /etc/hosts (its first 4095 bytes, as the runtime reads it) name localhost?
fn hosts_has_localhost(path: &str) -> bool {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4095).read_to_end(&mut head))
        .map(|_| head.windows(9).any(|w| w == b"localhost"))
        .unwrap_or(false)
}

/// Loopback up, unprivileged low ports, hostname, and the image's /etc/hosts, /etc/resolv.conf
/// and (host without IPv6) /etc/gai.conf, as the runtime's own init leaves them.
pub fn network(c: &Cmdline) {
    let _ = net::loopback_up();
    // The runtime's smnet0 (198.18.0.1/30), for glibc's AI_ADDRCONFIG; failures are warnings.
    match supermachine_guest_sys::netlink::fake_interface() {
        Ok(()) => log!("fake iface smnet0 (198.18.0.1/30) up \u{2014} AI_ADDRCONFIG ok"),
        Err(e) => log!("warning: fake iface smnet0: {e}"),
    }
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0\n");
    if let Some(h) = &c.hostname {
        // SAFETY: reads `h.len()` bytes from `h`.
        unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) };
    }
    let _ = std::fs::create_dir_all(in_root("/etc"));
    let hosts = in_root("/etc/hosts");
    if !hosts_has_localhost(&hosts) {
        let _ = std::fs::write(&hosts, HOSTS);
    }
    // Always, as the runtime does. A symbolic link (e.g. to systemd-resolved's stub file) is
    // replaced by the file rather than written through: its target may not exist here.
    let _ = std::fs::remove_file(in_root("/etc/resolv.conf"));
    if let Err(e) = std::fs::write(in_root("/etc/resolv.conf"), RESOLV_CONF) {
        log!("warning: cannot write /etc/resolv.conf: {e}");
    }
    if c.host_ipv6 == Some(false) {
        match std::fs::write(in_root("/etc/gai.conf"), GAI_CONF_V4_FIRST) {
            Ok(()) => log!("IPv6 stack stays up; gai.conf biases to v4 (host has no v6 route)"),
            Err(e) => log!("IPv6 stack stays up; could not write /etc/gai.conf: {e}"),
        }
    }
}
