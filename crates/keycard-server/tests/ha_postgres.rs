//! Several servers on one PostgreSQL database share one trust domain: one
//! root, every server's own intermediate and JWT key, and one bundle that
//! every server publishes to with read-modify-CAS, so servers that start
//! or rotate at the same instant never drop each other's keys and the
//! bundle sequence counts every change.
//!
//! Needs `KEYCARD_TEST_POSTGRES`; each test works in a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use keycard_identity::{Ca, CaConfig, MemoryKeyStore, RootSource};
use keycard_server::{Overrides, UpConfig};
use keycard_store::testing::TestDatabase;
use keycard_store::PostgresStore;

const DAY: u64 = 86400;

fn database(tag: &str) -> Option<TestDatabase> {
    let db = TestDatabase::create(tag).expect("create the test database");
    if db.is_none() {
        eprintln!("skipped: KEYCARD_TEST_POSTGRES is not set (a PostgreSQL to test against)");
    }
    db
}

fn ca_config(instance: &str) -> CaConfig {
    CaConfig::new("ha.test".parse().unwrap(), instance)
}

fn kids(ca: &Ca) -> BTreeSet<String> {
    ca.bundle()
        .jwt_authorities
        .iter()
        .map(|a| a.kid.clone())
        .collect()
}

/// Opens one CA per instance, all at the same instant, each on its own
/// connection, sharing one key store (as servers sharing a root must).
fn open_at_once(
    url: &str,
    keys: &Arc<MemoryKeyStore>,
    instances: &[String],
    now: SystemTime,
) -> Vec<(Ca, PostgresStore)> {
    let gate = Arc::new(Barrier::new(instances.len()));
    let handles: Vec<_> = instances
        .iter()
        .map(|i| {
            let (url, keys, gate, i) = (
                url.to_string(),
                Arc::clone(keys),
                Arc::clone(&gate),
                i.clone(),
            );
            std::thread::spawn(move || {
                let mut store = PostgresStore::connect(&url, None).unwrap();
                gate.wait();
                let ca = Ca::open(
                    ca_config(&i),
                    RootSource::Generate,
                    &mut store,
                    keys.as_ref(),
                    now,
                )
                .unwrap();
                (ca, store)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Eight servers start at once on an empty database: one root is
/// generated (the losers of the race adopt it and drop theirs), every
/// server's JWT key is in the bundle, and the sequence counts every write
/// (one root, one key per server): nothing was overwritten.
#[test]
fn servers_starting_at_once_agree_on_one_root_and_publish_every_key() {
    let Some(db) = database("ha_open") else {
        return;
    };
    // Migrate once before the race (migrations are serialised anyway).
    drop(PostgresStore::connect(db.conninfo(), None).unwrap());
    let keys = Arc::new(MemoryKeyStore::new());
    let instances: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let now = SystemTime::now();
    let cas = open_at_once(db.conninfo(), &keys, &instances, now);

    let mut store = PostgresStore::connect(db.conninfo(), None).unwrap();
    let check = Ca::open(
        ca_config("check"),
        RootSource::Generate,
        &mut store,
        keys.as_ref(),
        now,
    )
    .unwrap();
    let bundle = check.bundle();
    assert_eq!(bundle.x509_authorities.len(), 1, "one root for everyone");
    let mut expected: BTreeSet<String> =
        cas.iter().map(|(ca, _)| ca.jwt_kid().to_string()).collect();
    expected.insert(check.jwt_kid().to_string());
    assert_eq!(
        kids(&check),
        expected,
        "every server's JWT key is published"
    );
    // 1 root + 9 JWT keys, each one CAS write from the sequence it read.
    assert_eq!(bundle.sequence, Some(10));
    for (ca, _) in &cas {
        assert_eq!(ca.root_der(), check.root_der(), "same root on every server");
        assert!(ca.bundle().sequence.unwrap() <= 10);
    }
    // Each server's intermediate chains to that root: an SVID minted by
    // one verifies against the bundle any other serves.
    let id = "spiffe://ha.test/w".parse().unwrap();
    for (ca, _) in &cas {
        let svid = ca
            .mint_x509_svid_with_key(&id, &keycard_identity::SvidOptions::default(), now)
            .unwrap()
            .0;
        assert_eq!(svid.chain.len(), 2, "leaf and this server's intermediate");
        verify_chain(&svid.chain, bundle.x509_authorities.first().unwrap());
    }
}

/// Checks that `chain[1]` (an intermediate) was issued by `root` and
/// `chain[0]` by `chain[1]`: issuer names and key identifiers link up.
/// (The end-to-end test has TLS verify the signatures.)
fn verify_chain(
    chain: &[rustls_pki_types::CertificateDer<'static>],
    root: &rustls_pki_types::CertificateDer<'static>,
) {
    use x509_parser::prelude::*;
    let (_, root) = X509Certificate::from_der(root).unwrap();
    let (_, inter) = X509Certificate::from_der(&chain[1]).unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert_eq!(inter.issuer(), root.subject());
    assert_eq!(leaf.issuer(), inter.subject());
    assert!(inter.is_ca());
    let ski = |c: &X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
    };
    let aki = |c: &X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(k) => {
                    k.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
    };
    if let (Some(a), Some(s)) = (aki(&inter), ski(&root)) {
        assert_eq!(a, s, "the intermediate names the root's key");
    }
}

/// Four servers rotate at the same instant, three times over a JWT key's
/// life: each prepares, activates and retires its keys; at every step the
/// bundle holds every server's live keys (none dropped by another's
/// write), and its sequence only grows.
#[test]
fn concurrent_rotation_never_drops_another_servers_keys() {
    let Some(db) = database("ha_rotate") else {
        return;
    };
    drop(PostgresStore::connect(db.conninfo(), None).unwrap());
    let keys = Arc::new(MemoryKeyStore::new());
    let instances: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
    let t0 = SystemTime::now();
    let cas = open_at_once(db.conninfo(), &keys, &instances, t0);
    let first: BTreeSet<String> = cas.iter().map(|(ca, _)| ca.jwt_kid().to_string()).collect();

    let mut watcher = PostgresStore::connect(db.conninfo(), None).unwrap();
    let mut view = Ca::open(
        ca_config("view"),
        RootSource::Generate,
        &mut watcher,
        keys.as_ref(),
        t0,
    )
    .unwrap();
    let mut last_sequence = view.bundle().sequence.unwrap();
    let mut cas = cas;
    // Half life (prepare), five sixths (activate), past expiry (drop).
    // (The first keys expire at three days; the next ones, made at 1.6
    // days, are not yet at half life at 3.05.)
    for (step, at) in [(1, DAY * 16 / 10), (2, DAY * 26 / 10), (3, DAY * 305 / 100)] {
        let now = t0 + Duration::from_secs(at);
        let gate = Arc::new(Barrier::new(cas.len()));
        let handles: Vec<_> = cas
            .into_iter()
            .map(|(mut ca, mut store)| {
                let (keys, gate) = (Arc::clone(&keys), Arc::clone(&gate));
                std::thread::spawn(move || {
                    gate.wait();
                    let events = ca.rotate(&mut store, keys.as_ref(), now).unwrap();
                    (ca, store, events)
                })
            })
            .collect();
        let done: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        view.reload(&watcher).unwrap();
        let published = kids(&view);
        let sequence = view.bundle().sequence.unwrap();
        // Publishing (step 1) and dropping expired keys (step 3) are
        // writes; switching to an already published key (step 2) is not.
        if step == 2 {
            assert_eq!(sequence, last_sequence);
        } else {
            assert!(
                sequence > last_sequence,
                "step {step}: sequence {last_sequence} -> {sequence}"
            );
        }
        last_sequence = sequence;
        for (ca, _, events) in &done {
            if step < 3 {
                assert!(!events.is_empty(), "step {step}: every server rotated");
            }
            assert!(
                published.contains(ca.jwt_kid()),
                "step {step}: {} lost its signing key from the bundle",
                ca.config().instance
            );
        }
        match step {
            // Each server's next key is published beside the current ones.
            1 => assert_eq!(published.len(), 4 + 4 + 1, "{published:?}"),
            // The switch: the new keys sign, the old stay until expiry.
            2 => {
                assert!(first.is_subset(&published));
                assert!(done.iter().all(|(ca, _, _)| !first.contains(ca.jwt_kid())));
            }
            // Past the first keys' expiry (the viewer's too): they are
            // gone, nothing else is.
            _ => {
                assert!(first.is_disjoint(&published));
                assert!(!published.contains(view.jwt_kid()));
                assert_eq!(published.len(), 4, "{published:?}");
            }
        }
        cas = done.into_iter().map(|(ca, store, _)| (ca, store)).collect();
    }
}

fn root_pem() -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};
    let kp = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.subject_alt_names = vec![SanType::URI("spiffe://ha.test".try_into().unwrap())];
    let cert = p.self_signed(&kp).unwrap();
    (cert.pem(), kp.serialize_pem())
}

fn server_config(dir: &std::path::Path, instance: &str, postgres: &str) -> UpConfig {
    let toml = format!(
        "instance = \"{instance}\"\n[ca]\nroot_cert = \"{}\"\nroot_key = \"{}\"\n",
        dir.parent().unwrap().join("root.pem").display(),
        dir.parent().unwrap().join("root.key").display(),
    );
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some("ha.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        no_admission: true,
        postgres: Some(postgres.to_string()),
        ..Overrides::default()
    };
    let mut c = UpConfig::parse(&toml, "test", &o).unwrap();
    c.agent_enabled = false;
    c
}

/// Two `keycard server`s with the operator's root start at the same
/// instant on one database: both serve, and within a few seconds (the
/// trust state is re-read every two) both serve the same bundle, which
/// carries both servers' JWT keys. Exactly one of them makes the
/// bootstrap admin token.
///
/// (A plain test with its own runtime: the test database's administrative
/// client is a blocking one, which must not run or drop inside a runtime.)
#[test]
fn two_servers_started_together_converge_on_one_bundle() {
    let Some(db) = database("ha_start") else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(converge(&db));
}

async fn converge(db: &TestDatabase) {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key) = root_pem();
    std::fs::write(tmp.path().join("root.pem"), cert).unwrap();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp.path().join("root.key"))
            .unwrap();
        f.write_all(key.as_bytes()).unwrap();
    }
    let (a, b) = tokio::join!(
        keycard_server::start(server_config(&tmp.path().join("a"), "a", db.conninfo())),
        keycard_server::start(server_config(&tmp.path().join("b"), "b", db.conninfo())),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [&a.new_admin_token, &b.new_admin_token]
            .iter()
            .filter(|t| t.is_some())
            .count(),
        1,
        "one bootstrap admin token for the trust domain"
    );
    let both: BTreeSet<String> = [
        a.state.ca().jwt_kid().to_string(),
        b.state.ca().jwt_kid().to_string(),
    ]
    .into_iter()
    .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ka, kb) = (kids(&a.state.ca()), kids(&b.state.ca()));
        let (sa, sb) = (
            a.state.ca().bundle().sequence,
            b.state.ca().bundle().sequence,
        );
        if ka == both && kb == both && sa == sb {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bundles did not converge: a {ka:?} @{sa:?}, b {kb:?} @{sb:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        a.state.ca().bundle().to_json(),
        b.state.ca().bundle().to_json()
    );
    // The bundle file other commands read is rewritten too.
    let pem_a = std::fs::read_to_string(tmp.path().join("a/bundle.pem")).unwrap();
    let pem_b = std::fs::read_to_string(tmp.path().join("b/bundle.pem")).unwrap();
    assert_eq!(pem_a, pem_b);
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}
