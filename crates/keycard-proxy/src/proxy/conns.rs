//! Open connections by peer identity, so that a revocation closes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::files::Revocations;

struct Tracked {
    peer: String,
    serial: Option<String>,
    kill: Arc<Notify>,
}

/// Every open connection with a verified peer.
#[derive(Default)]
pub struct ConnTracker {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Tracked>>,
}

/// A tracked connection; dropping it forgets the connection.
pub struct ConnGuard {
    id: u64,
    tracker: Arc<ConnTracker>,
    /// Notified when the connection must close.
    pub kill: Arc<Notify>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Ok(mut m) = self.tracker.conns.lock() {
            m.remove(&self.id);
        }
    }
}

impl ConnTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Track a connection of `peer` (its SPIFFE ID and certificate serial).
    pub fn register(self: &Arc<Self>, peer: &str, serial: Option<&str>) -> ConnGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(Notify::new());
        if let Ok(mut m) = self.conns.lock() {
            m.insert(
                id,
                Tracked {
                    peer: peer.to_string(),
                    serial: serial.map(str::to_string),
                    kill: kill.clone(),
                },
            );
        }
        ConnGuard {
            id,
            tracker: self.clone(),
            kill,
        }
    }

    /// Open connections now.
    pub fn len(&self) -> usize {
        self.conns.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Close the connections of revoked identities or certificates; how many.
    pub fn close_revoked(&self, r: &Revocations) -> usize {
        let Ok(m) = self.conns.lock() else { return 0 };
        let mut n = 0;
        for t in m.values() {
            if r.is_revoked(Some(&t.peer), t.serial.as_deref()) {
                // notify_one keeps a permit: the connection sees it even if
                // it is not waiting at this instant.
                t.kill.notify_one();
                n += 1;
            }
        }
        n
    }

    /// Close every connection of one SPIFFE ID; how many.
    pub fn close_peer(&self, spiffe_id: &str) -> usize {
        let Ok(m) = self.conns.lock() else { return 0 };
        let mut n = 0;
        for t in m.values().filter(|t| t.peer == spiffe_id) {
            t.kill.notify_one();
            n += 1;
        }
        n
    }
}
