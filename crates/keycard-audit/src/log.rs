//! The storage seam: a [`LeafStore`] holds leaf hashes durably, and [`Log`]
//! keeps the Merkle tree over them in memory to answer roots and proofs.
//!
//! The store is the source of truth. [`Log::open`] rebuilds the in-memory tree
//! from it, and [`Log::append`] writes to the store *before* touching the
//! tree, so a failed write leaves both unchanged. The trait is deliberately
//! small and synchronous so that a SQLite (or any other) backend is a few
//! dozen lines.

use std::error::Error as StdError;

use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::merkle::{leaf_hash, Hash, MerkleTree, TreeError};
use crate::note::Signer;

/// Durable, append-only storage of leaf hashes.
pub trait LeafStore {
    /// The backend's error type.
    type Error: StdError + Send + Sync + 'static;

    /// Appends `leaves` after the current last leaf, all or nothing.
    fn append(&mut self, leaves: &[Hash]) -> Result<(), Self::Error>;

    /// Reads the leaf hashes at indices `start..end` (`end <= size()`).
    fn read(&self, start: u64, end: u64) -> Result<Vec<Hash>, Self::Error>;

    /// Number of leaves stored.
    fn size(&self) -> Result<u64, Self::Error>;
}

/// Error of [`MemoryStore`].
#[derive(Debug, Error)]
#[error("range {start}..{end} is outside the {size} stored leaves")]
pub struct MemoryStoreError {
    /// First index asked for.
    pub start: u64,
    /// One past the last index asked for.
    pub end: u64,
    /// Leaves stored.
    pub size: u64,
}

/// A [`LeafStore`] in memory, for tests and for building logs that are
/// persisted some other way.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    leaves: Vec<Hash>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LeafStore for MemoryStore {
    type Error = MemoryStoreError;

    fn append(&mut self, leaves: &[Hash]) -> Result<(), Self::Error> {
        self.leaves.extend_from_slice(leaves);
        Ok(())
    }

    fn read(&self, start: u64, end: u64) -> Result<Vec<Hash>, Self::Error> {
        let err = || MemoryStoreError {
            start,
            end,
            size: self.leaves.len() as u64,
        };
        let s = usize::try_from(start).map_err(|_| err())?;
        let e = usize::try_from(end).map_err(|_| err())?;
        self.leaves.get(s..e).map(<[Hash]>::to_vec).ok_or_else(err)
    }

    fn size(&self) -> Result<u64, Self::Error> {
        Ok(self.leaves.len() as u64)
    }
}

/// Why a [`Log`] operation failed.
#[derive(Debug, Error)]
pub enum LogError {
    /// The storage backend failed.
    #[error("leaf store: {0}")]
    Store(#[source] Box<dyn StdError + Send + Sync>),
    /// The store returned a different number of leaves than asked for.
    #[error("leaf store returned {got} leaves for range {start}..{end}")]
    ShortRead {
        /// First index asked for.
        start: u64,
        /// One past the last index asked for.
        end: u64,
        /// Leaves returned.
        got: usize,
    },
    /// A root or proof was asked for a size or index the log does not have.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The checkpoint could not be built or signed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

fn store_err<E: StdError + Send + Sync + 'static>(e: E) -> LogError {
    LogError::Store(Box::new(e))
}

/// How many leaf hashes [`Log::open`] reads per call, bounding its buffer.
const LOAD_CHUNK: u64 = 64 * 1024;

/// An append-only log of records with signed checkpoints.
#[derive(Debug)]
pub struct Log<S: LeafStore> {
    origin: String,
    store: S,
    tree: MerkleTree,
}

impl<S: LeafStore> Log<S> {
    /// Opens the log `origin` over `store`, rebuilding the tree from the
    /// stored leaf hashes.
    pub fn open(origin: impl Into<String>, store: S) -> Result<Self, LogError> {
        let size = store.size().map_err(store_err)?;
        let mut tree = MerkleTree::new();
        let mut start = 0;
        while start < size {
            let end = size.min(start + LOAD_CHUNK);
            let chunk = store.read(start, end).map_err(store_err)?;
            if chunk.len() as u64 != end - start {
                return Err(LogError::ShortRead {
                    start,
                    end,
                    got: chunk.len(),
                });
            }
            for leaf in chunk {
                tree.push(leaf);
            }
            start = end;
        }
        Ok(Self {
            origin: origin.into(),
            store,
            tree,
        })
    }

    /// Appends a record and returns its index.
    pub fn append(&mut self, record: &[u8]) -> Result<u64, LogError> {
        let h = leaf_hash(record);
        self.store.append(&[h]).map_err(store_err)?;
        Ok(self.tree.push(h))
    }

    /// Appends records in one store write and returns the index of the
    /// first; amortises the backend's per-write cost (one transaction).
    pub fn append_batch<'a, I>(&mut self, records: I) -> Result<u64, LogError>
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let first = self.tree.size();
        let hashes: Vec<Hash> = records.into_iter().map(leaf_hash).collect();
        self.store.append(&hashes).map_err(store_err)?;
        for h in hashes {
            self.tree.push(h);
        }
        Ok(first)
    }

    /// The log's origin (its name in checkpoints).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of records.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Current root.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// Root at a past size.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        Ok(self.tree.root_at(size)?)
    }

    /// Leaf hash of record `index`.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.tree.leaf(index)
    }

    /// Inclusion proof of record `index` in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        Ok(self.tree.inclusion_proof(index, size)?)
    }

    /// Consistency proof between two sizes of the log.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, LogError> {
        Ok(self.tree.consistency_proof(size1, size2)?)
    }

    /// The current, unsigned checkpoint.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::new(self.origin.clone(), self.size(), self.root())
    }

    /// Signs the current checkpoint with `signer` and returns the note.
    pub fn sign_checkpoint(&self, signer: &dyn Signer) -> Result<String, LogError> {
        Ok(self.checkpoint().sign(&[signer])?)
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }
}
