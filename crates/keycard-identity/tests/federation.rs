#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Federated bundles: a fetched document replaces the held bundle only if
//! it belongs to the trust domain and does not go back in sequence; the
//! initial bundle may be a SPIFFE document or PEM.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::TrustDomain;
use keycard_identity::federation::parse_initial_bundle;
use keycard_identity::*;
use keycard_store::MemoryStore;

const NOW: u64 = 1_800_000_000;

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn new_ca(td: &str, store: &mut MemoryStore, keys: &MemoryKeyStore) -> Ca {
    let td: TrustDomain = td.parse().unwrap();
    Ca::open(
        CaConfig::new(td, "s1"),
        RootSource::Generate,
        store,
        keys,
        t(NOW),
    )
    .unwrap()
}

#[test]
fn a_rotated_bundle_replaces_the_held_one_and_rollbacks_are_refused() {
    let (mut store, keys) = (MemoryStore::new(), MemoryKeyStore::new());
    let mut ca = new_ca("b.test", &mut store, &keys);
    let td: TrustDomain = "b.test".parse().unwrap();
    let first = ca.bundle().to_json();
    let held = accept_federated(&td, None, first.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(held.x509_authorities.len(), 1);
    // The same document again: nothing to do.
    assert!(accept_federated(&td, Some(&held), first.as_bytes())
        .unwrap()
        .is_none());

    // Past half the root's life a next root is published: a new bundle
    // with a higher sequence.
    let events = ca.rotate(&mut store, &keys, t(NOW + 200 * 86400)).unwrap();
    assert!(
        events.iter().any(|e| matches!(e, CaEvent::RootPrepared(_))),
        "{events:?}"
    );
    let second = ca.bundle().to_json();
    let newer = accept_federated(&td, Some(&held), second.as_bytes())
        .unwrap()
        .unwrap();
    assert_eq!(newer.x509_authorities.len(), 2);
    assert!(newer.sequence > held.sequence);

    // The old document after the new one: a rollback.
    let err = accept_federated(&td, Some(&newer), first.as_bytes()).unwrap_err();
    assert!(matches!(err, BundleError::Rollback { .. }), "{err}");
}

#[test]
fn a_bundle_of_another_trust_domain_is_refused() {
    let (mut store, keys) = (MemoryStore::new(), MemoryKeyStore::new());
    let other = new_ca("evil.test", &mut store, &keys);
    let td: TrustDomain = "b.test".parse().unwrap();
    let err = accept_federated(&td, None, other.bundle().to_json().as_bytes()).unwrap_err();
    assert!(matches!(err, BundleError::TrustDomain { .. }), "{err}");
    assert!(accept_federated(&td, None, br#"{"keys": []}"#).is_err());
    assert!(accept_federated(&td, None, b"not json").is_err());
}

#[test]
fn initial_bundles_in_json_or_pem() {
    let (mut store, keys) = (MemoryStore::new(), MemoryKeyStore::new());
    let ca = new_ca("b.test", &mut store, &keys);
    let td: TrustDomain = "b.test".parse().unwrap();
    let from_json = parse_initial_bundle(&td, ca.bundle().to_json().as_bytes()).unwrap();
    assert_eq!(&from_json, ca.bundle());
    let from_pem = parse_initial_bundle(&td, ca.bundle().x509_pem().as_bytes()).unwrap();
    assert_eq!(from_pem.x509_authorities, ca.bundle().x509_authorities);
    assert!(parse_initial_bundle(&td, b"").is_err());
    let wrong: TrustDomain = "a.test".parse().unwrap();
    assert!(parse_initial_bundle(&wrong, ca.bundle().x509_pem().as_bytes()).is_err());
}
