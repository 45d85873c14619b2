//! The decision log: records appended through a [`keycard_store::AuditStore`],
//! checkpoints signed on a schedule, and the auditor's questions (verify,
//! why, query) answered from the store alone.

use std::io::Write;

use keycard_store::{
    AuditEntry, AuditStore, EntryFilter, EntryMeta, PruneState, StoreError, StoredCheckpoint,
    StoredEntry, Tile,
};
use serde::Deserialize;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash, ProofError};
use crate::note::{Signer, VerifierSet};
use crate::record::{format_rfc3339_ms, hex, Record, RecordError, Redaction, SCHEMA_VERSION};
use crate::tiled::{Frontier, NodeError, NodeReader};

/// Evidence that the log was altered. Each names the first place where the
/// stored log stops matching what was appended and signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Tamper {
    /// A record's bytes no longer hash to the leaf stored with them.
    #[error("record {index} (id {id}) was altered: its bytes no longer hash to its leaf")]
    RecordAltered {
        /// Position.
        index: u64,
        /// Decision id as it now reads.
        id: String,
    },
    /// A record sits at a position other than the one it was appended at.
    #[error("record at position {index} (id {id}) was appended as record {claimed}: records were reordered or renumbered")]
    RecordMisplaced {
        /// Where it is.
        index: u64,
        /// Where it was appended.
        claimed: u64,
        /// Decision id.
        id: String,
    },
    /// A record in the middle of the log is gone.
    #[error("record {index} is missing: it was deleted")]
    RecordMissing {
        /// The first missing position.
        index: u64,
    },
    /// A record's bytes are not a decision record.
    #[error("record {index} is not a decision record: {reason}")]
    RecordUnreadable {
        /// Position.
        index: u64,
        /// Parser message.
        reason: String,
    },
    /// A stored subtree hash disagrees with the records under it: a record
    /// was altered together with its leaf hash.
    #[error("records {start}..{end} do not match the tree hash stored when they were appended: one of them was altered together with its leaf hash")]
    TileMismatch {
        /// First record of the subtree.
        start: u64,
        /// One past its last record.
        end: u64,
    },
    /// A checkpoint's signature is not the log's.
    #[error("checkpoint at size {size} is not validly signed by the log's key: {reason}")]
    CheckpointSignature {
        /// Size it claims.
        size: u64,
        /// Why it was refused.
        reason: String,
    },
    /// The records do not hash to a signed root.
    #[error("the records do not hash to the root signed at size {size}: a record in {from}..{size} was altered, inserted or removed")]
    CheckpointMismatch {
        /// The checkpoint's size.
        size: u64,
        /// The previous checkpoint's size (records before it matched).
        from: u64,
    },
    /// The log is shorter than a signed checkpoint.
    #[error("the log ends at record {size} but a checkpoint was signed at size {checkpoint}: records {size}..{checkpoint} were removed (truncated)")]
    Truncated {
        /// Records present.
        size: u64,
        /// Size signed.
        checkpoint: u64,
    },
    /// The pruned prefix's stored hashes do not match its checkpoint.
    #[error("the hashes kept for the {boundary} pruned records do not match the checkpoint signed at the prune boundary")]
    PruneMismatch {
        /// Prune boundary.
        boundary: u64,
    },
    /// The log does not extend a checkpoint exported earlier.
    #[error(
        "the log does not extend the exported checkpoint at size {size}: its history was rewritten"
    )]
    NotExtended {
        /// The exported checkpoint's size.
        size: u64,
    },
    /// A record's inclusion proof, built from the stored hashes, does not
    /// lead to the signed root.
    #[error("the inclusion proof of record {index} does not lead to the root signed at size {size} ({reason}): run `keycard audit verify`")]
    ProofFailed {
        /// Position.
        index: u64,
        /// Checkpoint size.
        size: u64,
        /// Verifier message.
        reason: String,
    },
    /// The database itself is damaged.
    #[error("the database is damaged (truncated or overwritten): {0}")]
    Damaged(String),
}

/// Why a decision log operation failed.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The store failed (full disk, read-only, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record could not be built or parsed.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A checkpoint could not be built, signed or opened.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Tampering was detected.
    #[error("tampering detected: {0}")]
    Tamper(#[from] Tamper),
    /// A request the log cannot honour (bad prune boundary, unknown id...).
    #[error("{0}")]
    Invalid(String),
    /// Writing an archive failed.
    #[error("writing the archive: {0}")]
    Io(#[from] std::io::Error),
}

impl From<NodeError> for AuditError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Store(s) => Self::Store(s),
            NodeError::Missing { start, end } => Self::Invalid(format!(
                "the hashes of records {start}..{end} are missing from the store"
            )),
        }
    }
}

/// A source of the current time, so schedules are testable.
pub trait Clock: Send + Sync {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// When to sign a checkpoint: after `every_records` new records or
/// `every_ms` milliseconds with new records, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Records between checkpoints.
    pub every_records: u64,
    /// Milliseconds between checkpoints (when there are new records).
    pub every_ms: i64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_records: 10_000,
            every_ms: 10_000,
        }
    }
}

/// What an enforcement point does when its decision cannot be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Deny the request: no decision without evidence (the default).
    #[default]
    FailClosed,
    /// Let the decision stand and alert: availability over evidence.
    FailOpen,
}

impl FailureMode {
    /// Whether a decision to allow may stand, given whether logging it
    /// succeeded.
    pub fn allow_stands(self, logged: bool) -> bool {
        logged || self == Self::FailOpen
    }
}

/// A record appended: where, and under which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Position in the log.
    pub index: u64,
    /// Decision id (assigned if the record had none).
    pub id: String,
}

/// The tamper-evident decision log over a store.
pub struct DecisionLog<S: AuditStore> {
    origin: String,
    store: S,
    signer: Box<dyn Signer + Send + Sync>,
    policy: CheckpointPolicy,
    redaction: Redaction,
    clock: Box<dyn Clock>,
    frontier: Frontier,
    last_checkpoint: Option<(u64, i64)>,
}

impl<S: AuditStore> std::fmt::Debug for DecisionLog<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog")
            .field("origin", &self.origin)
            .field("size", &self.frontier.size())
            .finish_non_exhaustive()
    }
}

/// The parts of a record that verification reads; parsing only these keeps
/// a full verification fast.
#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    id: String,
    index: u64,
}

fn parse_head(e: &StoredEntry) -> Result<Head, Tamper> {
    serde_json::from_slice(&e.data).map_err(|err| Tamper::RecordUnreadable {
        index: e.index,
        reason: err.to_string(),
    })
}

/// What turns a record into its stored entry: index, version, time and id
/// filled in, redaction applied, canonical bytes and leaf hash.
struct Prepare<'a> {
    now: i64,
    batch_tag: [u8; 6],
    redaction: &'a Redaction,
}

impl Prepare<'_> {
    fn one(&self, index: u64, mut r: Record) -> Result<AuditEntry, AuditError> {
        r.index = index;
        r.v = SCHEMA_VERSION;
        if r.time.is_empty() {
            r.time = format_rfc3339_ms(self.now);
        }
        let time_ms = r.time_ms()?;
        if r.id.is_empty() {
            r.id = format!("{}-{index}", hex(&self.batch_tag));
        }
        self.redaction.apply(&mut r);
        let data = r.to_canonical_json()?;
        let leaf = leaf_hash(&data);
        Ok(AuditEntry {
            leaf,
            data,
            meta: EntryMeta {
                id: r.id,
                time_ms,
                point: r.point.as_str().to_string(),
                subject: r.subject,
                resource: r.resource,
                action: r.action,
                outcome: r.outcome.as_str().to_string(),
                policy: r.policy,
            },
        })
    }

    fn all(&self, first: u64, records: Vec<Record>) -> Result<Vec<AuditEntry>, AuditError> {
        (first..)
            .zip(records)
            .map(|(i, r)| self.one(i, r))
            .collect()
    }
}

impl<S: AuditStore> DecisionLog<S> {
    /// Opens the log `origin` over `store`, signing checkpoints with
    /// `signer` (whose key name should be the origin). Reads `O(log n)`
    /// hashes, not the log.
    pub fn open(
        origin: impl Into<String>,
        store: S,
        signer: Box<dyn Signer + Send + Sync>,
    ) -> Result<Self, AuditError> {
        let size = store.size()?;
        let frontier = NodeReader::new(&store)?.frontier(size)?;
        let last_checkpoint = store.latest_checkpoint()?.map(|c| (c.size, c.created_ms));
        debug!(size, "opened decision log");
        Ok(Self {
            origin: origin.into(),
            store,
            signer,
            policy: CheckpointPolicy::default(),
            redaction: Redaction::default(),
            clock: Box::new(SystemClock),
            frontier,
            last_checkpoint,
        })
    }

    /// Sets the checkpoint schedule.
    pub fn with_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the fields that never reach the log in clear.
    pub fn with_redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Sets the clock (tests).
    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of records ever appended.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Current root.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Appends `records` in one durable transaction and returns where each
    /// landed; signs a checkpoint if the schedule says so. On error nothing
    /// was appended, and the caller applies its [`FailureMode`].
    ///
    /// The log fills in `index`, `v`, an empty `time` (now) and an empty
    /// `id`, then applies the redaction rules.
    pub fn append(&mut self, records: Vec<Record>) -> Result<Vec<Appended>, AuditError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let first = self.frontier.size();
        let mut frontier = self.frontier.clone();
        let mut tiles: Vec<Tile> = Vec::new();
        let mut batch_tag = [0u8; 6];
        if records.iter().any(|r| r.id.is_empty()) {
            getrandom::fill(&mut batch_tag)
                .map_err(|e| AuditError::Invalid(format!("no randomness for decision ids: {e}")))?;
        }
        let prepare = Prepare {
            now,
            batch_tag,
            redaction: &self.redaction,
        };
        let entries = prepare.all(first, records)?;
        let mut appended = Vec::with_capacity(entries.len());
        for (index, e) in (first..).zip(&entries) {
            frontier.push(e.leaf, &mut tiles);
            appended.push(Appended {
                index,
                id: e.meta.id.clone(),
            });
        }
        self.store.append_entries(first, &entries, &tiles)?;
        self.frontier = frontier;
        // The records are stored: a checkpoint that fails now (full disk)
        // must not make the caller think they were not. The next append or
        // `maybe_checkpoint` retries it.
        if let Err(e) = self.maybe_checkpoint(now) {
            warn!(error = %e, "could not sign a checkpoint; records are stored");
        }
        Ok(appended)
    }

    /// Signs a checkpoint if the schedule is due at `now_ms` (call it from a
    /// timer too, so a quiet log still gets one).
    pub fn maybe_checkpoint(&mut self, now_ms: i64) -> Result<Option<String>, AuditError> {
        let size = self.size();
        let (last_size, last_time) = self.last_checkpoint.unwrap_or((0, i64::MIN));
        let due = size > last_size
            && (size - last_size >= self.policy.every_records
                || now_ms.saturating_sub(last_time) >= self.policy.every_ms);
        if due {
            return self.checkpoint().map(Some);
        }
        Ok(None)
    }

    /// Signs and stores a checkpoint of the current size (if it differs
    /// from the last one) and returns the latest signed note.
    pub fn checkpoint(&mut self) -> Result<String, AuditError> {
        let size = self.size();
        if let Some(cp) = self.store.latest_checkpoint()? {
            if cp.size == size {
                return Ok(cp.note);
            }
        }
        let note =
            Checkpoint::new(self.origin.clone(), size, self.root()).sign(&[&*self.signer])?;
        let now = self.clock.now_ms();
        self.store.put_checkpoint(&StoredCheckpoint {
            size,
            note: note.clone(),
            created_ms: now,
        })?;
        self.last_checkpoint = Some((size, now));
        info!(size, "signed a checkpoint");
        Ok(note)
    }

    /// Moves records before `boundary` into an archive written to `out`,
    /// then deletes them from the store. What remains still verifies: the
    /// store keeps the pruned prefix's subtree hashes, and a checkpoint is
    /// signed at the boundary. The archive verifies on its own
    /// ([`verify_archive`]). The records being archived are checked first,
    /// so an altered record is never archived as genuine.
    pub fn prune(&mut self, boundary: u64, out: &mut dyn Write) -> Result<PruneReport, AuditError> {
        let prior = self.store.prune_state()?.unwrap_or_default();
        let start = prior.boundary;
        if boundary <= start || boundary > self.size() {
            return Err(AuditError::Invalid(format!(
                "prune boundary {boundary} must be after the retained start {start} and at most the log size {}",
                self.size()
            )));
        }
        let mut frontier = Frontier::from_parts(start, prior.frontier.clone())
            .ok_or(Tamper::PruneMismatch { boundary: start })?;
        let checkpoints: Vec<StoredCheckpoint> = self
            .store
            .checkpoints()?
            .into_iter()
            .filter(|c| c.size > start && c.size <= boundary)
            .collect();
        let header = serde_json::json!({
            "keycard_audit_archive": 1,
            "origin": self.origin,
            "start": start,
            "end": boundary,
            "frontier": prior.frontier.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "checkpoint_sizes": checkpoints
                .iter()
                .map(|c| c.size)
                .filter(|s| *s != boundary)
                .chain([boundary])
                .collect::<Vec<_>>(),
        });
        writeln!(out, "{header}")?;
        let mut tiles = Vec::new();
        let mut pos = start;
        while pos < boundary {
            let end = boundary.min(pos + CHUNK);
            let entries = self.store.entries(pos, end)?;
            for e in &entries {
                check_entry(e, pos)?;
                frontier.push(e.leaf, &mut tiles);
                out.write_all(&e.data)?;
                out.write_all(b"\n")?;
                pos += 1;
            }
            if pos < end {
                return Err(Tamper::RecordMissing { index: pos }.into());
            }
        }
        let reader = NodeReader::new(&self.store)?;
        if reader.root(boundary)? != frontier.root() {
            return Err(Tamper::CheckpointMismatch {
                size: boundary,
                from: start,
            }
            .into());
        }
        let note = Checkpoint::new(self.origin.clone(), boundary, frontier.root())
            .sign(&[&*self.signer])?;
        let mut notes: Vec<String> = checkpoints
            .iter()
            .filter(|c| c.size != boundary)
            .map(|c| c.note.clone())
            .collect();
        notes.push(note.clone());
        writeln!(out, "{}", serde_json::json!({ "checkpoints": notes }))?;
        out.flush()?;
        self.store.put_checkpoint(&StoredCheckpoint {
            size: boundary,
            note,
            created_ms: self.clock.now_ms(),
        })?;
        self.store.prune(&PruneState {
            boundary,
            frontier: frontier.nodes().to_vec(),
        })?;
        info!(start, boundary, "archived and pruned records");
        Ok(PruneReport {
            start,
            end: boundary,
        })
    }
}

/// What [`DecisionLog::prune`] archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneReport {
    /// First archived record.
    pub start: u64,
    /// One past the last archived record (the new retained start).
    pub end: u64,
}

/// Records read per store call while streaming.
const CHUNK: u64 = 16_384;

/// The per-record checks: position, leaf hash, self-declared index.
fn check_entry(e: &StoredEntry, expected: u64) -> Result<(), Tamper> {
    if e.index != expected {
        return Err(Tamper::RecordMissing { index: expected });
    }
    if leaf_hash(&e.data) != e.leaf {
        return Err(Tamper::RecordAltered {
            index: e.index,
            id: parse_head(e).map(|h| h.id).unwrap_or_default(),
        });
    }
    let head = parse_head(e)?;
    if head.index != e.index {
        return Err(Tamper::RecordMisplaced {
            index: e.index,
            claimed: head.index,
            id: head.id,
        });
    }
    Ok(())
}

/// What a clean verification covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records in the log (pruned ones count).
    pub size: u64,
    /// First retained record.
    pub retained_from: u64,
    /// Records rehashed.
    pub records_checked: u64,
    /// Checkpoints whose signature and root were checked.
    pub checkpoints_checked: usize,
    /// The latest checkpoint, if any.
    pub latest: Option<Checkpoint>,
    /// Records appended after the latest checkpoint (not yet signed).
    pub unsigned_tail: u64,
    /// Size of the exported checkpoint shown to be extended, if one was given.
    pub extends: Option<u64>,
}

fn damaged(e: StoreError) -> AuditError {
    match e {
        StoreError::Corrupt(m) => Tamper::Damaged(m).into(),
        other => other.into(),
    }
}

/// Verifies the whole log in `store`: every retained record is rehashed and
/// checked in place, the tree is recomputed, every stored checkpoint's
/// signature is checked and its root compared with the recomputed root at
/// its size (which also proves each checkpoint consistent with the next),
/// and the stored subtree hashes that proofs use are checked too.
///
/// `exported` is a checkpoint kept where the log's writer cannot change it
/// (`keycard audit checkpoint --export`); the log must extend it. Without
/// one, a writer who deletes the newest records *and* their checkpoints
/// goes unnoticed: export checkpoints regularly.
pub fn verify<S: AuditStore>(
    store: &S,
    origin: &str,
    verifiers: &VerifierSet,
    exported: Option<&str>,
) -> Result<VerifyReport, AuditError> {
    let prune = store.prune_state().map_err(damaged)?;
    let retained_from = prune.as_ref().map_or(0, |p| p.boundary);
    let size = store.size().map_err(damaged)?;

    // Signatures first: a forged checkpoint is reported as such, not as a
    // root mismatch.
    let mut signed: Vec<Checkpoint> = Vec::new();
    for c in store.checkpoints().map_err(damaged)? {
        let cp = match Checkpoint::open(c.note.as_bytes(), origin, verifiers) {
            Ok((cp, _)) => cp,
            Err(e) => {
                return Err(Tamper::CheckpointSignature {
                    size: c.size,
                    reason: e.to_string(),
                }
                .into())
            }
        };
        if cp.size != c.size {
            return Err(Tamper::CheckpointSignature {
                size: c.size,
                reason: format!("the signed note is for size {}", cp.size),
            }
            .into());
        }
        signed.push(cp);
    }
    let exported = match exported {
        Some(note) => {
            let (cp, _) = Checkpoint::open(note.as_bytes(), origin, verifiers).map_err(|e| {
                AuditError::Invalid(format!("the exported checkpoint does not verify: {e}"))
            })?;
            if cp.size < retained_from {
                return Err(AuditError::Invalid(format!(
                    "the exported checkpoint (size {}) is older than the prune boundary {retained_from}: verify it against the archive",
                    cp.size
                )));
            }
            Some(cp)
        }
        None => None,
    };

    let mut frontier = match &prune {
        Some(p) => {
            Frontier::from_parts(p.boundary, p.frontier.clone()).ok_or(Tamper::PruneMismatch {
                boundary: p.boundary,
            })?
        }
        None => Frontier::new(),
    };
    if retained_from > 0 {
        let at_boundary = signed.iter().find(|c| c.size == retained_from);
        if at_boundary.is_none_or(|c| c.root != frontier.root()) {
            return Err(Tamper::PruneMismatch {
                boundary: retained_from,
            }
            .into());
        }
    }
    // Roots to compare, in size order: every stored checkpoint after the
    // prune boundary, and the exported one.
    let mut targets: Vec<(u64, Hash, bool)> = signed
        .iter()
        .filter(|c| c.size > retained_from)
        .map(|c| (c.size, c.root, false))
        .collect();
    if let Some(cp) = &exported {
        targets.push((cp.size, cp.root, true));
    }
    targets.sort_by_key(|t| t.0);
    let mut next_target = 0;
    let mut last_good = retained_from;
    let mut check_targets = |frontier: &Frontier, last_good: &mut u64| -> Result<(), Tamper> {
        while let Some((tsize, root, is_exported)) = targets.get(next_target).copied() {
            if tsize != frontier.size() {
                break;
            }
            if frontier.root() != root {
                return Err(if is_exported {
                    Tamper::NotExtended { size: tsize }
                } else {
                    Tamper::CheckpointMismatch {
                        size: tsize,
                        from: *last_good,
                    }
                });
            }
            *last_good = tsize;
            next_target += 1;
        }
        Ok(())
    };
    check_targets(&frontier, &mut last_good)?;

    let mut pos = retained_from;
    let mut tiles = Vec::new();
    while pos < size {
        let end = size.min(pos + CHUNK);
        let entries = store.entries(pos, end).map_err(damaged)?;
        for e in &entries {
            check_entry(e, pos)?;
            frontier.push(e.leaf, &mut tiles);
            pos += 1;
            check_targets(&frontier, &mut last_good)?;
        }
        if pos < end {
            return Err(Tamper::RecordMissing { index: pos }.into());
        }
        // The stored tiles must be the ones these records produce.
        for t in tiles.drain(..) {
            let stored = store
                .tiles(t.level, t.index, t.index + 1)
                .map_err(damaged)?;
            if stored.first().map(|s| s.hash) != Some(t.hash) {
                let width = 1u64 << t.level;
                return Err(Tamper::TileMismatch {
                    start: t.index * width,
                    end: (t.index + 1) * width,
                }
                .into());
            }
        }
    }
    if let Some((tsize, _, _)) = targets.get(next_target).copied() {
        // A signed size beyond the records.
        return Err(Tamper::Truncated {
            size,
            checkpoint: tsize,
        }
        .into());
    }
    let latest = signed.last().cloned();
    let unsigned_tail = size - latest.as_ref().map_or(0, |c| c.size);
    if unsigned_tail > 0 {
        warn!(
            unsigned_tail,
            "records after the latest checkpoint are not signed yet"
        );
    }
    // Belt and braces for the exported checkpoint: the consistency proof an
    // outside auditor would ask for, from the stored tiles.
    if let (Some(old), Some(new)) = (&exported, &latest) {
        if old.size > 0 && old.size <= new.size {
            let proof = NodeReader::new(store)?.consistency_proof(old.size, new.size)?;
            verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
                .map_err(|_| Tamper::NotExtended { size: old.size })?;
        }
    }
    Ok(VerifyReport {
        size,
        retained_from,
        records_checked: size - retained_from,
        checkpoints_checked: signed.len(),
        latest,
        unsigned_tail,
        extends: exported.map(|c| c.size),
    })
}

/// The answer to "why": the decision and the proof that it is in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    /// Position in the log.
    pub index: u64,
    /// The decision.
    pub record: Record,
    /// Its leaf hash.
    pub leaf: Hash,
    /// The latest checkpoint, if it covers the record.
    pub checkpoint: Option<(Checkpoint, String)>,
    /// Inclusion proof against that checkpoint (bottom-up).
    pub proof: Vec<Hash>,
}

/// Looks up decision `id` and proves its inclusion in the latest signed
/// checkpoint. Reads a few hundred hashes however long the log is.
pub fn why<S: AuditStore>(
    store: &S,
    origin: &str,
    verifiers: &VerifierSet,
    id: &str,
) -> Result<Vec<Why>, AuditError> {
    let found = store.find_by_id(id).map_err(damaged)?;
    if found.is_empty() {
        return Err(AuditError::Invalid(format!(
            "no decision with id {id:?} in the retained log"
        )));
    }
    let latest = match store.latest_checkpoint().map_err(damaged)? {
        Some(c) => {
            let (cp, _) = Checkpoint::open(c.note.as_bytes(), origin, verifiers).map_err(|e| {
                Tamper::CheckpointSignature {
                    size: c.size,
                    reason: e.to_string(),
                }
            })?;
            Some((cp, c.note))
        }
        None => None,
    };
    let reader = NodeReader::new(store)?;
    let mut out = Vec::new();
    for e in found {
        check_entry(&e, e.index)?;
        let record = Record::from_json(&e.data)?;
        let (checkpoint, proof) = match &latest {
            Some((cp, note)) if cp.size > e.index => {
                let proof = reader.inclusion_proof(e.index, cp.size)?;
                verify_inclusion(&e.leaf, e.index, cp.size, &proof, &cp.root).map_err(
                    |err: ProofError| Tamper::ProofFailed {
                        index: e.index,
                        size: cp.size,
                        reason: err.to_string(),
                    },
                )?;
                (Some((cp.clone(), note.clone())), proof)
            }
            _ => (None, Vec::new()),
        };
        out.push(Why {
            index: e.index,
            record,
            leaf: e.leaf,
            checkpoint,
            proof,
        });
    }
    Ok(out)
}

/// Records matching `filter`, parsed, in log order.
pub fn query<S: AuditStore>(
    store: &S,
    filter: &EntryFilter,
) -> Result<Vec<(u64, Record)>, AuditError> {
    store
        .query(filter)
        .map_err(damaged)?
        .into_iter()
        .map(|e| {
            Record::from_json(&e.data)
                .map(|r| (e.index, r))
                .map_err(|err| {
                    AuditError::Tamper(Tamper::RecordUnreadable {
                        index: e.index,
                        reason: err.to_string(),
                    })
                })
        })
        .collect()
}

/// What an archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveReport {
    /// First record.
    pub start: u64,
    /// One past the last record.
    pub end: u64,
    /// Checkpoints in it, all verified.
    pub checkpoints: usize,
}

#[derive(Deserialize)]
struct ArchiveHeader {
    keycard_audit_archive: u32,
    origin: String,
    start: u64,
    end: u64,
    frontier: Vec<String>,
    checkpoint_sizes: Vec<u64>,
}

#[derive(Deserialize)]
struct ArchiveTrailer {
    checkpoints: Vec<String>,
}

fn parse_hash(s: &str) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(h)
}

/// Verifies an archive written by [`DecisionLog::prune`]: every record in
/// place, and the root at its end equal to the signed checkpoint there.
pub fn verify_archive<'a, I>(
    lines: I,
    origin: &str,
    verifiers: &VerifierSet,
) -> Result<ArchiveReport, AuditError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let bad = |line: usize, msg: String| AuditError::Invalid(format!("archive line {line}: {msg}"));
    let mut it = lines.into_iter().enumerate().map(|(i, l)| (i + 1, l));
    let (_, first) = it.next().ok_or_else(|| bad(1, "empty archive".into()))?;
    let h: ArchiveHeader =
        serde_json::from_slice(first).map_err(|e| bad(1, format!("not an archive header: {e}")))?;
    if h.keycard_audit_archive != 1 || h.origin != origin {
        return Err(bad(
            1,
            format!(
                "archive of log {:?}, version {}",
                h.origin, h.keycard_audit_archive
            ),
        ));
    }
    let nodes = h
        .frontier
        .iter()
        .map(|s| parse_hash(s))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad(1, "bad frontier hash".into()))?;
    let mut frontier = Frontier::from_parts(h.start, nodes)
        .ok_or_else(|| bad(1, "frontier does not fit the start".into()))?;
    let wanted: std::collections::HashSet<u64> = h.checkpoint_sizes.iter().copied().collect();
    if !wanted.contains(&h.end) {
        return Err(bad(
            1,
            format!("no checkpoint at the archive's end {}", h.end),
        ));
    }
    let mut roots = std::collections::HashMap::new();
    let mut tiles = Vec::new();
    let mut trailer = None;
    for (line, bytes) in it {
        if frontier.size() == h.end {
            trailer = Some(
                serde_json::from_slice::<ArchiveTrailer>(bytes)
                    .map_err(|e| bad(line, format!("not the checkpoint trailer: {e}")))?,
            );
            break;
        }
        let e = StoredEntry {
            index: frontier.size(),
            leaf: leaf_hash(bytes),
            data: bytes.to_vec(),
        };
        check_entry(&e, e.index)?;
        frontier.push(e.leaf, &mut tiles);
        tiles.clear();
        if wanted.contains(&frontier.size()) {
            roots.insert(frontier.size(), frontier.root());
        }
    }
    let trailer = trailer.ok_or_else(|| {
        AuditError::from(Tamper::Truncated {
            size: frontier.size(),
            checkpoint: h.end,
        })
    })?;
    let mut checked = Vec::new();
    for note in &trailer.checkpoints {
        let (cp, _) = Checkpoint::open(note.as_bytes(), origin, verifiers).map_err(|e| {
            Tamper::CheckpointSignature {
                size: 0,
                reason: e.to_string(),
            }
        })?;
        if roots.get(&cp.size) != Some(&cp.root) {
            return Err(Tamper::CheckpointMismatch {
                size: cp.size,
                from: h.start,
            }
            .into());
        }
        checked.push(cp.size);
    }
    if !checked.contains(&h.end) {
        return Err(bad(
            0,
            format!("no signed checkpoint at the archive's end {}", h.end),
        ));
    }
    Ok(ArchiveReport {
        start: h.start,
        end: h.end,
        checkpoints: trailer.checkpoints.len(),
    })
}
