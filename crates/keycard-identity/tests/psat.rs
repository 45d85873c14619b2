#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Kubernetes projected service-account token attestation: RS256 and ES256
//! tokens verified against the issuer's JWKS, and the TokenReview path with
//! a fake reviewer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keycard_core::TrustDomain;
use keycard_identity::attest::{BoxFuture, TokenReviewStatus};
use keycard_identity::*;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Map, Value};

const NOW: u64 = 1_800_000_000;
fn t(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}
fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

const RSA_PKCS1: &[u8] = include_bytes!("data/k8s-issuer-rsa.pkcs1.der");
const RSA_SPKI: &[u8] = include_bytes!("data/k8s-issuer-rsa.spki.der");

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Signer {
    fn sign(&self, kid: &str, claims: &Value) -> String {
        let alg = match self {
            Signer::Rsa(_) => "RS256",
            Signer::Ec(_) => "ES256",
        };
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid}).to_string());
        let p = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{h}.{p}");
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Ec(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn issuer() -> (Signer, Signer, Jwks) {
    let rsa = RsaKeyPair::from_der(RSA_PKCS1).unwrap();
    let rng = SystemRandom::new();
    let ec_pk8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_pk8.as_ref(),
        &rng,
    )
    .unwrap();
    let mut k1 = Map::new();
    JwkKey::from_spki(RSA_SPKI).unwrap().write_jwk(&mut k1);
    k1.insert("kid".into(), "rsa-1".into());
    k1.insert("use".into(), "sig".into());
    k1.insert("alg".into(), "RS256".into());
    let pt = ec.public_key().as_ref();
    let k2 = json!({"kty": "EC", "crv": "P-256", "kid": "ec-1",
        "x": URL_SAFE_NO_PAD.encode(&pt[1..33]), "y": URL_SAFE_NO_PAD.encode(&pt[33..])});
    let jwks = Jwks::parse(
        json!({"keys": [Value::Object(k1), k2]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(jwks.len(), 2);
    (Signer::Rsa(rsa), Signer::Ec(ec), jwks)
}

fn claims() -> Value {
    json!({
        "aud": ["keycard"],
        "exp": NOW + 3600,
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": "system:serviceaccount:keycard:keycard-agent",
        "kubernetes.io": {
            "namespace": "keycard",
            "serviceaccount": {"name": "keycard-agent", "uid": "sa-uid"},
            "pod": {"name": "keycard-agent-x1", "uid": "pod-uid"},
            "node": {"name": "node-1", "uid": "node-uid-1"}
        }
    })
}

fn config() -> PsatConfig {
    PsatConfig {
        cluster: "prod".into(),
        audience: "keycard".into(),
        issuer: Some("https://kubernetes.default.svc.cluster.local".into()),
        allowed_service_accounts: vec!["keycard:keycard-agent".into()],
    }
}

#[test]
fn rs256_and_es256_tokens_attest_with_selectors() {
    let (rsa, ec, jwks) = issuer();
    for (signer, kid) in [(&rsa, "rsa-1"), (&ec, "ec-1")] {
        let tok = signer.sign(kid, &claims());
        let node = attest_psat(&tok, &td(), &config(), &jwks, t(NOW)).unwrap();
        assert_eq!(
            node.spiffe_id.to_string(),
            "spiffe://example.org/keycard/agent/k8s_psat/prod/node-uid-1"
        );
        assert_eq!(node.attestation, "k8s_psat");
        let sels: Vec<String> = node.selectors.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            sels,
            [
                "k8s_psat:cluster:prod",
                "k8s_psat:agent_ns:keycard",
                "k8s_psat:agent_sa:keycard-agent",
                "k8s_psat:agent_node_name:node-1"
            ]
        );
    }
}

#[test]
fn forged_wrong_audience_expired_and_other_refusals() {
    let (rsa, ec, jwks) = issuer();
    let go = |tok: &str| attest_psat(tok, &td(), &config(), &jwks, t(NOW));
    // Forged: claims changed after signing.
    let tok = rsa.sign("rsa-1", &claims());
    let p: Vec<&str> = tok.split('.').collect();
    let mut c = claims();
    c["kubernetes.io"]["namespace"] = "kube-system".into();
    let forged = format!(
        "{}.{}.{}",
        p[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        p[2]
    );
    assert!(
        matches!(go(&forged), Err(AttestError::Signature)),
        "{:?}",
        go(&forged)
    );
    // Signed by a key not in the JWKS (claims the RSA kid, signed with EC).
    let rng = SystemRandom::new();
    let other_pk8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let other = Signer::Ec(
        EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            other_pk8.as_ref(),
            &rng,
        )
        .unwrap(),
    );
    assert!(matches!(
        go(&other.sign("ec-1", &claims())),
        Err(AttestError::Signature)
    ));
    // Algorithm does not match the key.
    let err = go(&ec.sign("rsa-1", &claims())).unwrap_err();
    assert!(
        matches!(err, AttestError::Jwt(JwtError::AlgKeyMismatch { .. })),
        "{err}"
    );
    // Wrong audience.
    let mut c = claims();
    c["aud"] = json!(["api"]);
    assert!(matches!(
        go(&rsa.sign("rsa-1", &c)),
        Err(AttestError::Jwt(JwtError::Audience { .. }))
    ));
    // Expired, not yet valid (no leeway for attestation).
    let mut c = claims();
    c["exp"] = json!(NOW - 1);
    assert!(matches!(
        go(&rsa.sign("rsa-1", &c)),
        Err(AttestError::Jwt(JwtError::Expired { .. }))
    ));
    let mut c = claims();
    c["nbf"] = json!(NOW + 60);
    assert!(matches!(
        go(&rsa.sign("rsa-1", &c)),
        Err(AttestError::Jwt(JwtError::NotYetValid { .. }))
    ));
    // Wrong issuer.
    let mut c = claims();
    c["iss"] = "https://evil".into();
    assert!(matches!(
        go(&rsa.sign("rsa-1", &c)),
        Err(AttestError::Jwt(JwtError::Issuer { .. }))
    ));
    // Not a projected token (no kubernetes.io), no node claim.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("kubernetes.io");
    assert!(matches!(
        go(&rsa.sign("rsa-1", &c)),
        Err(AttestError::Claim { .. })
    ));
    let mut c = claims();
    c["kubernetes.io"].as_object_mut().unwrap().remove("node");
    let err = go(&rsa.sign("rsa-1", &c)).unwrap_err();
    assert!(err.to_string().contains("node.name"), "{err}");
    // A service account not on the allow list.
    let mut c = claims();
    c["kubernetes.io"]["serviceaccount"]["name"] = "default".into();
    assert!(matches!(
        go(&rsa.sign("rsa-1", &c)),
        Err(AttestError::ServiceAccountNotAllowed(_))
    ));
    // Garbage and oversized tokens.
    assert!(matches!(
        go("garbage"),
        Err(AttestError::Jwt(JwtError::Shape))
    ));
    assert!(matches!(
        go(&"a".repeat(100_000)),
        Err(AttestError::Jwt(JwtError::TooLarge(_)))
    ));
    // A config with no allowed service accounts is refused.
    let mut cfg = config();
    cfg.allowed_service_accounts.clear();
    assert!(matches!(
        attest_psat(&rsa.sign("rsa-1", &claims()), &td(), &cfg, &jwks, t(NOW)),
        Err(AttestError::Config(_))
    ));
    // A malformed JWKS gives an error naming the field.
    let err = Jwks::parse(br#"{"kees": []}"#).unwrap_err();
    assert!(err.to_string().contains("keys"), "{err}");
}

struct FakeReview(TokenReviewStatus);

impl TokenReviewer for FakeReview {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<TokenReviewStatus, AttestError>> {
        Box::pin(async move {
            assert_eq!(token, "opaque-token");
            assert_eq!(audiences, ["keycard".to_string()]);
            Ok(self.0.clone())
        })
    }
}

#[tokio::test]
async fn token_review_path() {
    let ok = TokenReviewStatus {
        authenticated: true,
        username: "system:serviceaccount:keycard:keycard-agent".into(),
        audiences: vec!["keycard".into()],
        pod_name: Some("keycard-agent-x1".into()),
        pod_uid: Some("pod-uid".into()),
        node_name: Some("node-1".into()),
        node_uid: None,
        error: None,
    };
    let node = attest_psat_with_review("opaque-token", &td(), &config(), &FakeReview(ok.clone()))
        .await
        .unwrap();
    assert_eq!(
        node.spiffe_id.to_string(),
        "spiffe://example.org/keycard/agent/k8s_psat/prod/node-1"
    );
    let denied = TokenReviewStatus {
        authenticated: false,
        error: Some("token expired".into()),
        ..ok.clone()
    };
    let err = attest_psat_with_review("opaque-token", &td(), &config(), &FakeReview(denied))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("token expired"), "{err}");
    let wrong_aud = TokenReviewStatus {
        audiences: vec!["api".into()],
        ..ok.clone()
    };
    assert!(
        attest_psat_with_review("opaque-token", &td(), &config(), &FakeReview(wrong_aud))
            .await
            .is_err()
    );
    let user = TokenReviewStatus {
        username: "alice".into(),
        ..ok.clone()
    };
    assert!(
        attest_psat_with_review("opaque-token", &td(), &config(), &FakeReview(user))
            .await
            .is_err()
    );
    let other_sa = TokenReviewStatus {
        username: "system:serviceaccount:default:default".into(),
        ..ok
    };
    assert!(matches!(
        attest_psat_with_review("opaque-token", &td(), &config(), &FakeReview(other_sa)).await,
        Err(AttestError::ServiceAccountNotAllowed(_))
    ));
}
