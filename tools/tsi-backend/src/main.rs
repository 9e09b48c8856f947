//! `tsi-backend`: a test-only vhost-user vsock backend for QEMU whose device model is the
//! `supermachine` 0.7.108 runtime's own vsock muxer, linked unchanged. Guest vsock traffic —
//! native AF_VSOCK and TSI control/data packets alike — reaches the same `VsockMuxer::handle_tx`
//! the runtime runs on KVM and HVF, so a guest kernel's TSI can be tested under QEMU TCG.
//!
//! ```text
//! tsi-backend --socket VHOST_USER_SOCK --dir RUN_DIR [--uds-path PATH] [--guest-cid 3]
//!             [--tsi-token HEX64] [--egress-policy POLICY] [--env-json FILE]
//! tsi-backend --guest-cid 3 --socket VHOST_USER_SOCK --uds-path HYBRID_SOCK
//!             (vhost-device-vsock's invocation; RUN_DIR is then HYBRID_SOCK's folder)
//! ```
//!
//! QEMU: `-chardev socket,id=vsc,path=VHOST_USER_SOCK -device vhost-user-vsock-device,chardev=vsc`
//! (guest RAM from a `share=on` memory backend). Queues rx=0 tx=1 event=2, up to 1024 entries;
//! features VERSION_1 | NOTIFY_ON_EMPTY | EVENT_IDX (+ PROTOCOL_FEATURES: MQ, CONFIG); the config
//! space is the guest CID.
//!
//! Host-side sockets, all in RUN_DIR:
//! - `mux.sock`: `vmm::vsock_mux::start`, the runtime's `Vm::expose_tcp` ingress. A client writes
//!   `SMUX-PORT-V1\0\0\0\0` + the guest's inet port (u32 big-endian), then talks to whichever
//!   guest TSI listener registered that port.
//! - `exec.sock`: `vmm::vsock_mux::start_exec(.., 1028)`, raw bytes to guest vsock port 1028.
//! - `vm.vsock` (or `--uds-path`): the Firecracker hybrid-vsock convention the test harness
//!   uses: write `CONNECT <port>\n`, read `OK <port>\n`, then raw bytes; EOF if the guest refuses.
//! - `control.sock`: `snapshot` / `reset` / `listeners` (see `control.rs`).
//!
//! Guest connections to the host (CID 2) go to the muxer: port 620 and the DGRAM control ports
//! 1024-1031 are TSI, port 1026 is the runtime's env service (`--env-json`), others get RST.
//! There is no `<uds>_<port>` forwarding as in vhost-device-vsock.
//!
//! Lifetime: runs until killed. When QEMU disconnects, the muxer is reset (all connections and
//! TSI listeners dropped, as for a new VM) and the backend waits for the next QEMU on the same
//! socket. Egress: `--egress-policy` calls `vmm::egress_policy::set`; unset, the runtime's
//! default applies, which is `allow_all`.
//!
//! Known behaviour of the runtime that this backend reproduces (it is not a backend bug): the
//! muxer returns credit to the guest only every 4 MiB (`CREDIT_UPDATE_THRESHOLD`) or on
//! host→guest data, while Linux 6.12.117 caps its send window at its own `buf_alloc`
//! (`virtio_transport_tx_buf_size`, 256 KiB by default). A guest→host stream larger than that
//! with no traffic the other way therefore stalls (e.g. > 256 KiB of agent stdout). Also, a
//! refused host→guest connection (guest RST) stays in the muxer's `pending_inbound` for good,
//! holding one file descriptor.
//!
//! Logs go to stderr, one line per notable event, prefixed `tsi-backend:`; the runtime's own
//! `[muxer]` / `vsock-mux` lines are interleaved. `TSI_BACKEND_TRACE=1` adds a line per packet
//! (`TX` guest→host, `RX` host→guest). Exit status 2 for a bad command line, 1 when a
//! socket cannot be bound or the muxer cannot start.

/// One stderr line, prefixed with the program name.
macro_rules! log {
    ($($arg:tt)*) => { eprintln!("tsi-backend: {}", format_args!($($arg)*)) };
}

/// `TSI_BACKEND_TRACE=1`: one line per packet in each direction (for debugging a guest kernel).
fn trace_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TSI_BACKEND_TRACE").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// A packet header in one line, for traces.
fn describe(h: &supermachine::devices::virtio::vsock::packet::Header) -> String {
    format!(
        "type={} op={} ({},{:#x})->({},{:#x}) len={} flags={:#x} buf_alloc={} fwd_cnt={}",
        h.type_, h.op, h.src_cid, h.src_port, h.dst_cid, h.dst_port, h.len, h.flags, h.buf_alloc, h.fwd_cnt
    )
}

mod backend;
mod cli;
mod control;
mod hybrid;
mod rx;
mod shared;
mod tx;
mod watch;

use std::os::fd::AsRawFd;
use std::process::exit;
use std::sync::Arc;

use supermachine::devices::virtio::vsock::muxer::set_env_json;
use supermachine::vmm::{egress_policy, vsock_mux};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use backend::{TsiBackend, KICK_EVENT};
use cli::Config;
use shared::Shared;

/// The guest agent's vsock port (the runtime's exec bridge default).
const AGENT_PORT: u32 = 1028;

fn main() {
    let cfg = match cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            exit(2);
        }
    };
    if let Err(e) = run(&cfg) {
        log!("error: {e}");
        exit(1);
    }
}

fn run(cfg: &Config) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("creating {}: {e}", cfg.dir.display()))?;
    if let Some(p) = &cfg.egress_policy {
        egress_policy::set(p);
    }
    if let Some(path) = &cfg.env_json {
        let json = std::fs::read_to_string(path).map_err(|e| format!("reading --env-json {}: {e}", path.display()))?;
        set_env_json(json);
    }
    let shared = Shared::new(cfg.guest_cid, cfg.tsi_token)?;
    log!(
        "guest cid {}, TSI token {}, egress policy {}",
        cfg.guest_cid,
        if cfg.tsi_token.is_some() { "armed" } else { "off" },
        egress_policy::get()
    );

    // Host-side fronts first, so they exist before QEMU (and the guest) can.
    let mux = cfg.mux_sock();
    // The runtime only unlinks stale sockets named after a dead supermachine pid.
    for p in [&mux, &cfg.exec_sock()] {
        hybrid::remove_stale_socket(p).map_err(|e| format!("cannot replace {}: {e}", p.display()))?;
    }
    let _mux_acceptor = vsock_mux::start(path_str(&mux)?, shared.vsock.clone(), None)
        .map_err(|e| format!("cannot start vsock-mux on {}: {e}", mux.display()))?;
    let exec = cfg.exec_sock();
    vsock_mux::start_exec(path_str(&exec)?, shared.vsock.clone(), AGENT_PORT)
        .map_err(|e| format!("cannot start vsock-exec on {}: {e}", exec.display()))?;
    hybrid::start(&cfg.uds_path, shared.clone())?;
    control::start(&cfg.control_sock(), shared.clone())?;
    log!(
        "mux {} | exec {} | hybrid {} | control {}",
        mux.display(),
        exec.display(),
        cfg.uds_path.display(),
        cfg.control_sock().display()
    );

    for session in 1u64.. {
        serve_one(cfg, &shared, session)?;
        let (_, left) = shared.reset_transport(false);
        log!("QEMU session {session} ended; muxer reset ({left} listeners left); waiting for the next QEMU");
    }
    Ok(())
}

/// Serves one QEMU connection, start to disconnect.
fn serve_one(cfg: &Config, shared: &Arc<Shared>, session: u64) -> Result<(), String> {
    let backend = Arc::new(TsiBackend::new(shared.clone(), cfg.guest_cid)?);
    let mut daemon = VhostUserDaemon::new(
        "tsi-backend".to_string(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| format!("creating the vhost-user daemon: {e}"))?;
    let handlers = daemon.get_epoll_handlers();
    for h in &handlers {
        h.register_listener(shared.kick.as_raw_fd(), EventSet::IN, u64::from(KICK_EVENT))
            .map_err(|e| format!("registering the muxer kick: {e}"))?;
    }
    // Bound here (not inside `serve`) so a bind failure is fatal and names the path.
    let listener = Listener::new(&cfg.socket, true)
        .map_err(|e| format!("cannot listen on vhost-user socket {}: {e}", cfg.socket.display()))?;
    log!("session {session}: waiting for QEMU on {}", cfg.socket.display());
    let result = daemon.start(listener).and_then(|()| {
        log!("session {session}: QEMU connected");
        daemon.wait()
    });
    // `serve` would do this: stop the worker thread, and take our kick off its epoll so a
    // stale worker can never swallow a wake-up meant for the next session.
    backend.stop_worker();
    for h in &handlers {
        let _ = h.unregister_listener(shared.kick.as_raw_fd(), EventSet::IN, u64::from(KICK_EVENT));
    }
    match result {
        // QEMU quitting shows up as one of these, depending on where it was in a message.
        Ok(()) | Err(DaemonError::HandleRequest(VhostUserError::Disconnected | VhostUserError::PartialMessage)) => {
            log!("session {session}: QEMU disconnected")
        }
        Err(e) => log!("session {session}: ended: {e}"),
    }
    Ok(())
}

fn path_str(p: &std::path::Path) -> Result<&str, String> {
    p.to_str().ok_or_else(|| format!("path {} is not UTF-8", p.display()))
}
