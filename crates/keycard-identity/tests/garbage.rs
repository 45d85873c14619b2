#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Untrusted input never panics: random mutations of valid bundles, JWTs,
//! CSRs, JWKS documents and join tokens all give errors or valid results.

use std::time::{Duration, UNIX_EPOCH};

use keycard_core::{SpiffeId, TrustDomain};
use keycard_identity::*;
use keycard_store::MemoryStore;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..4) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
            }
            1 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v.truncate(i);
            }
            2 => {
                let i = rng.random_range(0..=v.len());
                v.insert(i, rng.random());
            }
            _ if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v.remove(i);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn mutated_inputs_never_panic() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let td: TrustDomain = "example.org".parse().unwrap();
    let mut store = MemoryStore::new();
    let ca = Ca::open(
        CaConfig::new(td.clone(), "s1"),
        RootSource::Generate,
        &mut store,
        &MemoryKeyStore::new(),
        now,
    )
    .unwrap();
    let id: SpiffeId = "spiffe://example.org/a".parse().unwrap();
    let bundle = ca.bundle().to_json().into_bytes();
    let token = ca
        .mint_jwt_svid(&id, &["x".into()], None, now)
        .unwrap()
        .token
        .into_bytes();
    let kp = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&kp)
        .unwrap()
        .der()
        .to_vec();
    let mut bundles = BundleSet::new();
    bundles.insert(ca.bundle().clone());
    let mut rng = StdRng::seed_from_u64(42);
    let mut accepted = 0;
    for _ in 0..3000 {
        let b = mutate(&mut rng, &bundle);
        let _ = TrustBundle::parse(td.clone(), &b);
        let _ = Jwks::parse(&b);
        let _ = bundles.clone().import(&td, &b);
        let t = mutate(&mut rng, &token);
        if let Ok(s) = std::str::from_utf8(&t) {
            if validate_jwt_svid(s, &bundles, "x", now).is_ok() {
                accepted += 1;
            }
            let _ = attest_join_token(&mut store, &td, s, now);
        }
        let c = mutate(&mut rng, &csr);
        if ca
            .mint_x509_svid(&id, SvidKey::Csr(&c), &SvidOptions::default(), now)
            .is_ok()
        {
            // Only a mutation that keeps the signed part intact may pass.
            accepted += 1;
        }
        let _ = ca.mint_x509_svid(&id, SvidKey::Spki(&c), &SvidOptions::default(), now);
    }
    // Mutated signed data essentially never validates.
    assert!(accepted < 30, "{accepted} mutated inputs accepted");
}
