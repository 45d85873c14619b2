//! The in-memory fake: the same contract as SQLite, for tests and for
//! embedding the log where persistence happens elsewhere.

use std::collections::BTreeMap;

use crate::{
    AuditEntry, AuditStore, EntryFilter, EntryMeta, Hash, PruneState, StoreError, StoredCheckpoint,
    StoredEntry, Tile,
};

/// An [`AuditStore`] in memory. Its fields are public to tests through the
/// `tamper_*` methods, which let fault tests damage it the way an attacker
/// would damage a database.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    records: BTreeMap<u64, (Hash, Vec<u8>, EntryMeta)>,
    tiles: BTreeMap<(u32, u64), Hash>,
    checkpoints: BTreeMap<u64, StoredCheckpoint>,
    prune: Option<PruneState>,
    pub(crate) identity: crate::memory_identity::IdentityTables,
    pub(crate) documents: crate::memory_documents::DocumentTables,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the bytes of record `index` (not its leaf hash), as an
    /// attacker editing the database would. For fault tests.
    pub fn tamper_data(&mut self, index: u64, data: Vec<u8>) {
        if let Some(r) = self.records.get_mut(&index) {
            r.1 = data;
        }
    }

    /// Replaces the stored leaf hash of record `index`. For fault tests.
    pub fn tamper_leaf(&mut self, index: u64, leaf: Hash) {
        if let Some(r) = self.records.get_mut(&index) {
            r.0 = leaf;
        }
    }

    /// Removes record `index`. For fault tests.
    pub fn tamper_remove(&mut self, index: u64) {
        self.records.remove(&index);
    }

    /// Swaps the contents of records `a` and `b`. For fault tests.
    pub fn tamper_swap(&mut self, a: u64, b: u64) {
        if let (Some(ra), Some(rb)) = (self.records.remove(&a), self.records.remove(&b)) {
            self.records.insert(a, rb);
            self.records.insert(b, ra);
        }
    }

    /// Drops every record from `index` on. For fault tests.
    pub fn tamper_truncate(&mut self, index: u64) {
        self.records.split_off(&index);
    }

    fn retained_from(&self) -> u64 {
        self.prune.as_ref().map_or(0, |p| p.boundary)
    }

    fn entry(index: u64, r: &(Hash, Vec<u8>, EntryMeta)) -> StoredEntry {
        StoredEntry {
            index,
            leaf: r.0,
            data: r.1.clone(),
        }
    }
}

impl AuditStore for MemoryStore {
    fn append_entries(
        &mut self,
        first: u64,
        entries: &[AuditEntry],
        tiles: &[Tile],
    ) -> Result<(), StoreError> {
        let actual = self.size()?;
        if first != actual {
            return Err(StoreError::Conflict {
                expected: first,
                actual,
            });
        }
        for (i, e) in (first..).zip(entries) {
            self.records
                .insert(i, (e.leaf, e.data.clone(), e.meta.clone()));
        }
        for t in tiles {
            self.tiles.insert((t.level, t.index), t.hash);
        }
        Ok(())
    }

    fn size(&self) -> Result<u64, StoreError> {
        Ok(self
            .records
            .keys()
            .next_back()
            .map_or(self.retained_from(), |i| i + 1))
    }

    fn entries(&self, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError> {
        Ok(self
            .records
            .range(start..end.max(start))
            .map(|(i, r)| Self::entry(*i, r))
            .collect())
    }

    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<(u64, Hash)>, StoreError> {
        Ok(self
            .records
            .range(start..end.max(start))
            .map(|(i, r)| (*i, r.0))
            .collect())
    }

    fn tiles(&self, level: u32, start: u64, end: u64) -> Result<Vec<Tile>, StoreError> {
        Ok(self
            .tiles
            .range((level, start)..(level, end.max(start)))
            .map(|((level, index), hash)| Tile {
                level: *level,
                index: *index,
                hash: *hash,
            })
            .collect())
    }

    fn find_by_id(&self, id: &str) -> Result<Vec<StoredEntry>, StoreError> {
        Ok(self
            .records
            .iter()
            .filter(|(_, r)| r.2.id == id)
            .map(|(i, r)| Self::entry(*i, r))
            .collect())
    }

    fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError> {
        let limit = filter.limit.unwrap_or(u64::MAX);
        Ok(self
            .records
            .iter()
            .filter(|(i, r)| filter.matches(**i, &r.2))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(i, r)| Self::entry(*i, r))
            .collect())
    }

    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError> {
        self.checkpoints.insert(cp.size, cp.clone());
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints.values().cloned().collect())
    }

    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        Ok(self.checkpoints.values().next_back().cloned())
    }

    fn prune_state(&self) -> Result<Option<PruneState>, StoreError> {
        Ok(self.prune.clone())
    }

    fn prune(&mut self, state: &PruneState) -> Result<(), StoreError> {
        let size = self.size()?;
        if state.boundary > size {
            return Err(StoreError::OutOfRange {
                start: 0,
                end: state.boundary,
                retained_from: self.retained_from(),
                size,
            });
        }
        self.records = self.records.split_off(&state.boundary);
        self.checkpoints = self.checkpoints.split_off(&state.boundary);
        self.prune = Some(state.clone());
        Ok(())
    }
}
