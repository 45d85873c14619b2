#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Exhaustive properties of the proofs our tree generates: every proof for
//! every (index, size) and (size1, size2) up to a few hundred leaves verifies,
//! against the root of that past size, and any single-bit change to a proof,
//! or asking it to prove something else, is rejected.

use keycard_audit::merkle::{
    leaf_hash, root_from_leaves, verify_consistency, verify_inclusion, Hash, MerkleTree,
    ProofError, RootBuilder,
};

const N: u64 = 300;

fn tree(n: u64) -> (MerkleTree, Vec<Hash>) {
    let leaves: Vec<Hash> = (0..n)
        .map(|i| leaf_hash(format!("decision {i}").as_bytes()))
        .collect();
    (MerkleTree::from_leaf_hashes(leaves.iter().copied()), leaves)
}

/// Calls `check` with every single-bit flip of `proof`, or with one bit per
/// byte (rotating which) when `every_bit` is false, to bound debug-mode time.
fn for_each_flip(proof: &[Hash], every_bit: bool, mut check: impl FnMut(&[Hash])) {
    let mut p = proof.to_vec();
    for h in 0..p.len() {
        for byte in 0..32 {
            let bits: Vec<u8> = if every_bit {
                (0..8).collect()
            } else {
                vec![((byte + h) % 8) as u8]
            };
            for bit in bits {
                p[h][byte] ^= 1 << bit;
                check(&p);
                p[h][byte] ^= 1 << bit;
            }
        }
    }
}

#[test]
fn every_inclusion_proof_verifies_at_every_past_size() {
    let (t, leaves) = tree(N);
    let roots: Vec<Hash> = (0..=N).map(|s| t.root_at(s).unwrap()).collect();
    for size in 1..=N {
        let root = roots[size as usize];
        for index in 0..size {
            let leaf = leaves[index as usize];
            let proof = t.inclusion_proof(index, size).unwrap();
            assert_eq!(
                verify_inclusion(&leaf, index, size, &proof, &root),
                Ok(()),
                "index {index} size {size}"
            );
            // The same proof proves nothing about a neighbouring leaf, index
            // or tree (checked on a subset, to keep debug builds quick).
            if size > 64 && index % 7 != 0 {
                continue;
            }
            if let Some(other) = leaves.get(index as usize + 1) {
                assert!(verify_inclusion(other, index, size, &proof, &root).is_err());
            }
            if index + 1 < size {
                assert!(verify_inclusion(&leaf, index + 1, size, &proof, &root).is_err());
            }
            // (A wrong *size* with the right root may still verify: the size
            // is authenticated by the checkpoint that carries the root, not by
            // the proof, so it is not asserted here.)
            assert!(
                verify_inclusion(&leaf, index, size, &proof, &roots[size as usize - 1]).is_err()
            );
        }
    }
}

#[test]
fn every_consistency_proof_verifies() {
    let (t, _) = tree(N);
    let roots: Vec<Hash> = (0..=N).map(|s| t.root_at(s).unwrap()).collect();
    for size2 in 1..=N {
        for size1 in 1..=size2 {
            let (r1, r2) = (roots[size1 as usize], roots[size2 as usize]);
            let proof = t.consistency_proof(size1, size2).unwrap();
            assert_eq!(
                verify_consistency(size1, size2, &r1, &r2, &proof),
                Ok(()),
                "{size1} -> {size2}"
            );
            if size1 < size2 && (size2 <= 64 || size1 % 7 == 0) {
                // Swapped roots, or roots of other sizes, must not verify.
                assert!(verify_consistency(size1, size2, &r2, &r1, &proof).is_err());
                let r1_other = roots[size1 as usize - 1];
                assert!(verify_consistency(size1, size2, &r1_other, &r2, &proof).is_err());
                let r2_other = roots[size2 as usize - 1];
                assert!(verify_consistency(size1, size2, &r1, &r2_other, &proof).is_err());
            }
        }
    }
}

#[test]
fn flipping_any_bit_of_an_inclusion_proof_fails() {
    let (t, leaves) = tree(N);
    let mut checked = 0u64;
    // Every (index, size) pair and every bit for small trees; for larger ones
    // (every fifth size) a spread of indices and one bit per byte.
    for size in (1..=N).filter(|s| *s <= 16 || s % 5 == 0) {
        let small = size <= 16;
        let root = t.root_at(size).unwrap();
        let indices: Vec<u64> = if small {
            (0..size).collect()
        } else {
            vec![0, size / 3, size / 2, size - 1]
        };
        for index in indices {
            let proof = t.inclusion_proof(index, size).unwrap();
            for_each_flip(&proof, small, |p| {
                checked += 1;
                assert!(
                    matches!(
                        verify_inclusion(&leaves[index as usize], index, size, p, &root),
                        Err(ProofError::RootMismatch { .. })
                    ),
                    "index {index} size {size}"
                );
            });
        }
    }
    assert!(checked > 30_000, "{checked}");
}

#[test]
fn flipping_any_bit_of_a_consistency_proof_fails() {
    let (t, _) = tree(N);
    let roots: Vec<Hash> = (0..=N).map(|s| t.root_at(s).unwrap()).collect();
    let mut checked = 0u64;
    for size2 in (2..=N).filter(|s| *s <= 16 || s % 5 == 0) {
        let small = size2 <= 16;
        let sizes1: Vec<u64> = if small {
            (1..size2).collect()
        } else {
            vec![1, size2 / 3, size2 / 2 + 1, size2 - 1]
        };
        for size1 in sizes1 {
            let (r1, r2) = (roots[size1 as usize], roots[size2 as usize]);
            let proof = t.consistency_proof(size1, size2).unwrap();
            for_each_flip(&proof, small, |p| {
                checked += 1;
                let err = verify_consistency(size1, size2, &r1, &r2, p).unwrap_err();
                assert!(
                    matches!(
                        err,
                        ProofError::FirstRootMismatch { .. }
                            | ProofError::SecondRootMismatch { .. }
                    ),
                    "{size1} -> {size2}: {err}"
                );
            });
        }
    }
    assert!(checked > 30_000, "{checked}");
}

#[test]
fn wrong_length_proofs_are_refused_before_hashing() {
    let (t, leaves) = tree(64);
    let root = t.root_at(37).unwrap();
    let proof = t.inclusion_proof(5, 37).unwrap();
    let mut long = proof.clone();
    long.push([0; 32]);
    assert_eq!(
        verify_inclusion(&leaves[5], 5, 37, &long, &root),
        Err(ProofError::WrongProofLength {
            expected: proof.len(),
            actual: proof.len() + 1
        })
    );
    let huge = vec![[0u8; 32]; 10_000];
    assert!(matches!(
        verify_inclusion(&leaves[5], 5, 37, &huge, &root),
        Err(ProofError::WrongProofLength { .. })
    ));
    assert!(matches!(
        verify_consistency(3, 37, &t.root_at(3).unwrap(), &root, &huge),
        Err(ProofError::WrongProofLength { .. })
    ));
    assert_eq!(
        verify_consistency(0, 37, &t.root_at(0).unwrap(), &root, &[]),
        Err(ProofError::EmptyFirstTree)
    );
    assert_eq!(
        verify_consistency(5, 3, &root, &root, &[]),
        Err(ProofError::SizesOutOfOrder { size1: 5, size2: 3 })
    );
    assert_eq!(
        verify_inclusion(&leaves[0], 0, 0, &[], &root),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
}

#[test]
fn streaming_root_matches_the_tree() {
    let (t, leaves) = tree(N);
    for n in [0, 1, 2, 3, 7, 8, 9, 255, 256, 257, 300] {
        assert_eq!(
            root_from_leaves(leaves[..n].iter().copied()),
            t.root_at(n as u64).unwrap()
        );
    }
    let mut b = RootBuilder::new();
    for l in &leaves {
        b.push(*l);
    }
    assert_eq!(b.size(), N);
    assert_eq!(b.root(), t.root());
}

/// Values computed independently from RFC 6962's reference leaves (the
/// eight inputs used by the Certificate Transparency test suites), so an
/// error shared by our tree and our verifier would still be caught.
#[test]
fn rfc6962_reference_roots() {
    let inputs: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];
    let want = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let mut t = MerkleTree::new();
    for (input, want) in inputs.iter().zip(want) {
        t.push_data(input);
        let got: String = t.root().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want, "size {}", t.size());
    }
}
