#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Join tokens, registration validation and the workload lookup.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::{RegistrationEntry, Selector, SpiffeId, TrustDomain};
use keycard_identity::*;
use keycard_store::{IdentityStore, MemoryStore};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
const NOW: u64 = 1_800_000_000;
fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}
fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}
fn sel(s: &str) -> Selector {
    s.parse().unwrap()
}

#[test]
fn join_tokens_are_single_use_expiring_and_stored_by_hash() {
    for sqlite in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut store: Box<dyn IdentityStore> = if sqlite {
            Box::new(keycard_store::SqliteStore::open(tmp.path().join("db")).unwrap())
        } else {
            Box::new(MemoryStore::new())
        };
        let g = generate_join_token(
            store.as_mut(),
            &td(),
            Duration::from_secs(600),
            None,
            t(NOW),
        )
        .unwrap();
        assert!(!format!("{g:?}").contains(g.token.as_str()));
        assert_ne!(g.hash, *g.token, "only the hash is stored");
        assert_eq!(
            g.agent_id.to_string(),
            format!(
                "spiffe://example.org/keycard/agent/join_token/{}",
                &g.hash[..16]
            )
        );
        let node = attest_join_token(store.as_mut(), &td(), &g.token, t(NOW + 1)).unwrap();
        assert_eq!(node.spiffe_id, g.agent_id);
        assert_eq!(node.attestation, "join_token");
        assert_eq!(
            node.selectors,
            vec![sel(&format!("join_token:id:{}", &g.hash[..16]))]
        );
        // Replay.
        assert!(matches!(
            attest_join_token(store.as_mut(), &td(), &g.token, t(NOW + 2)),
            Err(AttestError::ReplayedToken)
        ));
        // Unknown and malformed.
        assert!(matches!(
            attest_join_token(store.as_mut(), &td(), "deadbeef", t(NOW)),
            Err(AttestError::UnknownToken)
        ));
        assert!(matches!(
            attest_join_token(store.as_mut(), &td(), "", t(NOW)),
            Err(AttestError::MalformedToken(_))
        ));
        assert!(matches!(
            attest_join_token(store.as_mut(), &td(), &"x".repeat(1000), t(NOW)),
            Err(AttestError::MalformedToken(_))
        ));
        // Expired.
        let g2 = generate_join_token(store.as_mut(), &td(), Duration::from_secs(60), None, t(NOW))
            .unwrap();
        assert!(matches!(
            attest_join_token(store.as_mut(), &td(), &g2.token, t(NOW + 60)),
            Err(AttestError::ExpiredToken)
        ));
        // A fixed agent ID.
        let g3 = generate_join_token(
            store.as_mut(),
            &td(),
            Duration::from_secs(60),
            Some(id("spiffe://example.org/node/n1")),
            t(NOW),
        )
        .unwrap();
        let node = attest_join_token(store.as_mut(), &td(), &g3.token, t(NOW)).unwrap();
        assert_eq!(node.spiffe_id, id("spiffe://example.org/node/n1"));
        assert!(generate_join_token(
            store.as_mut(),
            &td(),
            Duration::from_secs(60),
            Some(id("spiffe://other.org/n")),
            t(NOW)
        )
        .is_err());
    }
}

fn new_entry(spiffe: &str, parent: Option<&str>, sels: &[&str]) -> NewEntry {
    NewEntry {
        spiffe_id: id(spiffe),
        parent_id: parent.map(id),
        selectors: sels.iter().map(|s| sel(s)).collect(),
        x509_ttl_secs: None,
        jwt_ttl_secs: None,
        dns_names: vec![],
        admin: false,
    }
}

#[test]
fn entry_validation_names_the_field() {
    let l = EntryLimits::default();
    let ok = validate_entry(
        new_entry(
            "spiffe://example.org/app",
            Some("spiffe://example.org/agent"),
            &["unix:uid:1000"],
        ),
        &td(),
        &l,
        t(NOW),
    )
    .unwrap();
    assert_eq!(ok.x509_ttl_secs, 3600);
    assert_eq!(ok.jwt_ttl_secs, 300);
    assert_eq!(ok.created_at, NOW);
    assert_eq!(ok.id.len(), 32);
    let other = validate_entry(
        new_entry("spiffe://example.org/app", None, &["unix:uid:1000"]),
        &td(),
        &l,
        t(NOW),
    )
    .unwrap();
    assert_ne!(ok.id, other.id);

    let e = |n: NewEntry| validate_entry(n, &td(), &l, t(NOW)).unwrap_err();
    assert!(matches!(
        e(new_entry("spiffe://other.org/app", None, &["unix:uid:1"])),
        RegistrationError::ForeignId { .. }
    ));
    assert!(matches!(
        e(new_entry("spiffe://example.org", None, &["unix:uid:1"])),
        RegistrationError::BareTrustDomain(_)
    ));
    assert!(matches!(
        e(new_entry(
            "spiffe://example.org/keycard/agent/x",
            None,
            &["unix:uid:1"]
        )),
        RegistrationError::Reserved(_)
    ));
    assert!(matches!(
        e(new_entry(
            "spiffe://example.org/a",
            Some("spiffe://o.org/x"),
            &["unix:uid:1"]
        )),
        RegistrationError::ForeignParent { .. }
    ));
    assert!(matches!(
        e(new_entry("spiffe://example.org/a", None, &[])),
        RegistrationError::NoSelectors
    ));
    assert!(matches!(
        e(new_entry(
            "spiffe://example.org/a",
            None,
            &["unix:uid:1", "unix:uid:1"]
        )),
        RegistrationError::DuplicateSelector(_)
    ));
    let mut n = new_entry("spiffe://example.org/a", None, &["unix:uid:1"]);
    n.x509_ttl_secs = Some(5);
    assert!(e(n).to_string().starts_with("x509_ttl_secs"));
    let mut n = new_entry("spiffe://example.org/a", None, &["unix:uid:1"]);
    n.jwt_ttl_secs = Some(10 * 86400);
    assert!(e(n).to_string().starts_with("jwt_ttl_secs"));
    let mut n = new_entry("spiffe://example.org/a", None, &["unix:uid:1"]);
    n.dns_names = vec!["ok.example.org".into(), "-bad".into()];
    assert!(matches!(e(n), RegistrationError::DnsName(d) if d == "-bad"));
    let mut n = new_entry("spiffe://example.org/a", None, &["unix:uid:1"]);
    n.selectors.push(Selector {
        kind: "unix".into(),
        value: "uid:root".into(),
    });
    assert!(matches!(e(n), RegistrationError::InvalidSelector(_)));
}

fn entry(spiffe: &str, parent: Option<&str>, sels: &[&str]) -> RegistrationEntry {
    validate_entry(
        new_entry(spiffe, parent, sels),
        &td(),
        &EntryLimits::default(),
        t(NOW),
    )
    .unwrap()
}

#[test]
fn lookup_gives_exactly_the_matching_entries_of_the_agent() {
    let agent = "spiffe://example.org/keycard/agent/join_token/aaaa";
    let reg = Registry::new(vec![
        entry("spiffe://example.org/web", Some(agent), &["unix:uid:1000"]),
        entry(
            "spiffe://example.org/web-admin",
            Some(agent),
            &["unix:uid:1000", "unix:gid:0"],
        ),
        entry("spiffe://example.org/db", Some(agent), &["unix:uid:999"]),
        entry(
            "spiffe://example.org/elsewhere",
            Some("spiffe://example.org/keycard/agent/other"),
            &["unix:uid:1000"],
        ),
        // A node alias: agents in cluster c1 stand for spiffe://example.org/cluster/c1.
        entry(
            "spiffe://example.org/cluster/c1",
            None,
            &["k8s_psat:cluster:c1"],
        ),
        entry(
            "spiffe://example.org/k8s-app",
            Some("spiffe://example.org/cluster/c1"),
            &["k8s:ns:prod", "k8s:sa:api"],
        ),
    ]);
    let a = id(agent);
    let none: Vec<Selector> = vec![];
    assert_eq!(
        reg.ids_for(&a, &none, &[sel("unix:uid:1000")]),
        vec![id("spiffe://example.org/web")]
    );
    assert_eq!(
        reg.ids_for(
            &a,
            &none,
            &[
                sel("unix:uid:1000"),
                sel("unix:gid:0"),
                sel("unix:path:/bin/x")
            ]
        ),
        vec![
            id("spiffe://example.org/web"),
            id("spiffe://example.org/web-admin")
        ]
    );
    assert!(reg.ids_for(&a, &none, &[sel("unix:uid:1001")]).is_empty());
    assert!(reg.ids_for(&a, &none, &[]).is_empty());
    // Node aliases.
    let node = [sel("k8s_psat:cluster:c1")];
    let k8s = [sel("k8s:ns:prod"), sel("k8s:sa:api")];
    assert_eq!(
        reg.ids_for(&a, &node, &k8s),
        vec![id("spiffe://example.org/k8s-app")]
    );
    assert!(reg
        .ids_for(&a, &[sel("k8s_psat:cluster:c2")], &k8s)
        .is_empty());
    assert!(reg.ids_for(&a, &node, &[sel("k8s:ns:prod")]).is_empty());
    assert!(reg.authorises(
        &a,
        &none,
        &[sel("unix:uid:1000")],
        &id("spiffe://example.org/web")
    ));
    assert!(!reg.authorises(
        &a,
        &none,
        &[sel("unix:uid:1000")],
        &id("spiffe://example.org/web-admin")
    ));
    assert_eq!(reg.entries_for_agent(&a, &none).len(), 3);
}

/// Property: over many random registries and workloads, a workload gets an
/// ID if and only if some entry of its agent lists only selectors it has.
#[test]
fn property_a_workload_never_gets_an_id_it_does_not_match() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(7);
    let pool: Vec<Selector> = (0..6)
        .map(|i| sel(&format!("unix:uid:{i}")))
        .chain((0..4).map(|i| sel(&format!("k8s:ns:n{i}"))))
        .collect();
    let agents = [
        "spiffe://example.org/keycard/agent/a",
        "spiffe://example.org/keycard/agent/b",
    ];
    for round in 0..300 {
        let mut entries = Vec::new();
        for i in 0..rng.random_range(1..12) {
            let n = rng.random_range(1..4);
            let mut s: Vec<Selector> = (0..n)
                .map(|_| pool[rng.random_range(0..pool.len())].clone())
                .collect();
            s.sort();
            s.dedup();
            let sels: Vec<String> = s.iter().map(|x| x.to_string()).collect();
            let refs: Vec<&str> = sels.iter().map(|x| x.as_str()).collect();
            entries.push(entry(
                &format!("spiffe://example.org/w{round}-{i}"),
                Some(agents[rng.random_range(0..2)]),
                &refs,
            ));
        }
        let reg = Registry::new(entries.clone());
        for _ in 0..20 {
            let agent = id(agents[rng.random_range(0..2)]);
            let observed: Vec<Selector> = pool
                .iter()
                .filter(|_| rng.random_bool(0.4))
                .cloned()
                .collect();
            let got = reg.ids_for(&agent, &[], &observed);
            let mut want: Vec<SpiffeId> = entries
                .iter()
                .filter(|e| {
                    e.parent_id.as_ref() == Some(&agent)
                        && e.selectors.iter().all(|s| observed.contains(s))
                })
                .map(|e| e.spiffe_id.clone())
                .collect();
            want.sort();
            want.dedup();
            assert_eq!(got, want);
            for g in &got {
                let e = entries.iter().find(|e| &e.spiffe_id == g).unwrap();
                assert!(
                    e.selectors.iter().all(|s| observed.contains(s)),
                    "{g} given without a match"
                );
            }
        }
    }
}
