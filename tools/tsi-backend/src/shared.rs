//! State that outlives one QEMU connection: the runtime's vsock device (and its muxer), the
//! muxer's wake-up EventFd, the host→guest packets waiting for RX buffers, and the hybrid
//! handshake watch.

use std::sync::{Arc, Mutex};

use supermachine::devices::virtio::vsock::device::Vsock;
use supermachine::devices::virtio::vsock::muxer::VsockMuxer;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::rx::PendingRx;
use crate::watch::HandshakeWatch;

pub struct Shared {
    /// The runtime's device object. Only its muxer is used: the virtqueues are ours (vhost-user),
    /// but `vsock_mux::start`/`start_exec` take the device.
    pub vsock: Arc<Vsock>,
    /// Written by the muxer's kick (from its I/O and accept threads); read by the backend thread,
    /// which alone touches the virtqueues.
    pub kick: EventFd,
    /// Lock order: `pending` before the muxer's own locks, before `watch`.
    pub pending: Mutex<PendingRx>,
    pub watch: HandshakeWatch,
}

impl Shared {
    pub fn new(guest_cid: u64, token: Option<[u8; 32]>) -> Result<Arc<Shared>, String> {
        let vsock =
            Vsock::with_tsi_token(guest_cid, token).map_err(|e| format!("starting the runtime's vsock muxer: {e}"))?;
        let kick = EventFd::new(EFD_NONBLOCK).map_err(|e| format!("creating the kick eventfd: {e}"))?;
        let kick_writer = kick.try_clone().map_err(|e| format!("cloning the kick eventfd: {e}"))?;
        // Only signal here: the muxer calls this from its own threads.
        vsock.muxer().set_kick(Arc::new(move || {
            let _ = kick_writer.write(1);
        }));
        Ok(Arc::new(Shared {
            vsock: Arc::new(vsock),
            kick,
            pending: Mutex::new(PendingRx::default()),
            watch: HandshakeWatch::default(),
        }))
    }

    pub fn muxer(&self) -> &Arc<VsockMuxer> {
        self.vsock.muxer()
    }

    /// Drops every connection and queued packet, as the runtime's pool reset does
    /// (`muxer.reset()` + `vsock.reset_pending_rx()`). With `keep_listeners`, TSI listeners are
    /// captured first and re-bound after (`capture_tsi_listeners` → `reset` →
    /// `restore_tsi_listeners`), which is what a snapshot restore does. Returns
    /// (listeners captured, listeners registered after).
    pub fn reset_transport(&self, keep_listeners: bool) -> (usize, usize) {
        // Holding `pending` keeps the backend thread from delivering stale packets meanwhile.
        let mut pending = self.pending.lock().unwrap();
        let muxer = self.muxer();
        let snaps = if keep_listeners { muxer.capture_tsi_listeners() } else { Vec::new() };
        for s in &snaps {
            log!(
                "  listener cid={} peer_port={:#x} vm_port={:#x} family={} type={} inet_port={:?}",
                s.cid,
                s.peer_port,
                s.vm_port,
                s.family,
                s.socktype,
                s.inet_port
            );
        }
        muxer.reset();
        pending.clear();
        let refused = self.watch.clear();
        if refused > 0 {
            log!("reset: {refused} hybrid handshake(s) refused");
        }
        if keep_listeners {
            muxer.restore_tsi_listeners(&snaps);
        }
        (snaps.len(), muxer.listener_count())
    }
}
