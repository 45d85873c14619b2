//! The PostgreSQL store used from inside tokio runtimes, as `keycard
//! server` uses it (connecting in `start`, reading and writing in every
//! API handler): the blocking client must never start its runtime inside
//! the caller's ("Cannot start a runtime from within a runtime").
//!
//! Needs `KEYCARD_TEST_POSTGRES`; each test works in a database of its own.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keycard_core::{Revocation, RevocationKind};
use keycard_store::testing::TestDatabase;
use keycard_store::{
    AuditEntry, AuditStore, CasOutcome, DocumentStore, EntryMeta, IdentityStore, PostgresStore,
    PutMode, StoreError,
};

fn database(tag: &str) -> Option<TestDatabase> {
    let db = TestDatabase::create(tag).expect("create the test database");
    if db.is_none() {
        eprintln!("skipped: KEYCARD_TEST_POSTGRES is not set (a PostgreSQL to test against)");
    }
    db
}

fn record(i: u64) -> AuditEntry {
    AuditEntry {
        leaf: [(i % 251) as u8; 32],
        data: format!("record {i}").into_bytes(),
        meta: EntryMeta {
            id: format!("d-{i}"),
            ..EntryMeta::default()
        },
    }
}

fn revocation(subject: &str) -> Revocation {
    Revocation {
        version: 0,
        kind: RevocationKind::Identity,
        subject: subject.to_string(),
        reason: "runtime test".into(),
        at: 1,
        until: None,
    }
}

/// Every kind of operation once (plain statements, transactions with an
/// advisory lock, CAS, documents) from inside a runtime.
fn exercise(s: &mut PostgresStore, tag: &str) {
    s.put_value(&format!("{tag}/plain"), b"1").unwrap();
    assert_eq!(
        s.value(&format!("{tag}/plain")).unwrap().as_deref(),
        Some(&b"1"[..])
    );
    let key = format!("{tag}/cas");
    let CasOutcome::Written { version } = s.compare_and_put_value(&key, 0, b"a").unwrap() else {
        panic!("a CAS on a new key writes");
    };
    assert!(matches!(
        s.compare_and_put_value(&key, 0, b"b").unwrap(),
        CasOutcome::Conflict { actual } if actual == version
    ));
    let v = s.add_revocation(&revocation(tag)).unwrap();
    assert!(s.revocations_since(v - 1).unwrap()[0].subject == tag);
    s.put_document("runtime", tag, b"{}", PutMode::Create)
        .unwrap();
    assert!(matches!(
        s.put_document("runtime", tag, b"{}", PutMode::Create),
        Err(StoreError::Duplicate(_))
    ));
}

/// Appends record `n` at the end of the log, retrying when another
/// writer got there first.
fn append_at_end(s: &mut PostgresStore, n: u64) {
    for _ in 0..100 {
        let end = s.size().unwrap();
        match s.append_entries(end, &[record(n)], &[]) {
            Ok(()) => return,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("append {n}: {e}"),
        }
    }
    panic!("append {n}: 100 conflicts in a row");
}

/// A multi-thread runtime: connect in async code, run every kind of
/// operation from many tasks at once (each blocking its worker briefly,
/// as the server's handlers do), then drop the stores in async code.
#[test]
fn the_postgres_store_works_inside_a_multi_thread_runtime() {
    let Some(db) = database("rt_multi") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = db.conninfo().to_string();
    rt.block_on(async move {
        let shared = Arc::new(Mutex::new(PostgresStore::connect(&url, None).unwrap()));
        exercise(&mut shared.lock().unwrap(), "multi");
        // 8 tasks: 4 share one store (as a server's handlers do), 4 have
        // their own connection (as replicas do); all append to one log.
        let tasks: Vec<_> = (0..8u64)
            .map(|t| {
                let (shared, url) = (Arc::clone(&shared), url.clone());
                tokio::spawn(async move {
                    let mut own = (t >= 4).then(|| PostgresStore::connect(&url, None).unwrap());
                    let mut appended = Vec::new();
                    for i in 0..10 {
                        let n = t * 100 + i;
                        match own.as_mut() {
                            Some(s) => append_at_end(s, n),
                            None => append_at_end(&mut shared.lock().unwrap(), n),
                        }
                        appended.push(format!("d-{n}"));
                        tokio::task::yield_now().await;
                    }
                    // Dropping a store inside the runtime is fine too.
                    drop(own);
                    appended
                })
            })
            .collect();
        let mut acked = BTreeSet::new();
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
        let s = shared.lock().unwrap();
        assert_eq!(s.size().unwrap(), 80);
        let stored: BTreeSet<String> = s
            .entries(0, 80)
            .unwrap()
            .iter()
            .map(|e| {
                String::from_utf8(e.data.clone())
                    .unwrap()
                    .replace("record ", "d-")
            })
            .collect();
        assert_eq!(stored, acked, "every acknowledged append, once");
    });
}

/// A current-thread runtime (the caller's only thread blocks on the
/// answer): connect, operate, lose the connection and reconnect, all in
/// async code.
#[test]
fn the_postgres_store_works_inside_a_current_thread_runtime() {
    let Some(db) = database("rt_current") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = PostgresStore::connect(db.conninfo(), None).unwrap();
        exercise(&mut s, "current");
        // The database drops the connection: the call in flight fails as
        // unavailable, the next one reconnects (the administrative client
        // is a blocking one, so it runs off the runtime's thread).
        let killed = std::thread::scope(|t| t.spawn(|| db.terminate_connections()).join())
            .unwrap()
            .unwrap();
        assert!(killed >= 1, "the store's connection was terminated");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let first = s.value("current/plain");
        assert!(
            matches!(first, Err(StoreError::Unavailable(_))),
            "the call in flight sees the dropped connection: {first:?}"
        );
        assert_eq!(
            s.value("current/plain").unwrap().as_deref(),
            Some(&b"1"[..]),
            "the next call reconnects and committed data is there"
        );
        drop(s);
    });
}
