//! A store that fails on command, for tests of what enforcement points do
//! when their decision log cannot be written (feature `testing`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use keycard_store::{
    AuditEntry, AuditStore, EntryFilter, PruneState, StoreError, StoredCheckpoint, StoredEntry,
    Tile,
};

/// Wraps a store; while the switch is on, every write fails with
/// [`StoreError::Full`] and stores nothing (as on a full disk). Reads pass.
#[derive(Debug)]
pub struct FailingStore<S> {
    inner: S,
    fail: Arc<AtomicBool>,
}

impl<S> FailingStore<S> {
    /// Wraps `inner`; returns the store and its switch.
    pub fn new(inner: S) -> (Self, Arc<AtomicBool>) {
        let fail = Arc::new(AtomicBool::new(false));
        (
            FailingStore {
                inner,
                fail: fail.clone(),
            },
            fail,
        )
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::Acquire) {
            return Err(StoreError::Full("simulated full disk".into()));
        }
        Ok(())
    }
}

impl<S: AuditStore> AuditStore for FailingStore<S> {
    fn append_entries(
        &mut self,
        first: u64,
        entries: &[AuditEntry],
        tiles: &[Tile],
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_entries(first, entries, tiles)
    }

    fn size(&self) -> Result<u64, StoreError> {
        self.inner.size()
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        self.inner.entries(start, end)
    }

    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        self.inner.leaf_hashes(start, end)
    }

    fn tiles(&self, level: u32, start: u64, end: u64) -> Result<Vec<Tile>, StoreError> {
        self.inner.tiles(level, start, end)
    }

    fn find_by_id(&self, id: &str) -> Result<Vec<StoredEntry>, StoreError> {
        self.inner.find_by_id(id)
    }

    fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        self.inner.query(filter)
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_checkpoint(cp)
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.inner.checkpoints()
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.inner.latest_checkpoint()
    }

    fn prune_state(&self) -> Result<Option<PruneState>, StoreError> {
        self.inner.prune_state()
    }

    fn prune(&mut self, state: &PruneState) -> Result<(), StoreError> {
        self.check()?;
        self.inner.prune(state)
    }
}
