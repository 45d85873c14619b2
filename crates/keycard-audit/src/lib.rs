//! The cryptographic core of keycard's tamper-evident decision log.
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
//! - [`log`]: the storage seam. [`LeafStore`] is what a durable backend
//!   implements; [`Log`] ties it to the tree and the signer.
//!
//! The crate does no I/O of its own.

pub mod checkpoint;
pub mod log;
pub mod merkle;
pub mod note;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use log::{LeafStore, Log, LogError, MemoryStore, MemoryStoreError};
pub use merkle::{
    leaf_hash, node_hash, root_from_leaves, verify_consistency, verify_inclusion, Hash, MerkleTree,
    ProofError, RootBuilder, TreeError,
};
pub use note::{
    Ed25519Signer, Ed25519Verifier, Note, NoteError, NoteSignature, Signer, VerifiedNote, Verifier,
    VerifierSet,
};
