#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SVID rotation on paused time: renewal at about half-life with jitter, a
//! storm of 10,000 SVIDs, backoff on errors, revocation stopping renewals.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::{AgentRecord, RegistrationEntry, SpiffeId, TrustDomain};
use keycard_identity::attest::BoxFuture;
use keycard_identity::*;
use keycard_store::{IdentityStore, MemoryStore};

const NOW: u64 = 1_800_000_000;
fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn renewal_time_is_within_ten_percent_of_half_life_and_spread() {
    let nb = t(NOW);
    let na = t(NOW + 3600);
    let mut seen = Vec::new();
    for _ in 0..2000 {
        let r = renewal_time(nb, na, 0.1)
            .duration_since(nb)
            .unwrap()
            .as_secs_f64();
        assert!((1440.0..=2160.0).contains(&r), "{r}");
        seen.push(r);
    }
    let min = seen.iter().cloned().fold(f64::MAX, f64::min);
    let max = seen.iter().cloned().fold(f64::MIN, f64::max);
    assert!(max - min > 600.0, "jitter spreads renewals: {min}..{max}");
}

/// Renews by minting a real X509-SVID from the CA, and records whether the
/// SVID being replaced had already expired when renewed.
struct CaRenewer {
    ca: Ca,
    clock: TokioClock,
    spki: Vec<u8>,
    expired_seen: AtomicUsize,
    renew_times: Mutex<Vec<SystemTime>>,
}

impl Renewer<X509Svid> for CaRenewer {
    fn renew<'a>(
        &'a self,
        _key: &'a str,
        current: &'a X509Svid,
    ) -> BoxFuture<'a, Result<X509Svid, RenewError>> {
        Box::pin(async move {
            let now = self.clock.now();
            if now >= current.not_after {
                self.expired_seen.fetch_add(1, Ordering::SeqCst);
            }
            self.renew_times.lock().unwrap().push(now);
            self.ca
                .mint_x509_svid(
                    &current.spiffe_id,
                    SvidKey::Spki(&self.spki),
                    &SvidOptions::default(),
                    now,
                )
                .map_err(|e| RenewError::Failed(e.to_string()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn rotation_storm_of_10000_svids_due_in_the_same_minute() {
    let clock = TokioClock::new(t(NOW));
    let td: TrustDomain = "example.org".parse().unwrap();
    let ca = Ca::open(
        CaConfig::new(td, "s1"),
        RootSource::Generate,
        &mut MemoryStore::new(),
        &MemoryKeyStore::new(),
        t(NOW),
    )
    .unwrap();
    let kp = rcgen::KeyPair::generate().unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    // 10,000 one-hour SVIDs all issued within the same minute: without
    // jitter they would all be due in one minute, 30 minutes from now.
    let mut initial = Vec::new();
    for i in 0..10_000u64 {
        let id: SpiffeId = format!("spiffe://example.org/w/{i}").parse().unwrap();
        let issued = t(NOW + (i % 60));
        initial.push(
            ca.mint_x509_svid(&id, SvidKey::Spki(&spki), &SvidOptions::default(), issued)
                .unwrap(),
        );
    }
    let renewer = Arc::new(CaRenewer {
        ca,
        clock,
        spki,
        expired_seen: AtomicUsize::new(0),
        renew_times: Mutex::new(Vec::new()),
    });
    let rot = Rotator::new(RotationConfig::default(), Arc::new(clock), renewer.clone());
    for (i, s) in initial.into_iter().enumerate() {
        rot.insert(&format!("e{i}"), s);
    }
    // Watch every cached SVID every 30 s of (paused) time for 2.5 hours.
    for _ in 0..(150 * 2) {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let now = clock.now();
        for (k, s) in rot.snapshot() {
            assert!(s.not_after > now, "{k} observed expired at {now:?}");
        }
    }
    let stats = rot.stats();
    assert_eq!(stats.failed, 0);
    assert_eq!(renewer.expired_seen.load(Ordering::SeqCst), 0);
    assert_eq!(rot.len(), 10_000);
    // Every SVID renewed several times in 2.5 h of one-hour SVIDs.
    assert!(stats.renewed >= 40_000, "{stats:?}");
    // The first wave (SVIDs due at minute 30) is spread by jitter over
    // roughly 24..36 minutes, not one minute.
    let times = renewer.renew_times.lock().unwrap();
    let first: Vec<u64> = times
        .iter()
        .map(|x| x.duration_since(t(NOW)).unwrap().as_secs())
        .filter(|s| *s < 45 * 60)
        .collect();
    assert_eq!(first.len(), 10_000);
    let (min, max) = (first.iter().min().unwrap(), first.iter().max().unwrap());
    // (Lifetimes start 30 s backdated.)
    assert!(*min >= 23 * 60 && *max <= 37 * 60, "{min}..{max}");
    assert!(max - min >= 10 * 60, "spread only {min}..{max}");
    let mut per_minute = std::collections::BTreeMap::new();
    for s in &first {
        *per_minute.entry(s / 60).or_insert(0u32) += 1;
    }
    assert!(per_minute.values().all(|n| *n < 2_000), "{per_minute:?}");
    // The metric lists every cached SVID with its seconds to expiry.
    let exp = rot.expiries("x509_svid");
    assert_eq!(exp.len(), 10_000);
    assert!(exp.iter().all(|e| e.seconds > 0 && e.seconds <= 3600));
}

/// Fails the first `fail` renewals of every key, then mints a fake SVID.
struct Flaky {
    clock: TokioClock,
    fail: u64,
    calls: AtomicU64,
    revoke: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct Fake {
    nb: SystemTime,
    na: SystemTime,
}
impl Expiring for Fake {
    fn not_before(&self) -> SystemTime {
        self.nb
    }
    fn not_after(&self) -> SystemTime {
        self.na
    }
}

impl Renewer<Fake> for Flaky {
    fn renew<'a>(
        &'a self,
        key: &'a str,
        _current: &'a Fake,
    ) -> BoxFuture<'a, Result<Fake, RenewError>> {
        Box::pin(async move {
            if self.revoke.lock().unwrap().iter().any(|k| k == key) {
                return Err(RenewError::Revoked("entry deleted".into()));
            }
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail {
                return Err(RenewError::Failed("server unreachable".into()));
            }
            let now = self.clock.now();
            Ok(Fake {
                nb: now,
                na: now + Duration::from_secs(600),
            })
        })
    }
}

#[tokio::test(start_paused = true)]
async fn errors_back_off_and_recover_before_expiry() {
    let clock = TokioClock::new(t(NOW));
    let r = Arc::new(Flaky {
        clock,
        fail: 5,
        calls: AtomicU64::new(0),
        revoke: Mutex::new(vec![]),
    });
    let rot = Rotator::new(RotationConfig::default(), Arc::new(clock), r.clone());
    let mut events = rot.subscribe();
    rot.insert(
        "a",
        Fake {
            nb: t(NOW),
            na: t(NOW + 600),
        },
    );
    let mut delays = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(3600), events.recv())
            .await
            .unwrap()
            .unwrap();
        match ev {
            CacheEvent::RenewFailed { retry_in, .. } => delays.push(retry_in),
            CacheEvent::Updated(_) if !delays.is_empty() || r.calls.load(Ordering::SeqCst) > 0 => {
                break
            }
            _ => {}
        }
    }
    assert_eq!(delays.len(), 5);
    // Exponential: each base doubles (1, 2, 4, 8, 16 s with jitter in [b/2, b]).
    for (i, d) in delays.iter().enumerate() {
        let base = 1u64 << i;
        assert!(
            d.as_secs_f64() >= base as f64 / 2.0 && d.as_secs_f64() <= base as f64,
            "{i}: {d:?}"
        );
    }
    let s = rot.get("a").unwrap();
    assert!(s.na > clock.now());
    assert_eq!(rot.stats().failed, 5);
}

#[tokio::test(start_paused = true)]
async fn a_revoked_svid_is_dropped_and_never_renewed_again() {
    let clock = TokioClock::new(t(NOW));
    let r = Arc::new(Flaky {
        clock,
        fail: 0,
        calls: AtomicU64::new(0),
        revoke: Mutex::new(vec![]),
    });
    let rot = Rotator::new(RotationConfig::default(), Arc::new(clock), r.clone());
    rot.insert(
        "a",
        Fake {
            nb: t(NOW),
            na: t(NOW + 600),
        },
    );
    rot.insert(
        "b",
        Fake {
            nb: t(NOW),
            na: t(NOW + 600),
        },
    );
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(rot.stats().renewed >= 2);
    r.revoke.lock().unwrap().push("a".into());
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(rot.get("a").is_none(), "revoked SVID dropped");
    assert!(rot.get("b").is_some());
    assert_eq!(rot.stats().revoked, 1);
    // Removed explicitly: no renewal happens after.
    assert!(rot.remove("b"));
    let calls = r.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(r.calls.load(Ordering::SeqCst), calls);
    assert!(rot.is_empty());
}

#[test]
fn deleting_an_entry_or_banning_an_agent_is_revoked_at_once_in_the_set() {
    let mut store = MemoryStore::new();
    let td: TrustDomain = "example.org".parse().unwrap();
    let agent: SpiffeId = "spiffe://example.org/keycard/agent/join_token/abc"
        .parse()
        .unwrap();
    let entry = validate_entry(
        NewEntry {
            spiffe_id: "spiffe://example.org/web".parse().unwrap(),
            parent_id: Some(agent.clone()),
            selectors: vec!["unix:uid:1000".parse().unwrap()],
            x509_ttl_secs: None,
            jwt_ttl_secs: None,
            dns_names: vec![],
            admin: false,
        },
        &td,
        &EntryLimits::default(),
        t(NOW),
    )
    .unwrap();
    store.create_entry(&entry).unwrap();
    store
        .put_agent(&AgentRecord {
            spiffe_id: agent.clone(),
            attestation: "join_token".into(),
            selectors: vec![],
            serial: "ABCDEF01".into(),
            expires_at: NOW + 3600,
            banned: false,
            last_seen: NOW,
        })
        .unwrap();
    let mut set = RevocationSet::new();
    assert_eq!(set.update(&store).unwrap(), 0);
    set.check_renewal(&entry, &agent).unwrap();

    let deleted: RegistrationEntry = delete_entry(&mut store, &entry.id, "decommissioned", t(NOW))
        .unwrap()
        .unwrap();
    assert_eq!(deleted.id, entry.id);
    assert!(store.entry(&entry.id).unwrap().is_none());
    assert_eq!(set.update(&store).unwrap(), 1);
    assert_eq!(
        set.check_renewal(&entry, &agent),
        Err(Revoked::Entry(entry.id.clone()))
    );
    assert!(delete_entry(&mut store, &entry.id, "again", t(NOW))
        .unwrap()
        .is_none());

    let other = RegistrationEntry {
        id: "other".into(),
        ..entry.clone()
    };
    set.check_renewal(&other, &agent).unwrap();
    assert!(ban_agent(&mut store, &agent, "compromised", t(NOW)).unwrap());
    assert!(store.agent(&agent).unwrap().unwrap().banned);
    assert_eq!(
        set.update(&store).unwrap(),
        2,
        "agent and its node SVID serial"
    );
    assert_eq!(
        set.check_renewal(&other, &agent),
        Err(Revoked::Agent(agent.to_string()))
    );
    assert!(set.is_identity_revoked(&agent));
    assert!(set.is_serial_revoked("abcdef01"));
    assert!(!set.is_serial_revoked("abcdef02"));
    assert!(!ban_agent(
        &mut store,
        &"spiffe://example.org/nobody".parse().unwrap(),
        "x",
        t(NOW)
    )
    .unwrap());

    let web: SpiffeId = "spiffe://example.org/api".parse().unwrap();
    revoke_identity(&mut store, &web, "leaked", Some(NOW + 100), t(NOW)).unwrap();
    // Incremental: only the new one is read; replaying old ones is harmless.
    let v = set.version();
    assert_eq!(set.update(&store).unwrap(), 1);
    assert_eq!(set.apply(&store.revocations_since(0).unwrap()), 0);
    assert!(set.version() > v);
    assert!(set.is_identity_revoked(&web));
    // A second set built from scratch agrees.
    let mut fresh = RevocationSet::new();
    fresh.update(&store).unwrap();
    assert_eq!(fresh.len(), set.len());
    // Prune forgets what has expired, keeps bans.
    set.prune(t(NOW + 4000));
    assert!(!set.is_identity_revoked(&web));
    assert!(!set.is_entry_revoked(&entry.id));
    assert!(set.is_agent_banned(&agent));
}
