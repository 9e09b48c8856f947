//! The vhost-user device: three virtqueues (rx=0, tx=1, event=2) whose packets go to and come
//! from the runtime's muxer. One worker thread runs every queue and the muxer's kick, so all
//! virtqueue access is single-threaded.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::{VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use supermachine::devices::virtio::vsock::packet::{Header, RxPacket};

use crate::rx::{self, PendingRx};
use crate::shared::Shared;
use crate::tx;

pub const NUM_QUEUES: usize = 3;
/// The largest queue the frontend may set up. QEMU 7.2's vhost-user-vsock asks for 1024 entries
/// (VHOST_USER_SET_VRING_NUM num=1024, seen with strace); a smaller maximum makes the handler
/// refuse that message ("invalid parameters") and the device never starts.
pub const QUEUE_SIZE: usize = 1024;
const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
const EVENT_QUEUE: u16 = 2;
/// epoll token of the muxer's kick EventFd. Tokens 0..=NUM_QUEUES are the queues and the
/// daemon's exit event.
pub const KICK_EVENT: u16 = NUM_QUEUES as u16 + 1;

/// One QEMU connection's device. A fresh one is made per connection; [`Shared`] carries over.
pub struct TsiBackend {
    shared: Arc<Shared>,
    guest_cid: u64,
    mem: Mutex<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    event_idx: AtomicBool,
    exit: EventFd,
}

impl TsiBackend {
    pub fn new(shared: Arc<Shared>, guest_cid: u64) -> Result<TsiBackend, String> {
        let exit = EventFd::new(EFD_NONBLOCK).map_err(|e| format!("creating the exit eventfd: {e}"))?;
        Ok(TsiBackend { shared, guest_cid, mem: Mutex::new(None), event_idx: AtomicBool::new(false), exit })
    }

    /// Stops the worker thread (the daemon does not do it when we drive it by hand).
    pub fn stop_worker(&self) {
        let _ = self.exit.write(1);
    }

    fn process_tx(&self, vring: &VringRwLock, mem: &GuestMemoryMmap) {
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let mut used = false;
        if !vring.get_ref().get_queue().ready() {
            return;
        }
        loop {
            if event_idx {
                let _ = vring.disable_notification();
            }
            loop {
                // Pop under the vring lock, then release it: handle_tx can block (a TSI CONNECT
                // waits up to 2 s) and add_used takes the lock again.
                let chain = {
                    let mut g = vring.get_mut();
                    g.get_queue_mut().pop_descriptor_chain(mem)
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let parsed = tx::read_tx_chain(mem, chain);
                if let Err(e) = vring.add_used(head, 0) {
                    log!("TX add_used({head}): {e:?}");
                }
                used = true;
                match parsed {
                    Ok((hdr, payload)) => self.dispatch(&hdr, &payload),
                    Err(e) => log!("malformed TX chain {head}: {e}; skipped"),
                }
            }
            if !event_idx || !vring.enable_notification().unwrap_or(false) {
                break;
            }
        }
        if used {
            signal(vring, event_idx);
        }
    }

    /// One guest packet into the muxer; its synchronous replies into the pending queue.
    fn dispatch(&self, hdr: &Header, payload: &[u8]) {
        if crate::trace_enabled() {
            log!("TX {} payload={}", crate::describe(hdr), payload.len());
        }
        self.shared.watch.on_guest_packet(hdr);
        let replies = self.shared.muxer().handle_tx(hdr, payload);
        if replies.is_empty() {
            return;
        }
        let mut pending = self.shared.pending.lock().unwrap();
        for r in replies {
            if let Err(dropped) = pending.push_reply(r) {
                if dropped.is_power_of_two() {
                    log!("RX backlog full ({} packets): dropped {dropped} reply packet(s) so far", pending.len());
                }
            }
        }
    }

    /// Moves the muxer's queued packets into the guest's RX buffers until either runs out.
    fn deliver_rx(&self, vring: &VringRwLock, mem: &GuestMemoryMmap) {
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let mut pending = self.shared.pending.lock().unwrap();
        let mut used = false;
        loop {
            self.refill(&mut pending);
            if pending.is_empty() {
                break;
            }
            // Before QEMU has set the queue up there is nothing to write to (or to flag).
            if !vring.get_ref().get_queue().ready() {
                break;
            }
            if event_idx {
                let _ = vring.disable_notification();
            }
            let fill = rx::fill_rx_queue(vring.get_mut().get_queue_mut(), mem, &mut pending);
            used |= fill.used > 0;
            let more_buffers = event_idx && vring.enable_notification().unwrap_or(false);
            // Delivered everything: look for more. Out of buffers: wait for the guest's RX kick
            // (the muxer's producers back-pressure meanwhile).
            if (pending.is_empty() && fill.used > 0) || more_buffers {
                continue;
            }
            break;
        }
        drop(pending);
        if used {
            signal(vring, event_idx);
        }
    }

    /// Takes packets over from the muxer's rxq, up to our cap (past it the muxer back-pressures).
    fn refill(&self, pending: &mut PendingRx) {
        let mut rxq = self.shared.muxer().rxq.lock().unwrap();
        while pending.has_room() {
            let Some(pkt): Option<RxPacket> = rxq.pop() else {
                break;
            };
            self.shared.watch.on_host_packet(&pkt.hdr);
            pending.push(pkt);
        }
    }
}

/// Tells the guest about used buffers, honouring EVENT_IDX suppression.
fn signal(vring: &VringRwLock, event_idx: bool) {
    let needed = !event_idx || vring.needs_notification().unwrap_or(true);
    if needed {
        if let Err(e) = vring.signal_used_queue() {
            log!("signalling the guest: {e}");
        }
    }
}

impl VhostUserBackend for TsiBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        // What vhost-device-vsock offers. The runtime's device also offers F_DGRAM (bit 3), but
        // QEMU 7.2's vhost-user-vsock never passes it to the guest, and the muxer never checks.
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_F_NOTIFY_ON_EMPTY)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        *self.mem.lock().unwrap() = Some(mem);
        Ok(())
    }

    /// struct virtio_vsock_config { le64 guest_cid; }
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.guest_cid.to_le_bytes();
        let (off, size) = (offset as usize, size as usize);
        match off.checked_add(size) {
            Some(end) if end <= cfg.len() => cfg[off..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn exit_event(&self, _thread_index: usize) -> Option<EventFd> {
        self.exit.try_clone().ok()
    }

    /// Never returns an error: that would stop the worker thread and wedge the device.
    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        if device_event == KICK_EVENT {
            // Level-triggered: always drain, even when there is nothing to deliver to yet.
            let _ = self.shared.kick.read();
        }
        if evset != EventSet::IN {
            log!("unexpected epoll events {evset:?} on token {device_event}");
            return Ok(());
        }
        let Some(atomic) = self.mem.lock().unwrap().clone() else {
            // No guest memory yet: packets stay queued; the guest's first RX kick collects them.
            return Ok(());
        };
        let mem = atomic.memory();
        let (rx_vring, tx_vring) = (&vrings[RX_QUEUE as usize], &vrings[TX_QUEUE as usize]);
        match device_event {
            TX_QUEUE => self.process_tx(tx_vring, &mem),
            RX_QUEUE | KICK_EVENT => {}
            // The device never posts transport events (neither does the runtime's).
            EVENT_QUEUE => return Ok(()),
            other => {
                log!("event on unknown token {other}");
                return Ok(());
            }
        }
        self.deliver_rx(rx_vring, &mem);
        Ok(())
    }
}

/// Packet-level self-test: the guest's side of the wire is played by hand-built descriptor
/// chains in real guest memory; the host side is the real muxer and real host sockets. It runs
/// a TSI outbound TCP connect end to end (tsi.md §2.4a) through this file's queue handling.
#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    use supermachine::devices::virtio::vsock::packet::{
        VSOCK_OP_REQUEST, VSOCK_OP_RESPONSE, VSOCK_OP_RW, VSOCK_TYPE_DGRAM, VSOCK_TYPE_STREAM,
    };
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const TX_RING: u64 = 0x0;
    const RX_RING: u64 = 0x1_0000;
    const EV_RING: u64 = 0x2_0000;
    const TX_BUFS: u64 = 0x10_0000;
    const RX_BUFS: u64 = 0x20_0000;
    const SIZE: u16 = 64;

    /// Where a split virtqueue's three parts live in guest memory.
    #[derive(Clone, Copy)]
    struct Ring {
        desc: u64,
        avail: u64,
        used: u64,
    }

    /// A fake guest driver: its memory, the three rings, a cursor per ring.
    struct Guest {
        mem: GuestMemoryMmap,
        vrings: Vec<VringRwLock>,
        tx: Ring,
        rx: Ring,
        tx_next: u16,
        rx_next: u16,
        rx_seen: u16,
    }

    impl Guest {
        fn new(backend: &TsiBackend) -> Guest {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
            let atomic = GuestMemoryAtomic::new(mem.clone());
            backend.update_memory(atomic.clone()).unwrap();
            let mut rings = Vec::new();
            let mut vrings = Vec::new();
            for base in [RX_RING, TX_RING, EV_RING] {
                // The mock only computes a valid layout (and zeroes it); we drive the rings by hand.
                let mock = MockSplitQueue::create(&mem, GuestAddress(base), SIZE);
                let r = Ring { desc: mock.desc_table_addr().0, avail: mock.avail_addr().0, used: mock.used_addr().0 };
                let v = VringRwLock::new(atomic.clone(), SIZE).unwrap();
                v.set_queue_size(SIZE);
                v.set_queue_info(r.desc, r.avail, r.used).unwrap();
                v.set_queue_ready(true);
                v.set_enabled(true);
                rings.push(r);
                vrings.push(v);
            }
            Guest { mem, vrings, rx: rings[0], tx: rings[1], tx_next: 0, rx_next: 0, rx_seen: 0 }
        }

        /// Makes descriptor `i` (a one-descriptor chain) available.
        fn make_available(&self, ring: Ring, i: u16, addr: u64, len: u32, flags: u16) {
            let m = &self.mem;
            let d = ring.desc + u64::from(i) * 16;
            m.write_obj(addr, GuestAddress(d)).unwrap();
            m.write_obj(len, GuestAddress(d + 8)).unwrap();
            m.write_obj(flags, GuestAddress(d + 12)).unwrap();
            m.write_obj(0u16, GuestAddress(d + 14)).unwrap();
            let idx: u16 = m.read_obj(GuestAddress(ring.avail + 2)).unwrap();
            m.write_obj(i, GuestAddress(ring.avail + 4 + u64::from(idx % SIZE) * 2)).unwrap();
            m.write_obj(idx.wrapping_add(1), GuestAddress(ring.avail + 2)).unwrap();
        }

        /// Queues one TX packet (header and payload in one descriptor, as Linux 6.2+ does).
        fn send(&mut self, hdr: Header, payload: &[u8]) {
            let addr = TX_BUFS + u64::from(self.tx_next) * 0x1000;
            let mut hdr = hdr;
            hdr.len = payload.len() as u32;
            self.mem.write_slice(&hdr.encode(), GuestAddress(addr)).unwrap();
            self.mem.write_slice(payload, GuestAddress(addr + 44)).unwrap();
            self.make_available(self.tx, self.tx_next, addr, 44 + payload.len() as u32, 0);
            self.tx_next += 1;
        }

        /// Posts one RX buffer with room for a header and 4 KiB of payload.
        fn post_rx(&mut self) {
            let addr = RX_BUFS + u64::from(self.rx_next) * 0x2000;
            self.make_available(self.rx, self.rx_next, addr, 44 + 4096, VRING_DESC_F_WRITE as u16);
            self.rx_next += 1;
        }

        /// Packets the device put in RX buffers since the last call.
        fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
            let m = &self.mem;
            let used_idx: u16 = m.read_obj(GuestAddress(self.rx.used + 2)).unwrap();
            let mut out = Vec::new();
            while self.rx_seen != used_idx {
                let e = self.rx.used + 4 + u64::from(self.rx_seen % SIZE) * 8;
                let (id, len): (u32, u32) =
                    (m.read_obj(GuestAddress(e)).unwrap(), m.read_obj(GuestAddress(e + 4)).unwrap());
                let addr = RX_BUFS + u64::from(id) * 0x2000;
                let mut raw = [0u8; 44];
                m.read_slice(&mut raw, GuestAddress(addr)).unwrap();
                let h = Header::parse(&raw);
                assert_eq!(len, 44 + h.len, "used length = header + payload");
                let mut data = vec![0u8; h.len as usize];
                m.read_slice(&mut data, GuestAddress(addr + 44)).unwrap();
                out.push((h, data));
                self.rx_seen = self.rx_seen.wrapping_add(1);
            }
            out
        }
    }

    fn hdr(type_: u16, op: u16, src_port: u32, dst_port: u32) -> Header {
        Header {
            src_cid: 3,
            dst_cid: 2,
            src_port,
            dst_port,
            len: 0,
            type_,
            op,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        }
    }

    /// TSI_CONNECT's body: peer_port, addr_len, sockaddr_in 127.0.0.1:port, zero padding.
    fn connect_body(peer: u32, port: u16) -> Vec<u8> {
        let mut b = vec![0u8; 136];
        b[0..4].copy_from_slice(&peer.to_le_bytes());
        b[4..8].copy_from_slice(&16u32.to_le_bytes());
        b[8..10].copy_from_slice(&2u16.to_le_bytes());
        b[10..12].copy_from_slice(&port.to_be_bytes());
        b[12..16].copy_from_slice(&[127, 0, 0, 1]);
        b
    }

    #[test]
    fn armed_token_is_enforced_by_the_muxer() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let token = [0x5au8; 32];
        let shared = Shared::new(3, Some(token)).unwrap();
        let backend = TsiBackend::new(shared.clone(), 3).unwrap();
        let mut g = Guest::new(&backend);
        for _ in 0..4 {
            g.post_rx();
        }
        // Without the token: silently dropped (tsi.md §2.4i).
        g.send(hdr(VSOCK_TYPE_DGRAM, VSOCK_OP_RW, 0x4000_0002, 1025), &connect_body(0x1000_0001, port));
        backend.handle_event(TX_QUEUE, EventSet::IN, &g.vrings, 0).unwrap();
        assert!(g.received().is_empty());
        // With it: answered.
        let mut body = token.to_vec();
        body.extend_from_slice(&connect_body(0x1000_0001, port));
        g.send(hdr(VSOCK_TYPE_DGRAM, VSOCK_OP_RW, 0x4000_0002, 1025), &body);
        backend.handle_event(TX_QUEUE, EventSet::IN, &g.vrings, 0).unwrap();
        let got = g.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, 0i32.to_le_bytes());
        shared.muxer().shutdown();
    }

    #[test]
    fn tsi_outbound_tcp_through_the_backend_and_the_real_muxer() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let shared = Shared::new(3, None).unwrap();
        let backend = TsiBackend::new(shared.clone(), 3).unwrap();
        let mut g = Guest::new(&backend);
        for _ in 0..8 {
            g.post_rx();
        }
        let (ctl, peer) = (0x4000_0001u32, 0x1234_5678u32);

        // PROXY_CREATE (no reply), then CONNECT to the host server: reply i32 0.
        let mut create = peer.to_le_bytes().to_vec();
        create.extend_from_slice(&2u16.to_le_bytes());
        create.extend_from_slice(&1u16.to_le_bytes());
        g.send(hdr(VSOCK_TYPE_DGRAM, VSOCK_OP_RW, ctl, 1024), &create);
        g.send(hdr(VSOCK_TYPE_DGRAM, VSOCK_OP_RW, ctl, 1025), &connect_body(peer, port));
        backend.handle_event(TX_QUEUE, EventSet::IN, &g.vrings, 0).unwrap();
        let got = g.received();
        assert_eq!(got.len(), 1, "one CONNECT reply: {got:?}");
        let (h, body) = &got[0];
        assert_eq!((h.type_, h.src_port, h.dst_cid, h.dst_port), (VSOCK_TYPE_DGRAM, 1025, 3, ctl));
        assert_eq!(body, &0i32.to_le_bytes());

        // The data connection to port 620: RESPONSE, then bytes both ways.
        g.send(hdr(VSOCK_TYPE_STREAM, VSOCK_OP_REQUEST, peer, 620), b"");
        backend.handle_event(TX_QUEUE, EventSet::IN, &g.vrings, 0).unwrap();
        let got = g.received();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.op, got[0].0.src_port, got[0].0.dst_port), (VSOCK_OP_RESPONSE, 620, peer));

        g.send(hdr(VSOCK_TYPE_STREAM, VSOCK_OP_RW, peer, 620), b"ping");
        backend.handle_event(TX_QUEUE, EventSet::IN, &g.vrings, 0).unwrap();
        let (mut conn, _) = server.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");

        // Host → guest arrives asynchronously: the muxer kicks our EventFd.
        conn.write_all(b"pong").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut data = Vec::new();
        while data.len() < 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            backend.handle_event(KICK_EVENT, EventSet::IN, &g.vrings, 0).unwrap();
            for (h, d) in g.received() {
                assert_eq!((h.op, h.src_port, h.dst_port), (VSOCK_OP_RW, 620, peer));
                data.extend_from_slice(&d);
            }
        }
        assert_eq!(data, b"pong");
        shared.muxer().shutdown();
    }
}
