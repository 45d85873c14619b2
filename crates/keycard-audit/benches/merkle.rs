//! Merkle log throughput at the scale of a busy cluster's decision log.
//!
//! `cargo bench -p keycard-audit -- --sample-size 10`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keycard_audit::merkle::{leaf_hash, root_from_leaves, verify_inclusion, MerkleTree};

const N: u64 = 1_000_000;
const RECORD_LEN: usize = 300;

/// A ~300-byte record that differs per index, like a JSON decision record.
/// Only the first eight bytes change, so building it costs next to nothing
/// beside the SHA-256 over it.
fn record(buf: &mut [u8; RECORD_LEN], i: u64) -> &[u8] {
    buf[..8].copy_from_slice(&i.to_le_bytes());
    buf
}

fn template() -> [u8; RECORD_LEN] {
    let mut buf = [b'x'; RECORD_LEN];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    buf
}

fn leaves() -> Vec<[u8; 32]> {
    (0..N).map(|i| leaf_hash(&i.to_le_bytes())).collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle_1m");
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N));

    let hashes = leaves();
    g.bench_function("append_1m_leaf_hashes", |b| {
        b.iter_batched(
            || hashes.clone(),
            |hs| {
                let mut t = MerkleTree::new();
                for h in hs {
                    t.push(h);
                }
                black_box(t.root())
            },
            BatchSize::LargeInput,
        )
    });

    g.bench_function("root_from_1m_records_300b", |b| {
        let mut buf = template();
        b.iter(|| {
            black_box(root_from_leaves(
                (0..N).map(|i| leaf_hash(record(&mut buf, i))),
            ))
        })
    });
    g.finish();

    let tree = MerkleTree::from_leaf_hashes(hashes.iter().copied());
    let root = tree.root();
    let mut g = c.benchmark_group("proofs_on_1m_tree");
    let mut i = 0u64;
    g.bench_function("inclusion_proof_at_current_size", |b| {
        b.iter(|| {
            // A multiplicative stride walks the whole index range.
            i = (i + 611_953) % N;
            black_box(tree.inclusion_proof(i, N))
        })
    });
    g.bench_function("inclusion_proof_at_past_size", |b| {
        b.iter(|| {
            i = (i + 611_953) % N;
            black_box(tree.inclusion_proof(i / 2, N - 1 - i / 3))
        })
    });
    g.bench_function("consistency_proof", |b| {
        b.iter(|| {
            i = (i + 611_953) % N;
            black_box(tree.consistency_proof(i.max(1), N))
        })
    });
    let proof = tree.inclusion_proof(123_457, N).unwrap_or_default();
    let leaf = hashes[123_457];
    g.bench_function("verify_inclusion", |b| {
        b.iter(|| black_box(verify_inclusion(&leaf, 123_457, N, &proof, &root)))
    });
    g.bench_function("root_at_past_size", |b| {
        b.iter(|| {
            i = (i + 611_953) % N;
            black_box(tree.root_at(i))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
