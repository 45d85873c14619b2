#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The authorizer end to end in process: JWT claims in conditions, invalid
//! JWTs, revocation and posture files (with reload), decision records.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keycard_proxy::files::{PostureDb, Revocations, Watched};
use keycard_proxy::jwt::{JwksSource, JwtValidator, ProviderConfig, ProviderKind};
use keycard_proxy::{compile_str, Authorizer, Mode, Outcome, Peer, Reason, Request};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

const WEB: &str = "spiffe://example.org/ns/prod/sa/web";
const POLICY: &str = r#"
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: api}
spec:
  rules:
  - name: readers-with-healthy-device
    from: [{source: {requestPrincipals: ["https://idp.example.com/*"]}}]
    when:
    - {key: "request.auth.claims[groups]", values: [readers]}
    - {key: posture.device_health, values: [healthy]}
  - name: service
    from: [{source: {principals: ["spiffe://example.org/ns/prod/sa/web"]}}]
    when: [{key: posture.location, notValues: [embargoed]}]
"#;

fn token(kp: &EcdsaKeyPair, claims: serde_json::Value) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(json!({"alg": "ES256", "kid": "k"}).to_string()),
        B64.encode(claims.to_string())
    );
    let sig = kp.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig.as_ref()))
}

#[test]
fn jwt_revocation_and_posture() {
    let rng = SystemRandom::new();
    let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap();
    let p = kp.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k", "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])}]});
    let jwt = JwtValidator::with_keys(
        ProviderConfig {
            name: "corp".into(),
            kind: ProviderKind::Oidc,
            issuer: Some("https://idp.example.com".into()),
            audiences: vec!["api".into()],
            jwks: JwksSource::File("unused".into()),
            leeway: Duration::from_secs(0),
            refresh_interval: Duration::from_secs(300),
            min_refresh_gap: Duration::from_secs(1),
        },
        &jwks.to_string(),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rev_path = dir.path().join("revoked.yaml");
    let posture_path = dir.path().join("posture.yaml");
    std::fs::write(&rev_path, "spiffeIds: []\n").unwrap();
    std::fs::write(
        &posture_path,
        "identities:\n  alice:\n    attributes: {device_health: healthy}\n  spiffe://example.org/ns/prod/sa/web:\n    attributes: {location: eu}\n",
    )
    .unwrap();
    let rev = Arc::new(Watched::open(&rev_path, Revocations::parse).unwrap());
    let posture = Arc::new(Watched::open(&posture_path, PostureDb::parse).unwrap());
    let set = compile_str("p.yaml", POLICY, Mode::Enforce).unwrap();
    let authz = Authorizer::with_policies(set)
        .jwt(Arc::new(jwt))
        .revocations(rev.clone())
        .posture(posture.clone());

    let now = keycard_proxy::time::unix_now();
    let bearer = |claims: serde_json::Value| Request {
        headers: vec![(
            "authorization".into(),
            format!("Bearer {}", token(&kp, claims)),
        )],
        method: "GET".into(),
        path: "/".into(),
        ..Request::default()
    };
    let alice = json!({"iss": "https://idp.example.com", "sub": "alice", "aud": "api", "exp": now + 60, "groups": ["readers"]});

    // A user with the group and a healthy device.
    let d = authz.check(&bearer(alice.clone()));
    assert_eq!(
        (d.outcome, d.reason, d.rule.as_deref()),
        (
            Outcome::Allow,
            Reason::AllowedByPolicy,
            Some("readers-with-healthy-device")
        )
    );
    // Not in the group.
    let mut bob = alice.clone();
    bob["groups"] = json!(["writers"]);
    assert_eq!(authz.check(&bearer(bob)).reason, Reason::NoAllowMatch);
    // An invalid token is refused outright.
    let mut expired = alice.clone();
    expired["exp"] = json!(now - 60);
    let d = authz.check(&bearer(expired));
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::JwtInvalid));
    assert_eq!(d.detail.as_deref(), Some("the token expired"));
    let mut wrong_aud = alice.clone();
    wrong_aud["aud"] = json!("billing");
    assert_eq!(authz.check(&bearer(wrong_aud)).reason, Reason::JwtInvalid);

    // A service by SPIFFE ID, posture location not embargoed.
    let svc = Request {
        source: Peer {
            principal: Some(WEB.into()),
            ..Peer::default()
        },
        method: "GET".into(),
        path: "/".into(),
        ..Request::default()
    };
    assert_eq!(authz.check(&svc).rule.as_deref(), Some("service"));

    // Posture changes on disk: the device turns unhealthy.
    std::fs::write(
        &posture_path,
        "identities:\n  alice:\n    attributes: {device_health: compromised}\n",
    )
    .unwrap();
    assert_eq!(posture.reload_if_changed(), Ok(true));
    assert_eq!(
        authz.check(&bearer(alice.clone())).reason,
        Reason::NoAllowMatch
    );
    // Expired posture counts as none.
    std::fs::write(&posture_path, "identities:\n  alice:\n    expires: \"2001-01-01T00:00:00Z\"\n    attributes: {device_health: healthy}\n").unwrap();
    assert_eq!(posture.reload_if_changed(), Ok(true));
    assert_eq!(
        authz.check(&bearer(alice.clone())).reason,
        Reason::NoAllowMatch
    );
    // A broken posture file keeps the last good content.
    std::fs::write(&posture_path, "identities: [").unwrap();
    assert!(posture.reload_if_changed().is_err());
    assert_eq!(posture.reload_errors(), 1);
    assert!(posture.reload_if_changed().is_ok(), "one error per change");
    assert_eq!(posture.reload_errors(), 1);

    // Revocation: the service is denied at once, the JWT subject too.
    assert_eq!(authz.check(&svc).outcome, Outcome::Allow);
    std::fs::write(&rev_path, format!("spiffeIds: [\"{WEB}\"]\n")).unwrap();
    assert_eq!(rev.reload_if_changed(), Ok(true));
    let d = authz.check(&svc);
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::Revoked));
    assert_eq!(d.reason_header(), "-/-: revoked");
    // By certificate serial.
    std::fs::write(&rev_path, "serials: [\"01:ab\"]\n").unwrap();
    assert_eq!(rev.reload_if_changed(), Ok(true));
    assert_eq!(authz.check(&svc).outcome, Outcome::Allow);
    let mut by_serial = svc.clone();
    by_serial.source_cert_serial = Some("01ab".into());
    assert_eq!(authz.check(&by_serial).reason, Reason::Revoked);
}

#[test]
fn decision_records_have_the_documented_shape() {
    use keycard_proxy::record::record;
    let set = compile_str("p.yaml", "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all}\nspec: {action: DENY, rules: [{}]}\n", Mode::Enforce).unwrap();
    let authz = Authorizer::with_policies(set);
    let req = Request {
        id: "req-7".into(),
        source: Peer {
            principal: Some(WEB.into()),
            ip: Some("10.0.0.1".parse().unwrap()),
            port: Some(4000),
        },
        destination: Peer {
            principal: None,
            ip: Some("::1".parse().unwrap()),
            port: Some(8080),
        },
        host: "api".into(),
        method: "POST".into(),
        path: "/v1/x?q=1".into(),
        ..Request::default()
    };
    let d = authz.check(&req);
    let r = record("ext_authz", std::time::UNIX_EPOCH, &req, None, &d, 12);
    assert_eq!(r["time"], "1970-01-01T00:00:00.000Z");
    assert_eq!(r["id"], "req-7");
    assert_eq!(r["outcome"], "deny");
    assert_eq!(r["subject"], WEB);
    assert_eq!(r["resource"], "api");
    assert_eq!(r["action"], "POST /v1/x");
    assert_eq!(r["policy"], "deny-all");
    assert_eq!(r["rule"], "rules[0]");
    assert_eq!(r["reason"], "denied_by_policy");
    assert_eq!(r["attributes"]["mode"], "enforce");
    assert_eq!(r["attributes"]["source"]["address"], "10.0.0.1:4000");
    assert_eq!(r["attributes"]["destination"]["address"], "[::1]:8080");
    assert_eq!(r["attributes"]["path"], "/v1/x");
}
