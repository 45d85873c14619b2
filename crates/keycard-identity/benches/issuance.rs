//! X509-SVID issuance rate against the raw ECDSA P-256 signing rate of ring
//! (the same crypto backend) in the same run, and JWT-SVID mint + validate.
//!
//! `cargo bench -p keycard-identity --bench issuance`
//!
//! Besides criterion's numbers it prints one line with both rates and their
//! ratio measured back to back over the same number of operations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use keycard_core::SpiffeId;
use keycard_identity::{
    validate_jwt_svid, BundleSet, Ca, CaConfig, MemoryKeyStore, RootSource, SvidKey, SvidOptions,
};
use keycard_store::MemoryStore;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

struct Setup {
    ca: Ca,
    id: SpiffeId,
    spki: Vec<u8>,
    csr: Vec<u8>,
    raw: EcdsaKeyPair,
    rng: SystemRandom,
    tbs: Vec<u8>,
}

fn setup() -> Setup {
    let now = SystemTime::now();
    let ca = Ca::open(
        CaConfig::new("example.org".parse().unwrap(), "bench"),
        RootSource::Generate,
        &mut MemoryStore::new(),
        &MemoryKeyStore::new(),
        now,
    )
    .unwrap();
    let kp = rcgen::KeyPair::generate().unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&kp);
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&kp)
        .unwrap()
        .der()
        .to_vec();
    let rng = SystemRandom::new();
    let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let raw =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pk8.as_ref(), &rng).unwrap();
    // Sign a message the size of a leaf's TBSCertificate.
    let (svid, _) = ca
        .mint_x509_svid_with_key(
            &"spiffe://example.org/x".parse().unwrap(),
            &SvidOptions::default(),
            now,
        )
        .unwrap();
    let tbs = vec![0x5a; svid.chain[0].len() - 80];
    Setup {
        ca,
        id: "spiffe://example.org/ns/prod/sa/api".parse().unwrap(),
        spki,
        csr,
        raw,
        rng,
        tbs,
    }
}

fn ratio_line(s: &Setup) {
    const N: u32 = 20_000;
    let opts = SvidOptions::default();
    let now = SystemTime::now();
    // Warm up both.
    for _ in 0..1000 {
        black_box(s.raw.sign(&s.rng, &s.tbs).unwrap());
        black_box(
            s.ca.mint_x509_svid(&s.id, SvidKey::Spki(&s.spki), &opts, now)
                .unwrap(),
        );
    }
    let t = Instant::now();
    for _ in 0..N {
        black_box(s.raw.sign(&s.rng, &s.tbs).unwrap());
    }
    let raw = N as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..N {
        black_box(
            s.ca.mint_x509_svid(&s.id, SvidKey::Spki(&s.spki), &opts, now)
                .unwrap(),
        );
    }
    let spki = N as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..N / 4 {
        black_box(
            s.ca.mint_x509_svid(&s.id, SvidKey::Csr(&s.csr), &opts, now)
                .unwrap(),
        );
    }
    let csr = (N / 4) as f64 / t.elapsed().as_secs_f64();
    eprintln!(
        "issuance: raw ring ECDSA P-256 sign {raw:.0}/s; X509-SVID from SPKI {spki:.0}/s (ratio {:.2}); from CSR {csr:.0}/s (ratio {:.2}; includes verifying the CSR signature)",
        spki / raw,
        csr / raw
    );
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let opts = SvidOptions::default();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("x509_svid");
    g.bench_function("raw_ring_ecdsa_p256_sign", |b| {
        b.iter(|| black_box(s.raw.sign(&s.rng, &s.tbs).unwrap()))
    });
    g.bench_function("issue_from_spki", |b| {
        b.iter(|| {
            black_box(
                s.ca.mint_x509_svid(&s.id, SvidKey::Spki(&s.spki), &opts, now)
                    .unwrap(),
            )
        })
    });
    g.bench_function("issue_from_csr", |b| {
        b.iter(|| {
            black_box(
                s.ca.mint_x509_svid(&s.id, SvidKey::Csr(&s.csr), &opts, now)
                    .unwrap(),
            )
        })
    });
    g.bench_function("issue_with_generated_key", |b| {
        b.iter(|| black_box(s.ca.mint_x509_svid_with_key(&s.id, &opts, now).unwrap()))
    });
    g.finish();
    ratio_line(&s);

    let mut bundles = BundleSet::new();
    bundles.insert(s.ca.bundle().clone());
    let aud = vec!["db".to_string()];
    let token = s.ca.mint_jwt_svid(&s.id, &aud, None, now).unwrap().token;
    let mut g = c.benchmark_group("jwt_svid");
    g.bench_function("mint", |b| {
        b.iter(|| black_box(s.ca.mint_jwt_svid(&s.id, &aud, None, now).unwrap()))
    });
    g.bench_function("validate", |b| {
        b.iter(|| black_box(validate_jwt_svid(&token, &bundles, "db", now).unwrap()))
    });
    g.bench_function("mint_and_validate", |b| {
        b.iter(|| {
            let t = s.ca.mint_jwt_svid(&s.id, &aud, None, now).unwrap();
            black_box(validate_jwt_svid(&t.token, &bundles, "db", now).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
