//! Just enough rtnetlink for the supermachine runtime's "fake" interface: `smnet0`, the guest
//! end of a veth pair (peer `smnet0p`, left down) carrying 198.18.0.1/30 with link scope. It
//! routes nothing (TSI carries the traffic); it exists so that glibc's `getaddrinfo` with
//! `AI_ADDRCONFIG` (node's `dns.lookup`, many clients) sees an IPv4 address and returns A
//! records. The runtime's own init creates it the same way.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// <linux/rtnetlink.h>, <linux/netlink.h>, <linux/if_link.h>, <linux/veth.h>, <linux/if_addr.h>
const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_SCOPE_LINK: u8 = 253;

/// The interface, its peer, and its address.
pub const FAKE_IFACE: &str = "smnet0";
const FAKE_PEER: &str = "smnet0p";
const FAKE_ADDR: [u8; 4] = [198, 18, 0, 1];
const FAKE_PREFIX: u8 = 30;

/// One netlink request being built: a header, a fixed part, attributes (4-byte aligned).
struct Request {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Request {
    fn new(kind: u16, flags: u16) -> Request {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Request { buf, open: Vec::new() }
    }

    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
        self
    }

    /// `struct ifinfomsg`: family, type, index, flags, change.
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        let mut m = [0u8; 16];
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        m[8..12].copy_from_slice(&flags.to_ne_bytes());
        m[12..16].copy_from_slice(&change.to_ne_bytes());
        self.raw(&m)
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.raw(data)
    }

    fn name(&mut self, kind: u16, name: &str) -> &mut Self {
        let mut z = name.as_bytes().to_vec();
        z.push(0);
        self.attr(kind, &z)
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let at = self.open.pop().expect("end() after begin()");
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

/// Sends one request and reads the kernel's acknowledgement (its errno, 0 on success).
fn send(sock: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: sends `msg.len()` bytes from `msg` on a socket we own.
    cvt(unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) })?;
    let mut reply = [0u8; 1024];
    // SAFETY: writes at most `reply.len()` bytes into `reply`.
    let n = cvt(unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), reply.len(), 0) })? as usize;
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if n < 20 || kind != NLMSG_ERROR {
        return Err(io::Error::other(format!("unexpected netlink reply (type {kind}, {n} bytes)")));
    }
    match i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(-e)),
    }
}

fn index_of(name: &str) -> io::Result<i32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i as i32),
    }
}

/// Creates `smnet0` (veth, peer `smnet0p` down), gives it 198.18.0.1/30 and sets it up. An
/// interface of that name already there is reused.
pub fn fake_interface() -> io::Result<()> {
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = cvt(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) })?;
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };

    let create = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)
        .ifinfo(0, 0, 0)
        .name(IFLA_IFNAME, FAKE_IFACE)
        .begin(IFLA_LINKINFO)
        .name(IFLA_INFO_KIND, "veth")
        .begin(IFLA_INFO_DATA)
        .begin(VETH_INFO_PEER)
        .ifinfo(0, 0, 0)
        .name(IFLA_IFNAME, FAKE_PEER)
        .end()
        .end()
        .end()
        .finish();
    match send(&sock, &create) {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            return Err(io::Error::new(e.kind(), format!("create veth {FAKE_IFACE}: {e}")))
        }
        _ => {}
    }
    let index = index_of(FAKE_IFACE)?;

    let mut ifaddr = [0u8; 8];
    ifaddr[0] = libc::AF_INET as u8;
    ifaddr[1] = FAKE_PREFIX;
    ifaddr[3] = RT_SCOPE_LINK;
    ifaddr[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
    let addr = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE)
        .raw(&ifaddr)
        .attr(IFA_LOCAL, &FAKE_ADDR)
        .attr(IFA_ADDRESS, &FAKE_ADDR)
        .finish();
    send(&sock, &addr).map_err(|e| io::Error::new(e.kind(), format!("address on {FAKE_IFACE}: {e}")))?;

    let up = libc::IFF_UP as u32;
    let link_up = Request::new(RTM_NEWLINK, 0).ifinfo(index, up, up).finish();
    send(&sock, &link_up).map_err(|e| io::Error::new(e.kind(), format!("set {FAKE_IFACE} up: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_aligned_and_nested_lengths_are_right() {
        let m = Request::new(RTM_NEWLINK, 0)
            .ifinfo(0, 0, 0)
            .begin(IFLA_LINKINFO)
            .name(IFLA_INFO_KIND, "veth")
            .end()
            .finish();
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize, m.len());
        assert_eq!(m.len() % 4, 0);
        // header 16 + ifinfomsg 16, then LINKINFO (4) holding INFO_KIND (4 + "veth\0" = 9 → 12).
        assert_eq!(u16::from_ne_bytes(m[32..34].try_into().unwrap()), 4 + 9 + 3);
        assert_eq!(&m[40..45], b"veth\0");
    }
}
