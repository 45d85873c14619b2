#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The CA: X509-SVIDs checked field by field against the SPIFFE X509-SVID
//! spec with x509-parser, chains verified to the root, persistence across
//! restarts, CSR handling, operator roots and rotation with overlap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::{SpiffeId, TrustDomain};
use keycard_identity::*;
use keycard_store::{IdentityStore, MemoryStore};
use x509_parser::prelude::*;

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}
fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
const NOW: u64 = 1_800_000_000;

fn new_ca() -> (Ca, MemoryStore, MemoryKeyStore) {
    let mut store = MemoryStore::new();
    let keys = MemoryKeyStore::new();
    let ca = Ca::open(
        CaConfig::new(td(), "s1"),
        RootSource::Generate,
        &mut store,
        &keys,
        t(NOW),
    )
    .unwrap();
    (ca, store, keys)
}

fn uris(c: &X509Certificate<'_>) -> Vec<String> {
    c.subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks every spec rule of a leaf X509-SVID and verifies the chain to
/// `root`.
fn check_leaf(svid: &X509Svid, root: &[u8], want_id: &str, dns: &[&str]) {
    assert_eq!(svid.chain.len(), 2, "leaf and intermediate");
    let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
    let (_, inter) = X509Certificate::from_der(&svid.chain[1]).unwrap();
    let (_, root) = X509Certificate::from_der(root).unwrap();
    // Exactly one URI SAN, the SPIFFE ID.
    assert_eq!(uris(&leaf), vec![want_id.to_string()]);
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let dns_got: Vec<_> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(dns_got, dns);
    // basicConstraints CA=false, critical.
    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical);
    assert!(!bc.value.ca);
    // keyUsage digitalSignature only, critical; no CA usages.
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    // EKU serverAuth + clientAuth.
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    // SKI on the leaf; AKI equals the intermediate's SKI.
    let ski = |c: &X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .unwrap()
    };
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap();
    assert!(!ski(&leaf).is_empty());
    assert_eq!(aki, ski(&inter));
    // Serial is 16 random bytes (positive).
    assert!(leaf.raw_serial().len() >= 15);
    // Signing certificates: CA=true, keyCertSign + cRLSign, URI SAN of the trust domain.
    for ca in [&inter, &root] {
        let bc = ca.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        let ku = ca.key_usage().unwrap().unwrap();
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature());
        assert_eq!(uris(ca), vec!["spiffe://example.org".to_string()]);
    }
    // The chain verifies: leaf <- intermediate <- root (self-signed).
    leaf.verify_signature(Some(inter.public_key())).unwrap();
    inter.verify_signature(Some(root.public_key())).unwrap();
    root.verify_signature(None).unwrap();
    assert_eq!(leaf.issuer(), inter.subject());
    assert_eq!(inter.issuer(), root.subject());
    // Validity inside the CA's.
    assert!(leaf.validity().not_after <= inter.validity().not_after);
    assert!(inter.validity().not_after <= root.validity().not_after);
}

#[test]
fn generated_key_svid_follows_the_spec_and_chains_to_the_root() {
    let (ca, _, _) = new_ca();
    let opts = SvidOptions {
        dns_names: vec!["api.example.org".into(), "api".into()],
        ttl: None,
    };
    let (svid, key) = ca
        .mint_x509_svid_with_key(&id("spiffe://example.org/ns/prod/sa/api"), &opts, t(NOW))
        .unwrap();
    check_leaf(
        &svid,
        ca.root_der(),
        "spiffe://example.org/ns/prod/sa/api",
        &["api.example.org", "api"],
    );
    // Default TTL one hour, not-before slightly backdated.
    let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
    assert_eq!(leaf.validity().not_after.timestamp(), (NOW + 3600) as i64);
    let nb = leaf.validity().not_before.timestamp();
    assert!(nb < NOW as i64 && nb >= NOW as i64 - 120);
    // The returned key is the leaf's.
    let kp = rcgen::KeyPair::try_from(key.pkcs8_der()).unwrap();
    assert_eq!(
        kp.public_key_raw(),
        leaf.public_key().subject_public_key.data.as_ref()
    );
    // The root is in the bundle, the chain does not include it.
    assert_eq!(ca.bundle().x509_authorities, vec![ca.root_der().clone()]);
    assert!(!svid.chain.contains(ca.root_der()));
    // Serials differ between SVIDs.
    let (svid2, _) = ca
        .mint_x509_svid_with_key(&id("spiffe://example.org/ns/prod/sa/api"), &opts, t(NOW))
        .unwrap();
    assert_ne!(svid.serial, svid2.serial);
}

#[test]
fn csr_key_is_used_but_the_ca_decides_the_id() {
    let (ca, _, _) = new_ca();
    let kp = rcgen::KeyPair::generate().unwrap();
    // A CSR with no SAN gets the authorised ID.
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&kp)
        .unwrap();
    let svid = ca
        .mint_x509_svid(
            &id("spiffe://example.org/web"),
            SvidKey::Csr(csr.der()),
            &SvidOptions::default(),
            t(NOW),
        )
        .unwrap();
    check_leaf(&svid, ca.root_der(), "spiffe://example.org/web", &[]);
    let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        kp.public_key_raw()
    );

    // A CSR asking for another ID is refused.
    let mut p = rcgen::CertificateParams::default();
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    )];
    let csr = p.serialize_request(&kp).unwrap();
    let err = ca
        .mint_x509_svid(
            &id("spiffe://example.org/web"),
            SvidKey::Csr(csr.der()),
            &SvidOptions::default(),
            t(NOW),
        )
        .unwrap_err();
    assert!(matches!(err, CaError::CsrIdMismatch { .. }), "{err}");

    // A CSR asking for the authorised ID is fine.
    p.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://example.org/web".try_into().unwrap(),
    )];
    let csr = p.serialize_request(&kp).unwrap();
    ca.mint_x509_svid(
        &id("spiffe://example.org/web"),
        SvidKey::Csr(csr.der()),
        &SvidOptions::default(),
        t(NOW),
    )
    .unwrap();

    // A tampered CSR (signature no longer verifies) and garbage are refused.
    let mut bad = csr.der().to_vec();
    let n = bad.len();
    bad[n - 5] ^= 0x55;
    assert!(matches!(
        ca.mint_x509_svid(
            &id("spiffe://example.org/web"),
            SvidKey::Csr(&bad),
            &SvidOptions::default(),
            t(NOW)
        ),
        Err(CaError::Csr(_))
    ));
    assert!(matches!(
        ca.mint_x509_svid(
            &id("spiffe://example.org/web"),
            SvidKey::Csr(b"\x30\x03abc"),
            &SvidOptions::default(),
            t(NOW)
        ),
        Err(CaError::Csr(_))
    ));
}

#[test]
fn spki_input_foreign_ids_bad_dns_and_ttl_clamping() {
    let (ca, _, _) = new_ca();
    let kp = rcgen::KeyPair::generate().unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let svid = ca
        .mint_x509_svid(
            &id("spiffe://example.org/db"),
            SvidKey::Spki(&spki),
            &SvidOptions {
                dns_names: vec![],
                ttl: Some(Duration::from_secs(600)),
            },
            t(NOW),
        )
        .unwrap();
    check_leaf(&svid, ca.root_der(), "spiffe://example.org/db", &[]);
    assert_eq!(svid.not_after, t(NOW + 600));
    // Never beyond the intermediate's expiry.
    let svid = ca
        .mint_x509_svid(
            &id("spiffe://example.org/db"),
            SvidKey::Spki(&spki),
            &SvidOptions {
                dns_names: vec![],
                ttl: Some(Duration::from_secs(100 * 86400)),
            },
            t(NOW),
        )
        .unwrap();
    assert_eq!(svid.not_after, ca.intermediate_not_after());
    assert!(matches!(
        ca.mint_x509_svid(
            &id("spiffe://other.org/db"),
            SvidKey::Spki(&spki),
            &SvidOptions::default(),
            t(NOW)
        ),
        Err(CaError::ForeignId { .. })
    ));
    assert!(matches!(
        ca.mint_x509_svid(
            &id("spiffe://example.org/db"),
            SvidKey::Spki(&spki),
            &SvidOptions {
                dns_names: vec!["bad name!".into()],
                ttl: None
            },
            t(NOW)
        ),
        Err(CaError::DnsName(_))
    ));
    assert!(matches!(
        ca.mint_x509_svid(
            &id("spiffe://example.org/db"),
            SvidKey::Spki(b"junk"),
            &SvidOptions::default(),
            t(NOW)
        ),
        Err(CaError::PublicKey(_))
    ));
    // After the intermediate expired (rotation never ran), minting is refused.
    assert!(matches!(
        ca.mint_x509_svid(
            &id("spiffe://example.org/db"),
            SvidKey::Spki(&spki),
            &SvidOptions::default(),
            t(NOW + 4 * 86400)
        ),
        Err(CaError::CaExpired(_))
    ));
}

#[test]
fn a_restart_keeps_the_same_ca_and_a_second_server_gets_its_own_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("keycard.db");
    let keys = FileKeyStore::open(tmp.path().join("keys")).unwrap();
    let (root, inter, kid, seq) = {
        let mut store = keycard_store::SqliteStore::open(&db).unwrap();
        let ca = Ca::open(
            CaConfig::new(td(), "s1"),
            RootSource::Generate,
            &mut store,
            &keys,
            t(NOW),
        )
        .unwrap();
        (
            ca.root_der().clone(),
            ca.intermediate_der().clone(),
            ca.jwt_kid().to_string(),
            ca.bundle().sequence,
        )
    };
    let mut store = keycard_store::SqliteStore::open(&db).unwrap();
    let ca = Ca::open(
        CaConfig::new(td(), "s1"),
        RootSource::Generate,
        &mut store,
        &keys,
        t(NOW + 60),
    )
    .unwrap();
    assert_eq!(ca.root_der(), &root);
    assert_eq!(ca.intermediate_der(), &inter);
    assert_eq!(ca.jwt_kid(), kid);
    assert_eq!(
        ca.bundle().sequence,
        seq,
        "nothing changed, no new sequence"
    );

    // A second server on the same database and key store: same root, own
    // intermediate and JWT key, both JWT keys in the shared bundle.
    let ca2 = Ca::open(
        CaConfig::new(td(), "s2"),
        RootSource::Generate,
        &mut store,
        &keys,
        t(NOW + 60),
    )
    .unwrap();
    assert_eq!(ca2.root_der(), &root);
    assert_ne!(ca2.intermediate_der(), &inter);
    assert_eq!(ca2.bundle().jwt_authorities.len(), 2);
    assert!(ca2.bundle().sequence > seq);
    let (svid, _) = ca2
        .mint_x509_svid_with_key(
            &id("spiffe://example.org/a"),
            &SvidOptions::default(),
            t(NOW + 60),
        )
        .unwrap();
    check_leaf(&svid, &root, "spiffe://example.org/a", &[]);
    // Key files are 0600.
    #[cfg(unix)]
    for e in std::fs::read_dir(keys.dir()).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let m = e.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
}

#[test]
fn operator_root_from_pem_is_used_and_checked() {
    let now = SystemTime::now();
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let cert = p.self_signed(&kp).unwrap();
    let mut store = MemoryStore::new();
    let keys = MemoryKeyStore::new();
    let ca = Ca::open(
        CaConfig::new(td(), "s1"),
        RootSource::Pem {
            cert_pem: cert.pem(),
            key_pem: kp.serialize_pem(),
        },
        &mut store,
        &keys,
        now,
    )
    .unwrap();
    assert_eq!(ca.root_der(), cert.der());
    let (svid, _) = ca
        .mint_x509_svid_with_key(&id("spiffe://example.org/a"), &SvidOptions::default(), now)
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
    let (_, inter) = X509Certificate::from_der(&svid.chain[1]).unwrap();
    let (_, root) = X509Certificate::from_der(cert.der()).unwrap();
    leaf.verify_signature(Some(inter.public_key())).unwrap();
    inter.verify_signature(Some(root.public_key())).unwrap();

    // A key that does not belong to the certificate is refused.
    let other = rcgen::KeyPair::generate().unwrap();
    let err = Ca::open(
        CaConfig::new(td(), "s1"),
        RootSource::Pem {
            cert_pem: cert.pem(),
            key_pem: other.serialize_pem(),
        },
        &mut MemoryStore::new(),
        &MemoryKeyStore::new(),
        now,
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    // A non-CA certificate is refused.
    let leafp = rcgen::CertificateParams::default()
        .self_signed(&kp)
        .unwrap();
    let err = Ca::open(
        CaConfig::new(td(), "s1"),
        RootSource::Pem {
            cert_pem: leafp.pem(),
            key_pem: kp.serialize_pem(),
        },
        &mut MemoryStore::new(),
        &MemoryKeyStore::new(),
        now,
    )
    .unwrap_err();
    assert!(matches!(err, CaError::OperatorRoot(_)), "{err}");
    // Debug of the source never shows the key.
    let src = RootSource::Pem {
        cert_pem: cert.pem(),
        key_pem: kp.serialize_pem(),
    };
    assert!(!format!("{src:?}").contains("PRIVATE"));
}

#[test]
fn ca_rotation_overlaps_and_increments_the_sequence() {
    let mut store = MemoryStore::new();
    let keys = MemoryKeyStore::new();
    let mut cfg = CaConfig::new(td(), "s1");
    cfg.root_ttl = Duration::from_secs(12 * 3600);
    cfg.intermediate_ttl = Duration::from_secs(3 * 3600);
    cfg.jwt_key_ttl = Duration::from_secs(3 * 3600);
    let mut ca = Ca::open(cfg, RootSource::Generate, &mut store, &keys, t(NOW)).unwrap();
    let root0 = ca.root_der().clone();
    let mut seq = ca.bundle().sequence.unwrap();
    let mut roots_seen = vec![root0.clone()];
    let mut all_events = Vec::new();
    // Run rotation every minute for 30 hours; at every step an SVID minted
    // now must chain to a root in the current bundle, and a JWT-SVID minted
    // now must validate against it.
    let mut now = NOW;
    while now < NOW + 30 * 3600 {
        now += 60;
        let events = ca.rotate(&mut store, &keys, t(now)).unwrap();
        let s = ca.bundle().sequence.unwrap();
        if events.iter().any(|e| {
            matches!(
                e,
                CaEvent::RootPrepared(_)
                    | CaEvent::RootRemoved(_)
                    | CaEvent::JwtKeyPrepared(_)
                    | CaEvent::JwtKeyRemoved(_)
            )
        }) {
            assert!(s > seq, "bundle change without a new sequence: {events:?}");
        }
        assert!(s >= seq);
        seq = s;
        all_events.extend(events);
        let (svid, _) = ca
            .mint_x509_svid_with_key(
                &id("spiffe://example.org/a"),
                &SvidOptions::default(),
                t(now),
            )
            .unwrap();
        let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
        let (_, inter) = X509Certificate::from_der(&svid.chain[1]).unwrap();
        leaf.verify_signature(Some(inter.public_key())).unwrap();
        assert!(
            leaf.validity().not_after.timestamp() > now as i64,
            "SVID born expired at {now}"
        );
        let chained = ca.bundle().x509_authorities.iter().any(|r| {
            let (_, root) = X509Certificate::from_der(r).unwrap();
            inter.verify_signature(Some(root.public_key())).is_ok()
                && root.validity().not_after.timestamp() > now as i64
        });
        assert!(
            chained,
            "intermediate does not chain to a live root in the bundle at {now}"
        );
        let jwt = ca
            .mint_jwt_svid(&id("spiffe://example.org/a"), &["x".into()], None, t(now))
            .unwrap();
        let mut set = BundleSet::new();
        set.insert(ca.bundle().clone());
        validate_jwt_svid(&jwt.token, &set, "x", t(now)).unwrap();
        if !roots_seen.contains(ca.root_der()) {
            // When a new root becomes active, the old one is still in the bundle.
            assert!(ca
                .bundle()
                .x509_authorities
                .contains(roots_seen.last().unwrap()));
            roots_seen.push(ca.root_der().clone());
        }
        for e in ca.expiries(t(now)) {
            assert!(e.seconds > 0, "{e:?} is expired but still tracked");
        }
    }
    assert!(roots_seen.len() >= 2, "the root rotated: {all_events:?}");
    for kind in [
        "RootPrepared",
        "RootActivated",
        "RootRemoved",
        "IntermediateActivated",
        "JwtKeyActivated",
        "JwtKeyRemoved",
    ] {
        assert!(
            all_events
                .iter()
                .any(|e| format!("{e:?}").starts_with(kind)),
            "no {kind}: {all_events:?}"
        );
    }
    // A restart after rotation resumes the rotated CA.
    let cur_inter = ca.intermediate_der().clone();
    let ca2 = Ca::open(
        ca.config().clone(),
        RootSource::Generate,
        &mut store,
        &keys,
        t(now),
    )
    .unwrap();
    assert_eq!(ca2.intermediate_der(), &cur_inter);
    assert_eq!(ca2.bundle(), ca.bundle());
    let _ = store.value("x");
}

#[test]
fn p384_and_ed25519_leaf_keys_are_accepted() {
    let (ca, _, _) = new_ca();
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
        let svid = ca
            .mint_x509_svid(
                &id("spiffe://example.org/k"),
                SvidKey::Spki(&spki),
                &SvidOptions::default(),
                t(NOW),
            )
            .unwrap();
        check_leaf(&svid, ca.root_der(), "spiffe://example.org/k", &[]);
        let (_, leaf) = X509Certificate::from_der(&svid.chain[0]).unwrap();
        assert_eq!(leaf.public_key().raw, spki.as_slice());
        // And through a CSR signed with that key.
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&kp)
            .unwrap();
        ca.mint_x509_svid(
            &id("spiffe://example.org/k"),
            SvidKey::Csr(csr.der()),
            &SvidOptions::default(),
            t(NOW),
        )
        .unwrap();
    }
}

/// rustls-webpki, the verifier rustls uses, accepts the SVIDs for both TLS
/// server and client auth against the root, and refuses them against
/// another trust domain's root and after expiry.
#[test]
fn webpki_accepts_svids_for_tls_server_and_client_auth() {
    use rustls_pki_types::UnixTime;
    let now = SystemTime::now();
    let mut store = MemoryStore::new();
    let keys = MemoryKeyStore::new();
    let ca = Ca::open(
        CaConfig::new(td(), "s1"),
        RootSource::Generate,
        &mut store,
        &keys,
        now,
    )
    .unwrap();
    let other = Ca::open(
        CaConfig::new("other.org".parse().unwrap(), "s1"),
        RootSource::Generate,
        &mut MemoryStore::new(),
        &MemoryKeyStore::new(),
        now,
    )
    .unwrap();
    let (svid, _) = ca
        .mint_x509_svid_with_key(
            &id("spiffe://example.org/web"),
            &SvidOptions {
                dns_names: vec!["web.example.org".into()],
                ttl: None,
            },
            now,
        )
        .unwrap();
    let ee = webpki::EndEntityCert::try_from(&svid.chain[0]).unwrap();
    let anchor = webpki::anchor_from_trusted_cert(ca.root_der())
        .unwrap()
        .to_owned();
    let wrong = webpki::anchor_from_trusted_cert(other.root_der())
        .unwrap()
        .to_owned();
    let at = |t: SystemTime| UnixTime::since_unix_epoch(t.duration_since(UNIX_EPOCH).unwrap());
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &svid.chain[1..],
            at(now),
            usage,
            None,
            None,
        )
        .unwrap();
    }
    assert!(ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[wrong],
            &svid.chain[1..],
            at(now),
            webpki::KeyUsage::server_auth(),
            None,
            None
        )
        .is_err());
    assert!(ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &svid.chain[1..],
            at(now + Duration::from_secs(7200)),
            webpki::KeyUsage::server_auth(),
            None,
            None
        )
        .is_err());
    // The DNS SAN is usable for server-name checks.
    let name = rustls_pki_types::ServerName::try_from("web.example.org").unwrap();
    ee.verify_is_valid_for_subject_name(&name).unwrap();
}
