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

/// Compare-and-swap on named values: versions, conflicts, no ABA.
pub fn cas_contract(s: &mut dyn IdentityStore) {
    use keycard_store::CasOutcome;

    // Create only if absent (expected version 0).
    assert_eq!(s.versioned_value("cas").unwrap(), None);
    let CasOutcome::Written { version: v1 } = s.compare_and_put_value("cas", 0, b"one").unwrap()
    else {
        panic!("creating an absent key must succeed");
    };
    assert!(v1 > 0);
    let got = s.versioned_value("cas").unwrap().unwrap();
    assert_eq!((got.version, got.value.as_slice()), (v1, &b"one"[..]));
    assert_eq!(s.value("cas").unwrap().unwrap(), b"one");
    // A second create from "absent" loses and learns the version.
    assert_eq!(
        s.compare_and_put_value("cas", 0, b"other").unwrap(),
        CasOutcome::Conflict { actual: v1 }
    );

    // Swap from the version read; a stale version loses and writes nothing.
    let CasOutcome::Written { version: v2 } = s.compare_and_put_value("cas", v1, b"two").unwrap()
    else {
        panic!("a swap from the current version must succeed");
    };
    assert!(v2 > v1, "versions grow: {v1} then {v2}");
    assert_eq!(
        s.compare_and_put_value("cas", v1, b"stale").unwrap(),
        CasOutcome::Conflict { actual: v2 }
    );
    assert_eq!(s.value("cas").unwrap().unwrap(), b"two");

    // A plain put is a write too: it moves the version on.
    s.put_value("cas", b"three").unwrap();
    let v3 = s.versioned_value("cas").unwrap().unwrap().version;
    assert!(v3 > v2);
    assert_eq!(
        s.compare_and_put_value("cas", v2, b"stale").unwrap(),
        CasOutcome::Conflict { actual: v3 }
    );

    // Deleted then re-created: the old version never matches again (no ABA).
    assert!(s.delete_value("cas").unwrap());
    assert_eq!(
        s.compare_and_put_value("cas", v3, b"x").unwrap(),
        CasOutcome::Conflict { actual: 0 }
    );
    let CasOutcome::Written { version: v4 } = s.compare_and_put_value("cas", 0, b"four").unwrap()
    else {
        panic!("re-creating a deleted key must succeed");
    };
    assert!(![v1, v2, v3].contains(&v4), "version {v4} was reused");
    assert_eq!(
        s.compare_and_put_value("cas", v3, b"x").unwrap(),
        CasOutcome::Conflict { actual: v4 }
    );
    // Versions are per key: another key's writes do not conflict with it.
    s.put_value("cas-other", b"o").unwrap();
    assert!(matches!(
        s.compare_and_put_value("cas", v4, b"five").unwrap(),
        CasOutcome::Written { .. }
    ));
}

/// One writer's share of a read-modify-CAS race: adds `items` to the JSON
/// list under `key`, one CAS each, re-reading on conflict. Returns how many
/// conflicts it met.
pub fn add_with_cas(s: &mut dyn IdentityStore, key: &str, items: &[String]) -> usize {
    use keycard_store::CasOutcome;
    let mut conflicts = 0;
    for item in items {
        loop {
            let (version, mut list) = match s.versioned_value(key).unwrap() {
                None => (0, Vec::<String>::new()),
                Some(v) => (v.version, serde_json::from_slice(&v.value).unwrap()),
            };
            list.push(item.clone());
            let bytes = serde_json::to_vec(&list).unwrap();
            match s.compare_and_put_value(key, version, &bytes).unwrap() {
                CasOutcome::Written { .. } => break,
                CasOutcome::Conflict { .. } => conflicts += 1,
            }
        }
    }
    conflicts
}

pub fn document_contract(s: &mut dyn keycard_store::DocumentStore) {
    use keycard_store::PutMode;
    assert_eq!(s.document_revision().unwrap(), 0);
    // Create, refuse a second create, replace: one feed of revisions.
    assert_eq!(
        s.put_document("policy", "web", b"v1", PutMode::Create)
            .unwrap(),
        1
    );
    assert!(matches!(
        s.put_document("policy", "web", b"again", PutMode::Create),
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        s.put_document("exception", "web", b"e1", PutMode::Create)
            .unwrap(),
        2
    );
    assert_eq!(
        s.put_document("policy", "web", b"v2", PutMode::Upsert)
            .unwrap(),
        3
    );
    assert_eq!(
        s.put_document("policy", "db", b"d1", PutMode::Upsert)
            .unwrap(),
        4
    );
    let web = s.document("policy", "web").unwrap().unwrap();
    assert_eq!((web.revision, web.body.as_deref()), (3, Some(&b"v2"[..])));
    let names: Vec<_> = s
        .documents("policy")
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["db", "web"]);
    // Delete leaves a tombstone in the feed; a second delete finds nothing.
    assert_eq!(s.delete_document("policy", "web").unwrap(), Some(5));
    assert_eq!(s.delete_document("policy", "web").unwrap(), None);
    assert_eq!(s.delete_document("policy", "never").unwrap(), None);
    assert_eq!(s.document("policy", "web").unwrap(), None);
    assert_eq!(s.documents("policy").unwrap().len(), 1);
    // A reader at revision 2 learns the replaced-then-deleted web (as a
    // tombstone) and db, in revision order; nothing from before.
    let since: Vec<_> = s
        .documents_since(2)
        .unwrap()
        .into_iter()
        .map(|d| (d.collection, d.name, d.revision, d.body.is_some()))
        .collect();
    assert_eq!(
        since,
        [
            ("policy".to_string(), "db".to_string(), 4, true),
            ("policy".to_string(), "web".to_string(), 5, false),
        ]
    );
    assert!(s.documents_since(5).unwrap().is_empty());
    // Re-creating after a delete is a create, at a new revision.
    assert_eq!(
        s.put_document("policy", "web", b"v3", PutMode::Create)
            .unwrap(),
        6
    );
    assert_eq!(s.document_revision().unwrap(), 6);
}
