//! keycard's tamper-evident decision log.
//!
//! ```
//! use keycard_audit::{verify, why, DecisionLog, Ed25519Signer, Record, VerifierSet};
//! use keycard_store::MemoryStore;
//!
//! // Every enforcement point appends its decisions (one schema, durable
//! // batches); the log signs C2SP checkpoints on a schedule.
//! let key = Ed25519Signer::generate("keycard.example/decisions").unwrap();
//! let mut log = DecisionLog::open("keycard.example/decisions", MemoryStore::new(), Box::new(key.clone())).unwrap();
//! let deny: Record = serde_json::from_str(
//!     r#"{"point":"admission","outcome":"deny","id":"d-1","subject":"alice",
//!         "resource":"pods/web","action":"create","policy":"pss-restricted",
//!         "rule":"privileged","reason":"container web is privileged"}"#,
//! ).unwrap();
//! log.append(vec![deny]).unwrap();
//! log.checkpoint().unwrap();
//!
//! // An auditor who trusts the key verifies everything and asks why.
//! let trusted = VerifierSet::new().with(key.verifier()).unwrap();
//! verify(log.store(), "keycard.example/decisions", &trusted, None).unwrap();
//! let answer = why(log.store(), "keycard.example/decisions", &trusted, "d-1").unwrap();
//! assert_eq!(answer[0].record.rule, "privileged");
//! assert!(answer[0].checkpoint.is_some());
//! ```
//!
//! The cryptographic core underneath can be used on its own:
//!
//! ```
//! use keycard_audit::{
//!     merkle, Checkpoint, Ed25519Signer, Log, MemoryStore, VerifierSet,
//! };
//!
//! // The log appends every policy decision as a record.
//! let mut log = Log::open("keycard.example/decisions", MemoryStore::new()).unwrap();
//! let idx = log.append(br#"{"decision":"deny"}"#).unwrap();
//! log.append(br#"{"decision":"allow"}"#).unwrap();
//!
//! // It publishes signed checkpoints (C2SP signed notes).
//! let key = Ed25519Signer::generate("keycard.example/decisions").unwrap();
//! let signed = log.sign_checkpoint(&key).unwrap();
//!
//! // An auditor who trusts the key checks the checkpoint...
//! let trusted = VerifierSet::new().with(key.verifier()).unwrap();
//! let (cp, _) = Checkpoint::open(signed.as_bytes(), "keycard.example/decisions", &trusted).unwrap();
//! assert_eq!(cp.size, 2);
//!
//! // ...and that a given decision is in the log it describes.
//! let leaf = merkle::leaf_hash(br#"{"decision":"deny"}"#);
//! let proof = log.inclusion_proof(idx, cp.size).unwrap();
//! merkle::verify_inclusion(&leaf, idx, cp.size, &proof, &cp.root).unwrap();
//! ```
//!
//! Why each piece exists:
//!
//! - [`merkle`]: RFC 9162 hashing and proofs. An inclusion proof shows a
//!   decision is in the log; a consistency proof shows a later log extends an
//!   earlier one, so nothing was rewritten.
//! - [`note`] and [`checkpoint`]: the log signs its tree head in the C2SP
//!   formats, so standard witnesses and tools can verify and cosign it.
//! - [`log`]: a minimal in-memory log over a [`LeafStore`], for embedding.
//! - [`record`]: the one schema of every decision, its canonical JSON (the
//!   leaf data) and the redaction of sensitive fields.
//! - [`decision`]: [`DecisionLog`] over a `keycard_store::AuditStore`
//!   (SQLite by default): appends, checkpoint schedule, [`verify`], [`why`],
//!   [`query`], prune to archives.
//! - [`tiled`]: proofs from stored subtree hashes, so a million-record log
//!   answers in milliseconds without being loaded.
//! - [`export`]: OTLP logs and OCSF events for SIEMs.
//! - [`writer`]: the queue and writer thread that hot-path enforcement
//!   points (ext_authz, the proxy) append through, with their failure mode.
//! - `dir` (feature `dir`): a log directory as every writer opens it
//!   (`audit.db`, the signing key, the hash key, the persisted redaction).
//!
//! Without the `dir` feature the crate does no I/O of its own: storage is
//! behind the store trait.

pub mod checkpoint;
pub mod decision;
#[cfg(feature = "dir")]
pub mod dir;
pub mod export;
pub mod log;
pub mod merkle;
pub mod note;
pub mod record;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tiled;
pub mod writer;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use decision::why;
pub use decision::{
    query, verify, verify_archive, Appended, ArchiveReport, AuditError, CheckpointPolicy, Clock,
    DecisionLog, FailureMode, PruneReport, SystemClock, Tamper, VerifyReport, Why,
};
pub use log::{LeafStore, Log, LogError, MemoryStore, MemoryStoreError};
pub use merkle::{
    leaf_hash, node_hash, root_from_leaves, verify_consistency, verify_inclusion, Hash, MerkleTree,
    ProofError, RootBuilder, TreeError,
};
pub use note::{
    Ed25519Signer, Ed25519Verifier, Note, NoteError, NoteSignature, Signer, VerifiedNote, Verifier,
    VerifierSet,
};
pub use record::{
    input_digest, EnforcementPoint, Outcome, Record, RecordError, RedactAction, Redaction,
    RedactionConfig, RedactionRule,
};
