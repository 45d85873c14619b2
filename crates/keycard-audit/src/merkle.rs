//! RFC 9162 (and RFC 6962) Merkle tree hashing, proofs and their verification.
//!
//! The hashing is domain separated so that a leaf can never be passed off as an
//! interior node (and vice versa): leaves are `SHA-256(0x00 || data)`, interior
//! nodes are `SHA-256(0x01 || left || right)`, and the tree over no leaves hashes
//! to `SHA-256("")`.
//!
//! [`MerkleTree`] keeps every complete, aligned subtree hash it has ever seen, so
//! the root and proofs for any *past* size can be answered without rehashing
//! leaves. [`RootBuilder`] and [`root_from_leaves`] compute a root in a single
//! streaming pass with `O(log n)` memory, which is what a full audit of a large
//! log needs.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Length in bytes of every hash in the tree.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node hash or a root.
pub type Hash = [u8; HASH_LEN];

/// The most hashes any inclusion or consistency proof can hold for a tree
/// whose size fits in a `u64` (one per level, plus the seed of a consistency
/// proof). Code that decodes proofs from untrusted input (files, the network)
/// should refuse longer ones before allocating; the verifiers go further and
/// reject any proof whose length differs from the exact one its sizes
/// require, before hashing anything.
pub const MAX_PROOF_LEN: usize = 65;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Hashes a log entry into a leaf: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(data);
    h.finalize().into()
}

/// Hashes two children into their parent: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree, `SHA-256("")` (RFC 9162 section 2.1.1).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a tree could not produce a root or proof. These are caller errors
/// (asking about a size the tree has not reached), not evidence of tampering.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TreeError {
    /// The requested tree size is larger than the number of leaves appended.
    #[error("tree size {requested} is beyond the {available} leaves in the tree")]
    SizeBeyondTree {
        /// Size asked for.
        requested: u64,
        /// Leaves currently in the tree.
        available: u64,
    },
    /// The leaf index is not below the tree size it should be proven in.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Leaf index asked for.
        index: u64,
        /// Tree size asked for.
        size: u64,
    },
    /// A consistency proof was requested from a larger to a smaller tree.
    #[error("first tree size {size1} is larger than second tree size {size2}")]
    SizesOutOfOrder {
        /// Older tree size.
        size1: u64,
        /// Newer tree size.
        size2: u64,
    },
    /// A consistency proof from the empty tree proves nothing (RFC 9162 defines
    /// proofs only for `0 < size1`), so we refuse to produce one.
    #[error("a consistency proof from the empty tree is meaningless")]
    EmptyFirstTree,
    /// A stored subtree hash that must exist was missing. This is an internal
    /// invariant violation, reported rather than panicking.
    #[error("internal error: subtree hash at level {level}, index {index} is missing")]
    MissingNode {
        /// Level of the subtree (0 = leaves).
        level: u32,
        /// Index of the subtree within its level.
        index: u64,
    },
}

/// Why a proof was rejected. Every variant means "do not trust this proof";
/// they are distinct so that an operator can tell a malformed proof from a
/// root that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// The proof does not have the number of hashes that the sizes dictate.
    #[error("proof has {actual} hashes, but these sizes require {expected}")]
    WrongProofLength {
        /// Number of hashes the sizes require.
        expected: usize,
        /// Number of hashes supplied.
        actual: usize,
    },
    /// The proof hashes to a root other than the one claimed.
    #[error("proof leads to root {}, expected {}", hex(computed), hex(expected))]
    RootMismatch {
        /// Root computed from the proof.
        computed: Hash,
        /// Root that was claimed.
        expected: Hash,
    },
    /// The consistency proof does not reproduce the first (older) root.
    #[error(
        "consistency proof leads to first root {}, expected {}",
        hex(computed),
        hex(expected)
    )]
    FirstRootMismatch {
        /// First root computed from the proof.
        computed: Hash,
        /// First root that was claimed.
        expected: Hash,
    },
    /// The consistency proof does not reproduce the second (newer) root.
    #[error(
        "consistency proof leads to second root {}, expected {}",
        hex(computed),
        hex(expected)
    )]
    SecondRootMismatch {
        /// Second root computed from the proof.
        computed: Hash,
        /// Second root that was claimed.
        expected: Hash,
    },
    /// `size1 > size2`: a log can only grow.
    #[error("first tree size {size1} is larger than second tree size {size2}")]
    SizesOutOfOrder {
        /// Older tree size.
        size1: u64,
        /// Newer tree size.
        size2: u64,
    },
    /// `size1 == 0`: every tree extends the empty tree, so a proof from it
    /// carries no information and is refused rather than trivially accepted.
    #[error("a consistency proof from the empty tree is meaningless")]
    EmptyFirstTree,
    /// Equal sizes must have equal roots; otherwise the log has forked.
    #[error("trees of equal size {size} have different roots")]
    EqualSizeRootsDiffer {
        /// The shared tree size.
        size: u64,
    },
    /// A tree of size zero must have the empty root.
    #[error("a tree of size 0 must have root SHA-256(\"\")")]
    NotEmptyRoot,
}

/// Lower-case hex for error messages; hashes in errors must be readable.
fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Largest power of two strictly below `n` (`n >= 2`): the RFC's split point.
pub(crate) fn split_point(n: u64) -> u64 {
    // Saturating so that a misuse with n < 2 yields 1 rather than overflowing.
    1u64 << 63u32.saturating_sub(n.saturating_sub(1).leading_zeros())
}

/// The RFC 9162 consistency proof from `size1` to `size2`
/// (`0 < size1 < size2`), over any source of subtree hashes `range(start,
/// end)`: the in-memory tree and the tiled store share this walk.
pub(crate) fn consistency_path<E>(
    size1: u64,
    size2: u64,
    mut range: impl FnMut(u64, u64) -> Result<Hash, E>,
) -> Result<Vec<Hash>, E> {
    // SUBPROOF(m, D[start:end], complete): descend while the old tree is
    // not a whole subtree, recording the sibling at each step.
    let mut siblings = Vec::with_capacity(64);
    let (mut start, mut end) = (0u64, size2);
    let mut m = size1;
    let mut complete = true;
    while m != end - start {
        let k = split_point(end - start);
        if m <= k {
            siblings.push(range(start + k, end)?);
            end = start + k;
        } else {
            siblings.push(range(start, start + k)?);
            m -= k;
            start += k;
            complete = false;
        }
    }
    let mut proof = Vec::with_capacity(siblings.len() + 1);
    // If the old tree is a subtree we reached by only going left, the
    // verifier already has its hash (root1); otherwise send it.
    if !complete {
        proof.push(range(start, end)?);
    }
    proof.extend(siblings.into_iter().rev());
    Ok(proof)
}

/// Number of hashes in the RFC 9162 inclusion proof of `index` in a tree of
/// `size` leaves (`index < size`), found by walking the same recursion the
/// generator uses, so the two can never disagree.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    let (mut start, mut end) = (0u64, size);
    let mut len = 0;
    while end - start > 1 {
        let k = split_point(end - start);
        if index < start + k {
            end = start + k;
        } else {
            start += k;
        }
        len += 1;
    }
    len
}

/// Number of hashes in the RFC 9162 consistency proof between sizes
/// `0 < size1 < size2`, by walking the generator's recursion.
pub fn consistency_proof_len(size1: u64, size2: u64) -> usize {
    let (mut start, mut end) = (0u64, size2);
    let mut m = size1;
    let mut complete = true;
    let mut len = 0;
    while m != end - start {
        let k = split_point(end - start);
        if m <= k {
            end = start + k;
        } else {
            m -= k;
            start += k;
            complete = false;
        }
        len += 1;
    }
    if !complete {
        len += 1;
    }
    len
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root`,
/// following RFC 9162 section 2.1.3.2.
///
/// Take `size` and `root` from the same verified checkpoint: the proof binds
/// the leaf to the root, but a proof for one size can also check out against
/// the same root under a neighbouring size whose tree has the same shape
/// along the path.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(leaf, index, size, proof)?;
    if computed != *root {
        return Err(ProofError::RootMismatch {
            computed,
            expected: *root,
        });
    }
    Ok(())
}

/// Computes the root that an inclusion proof implies, without comparing it.
/// Useful when the caller wants to look the root up rather than supply it.
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    // RFC 9162 2.1.3.2: fn walks the leaf's position up the tree, sn the last
    // leaf's; where they coincide on an even node the right sibling is missing
    // and that level is skipped.
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    Ok(r)
}

/// Verifies that the tree of `size2` leaves with `root2` extends the tree of
/// `size1` leaves with `root1`, following RFC 9162 section 2.1.4.2.
///
/// Equal sizes need an empty proof and equal roots. `size1 == 0` is refused
/// ([`ProofError::EmptyFirstTree`]): trusting it would let anyone "prove"
/// consistency with no information.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    root1: &Hash,
    root2: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::WrongProofLength {
                expected: 0,
                actual: proof.len(),
            });
        }
        if root1 != root2 {
            return Err(ProofError::EqualSizeRootsDiffer { size: size1 });
        }
        if size1 == 0 && *root1 != empty_root() {
            return Err(ProofError::NotEmptyRoot);
        }
        return Ok(());
    }
    if size1 == 0 {
        return Err(ProofError::EmptyFirstTree);
    }
    let expected = consistency_proof_len(size1, size2);
    if proof.len() != expected {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    // RFC 9162 2.1.4.2. When size1 is a power of two the old root is itself a
    // node of the new tree, so it is not sent and acts as the first element.
    let (seed, rest) = if size1.is_power_of_two() {
        (root1, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (first, rest),
            None => {
                return Err(ProofError::WrongProofLength {
                    expected,
                    actual: 0,
                })
            }
        }
    };
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if snode == 0 {
            return Err(ProofError::WrongProofLength {
                expected,
                actual: proof.len(),
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::WrongProofLength {
            expected,
            actual: proof.len(),
        });
    }
    if fr != *root1 {
        return Err(ProofError::FirstRootMismatch {
            computed: fr,
            expected: *root1,
        });
    }
    if sr != *root2 {
        return Err(ProofError::SecondRootMismatch {
            computed: sr,
            expected: *root2,
        });
    }
    Ok(())
}

/// Computes a tree root in one pass over leaf hashes with `O(log n)` memory.
///
/// It keeps the roots of the complete subtrees that the leaves seen so far
/// decompose into (one per set bit of the size), merging equal-sized
/// neighbours as leaves arrive. This is how `keycard audit verify` recomputes
/// a root from millions of stored records without holding them.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    /// Roots of complete subtrees, largest (leftmost) first.
    frontier: Vec<Hash>,
    size: u64,
}

impl RootBuilder {
    /// An empty builder (its root is [`empty_root`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            match self.frontier.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break,
            }
            s >>= 1;
        }
        self.frontier.push(h);
        self.size += 1;
    }

    /// Number of leaves pushed.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.frontier.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// Root of the tree over `leaves` (leaf hashes, in order), streaming.
pub fn root_from_leaves<I: IntoIterator<Item = Hash>>(leaves: I) -> Hash {
    let mut b = RootBuilder::new();
    for leaf in leaves {
        b.push(leaf);
    }
    b.root()
}

/// An append-only Merkle tree that answers roots and proofs for every size it
/// has ever had.
///
/// `levels[l][i]` is the hash of the complete subtree of `2^l` leaves starting
/// at leaf `i * 2^l`. Such a hash never changes once the subtree is full, so it
/// is computed once, on the append that completes it: appends cost amortised
/// `O(1)` hashes (`O(log n)` worst case), and any subtree the RFC recursion asks
/// for is either stored or a right-edge fold of `O(log n)` stored hashes.
/// Memory is about two hashes per leaf (64 MiB for a million leaves).
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over the given leaf hashes.
    pub fn from_leaf_hashes<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        let mut t = Self::new();
        for leaf in leaves {
            t.push(leaf);
        }
        t
    }

    /// Appends a leaf hash and returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut h = leaf;
        let mut level = 0usize;
        let mut pos = index;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                break;
            };
            row.push(h);
            // An odd position closes a pair: its parent is now complete.
            if pos & 1 == 0 {
                break;
            }
            let Some(left) = row.len().checked_sub(2).and_then(|i| row.get(i)) else {
                break;
            };
            h = node_hash(left, &h);
            level += 1;
            pos >>= 1;
        }
        index
    }

    /// Hashes `data` as a leaf, appends it and returns its index.
    pub fn push_data(&mut self, data: &[u8]) -> u64 {
        self.push(leaf_hash(data))
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The leaf hash at `index`, if present.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.node(0, index).ok()
    }

    /// Root of the whole tree.
    pub fn root(&self) -> Hash {
        // The current size is always in range.
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// Root of the tree as it was when it had `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        self.check_size(size)?;
        if size == 0 {
            return Ok(empty_root());
        }
        self.range_hash(0, size)
    }

    /// RFC 9162 inclusion proof (`PATH`) for leaf `index` in the tree of
    /// `size` leaves, ordered from the leaf's sibling up to the root's child.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TreeError::IndexOutOfRange { index, size });
        }
        // Walk down from the root, collecting the sibling of each subtree we
        // enter; the proof lists them bottom-up, so reverse at the end.
        let mut siblings = Vec::with_capacity(64);
        let (mut start, mut end) = (0u64, size);
        while end - start > 1 {
            let k = split_point(end - start);
            if index < start + k {
                siblings.push(self.range_hash(start + k, end)?);
                end = start + k;
            } else {
                siblings.push(self.range_hash(start, start + k)?);
                start += k;
            }
        }
        siblings.reverse();
        Ok(siblings)
    }

    /// RFC 9162 consistency proof (`PROOF`) from the tree of `size1` leaves to
    /// the tree of `size2` leaves. Empty when the sizes are equal.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, TreeError> {
        self.check_size(size2)?;
        if size1 > size2 {
            return Err(TreeError::SizesOutOfOrder { size1, size2 });
        }
        if size1 == size2 {
            return Ok(Vec::new());
        }
        if size1 == 0 {
            return Err(TreeError::EmptyFirstTree);
        }
        consistency_path(size1, size2, |a, b| self.range_hash(a, b))
    }

    fn check_size(&self, size: u64) -> Result<(), TreeError> {
        let available = self.size();
        if size > available {
            return Err(TreeError::SizeBeyondTree {
                requested: size,
                available,
            });
        }
        Ok(())
    }

    fn node(&self, level: u32, index: u64) -> Result<Hash, TreeError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.levels.get(level as usize)?.get(i))
            .copied()
            .ok_or(TreeError::MissingNode { level, index })
    }

    /// `MTH(D[start:end])` for a range produced by the RFC recursion: `start`
    /// is a multiple of the largest power of two not above `end - start`, so
    /// the range splits into complete stored subtrees of decreasing size,
    /// which are folded right to left.
    fn range_hash(&self, start: u64, end: u64) -> Result<Hash, TreeError> {
        let mut pieces: [Hash; 64] = [[0; HASH_LEN]; 64];
        let mut count = 0usize;
        let mut pos = start;
        let mut remaining = end - start;
        while remaining > 0 {
            let level = 63 - remaining.leading_zeros();
            let width = 1u64 << level;
            let h = self.node(level, pos >> level)?;
            if let Some(slot) = pieces.get_mut(count) {
                *slot = h;
            }
            count += 1;
            pos += width;
            remaining -= width;
        }
        let mut it = pieces.iter().take(count).rev();
        let Some(last) = it.next() else {
            return Ok(empty_root());
        };
        Ok(it.fold(*last, |acc, left| node_hash(left, &acc)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// Reference MTH straight from the RFC's recursive definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(MerkleTree::new().root(), empty_root());
        assert_eq!(root_from_leaves(std::iter::empty()), empty_root());
    }

    #[test]
    fn leaf_and_node_are_domain_separated() {
        // RFC 6962 test vector: the leaf hash of the empty string.
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let a = leaf_hash(b"a");
        let mut concat = vec![0x01];
        concat.extend_from_slice(&a);
        concat.extend_from_slice(&a);
        assert_ne!(leaf_hash(&concat[1..]), node_hash(&a, &a));
    }

    #[test]
    fn roots_match_the_recursive_definition_for_every_prefix() {
        let all = leaves(130);
        let tree = MerkleTree::from_leaf_hashes(all.iter().copied());
        let mut builder = RootBuilder::new();
        for n in 0..=130u64 {
            let want = mth(&all[..n as usize]);
            assert_eq!(tree.root_at(n).unwrap(), want, "size {n}");
            assert_eq!(builder.root(), want, "builder size {n}");
            if let Some(l) = all.get(n as usize) {
                builder.push(*l);
            }
        }
        assert_eq!(
            tree.root_at(131),
            Err(TreeError::SizeBeyondTree {
                requested: 131,
                available: 130
            })
        );
    }

    #[test]
    fn proof_lengths_match_generated_proofs() {
        let tree = MerkleTree::from_leaf_hashes(leaves(70));
        for size in 1..=70 {
            for i in 0..size {
                let p = tree.inclusion_proof(i, size).unwrap();
                assert_eq!(p.len(), inclusion_proof_len(i, size));
            }
            for m in 1..size {
                let p = tree.consistency_proof(m, size).unwrap();
                assert_eq!(p.len(), consistency_proof_len(m, size));
            }
        }
    }

    #[test]
    fn max_proof_len_bounds_the_largest_trees() {
        assert!(inclusion_proof_len(0, u64::MAX) <= MAX_PROOF_LEN);
        assert!(consistency_proof_len(u64::MAX - 2, u64::MAX) <= MAX_PROOF_LEN);
        assert!(consistency_proof_len(3, u64::MAX) <= MAX_PROOF_LEN);
    }

    #[test]
    fn tree_refuses_questions_about_the_future() {
        let tree = MerkleTree::from_leaf_hashes(leaves(4));
        assert_eq!(
            tree.inclusion_proof(4, 4),
            Err(TreeError::IndexOutOfRange { index: 4, size: 4 })
        );
        assert!(matches!(
            tree.inclusion_proof(0, 5),
            Err(TreeError::SizeBeyondTree { .. })
        ));
        assert_eq!(
            tree.consistency_proof(3, 2),
            Err(TreeError::SizesOutOfOrder { size1: 3, size2: 2 })
        );
        assert_eq!(tree.consistency_proof(0, 2), Err(TreeError::EmptyFirstTree));
        assert_eq!(tree.consistency_proof(2, 2), Ok(vec![]));
    }
}
