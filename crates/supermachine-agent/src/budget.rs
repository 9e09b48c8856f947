//! The shared memory budget: buffers whose size the peer decides (queued stdin, request JSON,
//! exec arguments) are leased from one pool of [`SHARED_BUDGET`] bytes for all connections, so
//! the agent's worst case does not grow with the number of connections.

use crate::limits::SHARED_BUDGET;
use std::sync::atomic::{AtomicUsize, Ordering};

static USED: AtomicUsize = AtomicUsize::new(0);

/// Bytes of the shared budget held by one buffer; given back on drop.
#[derive(Debug, Default)]
pub struct Lease {
    held: usize,
}

impl Lease {
    /// Takes `n` more bytes if the budget has them.
    pub fn try_grow(&mut self, n: usize) -> bool {
        let ok = USED
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| u.checked_add(n).filter(|t| *t <= SHARED_BUDGET))
            .is_ok();
        if ok {
            self.held += n;
        }
        ok
    }

    /// Gives back `n` bytes (at most what is held).
    pub fn shrink(&mut self, n: usize) {
        let n = n.min(self.held);
        self.held -= n;
        USED.fetch_sub(n, Ordering::SeqCst);
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        USED.fetch_sub(self.held, Ordering::SeqCst);
    }
}
