#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The decision log on SQLite at the issue's targets: durable batched
//! appends per second, full verification of 1,000,000 records, and `why` on
//! a log of 1,000,000 records.
//!
//! `cargo bench -p keycard-audit --bench log`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use keycard_audit::{
    verify, why, CheckpointPolicy, DecisionLog, Ed25519Signer, Record, VerifierSet,
};
use keycard_store::SqliteStore;

const ORIGIN: &str = "keycard.bench/decisions";
const N: u64 = 1_000_000;
const BATCH: u64 = 1_000;

fn key() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[3; 32]).unwrap()
}

/// A decision like the proxy writes (about 400 bytes stored).
fn record(i: u64) -> Record {
    Record::from_json(
        format!(
            r#"{{"point":"ext_authz","outcome":"{}","id":"req-{i:012}",
            "subject":"spiffe://prod.example.org/ns/shop/sa/frontend-{}",
            "resource":"orders.shop.svc.cluster.local/api/v1/orders/{}","action":"GET",
            "policy":"shop-authz","rule":"allow_frontend_to_orders",
            "reason":"frontend may read orders in its own namespace",
            "input_digest":"sha256:5f2b0c9f1c3e4a7d8b6e0f1a2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5",
            "bundle_revision":"r1842","time":"2025-03-01T12:00:00.000Z"}}"#,
            if i % 10 == 0 { "deny" } else { "allow" },
            i % 50,
            i % 1000
        )
        .as_bytes(),
    )
    .unwrap()
}

fn open(path: &std::path::Path) -> DecisionLog<SqliteStore> {
    DecisionLog::open(ORIGIN, SqliteStore::open(path).unwrap(), Box::new(key()))
        .unwrap()
        .with_policy(CheckpointPolicy {
            every_records: 100_000,
            every_ms: i64::MAX,
        })
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("audit_append_sqlite");
    g.throughput(Throughput::Elements(BATCH));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(&dir.path().join("append.db"));
    let mut next = 0u64;
    g.bench_function("durable_batch_of_1000", |b| {
        b.iter_batched(
            || {
                let recs: Vec<Record> = (next..next + BATCH).map(record).collect();
                next += BATCH;
                recs
            },
            |recs| black_box(log.append(recs).unwrap()),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// Builds the 1,000,000-record log on first use, so that running only the
/// append bench (`-- audit_append`) does not pay for it.
fn million_log(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("million.db");
    if path.exists() {
        return path;
    }
    let started = Instant::now();
    let mut log = open(&path);
    for start in (0..N).step_by(10_000) {
        log.append((start..start + 10_000).map(record).collect())
            .unwrap();
    }
    log.checkpoint().unwrap();
    eprintln!(
        "built a {N}-record log in {:.1} s ({:.0} appends/s in durable batches of 10,000)",
        started.elapsed().as_secs_f64(),
        N as f64 / started.elapsed().as_secs_f64()
    );
    path
}

fn million(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let trusted = VerifierSet::new().with(key().verifier()).unwrap();
    let mut g = c.benchmark_group("audit_1m");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function("verify_full", |b| {
        let store = SqliteStore::open(million_log(dir.path())).unwrap();
        b.iter(|| {
            let r = verify(&store, ORIGIN, &trusted, None).unwrap();
            assert_eq!(r.records_checked, N);
        })
    });
    g.measurement_time(Duration::from_secs(5));
    let mut i = 0u64;
    g.bench_function("why", |b| {
        let store = SqliteStore::open(million_log(dir.path())).unwrap();
        b.iter(|| {
            i = (i + 7_919) % N;
            let w = why(&store, ORIGIN, &trusted, &format!("req-{i:012}")).unwrap();
            assert!(w[0].checkpoint.is_some());
            black_box(w)
        })
    });
    g.finish();
}

criterion_group!(benches, appends, million);
criterion_main!(benches);
