//! keycard's state, behind one seam.
//!
//! ```
//! use keycard_store::{AuditEntry, AuditStore, EntryMeta, MemoryStore};
//!
//! let mut store = MemoryStore::new();
//! let entry = AuditEntry {
//!     leaf: [7; 32],
//!     data: br#"{"id":"d-1"}"#.to_vec(),
//!     meta: EntryMeta { id: "d-1".into(), ..EntryMeta::default() },
//! };
//! // Appends say where they expect to land, so two writers cannot interleave.
//! store.append_entries(0, &[entry], &[]).unwrap();
//! assert_eq!(store.size().unwrap(), 1);
//! assert_eq!(store.find_by_id("d-1").unwrap()[0].index, 0);
//! ```
//!
//! Why a trait: the embedded default is SQLite in a data directory
//! ([`SqliteStore`], nothing to install), a high-availability deployment
//! will put PostgreSQL behind the same trait, and tests use [`MemoryStore`].
//! The crates that own the logic (`keycard-audit` for the decision log) depend
//! on the trait only, with this crate's `sqlite` feature off, so they stay
//! free of I/O.
//!
//! The seam is split by concern: [`AuditStore`] holds the decision log. The
//! identity store (registration entries, agents), tokens, policies and grants
//! become further traits beside it, and [`Store`] (the one a server holds)
//! gains them as supertraits; each backend implements them over its one
//! database and one migration history.
//!
//! What "stored" means: a successful [`AuditStore::append_entries`] is
//! durable (SQLite commits in WAL mode with `synchronous=FULL`), so an
//! enforcement point may acknowledge the decisions once it returns.

mod documents;
mod memory;
mod memory_documents;
mod memory_identity;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod sqlite_documents;
#[cfg(feature = "sqlite")]
mod sqlite_identity;
/// Test support: a PostgreSQL database per test (see the module docs).
#[cfg(feature = "postgres")]
pub mod testing;
mod util;

pub use documents::{DocumentStore, PutMode, StoredDocument};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PG_MIGRATIONS};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteOptions, SqliteStore, MIGRATIONS};

use std::error::Error as StdError;

pub use keycard_core::{AgentRecord, JoinToken, RegistrationEntry, Revocation, SpiffeId, TokenUse};

use thiserror::Error;

/// A SHA-256 hash (a Merkle leaf or interior node).
pub type Hash = [u8; 32];

/// Why a store operation failed. Backends classify their errors so that a
/// caller can react (stop writing when full, report tampering when corrupt)
/// without knowing the backend.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The disk (or the configured size limit) is full: nothing was written.
    #[error("the store is full (disk full or size limit reached); nothing was written: {0}")]
    Full(String),
    /// The store cannot be written (read-only file or directory).
    #[error("the store is read-only: {0}")]
    ReadOnly(String),
    /// The database is damaged: truncated, overwritten or not a database.
    #[error("the store is damaged (truncated or corrupted): {0}")]
    Corrupt(String),
    /// An append named a position other than the end of the log: another
    /// writer appended in between, or the log was truncated under us.
    #[error("append expected the log to end at {expected} but it ends at {actual}")]
    Conflict {
        /// Index the caller meant to append at.
        expected: u64,
        /// Index the log actually ends at.
        actual: u64,
    },
    /// A read asked for records that were pruned or never written.
    #[error("records {start}..{end} are not in the store (it holds {retained_from}..{size})")]
    OutOfRange {
        /// First index asked for.
        start: u64,
        /// One past the last index asked for.
        end: u64,
        /// First retained index (the prune boundary).
        retained_from: u64,
        /// One past the last stored index.
        size: u64,
    },
    /// The database was written by a newer keycard.
    #[error("the store has schema version {found}, this keycard knows up to {known}")]
    TooNew {
        /// Version found in the database.
        found: u32,
        /// Highest version this build migrates to.
        known: u32,
    },
    /// A create named a key that exists (an entry id, a token).
    #[error("{0} already exists")]
    Duplicate(String),
    /// A stored value does not have the expected shape (e.g. a 31-byte hash).
    #[error("malformed stored value: {0}")]
    Malformed(String),
    /// The database cannot be reached (connection refused or dropped, a
    /// restart, a failover). The operation in flight may or may not have
    /// been applied; nothing was acknowledged. Later calls reconnect.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    /// Any other backend failure.
    #[error("store backend: {0}")]
    Backend(#[source] Box<dyn StdError + Send + Sync>),
}

/// The columns of a record that queries filter on. The record itself is the
/// opaque `data`; these are copies the store may index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Decision id (not necessarily unique: the log does not trust callers).
    pub id: String,
    /// Decision time, Unix milliseconds.
    pub time_ms: i64,
    /// Enforcement point.
    pub point: String,
    /// Subject (identity or user), possibly hashed or masked.
    pub subject: String,
    /// Resource.
    pub resource: String,
    /// Action.
    pub action: String,
    /// Outcome.
    pub outcome: String,
    /// Deciding policy.
    pub policy: String,
}

/// A record to append: its leaf hash, its exact bytes and its query columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// `SHA-256(0x00 || data)`; stored so proofs need not rehash records.
    pub leaf: Hash,
    /// The record's canonical bytes (the Merkle leaf data).
    pub data: Vec<u8>,
    /// Copies of the fields queries filter on.
    pub meta: EntryMeta,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position in the log.
    pub index: u64,
    /// Stored leaf hash (verification recomputes it from `data`).
    pub leaf: Hash,
    /// The record's bytes.
    pub data: Vec<u8>,
}

/// A stored interior node: the hash of the complete subtree of `2^level`
/// leaves starting at leaf `index << level`. The log stores every eighth
/// level so that any proof needs at most a few hundred hashes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Height of the subtree (a multiple of 8, at least 8).
    pub level: u32,
    /// Index of the subtree within its level.
    pub index: u64,
    /// Its hash.
    pub hash: Hash,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size it commits to.
    pub size: u64,
    /// The signed note, verbatim.
    pub note: String,
    /// When it was stored, Unix milliseconds.
    pub created_ms: i64,
}

/// What remains of the pruned prefix of the log: its size and the roots of
/// the complete subtrees it decomposes into (largest first), which is all
/// that proofs and verification of the retained records need from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneState {
    /// Records `0..boundary` were pruned.
    pub boundary: u64,
    /// Roots of the maximal complete subtrees of `0..boundary`, left to right.
    pub frontier: Vec<Hash>,
}

/// Filters of a query; `None` matches anything. Text filters are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Subject.
    pub subject: Option<String>,
    /// Resource.
    pub resource: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Deciding policy.
    pub policy: Option<String>,
    /// Enforcement point.
    pub point: Option<String>,
    /// Earliest decision time, Unix milliseconds, inclusive.
    pub since_ms: Option<i64>,
    /// Latest decision time, Unix milliseconds, exclusive.
    pub until_ms: Option<i64>,
    /// Only records at this index or after (for paging and `--follow`).
    pub from_index: Option<u64>,
    /// At most this many records.
    pub limit: Option<u64>,
}

impl EntryFilter {
    /// Whether `meta` at `index` passes the filter (the fake and any backend
    /// that filters in memory share this).
    pub fn matches(&self, index: u64, meta: &EntryMeta) -> bool {
        fn eq(f: &Option<String>, v: &str) -> bool {
            f.as_deref().is_none_or(|f| f == v)
        }
        eq(&self.subject, &meta.subject)
            && eq(&self.resource, &meta.resource)
            && eq(&self.outcome, &meta.outcome)
            && eq(&self.policy, &meta.policy)
            && eq(&self.point, &meta.point)
            && self.since_ms.is_none_or(|t| meta.time_ms >= t)
            && self.until_ms.is_none_or(|t| meta.time_ms < t)
            && self.from_index.is_none_or(|i| index >= i)
    }
}

/// Storage of the decision log: records, interior-node tiles, signed
/// checkpoints and the pruned prefix.
///
/// Implementations keep these invariants, which the log's verification
/// relies on but never trusts: records are appended only at the end,
/// indices are dense from the prune boundary, and an append (records and
/// tiles together) is all or nothing and durable when it returns.
pub trait AuditStore {
    /// Appends `entries` at index `first` (which must be [`Self::size`]) with
    /// the `tiles` they complete, atomically and durably.
    fn append_entries(
        &mut self,
        first: u64,
        entries: &[AuditEntry],
        tiles: &[Tile],
    ) -> Result<(), StoreError>;

    /// One past the last stored index (pruned records count: indices never
    /// move).
    fn size(&self) -> Result<u64, StoreError>;

    /// The stored records with indices in `start..end`, in index order. A
    /// damaged log may return fewer (missing rows); callers check indices.
    fn entries(&self, start: u64, end: u64) -> Result<Vec<StoredEntry>, StoreError>;

    /// The stored leaf hashes of `start..end` with their indices, in order.
    fn leaf_hashes(&self, start: u64, end: u64) -> Result<Vec<(u64, Hash)>, StoreError>;

    /// Tiles of `level` with indices in `start..end`, in order.
    fn tiles(&self, level: u32, start: u64, end: u64) -> Result<Vec<Tile>, StoreError>;

    /// Records whose decision id is `id`, in index order.
    fn find_by_id(&self, id: &str) -> Result<Vec<StoredEntry>, StoreError>;

    /// Records matching `filter`, in index order.
    fn query(&self, filter: &EntryFilter) -> Result<Vec<StoredEntry>, StoreError>;

    /// Stores a signed checkpoint (replacing one of the same size).
    fn put_checkpoint(&mut self, cp: &StoredCheckpoint) -> Result<(), StoreError>;

    /// Every stored checkpoint, by size.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, StoreError>;

    /// The checkpoint of the largest size, if any.
    fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;

    /// The pruned prefix, if any was pruned.
    fn prune_state(&self) -> Result<Option<PruneState>, StoreError>;

    /// Deletes records `..state.boundary` and checkpoints smaller than it,
    /// recording `state`, all or nothing. Tiles stay: they are small and
    /// let proofs span the pruned prefix.
    fn prune(&mut self, state: &PruneState) -> Result<(), StoreError>;
}

/// A named value with its version (see [`IdentityStore::versioned_value`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedValue {
    /// Changes on every write of the key; never 0, never reused.
    pub version: u64,
    /// The value.
    pub value: Vec<u8>,
}

/// What [`IdentityStore::compare_and_put_value`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// The value was written and now has `version`.
    Written {
        /// The key's new version.
        version: u64,
    },
    /// Someone else wrote (or deleted) the key since it was read: nothing
    /// was written. Read it again, reapply the change and retry.
    Conflict {
        /// The key's version now (0: the key does not exist).
        actual: u64,
    },
}

/// Storage of the identity system: registration entries, node agents,
/// single-use join tokens, the revocation feed, and small named values (CA
/// state, bundle sequence numbers, federated bundles).
///
/// Every write is durable when it returns. [`IdentityStore::use_join_token`]
/// is atomic: of two servers consuming one token at once, exactly one gets
/// [`TokenUse::Consumed`].
pub trait IdentityStore {
    /// Stores a new entry; [`StoreError::Duplicate`] if its id exists.
    fn create_entry(&mut self, entry: &RegistrationEntry) -> Result<(), StoreError>;
    /// The entry with `id`.
    fn entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError>;
    /// Every entry, by id.
    fn list_entries(&self) -> Result<Vec<RegistrationEntry>, StoreError>;
    /// Deletes the entry with `id`, returning it if it existed.
    fn delete_entry(&mut self, id: &str) -> Result<Option<RegistrationEntry>, StoreError>;

    /// Stores a new join token (by hash); [`StoreError::Duplicate`] if known.
    fn put_join_token(&mut self, token: &JoinToken) -> Result<(), StoreError>;
    /// Spends the token with hash `hash` if it is unused and not expired at
    /// `now` (Unix seconds), atomically.
    fn use_join_token(&mut self, hash: &str, now: u64) -> Result<TokenUse, StoreError>;

    /// Creates or replaces the record of an agent.
    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError>;
    /// The agent with SPIFFE ID `id`.
    fn agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError>;
    /// Every agent, by SPIFFE ID.
    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Appends a revocation to the feed, assigning and returning its
    /// version (1, 2, ...; the argument's `version` is ignored).
    fn add_revocation(&mut self, revocation: &Revocation) -> Result<u64, StoreError>;
    /// Revocations with a version above `version`, in version order.
    fn revocations_since(&self, version: u64) -> Result<Vec<Revocation>, StoreError>;

    /// Sets the named value `key`.
    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// The named value `key`.
    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every named value whose key starts with `prefix`, by key.
    fn values_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Deletes the named value `key`; returns whether it existed.
    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError>;

    /// The named value `key` with its version. Every write of a key
    /// ([`Self::put_value`] or [`Self::compare_and_put_value`]) gives it a
    /// new version, greater than the versions it had and never handed out
    /// to any key before, so a key never returns to a version it had, even
    /// after a delete and a re-create (no ABA).
    fn versioned_value(&self, key: &str) -> Result<Option<VersionedValue>, StoreError>;

    /// Compare-and-swap: sets `key` to `value` only if its version is still
    /// `expected` (0: only if the key does not exist), as one atomic step
    /// across every connection and server on the database. This is how
    /// servers sharing state read-modify-write it without losing each
    /// other's changes: read with [`Self::versioned_value`], change,
    /// write with the version read, and on [`CasOutcome::Conflict`] start
    /// again from a fresh read.
    fn compare_and_put_value(
        &mut self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<CasOutcome, StoreError>;
}

/// The whole of keycard's state: the decision log, the identity store and
/// the versioned documents (policies, exceptions).
pub trait Store: AuditStore + IdentityStore + DocumentStore {}

impl<T: AuditStore + IdentityStore + DocumentStore> Store for T {}
