//! The identity-store contract, shared by every backend's tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use keycard_core::{
    AgentRecord, JoinToken, RegistrationEntry, Revocation, RevocationKind, Selector, TokenUse,
};
use keycard_store::{IdentityStore, StoreError};

fn entry(id: &str, spiffe: &str) -> RegistrationEntry {
    RegistrationEntry {
        id: id.into(),
        spiffe_id: spiffe.parse().unwrap(),
        parent_id: Some("spiffe://td/agent/n1".parse().unwrap()),
        selectors: vec!["unix:uid:1000".parse::<Selector>().unwrap()],
        x509_ttl_secs: 3600,
        jwt_ttl_secs: 300,
        dns_names: vec!["api.local".into()],
        admin: false,
        created_at: 1,
    }
}

pub fn identity_contract(s: &mut dyn IdentityStore) {
    // Entries: create, duplicate refused, read, list in id order, delete.
    s.create_entry(&entry("b", "spiffe://td/b")).unwrap();
    s.create_entry(&entry("a", "spiffe://td/a")).unwrap();
    assert!(matches!(
        s.create_entry(&entry("a", "spiffe://td/other")),
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.entry("a").unwrap().unwrap(), entry("a", "spiffe://td/a"));
    assert_eq!(s.entry("zz").unwrap(), None);
    let ids: Vec<_> = s
        .list_entries()
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(s.delete_entry("a").unwrap().unwrap().id, "a");
    assert_eq!(s.delete_entry("a").unwrap(), None);

    // Join tokens: single use, expiry, unknown, replay.
    let tok = |h: &str, exp| JoinToken {
        hash: h.into(),
        expires_at: exp,
        agent_id: None,
    };
    s.put_join_token(&tok("t1", 100)).unwrap();
    s.put_join_token(&tok("t2", 100)).unwrap();
    assert!(matches!(
        s.put_join_token(&tok("t1", 200)),
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.use_join_token("t1", 50).unwrap(), TokenUse::Consumed);
    assert_eq!(s.use_join_token("t1", 50).unwrap(), TokenUse::Replayed);
    assert_eq!(s.use_join_token("t2", 100).unwrap(), TokenUse::Expired);
    assert_eq!(s.use_join_token("nope", 1).unwrap(), TokenUse::Unknown);

    // Agents: upsert and read back.
    let mut a = AgentRecord {
        spiffe_id: "spiffe://td/agent/n1".parse().unwrap(),
        attestation: "join_token".into(),
        selectors: vec![],
        serial: "01".into(),
        expires_at: 10,
        banned: false,
        last_seen: 1,
    };
    s.put_agent(&a).unwrap();
    a.banned = true;
    s.put_agent(&a).unwrap();
    assert!(s.agent(&a.spiffe_id).unwrap().unwrap().banned);
    assert_eq!(s.list_agents().unwrap().len(), 1);

    // Revocations: versions assigned densely, read since a version.
    let r = |subject: &str| Revocation {
        version: 0,
        kind: RevocationKind::Identity,
        subject: subject.into(),
        reason: "test".into(),
        at: 5,
        until: None,
    };
    assert_eq!(s.add_revocation(&r("spiffe://td/x")).unwrap(), 1);
    assert_eq!(s.add_revocation(&r("spiffe://td/y")).unwrap(), 2);
    let since = s.revocations_since(1).unwrap();
    assert_eq!(since.len(), 1);
    assert_eq!(
        (since[0].version, since[0].subject.as_str()),
        (2, "spiffe://td/y")
    );

    // Values.
    assert_eq!(s.value("k").unwrap(), None);
    s.put_value("k", b"v1").unwrap();
    s.put_value("k", b"v2").unwrap();
    assert_eq!(s.value("k").unwrap().unwrap(), b"v2");
    s.put_value("p/a", b"1").unwrap();
    s.put_value("p/b", b"2").unwrap();
    s.put_value("p%", b"3").unwrap();
    s.put_value("q", b"4").unwrap();
    let keys: Vec<String> = s
        .values_with_prefix("p/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["p/a", "p/b"]);
    assert!(s.delete_value("p/a").unwrap());
    assert!(!s.delete_value("p/a").unwrap());
    assert_eq!(s.values_with_prefix("p/").unwrap().len(), 1);
}
