//! Host ends for the TSI tests (`src/bin/tsi-test.rs`): small servers on the test's own address,
//! and the runtime's ingress path (`Vm::expose_tcp`: the muxer's Unix socket and its
//! `SMUX-PORT-V1` header). Every server runs on a thread until the process ends; every read
//! is bounded.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The body the HTTP server answers every request with.
pub const HTTP_BODY: &str = "hello from the host through TSI\n";
/// The address a DNS query for any name resolves to.
pub const DNS_ANSWER: [u8; 4] = [10, 200, 0, 99];
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn spawn_tcp(ip: IpAddr, name: &'static str, serve: fn(TcpStream) -> io::Result<()>) -> io::Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0))
        .map_err(|e| io::Error::new(e.kind(), format!("binding the {name} server to {ip}: {e} (run inside scripts/tsi-test.sh, which gives its network namespace that address)")))?;
    let addr = l.local_addr()?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let _ = serve(s);
            });
        }
    });
    Ok(addr)
}

fn serve_http(mut s: TcpStream) -> io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{HTTP_BODY}", HTTP_BODY.len())
}

/// One line from `s`, without its newline: byte by byte (nothing read past it), at most `max`
/// bytes, ending early at EOF.
fn read_line(s: &mut impl Read, max: usize) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b)? == 1 && b[0] != b'\n' && line.len() < max {
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// "N\n" in, N bytes of [`pattern`] out, then close.
fn serve_source(mut s: TcpStream) -> io::Result<()> {
    let n: usize = read_line(&mut s, 20)?.trim().parse().unwrap_or(0);
    let mut sent = 0;
    while sent < n {
        let chunk = pattern(sent, (n - sent).min(65536));
        s.write_all(&chunk)?;
        sent += chunk.len();
    }
    Ok(())
}

/// "N\n" then N bytes in, "N CHECKSUM\n" out. The length comes first because a half-close
/// would not do: supermachine 0.7.108's muxer closes the host socket on the guest's SHUT_WR.
fn serve_sink(mut s: TcpStream) -> io::Result<()> {
    let want: usize = read_line(&mut s, 20)?.trim().parse().unwrap_or(0);
    let (mut n, mut sum) = (0usize, Checksum::default());
    let mut buf = vec![0u8; 65536];
    while n < want {
        let k = match s.read(&mut buf[..(want - n).min(65536)]) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("tsi-test: sink: {e} after {n} of {want} bytes");
                return Err(e);
            }
        };
        if k == 0 {
            break;
        }
        sum.update(&buf[..k]);
        n += k;
    }
    writeln!(s, "{n} {:08x}", sum.value())
}

/// The stream the source server sends and the sink expects: byte i is i mod 251.
pub fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len).map(|i| (i % 251) as u8).collect()
}

/// Adler-32 (RFC 1950), which the guest computes with Python's zlib.adler32.
pub struct Checksum {
    a: u32,
    b: u32,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum { a: 1, b: 0 }
    }
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        for &x in data {
            self.a = (self.a + x as u32) % 65521;
            self.b = (self.b + self.a) % 65521;
        }
    }
    pub fn value(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

/// The TCP servers: (http, source, sink).
pub fn spawn_tcp_servers(ip: IpAddr) -> io::Result<(SocketAddr, SocketAddr, SocketAddr)> {
    Ok((spawn_tcp(ip, "http", serve_http)?, spawn_tcp(ip, "source", serve_source)?, spawn_tcp(ip, "sink", serve_sink)?))
}

/// A UDP echo server: answers "echo:" + payload to whoever sent it.
pub fn spawn_udp_echo(ip: IpAddr) -> io::Result<SocketAddr> {
    let s = UdpSocket::bind((ip, 0))?;
    let addr = s.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    Ok(addr)
}

/// A DNS server on port 53 answering every A query with [`DNS_ANSWER`] (other types: no data).
pub fn spawn_dns(ip: IpAddr) -> io::Result<SocketAddr> {
    let s = UdpSocket::bind((ip, 53))?;
    let addr = s.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if let Some(reply) = dns_reply(&buf[..n]) {
                let _ = s.send_to(&reply, from);
            }
        }
    });
    Ok(addr)
}

/// The answer to one DNS query (RFC 1035), or None if it is not one.
pub fn dns_reply(q: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[4..6] != [0, 1] {
        return None;
    }
    // The question: labels up to the zero byte, then type and class.
    let mut i = 12;
    while i < q.len() && q[i] != 0 {
        i += 1 + q[i] as usize;
    }
    let qend = i + 5;
    if qend > q.len() {
        return None;
    }
    let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
    let mut r = q[..qend].to_vec();
    r[2] = 0x81; // response, recursion desired
    r[3] = 0x80; // recursion available, no error
    r[6..12].copy_from_slice(&[0, (qtype == 1) as u8, 0, 0, 0, 0]);
    if qtype == 1 {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&DNS_ANSWER);
    }
    Some(r)
}

/// A connection into the guest the way `Vm::expose_tcp` makes one: to the muxer's Unix socket,
/// with the header that names the guest port (none: the muxer picks its best listener).
pub fn ingress(mux: &Path, guest_port: Option<u16>) -> io::Result<UnixStream> {
    let mut s = UnixStream::connect(mux)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    if let Some(p) = guest_port {
        let mut h = b"SMUX-PORT-V1\0\0\0\0".to_vec();
        h.extend_from_slice(&(p as u32).to_be_bytes());
        s.write_all(&h)?;
    }
    Ok(s)
}

/// An HTTP GET through [`ingress`]; the whole response.
pub fn ingress_get(mux: &Path, guest_port: Option<u16>, path: &str) -> io::Result<String> {
    let mut s = ingress(mux, guest_port)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One command to tools/tsi-backend's control socket (e.g. `snapshot`); its reply line.
pub fn control(sock: &Path, command: &str) -> io::Result<String> {
    let mut s = UnixStream::connect(sock)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    writeln!(s, "{command}")?;
    let line = read_line(&mut s, 4096)?;
    if line.starts_with("OK") {
        Ok(line)
    } else {
        Err(io::Error::other(format!("{command}: {line}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_reply_answers_a_and_nothing_else() {
        // id 0x1234, RD, one question: "a.sm" A IN
        let q = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b's', b'm', 0, 0, 1, 0, 1];
        let r = dns_reply(&q).unwrap();
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &DNS_ANSWER);
        let mut aaaa = q;
        aaaa[19] = 28;
        let r = dns_reply(&aaaa).unwrap();
        assert_eq!(&r[6..8], &[0, 0], "no answer for AAAA");
        assert_eq!(r.len(), q.len());
        assert!(dns_reply(&q[..10]).is_none());
    }

    #[test]
    fn pattern_and_checksum_are_stable() {
        assert_eq!(pattern(250, 3), vec![250, 0, 1]);
        let mut c = Checksum::default();
        c.update(b"Wikipedia");
        assert_eq!(c.value(), 0x11e60398, "the RFC 1950 example");
    }
}
