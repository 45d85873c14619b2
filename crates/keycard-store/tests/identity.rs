//! One contract, every backend: the identity store behaves the same in
//! memory and in SQLite (and PostgreSQL, where the suite provides one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keycard_core::{JoinToken, TokenUse};
use keycard_store::{CasOutcome, IdentityStore, MemoryStore, SqliteStore};

mod common;

#[test]
fn memory_store_keeps_the_identity_contract() {
    common::identity_contract(&mut MemoryStore::new());
}

#[test]
fn every_embedded_store_keeps_the_document_contract_across_reopen() {
    common::document_contract(&mut MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keycard.db");
    {
        let mut s = SqliteStore::open(&path).unwrap();
        common::document_contract(&mut s);
    }
    let s = SqliteStore::open(&path).unwrap();
    use keycard_store::DocumentStore;
    assert_eq!(s.document_revision().unwrap(), 6);
    assert_eq!(s.documents("policy").unwrap().len(), 2);
}

#[test]
fn sqlite_store_keeps_the_identity_contract_and_its_state_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keycard.db");
    {
        let mut s = SqliteStore::open(&path).unwrap();
        common::identity_contract(&mut s);
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.list_entries().unwrap().len(), 1);
    assert_eq!(s.revocations_since(0).unwrap().len(), 2);
    assert_eq!(s.value("k").unwrap().unwrap(), b"v2");
}

#[test]
fn a_join_token_is_spent_once_across_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keycard.db");
    let mut a = SqliteStore::open(&path).unwrap();
    let mut b = SqliteStore::open(&path).unwrap();
    a.put_join_token(&JoinToken {
        hash: "h".into(),
        expires_at: 100,
        agent_id: None,
    })
    .unwrap();
    let outcomes = [
        a.use_join_token("h", 1).unwrap(),
        b.use_join_token("h", 1).unwrap(),
    ];
    assert_eq!(outcomes, [TokenUse::Consumed, TokenUse::Replayed]);
}

#[test]
fn memory_store_keeps_the_cas_contract() {
    common::cas_contract(&mut MemoryStore::new());
}

#[test]
fn sqlite_store_keeps_the_cas_contract_and_versions_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keycard.db");
    let v = {
        let mut s = SqliteStore::open(&path).unwrap();
        common::cas_contract(&mut s);
        s.versioned_value("cas").unwrap().unwrap().version
    };
    // The version counter survives a reopen: no version is handed out twice.
    let mut s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.versioned_value("cas").unwrap().unwrap().version, v);
    s.put_value("fresh", b"1").unwrap();
    assert!(s.versioned_value("fresh").unwrap().unwrap().version > v);
}

/// A database written before values had versions: migration 4 gives every
/// existing value version 1, and the next write moves past it.
#[test]
fn sqlite_values_written_before_versions_migrate_to_version_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keycard.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms INTEGER NOT NULL)",
        )
        .unwrap();
        for (version, name, sql) in &keycard_store::MIGRATIONS[..3] {
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![version, name],
            )
            .unwrap();
        }
        c.execute("INSERT INTO kv (key, value) VALUES ('old', x'01')", [])
            .unwrap();
    }
    let mut s = SqliteStore::open(&path).unwrap();
    let old = s.versioned_value("old").unwrap().unwrap();
    assert_eq!((old.version, old.value), (1, vec![1]));
    assert_eq!(
        s.compare_and_put_value("old", 1, b"new").unwrap(),
        CasOutcome::Written { version: 2 }
    );
}

/// Two connections to one file add to one list with read-modify-CAS at
/// the same time: every item lands exactly once.
#[test]
fn sqlite_cas_loses_nothing_across_two_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keycard.db");
    drop(SqliteStore::open(&path).unwrap());
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = SqliteStore::open(&path).unwrap();
                let items: Vec<String> = (0..100).map(|i| format!("w{w}-{i}")).collect();
                common::add_with_cas(&mut s, "list", &items)
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let list: Vec<String> = serde_json::from_slice(&s.value("list").unwrap().unwrap()).unwrap();
    let unique: std::collections::BTreeSet<_> = list.iter().collect();
    assert_eq!(list.len(), 200);
    assert_eq!(unique.len(), 200);
}
