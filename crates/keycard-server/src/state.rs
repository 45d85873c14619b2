//! The server's shared state: the store, the CA, and the change feed that
//! tells local enforcers and agents that something they serve changed.

use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use tokio::sync::watch;

use keycard_core::{Revocation, RevocationKind};
use keycard_identity::{Ca, KeyStore};
use keycard_store::{Store, StoreError};

use crate::config::UpConfig;
use crate::decisions::Decisions;

/// A store any thread may use, one call at a time.
pub type SharedStore = Arc<Mutex<Box<dyn Store + Send>>>;

/// Everything the API, the agent and the webhook share.
pub struct ServerState {
    pub config: Arc<UpConfig>,
    store: SharedStore,
    ca: RwLock<Ca>,
    pub keys: Arc<dyn KeyStore>,
    /// The decision log: administrative changes, admission decisions.
    pub decisions: Arc<Decisions>,
    /// The in-process agent of `keycard up`, once started (for metrics).
    pub local_agent: std::sync::OnceLock<Arc<crate::agent::LocalAgent>>,
    /// Bumped on every change an agent or enforcer must see (entries,
    /// revocations, bundle); watchers re-read on change.
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("trust_domain", &self.config.trust_domain.as_str())
            .finish_non_exhaustive()
    }
}

/// Unix seconds of `t`.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ServerState {
    pub fn new(
        config: Arc<UpConfig>,
        store: SharedStore,
        ca: Ca,
        keys: Arc<dyn KeyStore>,
        decisions: Arc<Decisions>,
    ) -> Arc<Self> {
        let (changes, _) = watch::channel(0);
        Arc::new(ServerState {
            config,
            store,
            ca: RwLock::new(ca),
            keys,
            decisions,
            local_agent: std::sync::OnceLock::new(),
            changes,
        })
    }

    /// The store, locked. Hold it for one operation only.
    pub fn store(&self) -> MutexGuard<'_, Box<dyn Store + Send>> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared store handle (for components that lock it themselves).
    pub fn shared_store(&self) -> SharedStore {
        Arc::clone(&self.store)
    }

    pub fn ca(&self) -> RwLockReadGuard<'_, Ca> {
        self.ca.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ca_mut(&self) -> RwLockWriteGuard<'_, Ca> {
        self.ca.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to the change feed.
    pub fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Tells every watcher that something changed.
    pub fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records a revocation and notifies watchers; returns its version.
    pub fn revoke(
        &self,
        kind: RevocationKind,
        subject: &str,
        reason: &str,
        until: Option<u64>,
    ) -> Result<u64, StoreError> {
        let v = self.store().add_revocation(&Revocation {
            version: 0,
            kind,
            subject: subject.to_string(),
            reason: reason.to_string(),
            at: unix(SystemTime::now()),
            until,
        })?;
        tracing::info!(?kind, %subject, version = v, "revoked");
        self.changed();
        Ok(v)
    }
}
