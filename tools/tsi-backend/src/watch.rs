//! Tells a hybrid-vsock client whether the guest accepted its connection.
//!
//! `VsockMuxer::open_native_to_guest` only queues a REQUEST; it reports neither the host port it
//! picked nor the guest's answer (and on an RST it keeps the stream forever). Both are visible
//! to the backend, though: the REQUEST passes through it on the way into the guest, and the
//! guest's RESPONSE or RST on the way out. So a client registers as *waiting* for its guest
//! port; the first host REQUEST to that port is bound to it by host port; the guest's answer
//! to that host port fires the client's callback.
//!
//! Limitation: a REQUEST to the same guest port opened by another front at the same moment
//! (exec.sock to port 1028) may be bound to a waiting client instead of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use supermachine::devices::virtio::vsock::packet::{
    Header, VSOCK_HOST_CID, VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RST, VSOCK_TYPE_STREAM,
};

/// Most connection handshakes in flight at once.
pub const MAX_WAITERS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The guest answered RESPONSE; the muxer is about to splice the stream.
    Connected { host_port: u32 },
    /// The guest answered RST (nothing listening), or the transport was reset.
    Refused,
}

/// Called exactly once with the outcome, on the thread that saw it (the backend's), while the
/// watch is locked: it must only do quick, non-blocking work.
pub type Callback = Box<dyn FnOnce(Outcome) + Send>;

struct Waiter {
    id: u64,
    guest_port: u32,
    done: Callback,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Registered, REQUEST not seen yet; oldest first.
    waiting: VecDeque<Waiter>,
    /// REQUEST seen; keyed by the host port it came from.
    bound: HashMap<u32, Waiter>,
}

#[derive(Default)]
pub struct HandshakeWatch {
    inner: Mutex<Inner>,
}

impl HandshakeWatch {
    /// Registers interest in the next host REQUEST to `guest_port`; call before opening it.
    pub fn expect(&self, guest_port: u32, done: Callback) -> Result<u64, String> {
        let mut g = self.inner.lock().unwrap();
        if g.waiting.len() + g.bound.len() >= MAX_WAITERS {
            return Err(format!("{MAX_WAITERS} connection handshakes already in flight"));
        }
        g.next_id += 1;
        let id = g.next_id;
        g.waiting.push_back(Waiter { id, guest_port, done });
        Ok(id)
    }

    /// Sees every host→guest packet the backend takes from the muxer.
    pub fn on_host_packet(&self, hdr: &Header) {
        if hdr.op != VSOCK_OP_REQUEST || hdr.type_ != VSOCK_TYPE_STREAM || hdr.src_cid != VSOCK_HOST_CID {
            return;
        }
        let mut g = self.inner.lock().unwrap();
        if let Some(i) = g.waiting.iter().position(|w| w.guest_port == hdr.dst_port) {
            let w = g.waiting.remove(i).expect("index from position()");
            if let Some(stale) = g.bound.insert(hdr.src_port, w) {
                // Host ports are never reused by the muxer; if one is, the older waiter lost.
                (stale.done)(Outcome::Refused);
            }
        }
    }

    /// Sees every guest→host packet, before the muxer does (so an "OK" reaches the client
    /// before the muxer starts forwarding the guest's bytes to it).
    pub fn on_guest_packet(&self, hdr: &Header) {
        let outcome = match hdr.op {
            VSOCK_OP_RESPONSE => Outcome::Connected { host_port: hdr.dst_port },
            VSOCK_OP_RST => Outcome::Refused,
            _ => return,
        };
        let mut g = self.inner.lock().unwrap();
        if g.bound.get(&hdr.dst_port).is_some_and(|w| w.guest_port == hdr.src_port) {
            let w = g.bound.remove(&hdr.dst_port).expect("checked above");
            (w.done)(outcome);
        }
    }

    /// Forgets a waiter (its client gave up). False if its callback already ran.
    pub fn cancel(&self, id: u64) -> bool {
        let mut g = self.inner.lock().unwrap();
        if let Some(i) = g.waiting.iter().position(|w| w.id == id) {
            g.waiting.remove(i);
            return true;
        }
        let key = g.bound.iter().find(|(_, w)| w.id == id).map(|(k, _)| *k);
        key.and_then(|k| g.bound.remove(&k)).is_some()
    }

    /// Refuses every waiter (the muxer's connection state was dropped). Returns how many.
    pub fn clear(&self) -> usize {
        let mut g = self.inner.lock().unwrap();
        let waiting = std::mem::take(&mut g.waiting);
        let bound = std::mem::take(&mut g.bound);
        let mut n = 0;
        for w in waiting.into_iter().chain(bound.into_values()) {
            (w.done)(Outcome::Refused);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn hdr(op: u16, src: (u64, u32), dst: (u64, u32)) -> Header {
        Header {
            src_cid: src.0,
            dst_cid: dst.0,
            src_port: src.1,
            dst_port: dst.1,
            len: 0,
            type_: VSOCK_TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 0,
            fwd_cnt: 0,
        }
    }

    fn waiter(w: &HandshakeWatch, port: u32) -> (u64, mpsc::Receiver<Outcome>) {
        let (tx, rx) = mpsc::channel();
        let id = w.expect(port, Box::new(move |o| tx.send(o).unwrap())).unwrap();
        (id, rx)
    }

    #[test]
    fn response_connects_rst_refuses() {
        let w = HandshakeWatch::default();
        let (_, a) = waiter(&w, 1028);
        let (_, b) = waiter(&w, 1028);
        w.on_host_packet(&hdr(VSOCK_OP_REQUEST, (2, 0xc000_0001), (3, 1028)));
        w.on_host_packet(&hdr(VSOCK_OP_REQUEST, (2, 0xc000_0002), (3, 1028)));
        // Answers may come in any order; matching is by host port.
        w.on_guest_packet(&hdr(VSOCK_OP_RST, (3, 1028), (2, 0xc000_0002)));
        w.on_guest_packet(&hdr(VSOCK_OP_RESPONSE, (3, 1028), (2, 0xc000_0001)));
        assert_eq!(a.try_recv(), Ok(Outcome::Connected { host_port: 0xc000_0001 }));
        assert_eq!(b.try_recv(), Ok(Outcome::Refused));
    }

    #[test]
    fn unrelated_traffic_is_ignored() {
        let w = HandshakeWatch::default();
        let (_, a) = waiter(&w, 1028);
        // A REQUEST to another port, a guest-initiated REQUEST, data, a RESPONSE nobody awaits.
        w.on_host_packet(&hdr(VSOCK_OP_REQUEST, (2, 0xc000_0009), (3, 80)));
        w.on_host_packet(&hdr(VSOCK_OP_REQUEST, (3, 5000), (2, 620)));
        w.on_guest_packet(&hdr(VSOCK_OP_RESPONSE, (3, 1028), (2, 0xc000_0001)));
        assert!(a.try_recv().is_err());
        w.on_host_packet(&hdr(VSOCK_OP_REQUEST, (2, 0xc000_0001), (3, 1028)));
        // Right host port, wrong guest port: not ours.
        w.on_guest_packet(&hdr(VSOCK_OP_RESPONSE, (3, 9999), (2, 0xc000_0001)));
        assert!(a.try_recv().is_err());
        w.on_guest_packet(&hdr(VSOCK_OP_RESPONSE, (3, 1028), (2, 0xc000_0001)));
        assert!(a.try_recv().is_ok());
    }

    #[test]
    fn cancel_and_clear() {
        let w = HandshakeWatch::default();
        let (a_id, a) = waiter(&w, 1028);
        let (b_id, b) = waiter(&w, 1028);
        let (_, c) = waiter(&w, 1028);
        assert!(w.cancel(a_id));
        assert!(!w.cancel(a_id));
        // With `a` gone, the first REQUEST binds to `b`.
        w.on_host_packet(&hdr(VSOCK_OP_REQUEST, (2, 0xc000_0001), (3, 1028)));
        assert!(w.cancel(b_id), "bound waiters can be cancelled too");
        assert!(a.try_recv().is_err() && b.try_recv().is_err());
        assert_eq!(w.clear(), 1);
        assert_eq!(c.try_recv(), Ok(Outcome::Refused));
        assert_eq!(w.clear(), 0);
    }

    #[test]
    fn bounded() {
        let w = HandshakeWatch::default();
        for _ in 0..MAX_WAITERS {
            w.expect(1, Box::new(|_| {})).unwrap();
        }
        assert!(w.expect(1, Box::new(|_| {})).is_err());
    }
}
