//! Guest→host: turns one TX descriptor chain into the runtime's `packet::Header` plus payload,
//! the two arguments of `VsockMuxer::handle_tx`.

use std::io::Read;

use supermachine::devices::virtio::vsock::packet::{Header, VSOCK_PKT_HDR_SIZE};
use virtio_queue::{DescriptorChain, Reader};
use virtio_vsock::packet::{Error as PacketError, VsockPacket};
use vm_memory::{Bytes, GuestMemoryMmap};

/// Upper bound on one packet's payload copy. Linux sends at most 64 KiB per packet; the runtime
/// itself is bounded only by the chain, so this is generous.
pub const MAX_TX_PAYLOAD: u32 = 1 << 20;

#[derive(Debug)]
pub enum TxError {
    /// virtio-vsock refused the chain (write-only descriptor, header outside guest RAM, ...).
    Packet(PacketError),
    /// The chain could not be walked as a whole (fallback path).
    Chain(String),
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxError::Packet(e) => write!(f, "{e:?}"),
            TxError::Chain(e) => f.write_str(e),
        }
    }
}

/// Reads one TX chain. The usual layouts (header and payload in one descriptor, or a header
/// descriptor plus one payload descriptor) go through virtio-vsock's parser. Chains it rejects
/// for their shape — payload over several descriptors, or a header `len` beyond what the chain
/// holds — are gathered like the runtime's `assemble_tx_payload` does: the header as sent, the
/// payload truncated to the bytes the chain really carries.
pub fn read_tx_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<(Header, Vec<u8>), TxError> {
    let mut walk = chain.clone();
    match VsockPacket::from_tx_virtq_chain(mem, &mut walk, MAX_TX_PAYLOAD) {
        Ok(pkt) => {
            let hdr = header_of(&pkt);
            let mut payload = Vec::new();
            if let Some(data) = pkt.data_slice() {
                payload = vec![0u8; data.len()];
                data.read_slice(&mut payload, 0).map_err(|e| TxError::Chain(format!("reading payload: {e}")))?;
            }
            Ok((hdr, payload))
        }
        Err(
            PacketError::DescriptorChainTooShort
            | PacketError::DescriptorLengthTooSmall
            | PacketError::InvalidHeaderLen(_),
        ) => gather(mem, chain),
        Err(e) => Err(TxError::Packet(e)),
    }
}

/// The runtime's header, field by field, from virtio-vsock's accessors (both little-endian
/// decoders of the same 44 bytes).
pub fn header_of(pkt: &VsockPacket<'_, ()>) -> Header {
    Header {
        src_cid: pkt.src_cid(),
        dst_cid: pkt.dst_cid(),
        src_port: pkt.src_port(),
        dst_port: pkt.dst_port(),
        len: pkt.len(),
        type_: pkt.type_(),
        op: pkt.op(),
        flags: pkt.flags(),
        buf_alloc: pkt.buf_alloc(),
        fwd_cnt: pkt.fwd_cnt(),
    }
}

fn gather(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> Result<(Header, Vec<u8>), TxError> {
    let mut r: Reader<'_, ()> = Reader::new(mem, chain).map_err(|e| TxError::Chain(format!("{e:?}")))?;
    let mut raw = [0u8; VSOCK_PKT_HDR_SIZE];
    r.read_exact(&mut raw)
        .map_err(|_| TxError::Chain(format!("chain holds {} bytes, less than a header", r.bytes_read())))?;
    let hdr = Header::parse(&raw);
    let want = (hdr.len as usize).min(r.available_bytes()).min(MAX_TX_PAYLOAD as usize);
    let mut payload = vec![0u8; want];
    r.read_exact(&mut payload).map_err(|e| TxError::Chain(format!("reading payload: {e}")))?;
    Ok((hdr, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use supermachine::devices::virtio::vsock::packet::{VSOCK_OP_RW, VSOCK_TYPE_DGRAM};
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::GuestAddress;

    fn sample(len: u32) -> Header {
        // Distinct values in every field, so a swapped field shows up.
        Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0x1112_1314,
            dst_port: 1025,
            len,
            type_: VSOCK_TYPE_DGRAM,
            op: VSOCK_OP_RW,
            flags: 0x2122_2324,
            buf_alloc: 0x3132_3334,
            fwd_cnt: 0x4142_4344,
        }
    }

    fn same(a: &Header, b: &Header) -> bool {
        (a.src_cid, a.dst_cid, a.src_port, a.dst_port, a.len, a.type_, a.op, a.flags, a.buf_alloc, a.fwd_cnt)
            == (b.src_cid, b.dst_cid, b.src_port, b.dst_port, b.len, b.type_, b.op, b.flags, b.buf_alloc, b.fwd_cnt)
    }

    /// Writes `bytes` at the descriptors' addresses in order, queues the chain, reads it back.
    fn run(descs: &[(u64, u32, u16)], bytes: &[u8]) -> Result<(Header, Vec<u8>), TxError> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let mut off = 0;
        let mut raw = Vec::new();
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let take = (len as usize).min(bytes.len() - off);
            if take > 0 {
                mem.write_slice(&bytes[off..off + take], GuestAddress(addr)).unwrap();
            }
            off += take;
            let last = i + 1 == descs.len();
            let flags = if last { flags } else { flags | VRING_DESC_F_NEXT as u16 };
            raw.push(RawDescriptor::from(SplitDescriptor::new(addr, len, flags, i as u16 + 1)));
        }
        let vq = MockSplitQueue::new(&mem, 16);
        vq.add_desc_chains(&raw, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.pop_descriptor_chain(&mem).unwrap();
        read_tx_chain(&mem, chain)
    }

    fn packet(h: &Header, payload: &[u8]) -> Vec<u8> {
        let mut v = h.encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn single_descriptor_header_and_payload() {
        let h = sample(5);
        let (got, payload) = run(&[(0x10_0000, 49, 0)], &packet(&h, b"hello")).unwrap();
        assert!(same(&got, &h), "{got:?}");
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn header_then_payload_descriptor() {
        let h = sample(3);
        let (got, payload) = run(&[(0x10_0000, 44, 0), (0x11_0000, 3, 0)], &packet(&h, b"abc")).unwrap();
        assert!(same(&got, &h));
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn header_only() {
        let h = sample(0);
        let (got, payload) = run(&[(0x10_0000, 44, 0)], &h.encode()).unwrap();
        assert!(same(&got, &h));
        assert!(payload.is_empty());
    }

    #[test]
    fn payload_over_several_descriptors_is_gathered() {
        let h = sample(10);
        let descs = [(0x10_0000, 44, 0), (0x11_0000, 4, 0), (0x12_0000, 6, 0)];
        let (got, payload) = run(&descs, &packet(&h, b"0123456789")).unwrap();
        assert!(same(&got, &h));
        assert_eq!(payload, b"0123456789");
    }

    #[test]
    fn overclaimed_len_is_truncated_to_the_chain() {
        // The runtime keeps the header as sent and passes only the bytes present.
        let h = sample(u32::MAX);
        let (got, payload) = run(&[(0x10_0000, 44 + 2, 0)], &packet(&h, b"ab")).unwrap();
        assert_eq!(got.len, u32::MAX);
        assert_eq!(payload, b"ab");
    }

    #[test]
    fn malformed_chains_are_errors_not_panics() {
        let h = sample(0);
        assert!(run(&[(0x10_0000, 20, 0)], &h.encode()[..20]).is_err(), "short header");
        assert!(run(&[(0x10_0000, 44, VRING_DESC_F_WRITE as u16)], &h.encode()).is_err(), "write-only");
        // A descriptor pointing outside guest memory.
        assert!(run(&[(0x10_0000, 44, 0), (0x7000_0000, 8, 0)], &packet(&sample(8), b"")).is_err());
    }
}
