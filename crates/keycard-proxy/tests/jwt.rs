#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! JWT validation: good tokens of each algorithm, and every refusal.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keycard_proxy::jwt::{JwksSource, JwtError, JwtValidator, ProviderConfig, ProviderKind};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

const NOW: i64 = 1_800_000_000;
const ISS: &str = "https://idp.example.com";

enum Key {
    Ec(EcdsaKeyPair, &'static signature::EcdsaSigningAlgorithm),
    Rsa(RsaKeyPair),
    Ed(Ed25519KeyPair),
}

fn es256() -> Key {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pk8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    Key::Ec(
        EcdsaKeyPair::from_pkcs8(alg, pk8.as_ref(), &rng).unwrap(),
        alg,
    )
}

fn es384() -> Key {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
    let pk8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    Key::Ec(
        EcdsaKeyPair::from_pkcs8(alg, pk8.as_ref(), &rng).unwrap(),
        alg,
    )
}

fn rsa() -> Key {
    let der = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rsa2048.der"
    ))
    .unwrap();
    Key::Rsa(RsaKeyPair::from_der(&der).unwrap())
}

fn ed() -> Key {
    let pk8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Key::Ed(Ed25519KeyPair::from_pkcs8(pk8.as_ref()).unwrap())
}

fn jwk(k: &Key, kid: &str) -> Value {
    match k {
        Key::Ec(kp, alg) => {
            let p = kp.public_key().as_ref();
            let n = (p.len() - 1) / 2;
            let crv = if std::ptr::eq(*alg, &signature::ECDSA_P256_SHA256_FIXED_SIGNING) {
                "P-256"
            } else {
                "P-384"
            };
            json!({"kty": "EC", "crv": crv, "kid": kid, "x": B64.encode(&p[1..1 + n]), "y": B64.encode(&p[1 + n..])})
        }
        Key::Rsa(kp) => {
            let c: signature::RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
            json!({"kty": "RSA", "kid": kid, "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
        }
        Key::Ed(kp) => {
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": B64.encode(kp.public_key().as_ref())})
        }
    }
}

fn sign(k: &Key, alg: &str, header: Value, claims: Value) -> String {
    let mut h = header;
    h["alg"] = json!(alg);
    let input = format!(
        "{}.{}",
        B64.encode(h.to_string()),
        B64.encode(claims.to_string())
    );
    let rng = SystemRandom::new();
    let sig = match k {
        Key::Ec(kp, _) => kp.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        Key::Ed(kp) => kp.sign(input.as_bytes()).as_ref().to_vec(),
        Key::Rsa(kp) => {
            let enc: &dyn signature::RsaEncoding = match alg {
                "RS256" => &signature::RSA_PKCS1_SHA256,
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                "PS256" => &signature::RSA_PSS_SHA256,
                _ => &signature::RSA_PKCS1_SHA256,
            };
            let mut sig = vec![0; kp.public().modulus_len()];
            kp.sign(enc, &rng, input.as_bytes(), &mut sig).unwrap();
            sig
        }
    };
    format!("{input}.{}", B64.encode(sig))
}

fn oidc(audiences: &[&str]) -> ProviderConfig {
    ProviderConfig {
        name: "corp".into(),
        kind: ProviderKind::Oidc,
        issuer: Some(ISS.into()),
        audiences: audiences.iter().map(|s| s.to_string()).collect(),
        jwks: JwksSource::File("unused".into()),
        leeway: Duration::from_secs(30),
        refresh_interval: Duration::from_secs(300),
        min_refresh_gap: Duration::from_secs(5),
    }
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": ["api", "other"], "exp": NOW + 300, "nbf": NOW - 10, "groups": ["readers"]})
}

fn validator(keys: &[(&Key, &str)]) -> JwtValidator {
    let jwks = json!({"keys": keys.iter().map(|(k, kid)| jwk(k, kid)).collect::<Vec<_>>()});
    JwtValidator::with_keys(oidc(&["api"]), &jwks.to_string()).unwrap()
}

#[test]
fn good_tokens_of_each_algorithm() {
    let (e256, e384, r, d) = (es256(), es384(), rsa(), ed());
    let v = validator(&[(&e256, "e256"), (&e384, "e384"), (&r, "rsa"), (&d, "ed")]);
    for (key, kid, alg) in [
        (&e256, "e256", "ES256"),
        (&e384, "e384", "ES384"),
        (&r, "rsa", "RS256"),
        (&r, "rsa", "RS384"),
        (&r, "rsa", "RS512"),
        (&r, "rsa", "PS256"),
        (&d, "ed", "EdDSA"),
    ] {
        let t = sign(key, alg, json!({"kid": kid, "typ": "JWT"}), claims());
        let c = v.validate(&t, NOW).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(c.principal, format!("{ISS}/alice"), "{alg}");
        assert_eq!(c.audiences, vec!["api", "other"]);
        assert_eq!(c.raw["groups"], json!(["readers"]));
    }
    // Without a kid, every key that fits the algorithm is tried.
    let t = sign(&e256, "ES256", json!({}), claims());
    assert!(v.validate(&t, NOW).is_ok());
}

#[test]
fn refusals() {
    let (k, r) = (es256(), rsa());
    let v = validator(&[(&k, "k1"), (&r, "rsa")]);
    let good = sign(&k, "ES256", json!({"kid": "k1"}), claims());
    assert!(v.validate(&good, NOW).is_ok());

    // Bad signature: a payload swapped under the same signature.
    let parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("mallory");
    let forged = format!("{}.{}.{}", parts[0], B64.encode(c.to_string()), parts[2]);
    assert_eq!(
        v.validate(&forged, NOW).unwrap_err(),
        JwtError::BadSignature
    );
    // Signed by a key that is not in the JWKS, under a known kid.
    let other = es256();
    let t = sign(&other, "ES256", json!({"kid": "k1"}), claims());
    assert_eq!(v.validate(&t, NOW).unwrap_err(), JwtError::BadSignature);

    // alg none, with and without a signature.
    let none_h = B64.encode(json!({"alg": "none", "kid": "k1"}).to_string());
    let body = B64.encode(claims().to_string());
    assert_eq!(
        v.validate(&format!("{none_h}.{body}."), NOW).unwrap_err(),
        JwtError::Algorithm("none".into())
    );
    assert_eq!(
        v.validate(&format!("{none_h}.{body}.{}", parts[2]), NOW)
            .unwrap_err(),
        JwtError::Algorithm("none".into())
    );

    // Algorithm confusion: HS256 keyed with the RSA public key is not accepted at all,
    // and an RSA key cannot verify an ES256 token (nor the reverse).
    let hs_h = B64.encode(json!({"alg": "HS256", "kid": "rsa"}).to_string());
    assert_eq!(
        v.validate(&format!("{hs_h}.{body}.AAAA"), NOW).unwrap_err(),
        JwtError::Algorithm("HS256".into())
    );
    let t = sign(&k, "ES256", json!({"kid": "rsa"}), claims());
    assert!(matches!(
        v.validate(&t, NOW).unwrap_err(),
        JwtError::NoKey(..)
    ));
    let t = sign(&r, "RS256", json!({"kid": "k1"}), claims());
    assert!(matches!(
        v.validate(&t, NOW).unwrap_err(),
        JwtError::NoKey(..)
    ));
    // A key pinned to one alg refuses another of the same family.
    let mut pinned_key = jwk(&r, "rsa");
    pinned_key["alg"] = json!("RS512");
    let pinned = json!({"keys": [pinned_key]});
    let pv = JwtValidator::with_keys(oidc(&["api"]), &pinned.to_string()).unwrap();
    let t = sign(&r, "RS256", json!({"kid": "rsa"}), claims());
    assert!(matches!(
        pv.validate(&t, NOW).unwrap_err(),
        JwtError::NoKey(..)
    ));

    // Expiry with leeway (30 s), nbf, missing exp.
    let mut c = claims();
    c["exp"] = json!(NOW - 10);
    assert!(
        v.validate(&sign(&k, "ES256", json!({"kid": "k1"}), c.clone()), NOW)
            .is_ok(),
        "within leeway"
    );
    c["exp"] = json!(NOW - 31);
    assert_eq!(
        v.validate(&sign(&k, "ES256", json!({"kid": "k1"}), c), NOW)
            .unwrap_err(),
        JwtError::Expired
    );
    let mut c = claims();
    c["nbf"] = json!(NOW + 120);
    assert_eq!(
        v.validate(&sign(&k, "ES256", json!({"kid": "k1"}), c), NOW)
            .unwrap_err(),
        JwtError::NotYetValid
    );
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        v.validate(&sign(&k, "ES256", json!({"kid": "k1"}), c), NOW)
            .unwrap_err(),
        JwtError::NoExpiry
    );

    // Wrong audience, wrong issuer, unknown kid.
    let mut c = claims();
    c["aud"] = json!("billing");
    assert!(matches!(
        v.validate(&sign(&k, "ES256", json!({"kid": "k1"}), c), NOW)
            .unwrap_err(),
        JwtError::Audience(_)
    ));
    let mut c = claims();
    c["iss"] = json!("https://evil.example.com");
    assert!(matches!(
        v.validate(&sign(&k, "ES256", json!({"kid": "k1"}), c), NOW)
            .unwrap_err(),
        JwtError::UnknownIssuer(_)
    ));
    assert!(matches!(
        v.validate(&sign(&k, "ES256", json!({"kid": "nope"}), claims()), NOW)
            .unwrap_err(),
        JwtError::UnknownKid(..)
    ));

    // Size and shape.
    assert_eq!(
        v.validate(&"a".repeat(20_000), NOW).unwrap_err(),
        JwtError::TooLarge
    );
    assert_eq!(v.validate("a.b", NOW).unwrap_err(), JwtError::Malformed);
    assert_eq!(v.validate("a.b.c.d", NOW).unwrap_err(), JwtError::Malformed);
    assert!(v.validate("!!.??.**", NOW).is_err());
}

#[test]
fn jwt_svids_against_a_spiffe_bundle() {
    let k = es256();
    let mut key = jwk(&k, "svid-1");
    key["use"] = json!("jwt-svid");
    // A bundle also carries X.509 authorities; they are not JWT keys.
    let bundle = json!({"keys": [key, {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": "AA", "y": "AA", "x5c": ["AA"]}], "spiffe_sequence": 1});
    let cfg = ProviderConfig {
        name: "spiffe".into(),
        kind: ProviderKind::Spiffe {
            trust_domain: "example.org".into(),
        },
        issuer: None,
        audiences: vec!["spiffe://example.org/ns/prod/sa/api".into()],
        jwks: JwksSource::File("unused".into()),
        leeway: Duration::from_secs(0),
        refresh_interval: Duration::from_secs(300),
        min_refresh_gap: Duration::from_secs(5),
    };
    let v = JwtValidator::with_keys(cfg, &bundle.to_string()).unwrap();
    let svid = json!({"sub": "spiffe://example.org/ns/prod/sa/web", "aud": ["spiffe://example.org/ns/prod/sa/api"], "exp": NOW + 60});
    let c = v
        .validate(
            &sign(
                &k,
                "ES256",
                json!({"kid": "svid-1", "typ": "JWT"}),
                svid.clone(),
            ),
            NOW,
        )
        .unwrap();
    assert_eq!(c.subject, "spiffe://example.org/ns/prod/sa/web");
    assert_eq!(c.provider, "spiffe");
    // Another trust domain: no provider.
    let mut other = svid.clone();
    other["sub"] = json!("spiffe://evil.org/ns/prod/sa/web");
    assert!(matches!(
        v.validate(&sign(&k, "ES256", json!({"kid": "svid-1"}), other), NOW)
            .unwrap_err(),
        JwtError::UnknownIssuer(_)
    ));
    // Audience required.
    let mut wrong = svid;
    wrong["aud"] = json!("spiffe://example.org/ns/prod/sa/db");
    assert!(matches!(
        v.validate(&sign(&k, "ES256", json!({"kid": "svid-1"}), wrong), NOW)
            .unwrap_err(),
        JwtError::Audience(_)
    ));
}

#[test]
fn provider_config_errors_name_the_field() {
    use keycard_proxy::jwt::parse_provider_config;
    let base = std::path::Path::new("/cfg");
    let ok = parse_provider_config("p.yaml", "providers:\n- name: a\n  issuer: https://i\n  jwks_url: https://i/keys\n- name: s\n  spiffe_trust_domain: example.org\n  jwks_file: bundle.json\n  audiences: [x]\n", base).unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[1].jwks, JwksSource::File("/cfg/bundle.json".into()));
    for (text, want) in [
        ("providers:\n- jwks_file: a\n", "issuer"),
        (
            "providers:\n- spiffe_trust_domain: td\n  jwks_file: a\n",
            "audiences",
        ),
        (
            "providers:\n- issuer: i\n  jwks_file: a\n  jwks_url: http://x\n",
            "exactly one",
        ),
        ("providers:\n- issuer: i\n  jwks_url: ftp://x\n", "jwks_url"),
        (
            "providers:\n- issuer: i\n  jwks_file: a\n  audience: [x]\n",
            "unknown field",
        ),
        ("nope: 1\n", "providers"),
    ] {
        let e = parse_provider_config("p.yaml", text, base)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{text}: {e}");
    }
}
