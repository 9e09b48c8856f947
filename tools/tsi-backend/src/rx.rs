//! Host→guest delivery: a bounded queue of the muxer's packets and the code that writes them into
//! the guest's RX descriptor chains. A packet larger than the chain it lands in is split the way
//! the runtime's own device does (`SM:devices/virtio/vsock/device.rs:240-300`): the same header
//! with `len` = the part that fits, and the rest goes out in the next chain.

use std::collections::VecDeque;

use supermachine::devices::virtio::vsock::muxer_rxq::MUXER_RXQ_SIZE;
use supermachine::devices::virtio::vsock::packet::{Header, RxPacket, VSOCK_PKT_HDR_SIZE};
use virtio_queue::{Queue, QueueT};
use virtio_vsock::packet::VsockPacket;
use vm_memory::{Bytes, GuestMemoryMmap};

/// How many packets we take over from the muxer's rxq, like the runtime's `PENDING_RX_MAX`.
/// Past it we leave packets in the muxer's rxq, whose producers then back-pressure on their own.
pub const PENDING_RX_MAX: usize = MUXER_RXQ_SIZE;

/// Synchronous replies to guest TX (`handle_tx`'s return value) have no producer to push back
/// on, so they may exceed [`PENDING_RX_MAX`] by this much before we drop them.
pub const REPLY_HEADROOM: usize = 1024;

/// Largest RX data buffer we accept from the guest (Linux posts 4 KiB).
const MAX_RX_BUF: u32 = 1 << 20;

/// Packets waiting for guest RX buffers, oldest first.
#[derive(Default)]
pub struct PendingRx {
    queue: VecDeque<RxPacket>,
    /// Payload bytes of the front packet already delivered (a split in progress).
    front_sent: usize,
    dropped: u64,
}

impl PendingRx {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether another packet may be taken over from the muxer's rxq.
    pub fn has_room(&self) -> bool {
        self.queue.len() < PENDING_RX_MAX
    }

    /// Queues a packet taken from the muxer's rxq (callers check [`Self::has_room`] first).
    pub fn push(&mut self, pkt: RxPacket) {
        self.queue.push_back(pkt);
    }

    /// Queues a reply returned by `handle_tx`. Returns the running drop count when the queue is
    /// over its hard cap and the packet was dropped.
    pub fn push_reply(&mut self, pkt: RxPacket) -> Result<(), u64> {
        if self.queue.len() >= PENDING_RX_MAX + REPLY_HEADROOM {
            self.dropped += 1;
            return Err(self.dropped);
        }
        self.queue.push_back(pkt);
        Ok(())
    }

    /// The next piece to deliver into a chain with room for `capacity` payload bytes: the front
    /// packet's header with `len` set to the piece's size, and the piece.
    pub fn next_piece(&self, capacity: usize) -> Option<(Header, &[u8])> {
        let pkt = self.queue.front()?;
        let rest = pkt.data.get(self.front_sent..).unwrap_or(&[]);
        let piece = &rest[..rest.len().min(capacity)];
        let mut hdr = pkt.hdr;
        hdr.len = piece.len() as u32;
        Some((hdr, piece))
    }

    /// Records that `n` payload bytes of the front packet were delivered; drops the packet once
    /// all of it (or its header alone, for an empty packet) went out.
    pub fn consume(&mut self, n: usize) {
        let Some(pkt) = self.queue.front() else {
            return;
        };
        self.front_sent += n;
        if self.front_sent >= pkt.data.len() {
            self.queue.pop_front();
            self.front_sent = 0;
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.front_sent = 0;
    }
}

/// What one pass over the RX queue did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RxFill {
    /// Chains returned to the guest (delivered or unusable).
    pub used: usize,
    /// Chains returned empty because they were malformed.
    pub bad: usize,
}

/// Moves pending packets into the available RX chains until either runs out. Every popped chain
/// is returned to the used ring; the caller signals the guest.
pub fn fill_rx_queue(queue: &mut Queue, mem: &GuestMemoryMmap, pending: &mut PendingRx) -> RxFill {
    let mut out = RxFill::default();
    while !pending.is_empty() {
        let Some(mut chain) = queue.pop_descriptor_chain(mem) else {
            break;
        };
        let head = chain.head_index();
        let written = match VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_RX_BUF) {
            Ok(mut pkt) => match write_piece(&mut pkt, pending) {
                Ok(n) => n,
                Err(e) => {
                    log!("RX chain {head}: {e}; returned unused, packet kept");
                    out.bad += 1;
                    0
                }
            },
            Err(e) => {
                // Like the runtime: give the buffer back so the guest can recycle it, and keep
                // the packet for the next chain.
                log!("malformed RX chain {head}: {e:?}; returned unused");
                out.bad += 1;
                0
            }
        };
        if let Err(e) = queue.add_used(mem, head, written) {
            log!("RX add_used({head}): {e:?}");
        }
        out.used += 1;
    }
    out
}

/// Writes the next piece of the front packet into one RX packet buffer; returns the bytes
/// written (header included).
fn write_piece(pkt: &mut VsockPacket<'_, ()>, pending: &mut PendingRx) -> Result<u32, String> {
    let capacity = pkt.data_slice().map_or(0, |s| s.len());
    if capacity == 0 && pending_front_has_payload(pending) {
        // Rather than a stream of zero-length RW packets, wait for a chain with payload room.
        return Err("no room for payload".into());
    }
    let (hdr, piece) = pending.next_piece(capacity).ok_or("nothing pending")?;
    pkt.set_header_from_raw(&hdr.encode()).map_err(|e| format!("writing header: {e:?}"))?;
    if !piece.is_empty() {
        let data = pkt.data_slice().ok_or("no data buffer")?;
        data.write_slice(piece, 0).map_err(|e| format!("writing payload: {e}"))?;
    }
    let n = piece.len();
    if crate::trace_enabled() {
        log!("RX {}", crate::describe(&hdr));
    }
    pending.consume(n);
    Ok((VSOCK_PKT_HDR_SIZE + n) as u32)
}

fn pending_front_has_payload(pending: &PendingRx) -> bool {
    pending.queue.front().is_some_and(|p| p.data.len() > pending.front_sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use supermachine::devices::virtio::vsock::packet::{VSOCK_OP_RW, VSOCK_OP_SHUTDOWN, VSOCK_TYPE_STREAM};
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    pub(crate) fn pkt(op: u16, data: &[u8]) -> RxPacket {
        RxPacket {
            hdr: Header {
                src_cid: 2,
                dst_cid: 3,
                src_port: 0xc000_0001,
                dst_port: 1028,
                len: data.len() as u32,
                type_: VSOCK_TYPE_STREAM,
                op,
                flags: 0,
                buf_alloc: 8 << 20,
                fwd_cnt: 77,
            },
            data: data.to_vec(),
        }
    }

    #[test]
    fn small_packet_goes_whole() {
        let mut p = PendingRx::default();
        p.push(pkt(VSOCK_OP_RW, b"hello"));
        let (h, piece) = p.next_piece(4096).unwrap();
        assert_eq!((h.len, piece), (5, &b"hello"[..]));
        p.consume(5);
        assert!(p.is_empty());
    }

    #[test]
    fn big_packet_is_split_with_the_same_header() {
        let data: Vec<u8> = (0..10u8).collect();
        let mut p = PendingRx::default();
        p.push(pkt(VSOCK_OP_RW, &data));
        p.push(pkt(VSOCK_OP_SHUTDOWN, b""));
        let mut got = Vec::new();
        for want in [4, 4, 2] {
            let (h, piece) = p.next_piece(4).unwrap();
            assert_eq!(h.len as usize, want);
            assert_eq!((h.op, h.fwd_cnt, h.src_port), (VSOCK_OP_RW, 77, 0xc000_0001));
            got.extend_from_slice(piece);
            p.consume(piece.len());
        }
        assert_eq!(got, data);
        // The next packet is untouched by the split of the previous one.
        let (h, piece) = p.next_piece(4).unwrap();
        assert_eq!((h.op, h.len, piece.len()), (VSOCK_OP_SHUTDOWN, 0, 0));
        p.consume(0);
        assert!(p.is_empty());
    }

    #[test]
    fn replies_are_capped() {
        let mut p = PendingRx::default();
        for _ in 0..PENDING_RX_MAX {
            p.push(pkt(VSOCK_OP_RW, b""));
        }
        assert!(!p.has_room());
        for _ in 0..REPLY_HEADROOM {
            p.push_reply(pkt(VSOCK_OP_RW, b"")).unwrap();
        }
        assert_eq!(p.push_reply(pkt(VSOCK_OP_RW, b"")), Err(1));
        assert_eq!(p.len(), PENDING_RX_MAX + REPLY_HEADROOM);
    }

    /// Runs fill_rx_queue over chains built by virtio-queue's mock, in real guest memory.
    fn fill(descs: &[RawDescriptor], pending: &mut PendingRx) -> (GuestMemoryMmap, RxFill, Vec<(u32, u32)>) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let r = fill_rx_queue(&mut q, &mem, pending);
        let used: Vec<(u32, u32)> = (0..r.used)
            .map(|i| {
                let e = vq.used().ring().ref_at(i).unwrap().load();
                (e.id(), e.len())
            })
            .collect();
        (mem, r, used)
    }

    fn w(addr: u64, len: u32) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, VRING_DESC_F_WRITE as u16, 0))
    }

    #[test]
    fn split_across_single_descriptor_chains_in_guest_memory() {
        let mut p = PendingRx::default();
        p.push(pkt(VSOCK_OP_RW, b"0123456789"));
        // Two chains of one descriptor each (Linux 6.2+ layout): 44-byte header + 6 payload bytes.
        let descs = [w(0x10_0000, 44 + 6), w(0x11_0000, 44 + 6)];
        let (mem, r, used) = fill(&descs, &mut p);
        assert_eq!(r, RxFill { used: 2, bad: 0 });
        assert_eq!(used, vec![(0, 44 + 6), (1, 44 + 4)]);
        let mut hdr = [0u8; 44];
        mem.read_slice(&mut hdr, GuestAddress(0x10_0000)).unwrap();
        assert_eq!(Header::parse(&hdr).len, 6);
        let mut body = [0u8; 6];
        mem.read_slice(&mut body, GuestAddress(0x10_0000 + 44)).unwrap();
        assert_eq!(&body, b"012345");
        mem.read_slice(&mut hdr, GuestAddress(0x11_0000)).unwrap();
        let h = Header::parse(&hdr);
        assert_eq!((h.len, h.op, h.dst_port, h.fwd_cnt), (4, VSOCK_OP_RW, 1028, 77));
        let mut body = [0u8; 4];
        mem.read_slice(&mut body, GuestAddress(0x11_0000 + 44)).unwrap();
        assert_eq!(&body, b"6789");
        assert!(p.is_empty());
    }

    #[test]
    fn header_plus_data_descriptor_chain() {
        let mut p = PendingRx::default();
        p.push(pkt(VSOCK_OP_RW, b"abc"));
        // Older layout: a 44-byte header descriptor chained to a data descriptor.
        let hd = SplitDescriptor::new(0x10_0000, 44, (VRING_DESC_F_WRITE | VRING_DESC_F_NEXT) as u16, 1);
        let descs = [RawDescriptor::from(hd), w(0x12_0000, 4096)];
        let (mem, r, used) = fill(&descs, &mut p);
        assert_eq!(r.used, 1);
        assert_eq!(used, vec![(0, 47)]);
        let mut body = [0u8; 3];
        mem.read_slice(&mut body, GuestAddress(0x12_0000)).unwrap();
        assert_eq!(&body, b"abc");
    }

    #[test]
    fn malformed_chains_are_returned_and_the_packet_kept() {
        let mut p = PendingRx::default();
        p.push(pkt(VSOCK_OP_RW, b"x"));
        let ro = RawDescriptor::from(SplitDescriptor::new(0x10_0000, 4096, 0, 0)); // read-only
        let short = w(0x11_0000, 20); // smaller than the header
        let (_, r, used) = fill(&[ro, short], &mut p);
        assert_eq!(r, RxFill { used: 2, bad: 2 });
        assert_eq!(used, vec![(0, 0), (1, 0)]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn stops_when_chains_run_out() {
        let mut p = PendingRx::default();
        for _ in 0..3 {
            p.push(pkt(VSOCK_OP_RW, b"y"));
        }
        let (_, r, _) = fill(&[w(0x10_0000, 4096)], &mut p);
        assert_eq!(r.used, 1);
        assert_eq!(p.len(), 2);
    }
}
