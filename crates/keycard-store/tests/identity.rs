//! One contract, every backend: the identity store behaves the same in
//! memory and in SQLite (and PostgreSQL, where the suite provides one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keycard_core::{JoinToken, TokenUse};
use keycard_store::{IdentityStore, MemoryStore, SqliteStore};

mod common;

#[test]
fn memory_store_keeps_the_identity_contract() {
    common::identity_contract(&mut MemoryStore::new());
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
