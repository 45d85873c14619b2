//! The Merkle tree of a stored log, without holding it in memory.
//!
//! [`crate::MerkleTree`] keeps every node, which is right for tests and small
//! logs but costs 64 MiB and a full rehash per million records on every
//! start. A stored log instead keeps, next to its leaf hashes, the hash of
//! every complete subtree whose height is a multiple of [`TILE_STEP`] (a
//! "tile"; 1/256 of the leaves' count). Any subtree hash is then a fold of at
//! most 128 stored hashes, so an inclusion proof in a log of a million
//! records reads a few hundred hashes instead of rehashing the log, and the
//! writer restarts from `O(log n)` state ([`Frontier`]).

use keycard_store::{AuditStore, PruneState, StoreError, Tile};

use crate::merkle::{consistency_path, empty_root, node_hash, root_from_leaves, split_point, Hash};

/// Heights of stored subtrees are multiples of this.
pub const TILE_STEP: u32 = 8;

/// Why a subtree hash could not be computed from the store.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashes the computation needs are not stored: records deleted, or
    /// pruned below a boundary that does not provide them.
    #[error("the hashes of records {start}..{end} are missing from the store")]
    Missing {
        /// First leaf of the subtree.
        start: u64,
        /// One past its last leaf.
        end: u64,
    },
}

/// The maximal complete subtrees that `0..size` decomposes into, left to
/// right, as `(start, level)`.
pub fn decompose(size: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut start = 0;
    for level in (0..64).rev() {
        if size & (1u64 << level) != 0 {
            out.push((start, level));
            start += 1u64 << level;
        }
    }
    out
}

/// The right edge of a growing tree: the roots of the complete subtrees the
/// leaves so far decompose into. Appending a leaf merges equal-sized
/// neighbours, and each merge that completes a subtree of a tile height is
/// reported so the writer can store it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from its parts; `None` unless there is one node per set
    /// bit of `size`.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Self { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash, pushing onto `tiles` every tile it completes.
    pub fn push(&mut self, leaf: Hash, tiles: &mut Vec<Tile>) {
        let index = self.size;
        let mut h = leaf;
        let mut level = 0u32;
        let mut s = self.size;
        while s & 1 == 1 {
            let Some(left) = self.nodes.pop() else {
                break;
            };
            h = node_hash(&left, &h);
            level += 1;
            s >>= 1;
            if level % TILE_STEP == 0 {
                tiles.push(Tile {
                    level,
                    index: index >> level,
                    hash: h,
                });
            }
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The root of the leaves so far.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// Computes subtree hashes, roots and proofs from a store's leaf hashes,
/// tiles and prune frontier.
pub struct NodeReader<'a, S: AuditStore + ?Sized> {
    store: &'a S,
    pruned: Vec<(u64, u32, Hash)>,
}

impl<'a, S: AuditStore + ?Sized> NodeReader<'a, S> {
    /// A reader over `store`.
    pub fn new(store: &'a S) -> Result<Self, StoreError> {
        let pruned = match store.prune_state()? {
            Some(PruneState { boundary, frontier }) => decompose(boundary)
                .into_iter()
                .zip(frontier)
                .map(|((s, l), h)| (s, l, h))
                .collect(),
            None => Vec::new(),
        };
        Ok(Self { store, pruned })
    }

    /// Hash of the complete subtree of `2^level` leaves starting at `start`
    /// (which must be a multiple of `2^level`).
    pub fn subtree(&self, start: u64, level: u32) -> Result<Hash, NodeError> {
        let width = 1u64 << level;
        let end = start + width;
        if let Some((_, _, h)) = self
            .pruned
            .iter()
            .find(|(s, l, _)| *s == start && *l == level)
        {
            return Ok(*h);
        }
        if level >= TILE_STEP {
            if level % TILE_STEP == 0 {
                let t = self
                    .store
                    .tiles(level, start >> level, (start >> level) + 1)?;
                if let Some(t) = t.first() {
                    return Ok(t.hash);
                }
            }
            // Fold the tiles one step below (at most 2^TILE_STEP of them).
            let below = ((level - 1) / TILE_STEP) * TILE_STEP;
            if below >= TILE_STEP {
                let tiles = self.store.tiles(below, start >> below, end >> below)?;
                if tiles.len() as u64 == width >> below {
                    return Ok(root_from_leaves(tiles.into_iter().map(|t| t.hash)));
                }
            }
            // Tiles missing: split, which ends at leaves or pruned nodes.
            let half = width / 2;
            let l = self.subtree(start, level - 1)?;
            let r = self.subtree(start + half, level - 1)?;
            return Ok(node_hash(&l, &r));
        }
        let leaves = self.store.leaf_hashes(start, end)?;
        if leaves.len() as u64 == width && leaves.iter().zip(start..).all(|((i, _), j)| *i == j) {
            return Ok(root_from_leaves(leaves.into_iter().map(|(_, h)| h)));
        }
        if level > 0 {
            // Part of it may lie in the pruned prefix as smaller subtrees.
            let half = width / 2;
            if let (Ok(l), Ok(r)) = (
                self.subtree(start, level - 1),
                self.subtree(start + half, level - 1),
            ) {
                return Ok(node_hash(&l, &r));
            }
        }
        Err(NodeError::Missing { start, end })
    }

    /// `MTH(D[start:end])` for a range the RFC 9162 recursion produces.
    pub fn range(&self, start: u64, end: u64) -> Result<Hash, NodeError> {
        let n = end - start;
        if n == 0 {
            return Ok(empty_root());
        }
        if n.is_power_of_two() && start % n == 0 {
            return self.subtree(start, n.trailing_zeros());
        }
        let k = split_point(n);
        let l = self.range(start, start + k)?;
        let r = self.range(start + k, end)?;
        Ok(node_hash(&l, &r))
    }

    /// Root of the tree of `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, NodeError> {
        self.range(0, size)
    }

    /// The frontier at `size`, to resume appending or prune there.
    pub fn frontier(&self, size: u64) -> Result<Frontier, NodeError> {
        let nodes = decompose(size)
            .into_iter()
            .map(|(s, l)| self.subtree(s, l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Frontier { size, nodes })
    }

    /// RFC 9162 inclusion proof of leaf `index` in the tree of `size`
    /// leaves (`index < size`), bottom-up.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, NodeError> {
        let mut siblings = Vec::new();
        let (mut start, mut end) = (0u64, size);
        while end - start > 1 {
            let k = split_point(end - start);
            if index < start + k {
                siblings.push(self.range(start + k, end)?);
                end = start + k;
            } else {
                siblings.push(self.range(start, start + k)?);
                start += k;
            }
        }
        siblings.reverse();
        Ok(siblings)
    }

    /// RFC 9162 consistency proof from `size1` to `size2` leaves
    /// (`0 < size1 <= size2`).
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, NodeError> {
        if size1 == size2 || size1 == 0 {
            return Ok(Vec::new());
        }
        consistency_path(size1, size2, |a, b| self.range(a, b))
    }
}

#[cfg(test)]
mod tests {
    use keycard_store::{AuditEntry, EntryMeta, MemoryStore};

    use super::*;
    use crate::merkle::{leaf_hash, MerkleTree};

    fn build(n: u64) -> (MemoryStore, MerkleTree) {
        let mut store = MemoryStore::new();
        let mut tree = MerkleTree::new();
        let mut f = Frontier::new();
        let mut entries = Vec::new();
        let mut tiles = Vec::new();
        for i in 0..n {
            let data = i.to_le_bytes().to_vec();
            let leaf = leaf_hash(&data);
            tree.push(leaf);
            f.push(leaf, &mut tiles);
            entries.push(AuditEntry {
                leaf,
                data,
                meta: EntryMeta::default(),
            });
        }
        store.append_entries(0, &entries, &tiles).unwrap();
        assert_eq!(f.root(), tree.root());
        (store, tree)
    }

    #[test]
    fn proofs_match_the_in_memory_tree() {
        let (store, tree) = build(70_000);
        let r = NodeReader::new(&store).unwrap();
        for size in [1, 2, 255, 256, 257, 65_536, 65_537, 70_000] {
            assert_eq!(r.root(size).unwrap(), tree.root_at(size).unwrap(), "{size}");
            for index in [0, size / 2, size - 1] {
                assert_eq!(
                    r.inclusion_proof(index, size).unwrap(),
                    tree.inclusion_proof(index, size).unwrap()
                );
            }
            assert_eq!(
                r.consistency_proof(size.div_ceil(3), size).unwrap(),
                tree.consistency_proof(size.div_ceil(3), size).unwrap()
            );
        }
        assert_eq!(r.frontier(70_000).unwrap().root(), tree.root());
    }

    #[test]
    fn proofs_survive_pruning() {
        let (mut store, tree) = build(1000);
        let frontier = NodeReader::new(&store).unwrap().frontier(700).unwrap();
        store
            .prune(&PruneState {
                boundary: 700,
                frontier: frontier.nodes().to_vec(),
            })
            .unwrap();
        let r = NodeReader::new(&store).unwrap();
        assert_eq!(r.root(1000).unwrap(), tree.root());
        assert_eq!(r.root(700).unwrap(), tree.root_at(700).unwrap());
        for index in 700..1000 {
            assert_eq!(
                r.inclusion_proof(index, 1000).unwrap(),
                tree.inclusion_proof(index, 1000).unwrap()
            );
        }
        assert_eq!(
            r.consistency_proof(700, 1000).unwrap(),
            tree.consistency_proof(700, 1000).unwrap()
        );
        assert!(r.inclusion_proof(3, 1000).is_err());
    }
}
