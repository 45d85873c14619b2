#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The writer thread: batches are committed and verifiable, a failing
//! store makes the log unavailable until a retry succeeds (and loses none
//! of the records it accepted), a full queue is bounded.
#![cfg(feature = "testing")]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use keycard_audit::testing::FailingStore;
use keycard_audit::writer::{AuditWriter, Rejected, WriterConfig};
use keycard_audit::{query, verify, DecisionLog, Ed25519Signer, FailureMode, Record, VerifierSet};
use keycard_store::{AuditStore, EntryFilter, MemoryStore};

const ORIGIN: &str = "keycard.test/decisions";

fn rec(id: &str, outcome: &str) -> Record {
    serde_json::from_value(serde_json::json!({
        "point": "ext_authz", "outcome": outcome, "id": id, "subject": "spiffe://td/web",
        "resource": "spiffe://td/api", "action": "GET /v1", "policy": "prod/api",
        "rule": "rules[0]", "reason": "allowed_by_policy",
    }))
    .unwrap()
}

fn cfg(mode: FailureMode) -> WriterConfig {
    WriterConfig {
        queue: 8,
        batch: 4,
        full_wait: Duration::from_millis(50),
        retry: Duration::from_millis(20),
        tick: Duration::from_millis(50),
        mode,
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

type Log = DecisionLog<FailingStore<MemoryStore>>;
type Writer = AuditWriter<FailingStore<MemoryStore>>;
type Switch = std::sync::Arc<std::sync::atomic::AtomicBool>;

fn writer(mode: FailureMode) -> (Writer, Switch, VerifierSet) {
    let key = Ed25519Signer::generate(ORIGIN).unwrap();
    let trusted = VerifierSet::new().with(key.verifier()).unwrap();
    let (store, fail) = FailingStore::new(MemoryStore::new());
    let log: Log = DecisionLog::open(ORIGIN, store, Box::new(key)).unwrap();
    (AuditWriter::start(log, cfg(mode)).unwrap(), fail, trusted)
}

#[test]
fn commits_in_batches_and_the_log_verifies() {
    let (w, _, trusted) = writer(FailureMode::FailClosed);
    for i in 0..20 {
        // Submitting faster than a batch: the queue (8) applies backpressure,
        // never an error, while the store keeps up.
        w.submit(rec(
            &format!("r-{i}"),
            if i % 3 == 0 { "deny" } else { "allow" },
        ))
        .unwrap();
    }
    let log = w.close(Duration::from_secs(10)).unwrap();
    assert_eq!(log.store().size().unwrap(), 20);
    let report = verify(log.store(), ORIGIN, &trusted, None).unwrap();
    assert_eq!(report.unsigned_tail, 0, "close signs a final checkpoint");
    let denies = query(
        log.store(),
        &EntryFilter {
            outcome: Some("deny".into()),
            ..EntryFilter::default()
        },
    )
    .unwrap();
    let ids: Vec<_> = denies.iter().map(|(_, r)| r.id.clone()).collect();
    assert_eq!(ids, ["r-0", "r-3", "r-6", "r-9", "r-12", "r-15", "r-18"]);
}

#[test]
fn a_failing_store_makes_the_log_unavailable_until_a_retry_succeeds() {
    let (w, fail, trusted) = writer(FailureMode::FailClosed);
    w.submit(rec("before", "allow")).unwrap();
    wait_until("the first commit", || w.stats().committed == 1);
    assert!(w.available());

    fail.store(true, Ordering::Release);
    w.submit(rec("during-1", "allow")).unwrap();
    wait_until("the failed commit", || !w.available());
    assert!(w.stats().write_errors >= 1);
    assert!(matches!(w.unavailable_reason(), Rejected::WriteFailed(m) if m.contains("full")));
    // Fill the queue: a fail-closed submitter waits, then is refused.
    let mut refused = 0;
    for i in 0..12 {
        if w.submit(rec(&format!("during-q{i}"), "deny")).is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 3, "the queue holds 8; got {refused} refusals");
    assert_eq!(w.stats().dropped, refused);

    fail.store(false, Ordering::Release);
    wait_until("recovery", || w.available());
    let log = w.close(Duration::from_secs(10)).unwrap();
    // Nothing the writer accepted was lost: the failed batch was retried.
    let stored = log.store().size().unwrap();
    assert_eq!(stored, 2 + 12 - refused);
    assert!(log.store().inner().find_by_id("during-1").unwrap().len() == 1);
    verify(log.store(), ORIGIN, &trusted, None).unwrap();
}

#[test]
fn fail_open_never_waits_and_counts_what_it_drops() {
    let (w, fail, _) = writer(FailureMode::FailOpen);
    fail.store(true, Ordering::Release);
    w.submit(rec("x", "allow")).unwrap();
    wait_until("the failed commit", || !w.available());
    let t0 = Instant::now();
    let mut dropped = 0;
    for i in 0..20 {
        if w.submit(rec(&format!("y{i}"), "allow")).is_err() {
            dropped += 1;
        }
    }
    assert!(
        t0.elapsed() < Duration::from_millis(40),
        "fail-open submit must not wait"
    );
    assert!(dropped >= 12);
    assert_eq!(w.stats().dropped, dropped);
    fail.store(false, Ordering::Release);
    wait_until("recovery", || w.available());
}
