#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The decision log over the in-memory store: every form of tampering is
//! named precisely, pruning keeps the rest verifiable, schedules fire.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use keycard_audit::{
    verify, verify_archive, why, AuditError, CheckpointPolicy, Clock, DecisionLog, Ed25519Signer,
    Record, RedactAction, Redaction, Tamper, VerifierSet,
};
use keycard_store::{AuditStore, EntryFilter, MemoryStore, StoredCheckpoint};

const ORIGIN: &str = "keycard.test/decisions";

struct TestClock(Arc<AtomicI64>);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn key() -> Ed25519Signer {
    Ed25519Signer::from_seed(ORIGIN, &[7; 32]).unwrap()
}

fn trusted() -> VerifierSet {
    VerifierSet::new().with(key().verifier()).unwrap()
}

fn record(i: u64) -> Record {
    serde_json::from_value(serde_json::json!({
        "point": if i % 3 == 0 { "admission" } else { "proxy" },
        "outcome": if i % 2 == 0 { "allow" } else { "deny" },
        "id": format!("d-{i}"),
        "subject": format!("spiffe://example.org/ns/a/sa/s{}", i % 5),
        "resource": "pods/web",
        "action": "create",
        "policy": "pss-restricted",
        "rule": "privileged",
        "reason": "container web is privileged",
        "time": "2025-01-01T00:00:00Z",
    }))
    .unwrap()
}

/// A log of `n` records with checkpoints every 100.
fn log(n: u64) -> DecisionLog<MemoryStore> {
    let mut log = DecisionLog::open(ORIGIN, MemoryStore::new(), Box::new(key()))
        .unwrap()
        .with_policy(CheckpointPolicy {
            every_records: 100,
            every_ms: i64::MAX,
        });
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        log.append(chunk.iter().map(|i| record(*i)).collect())
            .unwrap();
    }
    log.checkpoint().unwrap();
    log
}

fn store(n: u64) -> MemoryStore {
    log(n).store().clone()
}

fn tamper(store: &MemoryStore) -> Tamper {
    match verify(store, ORIGIN, &trusted(), None) {
        Err(AuditError::Tamper(t)) => t,
        other => panic!("expected tampering, got {other:?}"),
    }
}

#[test]
fn clean_log_verifies() {
    let s = store(1000);
    let r = verify(&s, ORIGIN, &trusted(), None).unwrap();
    assert_eq!(r.size, 1000);
    assert_eq!(r.records_checked, 1000);
    // Every 100 records, and one at once for the first batch.
    assert_eq!(r.checkpoints_checked, 11);
    assert_eq!(r.unsigned_tail, 0);
}

#[test]
fn edited_record_is_named() {
    let mut s = store(1000);
    let mut data = s.entries(417, 418).unwrap().remove(0).data;
    let text = String::from_utf8(data).unwrap().replace("deny", "allow");
    data = text.into_bytes();
    s.tamper_data(417, data);
    assert_eq!(
        tamper(&s),
        Tamper::RecordAltered {
            index: 417,
            id: "d-417".into()
        }
    );
}

#[test]
fn edit_with_recomputed_leaf_is_caught_by_the_tree() {
    let mut s = store(1000);
    let e = s.entries(301, 302).unwrap().remove(0);
    let data = String::from_utf8(e.data)
        .unwrap()
        .replace("deny", "allow")
        .into_bytes();
    s.tamper_leaf(301, keycard_audit::leaf_hash(&data));
    s.tamper_data(301, data);
    // The first checkpoint after it no longer matches: the range between
    // two checkpoints is named.
    assert_eq!(
        tamper(&s),
        Tamper::CheckpointMismatch {
            size: 350,
            from: 250
        }
    );
    let mut s = store(1000);
    let e = s.entries(990, 991).unwrap().remove(0);
    let data = String::from_utf8(e.data)
        .unwrap()
        .replace("allow", "deny")
        .into_bytes();
    s.tamper_leaf(990, keycard_audit::leaf_hash(&data));
    s.tamper_data(990, data);
    assert_eq!(
        tamper(&s),
        Tamper::CheckpointMismatch {
            size: 1000,
            from: 950
        }
    );
}

#[test]
fn removed_record_is_named() {
    let mut s = store(1000);
    s.tamper_remove(123);
    assert_eq!(tamper(&s), Tamper::RecordMissing { index: 123 });
}

#[test]
fn reordered_records_are_named() {
    let mut s = store(1000);
    s.tamper_swap(10, 20);
    assert_eq!(
        tamper(&s),
        Tamper::RecordMisplaced {
            index: 10,
            claimed: 20,
            id: "d-20".into()
        }
    );
}

#[test]
fn truncation_is_named() {
    let mut s = store(1000);
    s.tamper_truncate(950);
    assert_eq!(
        tamper(&s),
        Tamper::Truncated {
            size: 950,
            checkpoint: 1000
        }
    );
}

#[test]
fn forged_checkpoint_is_named() {
    let mut s = store(1000);
    let other = Ed25519Signer::from_seed(ORIGIN, &[9; 32]).unwrap();
    let root = keycard_audit::tiled::NodeReader::new(&s)
        .unwrap()
        .root(1000)
        .unwrap();
    let note = keycard_audit::Checkpoint::new(ORIGIN, 1000, root)
        .sign(&[&other])
        .unwrap();
    s.put_checkpoint(&StoredCheckpoint {
        size: 1000,
        note,
        created_ms: 0,
    })
    .unwrap();
    match tamper(&s) {
        Tamper::CheckpointSignature { size: 1000, .. } => {}
        t => panic!("{t}"),
    }
}

#[test]
fn exported_checkpoint_catches_rollback_with_checkpoints_removed() {
    let mut l = log(500);
    let exported = l.checkpoint().unwrap();
    // The writer rewrites history from record 200 on and re-signs.
    let mut rewritten = DecisionLog::open(ORIGIN, MemoryStore::new(), Box::new(key())).unwrap();
    rewritten.append((0..200).map(record).collect()).unwrap();
    rewritten
        .append((200..600).map(|i| record(i + 1)).collect())
        .unwrap();
    rewritten.checkpoint().unwrap();
    assert!(verify(rewritten.store(), ORIGIN, &trusted(), None).is_ok());
    match verify(rewritten.store(), ORIGIN, &trusted(), Some(&exported)) {
        Err(AuditError::Tamper(Tamper::NotExtended { size: 500 })) => {}
        other => panic!("{other:?}"),
    }
    // The genuine log, grown further, extends it.
    l.append((500..700).map(record).collect()).unwrap();
    l.checkpoint().unwrap();
    let r = verify(l.store(), ORIGIN, &trusted(), Some(&exported)).unwrap();
    assert_eq!(r.extends, Some(500));
}

#[test]
fn why_proves_inclusion() {
    let l = log(1000);
    let w = why(l.store(), ORIGIN, &trusted(), "d-733").unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].index, 733);
    assert_eq!(w[0].record.rule, "privileged");
    let (cp, _) = w[0].checkpoint.clone().unwrap();
    assert_eq!(cp.size, 1000);
    keycard_audit::verify_inclusion(&w[0].leaf, 733, 1000, &w[0].proof, &cp.root).unwrap();
    assert!(why(l.store(), ORIGIN, &trusted(), "nope").is_err());
}

#[test]
fn prune_then_verify_and_archive_verifies() {
    let mut l = log(1000);
    let mut archive = Vec::new();
    let r = l.prune(377, &mut archive).unwrap();
    assert_eq!((r.start, r.end), (0, 377));
    let report = verify(l.store(), ORIGIN, &trusted(), None).unwrap();
    assert_eq!(report.retained_from, 377);
    assert_eq!(report.records_checked, 623);
    // Proofs of retained records still work.
    let w = why(l.store(), ORIGIN, &trusted(), "d-400").unwrap();
    assert!(w[0].checkpoint.is_some());
    // The archive verifies on its own.
    let lines: Vec<&[u8]> = archive
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let a = verify_archive(lines.iter().copied(), ORIGIN, &trusted()).unwrap();
    assert_eq!((a.start, a.end), (0, 377));
    // A second prune continues from the boundary.
    l.append((1000..1100).map(record).collect()).unwrap();
    let mut archive2 = Vec::new();
    l.prune(900, &mut archive2).unwrap();
    verify(l.store(), ORIGIN, &trusted(), None).unwrap();
    let lines: Vec<&[u8]> = archive2
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        verify_archive(lines.iter().copied(), ORIGIN, &trusted())
            .unwrap()
            .start,
        377
    );
    // An edited archive is caught.
    let mut bad = lines.clone();
    let edited = String::from_utf8(bad[5].to_vec())
        .unwrap()
        .replace("deny", "allow");
    bad[5] = edited.as_bytes();
    assert!(verify_archive(bad.iter().copied(), ORIGIN, &trusted()).is_err());
    // Tampering with the kept prefix hashes is caught.
    let mut s = l.store().clone();
    let mut state = s.prune_state().unwrap().unwrap();
    state.frontier[0][0] ^= 1;
    s.prune(&state).unwrap();
    assert_eq!(tamper(&s), Tamper::PruneMismatch { boundary: 900 });
}

#[test]
fn schedule_signs_by_count_and_time() {
    let now = Arc::new(AtomicI64::new(1_000));
    let mut l = DecisionLog::open(ORIGIN, MemoryStore::new(), Box::new(key()))
        .unwrap()
        .with_clock(Box::new(TestClock(now.clone())))
        .with_policy(CheckpointPolicy {
            every_records: 10,
            every_ms: 5_000,
        });
    l.append((0..3).map(record).collect()).unwrap();
    // The first append signs at once (no checkpoint yet is overdue).
    assert_eq!(l.store().checkpoints().unwrap().len(), 1);
    l.append((3..6).map(record).collect()).unwrap();
    assert_eq!(l.store().checkpoints().unwrap().len(), 1);
    now.store(7_000, Ordering::SeqCst);
    assert!(l.maybe_checkpoint(7_000).unwrap().is_some());
    l.append((6..20).map(record).collect()).unwrap();
    let sizes: Vec<u64> = l
        .store()
        .checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, [3, 6, 20]);
}

#[test]
fn redaction_keeps_values_out_and_queries_work() {
    let red = Redaction::new()
        .with_key(b"secret")
        .rule("subject", RedactAction::Hash)
        .unwrap()
        .rule("attributes.token", RedactAction::Mask)
        .unwrap();
    let mut l = DecisionLog::open(ORIGIN, MemoryStore::new(), Box::new(key()))
        .unwrap()
        .with_redaction(red.clone());
    let mut r = record(1);
    r.attributes = Some(serde_json::json!({"token": "tok-123", "n": 1}));
    l.append(vec![r]).unwrap();
    let stored = String::from_utf8(l.store().entries(0, 1).unwrap().remove(0).data).unwrap();
    assert!(!stored.contains("tok-123") && !stored.contains("spiffe://"));
    let hits = keycard_audit::query(
        l.store(),
        &EntryFilter {
            subject: Some(red.hash_value("spiffe://example.org/ns/a/sa/s1")),
            ..EntryFilter::default()
        },
    )
    .unwrap();
    assert_eq!(hits.len(), 1);
}

#[test]
fn ids_and_times_are_filled_in() {
    let mut l = DecisionLog::open(ORIGIN, MemoryStore::new(), Box::new(key())).unwrap();
    let r: Record = serde_json::from_str(r#"{"point":"check","outcome":"deny"}"#).unwrap();
    let a = l.append(vec![r.clone(), r]).unwrap();
    assert_ne!(a[0].id, a[1].id);
    let w = why(l.store(), ORIGIN, &trusted(), &a[1].id);
    // No checkpoint covers it yet unless the schedule fired; either way it is found.
    assert_eq!(w.unwrap()[0].index, 1);
}
