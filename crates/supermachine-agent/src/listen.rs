//! Listening: the vsock (or test Unix) socket, the accept loop and the connection cap.

use crate::context::{config, log};
use crate::limits::{self, MAX_CONNECTIONS};
use crate::{conn, sys};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Listens on vsock `port` (retrying for a while: the transport may come up late) and serves
/// connections from the host until an unrecoverable error, which is returned.
pub fn vsock(port: u32) -> String {
    let mut tries = 0;
    let fd = loop {
        match vsock_listen(port) {
            Ok(sock) => break sock,
            Err(e) if tries < 30 => {
                if tries == 0 {
                    log(&format!("vsock port {port}: {e}; retrying"));
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => return format!("cannot listen on vsock port {port}: {e}"),
        }
    };
    accept_loop(&fd, &format!("vsock port {port}"), true)
}

/// Serves on a Unix socket at `path` (a testing aid; same accept loop).
pub fn unix(path: &std::path::Path) -> String {
    let _ = std::fs::remove_file(path);
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => accept_loop(&OwnedFd::from(l), &format!("unix socket {}", path.display()), false),
        Err(e) => format!("cannot listen on {}: {e}", path.display()),
    }
}

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_CONNECTIONS`] connection slots, given back on drop.
pub struct Slot(());

impl Slot {
    pub fn take() -> Option<Slot> {
        OPEN.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_CONNECTIONS).then_some(n + 1))
            .ok()
            .map(|_| Slot(()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a connection over the cap why it is closed, without ever blocking the accept loop.
fn refuse(sock: OwnedFd) {
    let msg = limits::busy_message();
    let mut frame = supermachine_agent_proto::header(supermachine_agent_proto::FrameType::Error, msg.len()).to_vec();
    frame.extend_from_slice(msg.as_bytes());
    // SAFETY: sends `frame.len()` bytes from `frame`.
    // MSG_DONTWAIT: a fresh socket's send buffer takes this small frame at once, or it is lost.
    unsafe {
        libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    let _ = crate::sys::shutdown(sock.as_raw_fd(), libc::SHUT_WR);
}

fn accept_loop(listener: &OwnedFd, what: &str, vsock: bool) -> String {
    let fd = listener.as_raw_fd();
    let ready = config().run_dir.join("supermachine-agent-ready");
    if let Err(e) = std::fs::write(&ready, format!("{}\n", sys::getpid())) {
        log(&format!("cannot write {}: {e}", ready.display()));
    }
    log(&format!("listening on {what} (protocol {})", supermachine_agent_proto::PROTOCOL_VERSION));
    loop {
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `addr`/`len` describe a writable buffer large enough for any address.
        let c = unsafe {
            libc::accept4(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut len, libc::SOCK_CLOEXEC)
        };
        if c >= 0 {
            // SAFETY: accept4 just created `c`; nothing else owns it.
            let sock = unsafe { OwnedFd::from_raw_fd(c) };
            serve(sock, &addr, vsock);
        } else {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => {}
                _ => {
                    log(&format!("accept: {e}"));
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }
}

/// Hands an accepted connection to a thread (or refuses it: not from the host, or over the cap).
fn serve(sock: OwnedFd, addr: &libc::sockaddr_storage, vsock: bool) {
    if vsock {
        // SAFETY: on an AF_VSOCK listener accept4 filled in a sockaddr_vm, which fits in
        // (and is less aligned than) sockaddr_storage.
        let vm = unsafe { &*(addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_vm>() };
        if vm.svm_cid != supermachine_agent_proto::HOST_CID {
            log(&format!("refusing a connection from CID {}", vm.svm_cid));
            return;
        }
    }
    let Some(slot) = Slot::take() else {
        refuse(sock);
        return;
    };
    let conn = Arc::new(conn::Conn::socket(sock));
    let spawned = std::thread::Builder::new().name("conn".into()).stack_size(limits::CONN_STACK).spawn(move || {
        crate::session::serve(conn);
        drop(slot);
    });
    if let Err(e) = spawned {
        log(&format!("cannot start a connection thread: {e}"));
    }
}

fn vsock_listen(port: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the fd is checked, then owned.
    let fd = sys::cvt(unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: socket() just created `fd`; nothing else owns it (closed on every early return).
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: `addr` is a valid sockaddr_vm of the given length; `fd` is our socket.
    sys::cvt(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen takes no pointers.
    sys::cvt(unsafe { libc::listen(fd, 128) })?;
    Ok(sock)
}
