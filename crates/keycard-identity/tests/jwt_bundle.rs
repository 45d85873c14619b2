#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! JWT-SVIDs (mint, validate, every refusal) and SPIFFE bundles (format,
//! round trip, strict parsing, federation import).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keycard_core::{SpiffeId, TrustDomain};
use keycard_identity::*;
use keycard_store::MemoryStore;
use serde_json::{json, Value};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
const NOW: u64 = 1_800_000_000;

fn new_ca(td: &str) -> Ca {
    let td: TrustDomain = td.parse().unwrap();
    Ca::open(
        CaConfig::new(td, "s1"),
        RootSource::Generate,
        &mut MemoryStore::new(),
        &MemoryKeyStore::new(),
        t(NOW),
    )
    .unwrap()
}
fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}
fn set(cas: &[&Ca]) -> BundleSet {
    let mut s = BundleSet::new();
    for c in cas {
        s.insert(c.bundle().clone());
    }
    s
}
fn parts(token: &str) -> (Value, Value, String) {
    let p: Vec<_> = token.split('.').collect();
    let dec = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
    (dec(p[0]), dec(p[1]), p[2].to_string())
}
fn forge(header: &Value, claims: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        sig
    )
}

#[test]
fn jwt_svid_has_the_spec_header_and_claims_and_validates() {
    let ca = new_ca("example.org");
    let jwt = ca
        .mint_jwt_svid(
            &id("spiffe://example.org/web"),
            &["db".into(), "cache".into()],
            None,
            t(NOW),
        )
        .unwrap();
    let (h, c, _) = parts(&jwt.token);
    assert_eq!(h["alg"], "ES256");
    assert_eq!(h["typ"], "JWT");
    assert_eq!(h["kid"], ca.jwt_kid());
    assert!(
        ca.bundle().jwt_key(ca.jwt_kid()).is_some(),
        "kid published in the bundle"
    );
    assert_eq!(c["sub"], "spiffe://example.org/web");
    assert_eq!(c["aud"], json!(["db", "cache"]));
    assert_eq!(c["iat"], NOW);
    assert_eq!(c["exp"], NOW + 300, "default TTL 5 minutes");
    assert!(
        !format!("{jwt:?}").contains(&jwt.token[..20]),
        "Debug hides the token"
    );
    let got = validate_jwt_svid(&jwt.token, &set(&[&ca]), "cache", t(NOW + 10)).unwrap();
    assert_eq!(got.spiffe_id, id("spiffe://example.org/web"));
    assert_eq!(got.audience, vec!["db".to_string(), "cache".to_string()]);
    assert_eq!(got.expiry, NOW + 300);
    // One audience is a string.
    let one = ca
        .mint_jwt_svid(
            &id("spiffe://example.org/web"),
            &["db".into()],
            None,
            t(NOW),
        )
        .unwrap();
    assert_eq!(parts(&one.token).1["aud"], "db");
    assert!(matches!(
        ca.mint_jwt_svid(&id("spiffe://example.org/web"), &[], None, t(NOW)),
        Err(CaError::Audience)
    ));
}

#[test]
fn jwt_svid_refusals() {
    let ca = new_ca("example.org");
    let other = new_ca("other.org");
    let bundles = set(&[&ca]);
    let jwt = ca
        .mint_jwt_svid(
            &id("spiffe://example.org/web"),
            &["db".into()],
            None,
            t(NOW),
        )
        .unwrap();
    let v = |tok: &str, aud: &str, now: u64| validate_jwt_svid(tok, &bundles, aud, t(now));

    assert!(matches!(
        v(&jwt.token, "other", NOW),
        Err(JwtError::Audience { .. })
    ));
    assert!(matches!(
        v(&jwt.token, "db", NOW + 300 + 31),
        Err(JwtError::Expired { .. })
    ));
    assert!(v(&jwt.token, "db", NOW + 300 + 10).is_ok(), "small leeway");
    // No bundle for the token's trust domain.
    let foreign = other
        .mint_jwt_svid(&id("spiffe://other.org/x"), &["db".into()], None, t(NOW))
        .unwrap();
    assert!(matches!(
        v(&foreign.token, "db", NOW),
        Err(JwtError::NoBundle(_))
    ));

    let (h, c, sig) = parts(&jwt.token);
    // Changed claims: signature fails.
    let mut c2 = c.clone();
    c2["sub"] = "spiffe://example.org/admin".into();
    assert!(matches!(
        v(&forge(&h, &c2, &sig), "db", NOW),
        Err(JwtError::BadSignature)
    ));
    // alg none.
    let mut h2 = h.clone();
    h2["alg"] = "none".into();
    assert!(matches!(
        v(&forge(&h2, &c, ""), "db", NOW),
        Err(JwtError::AlgNone)
    ));
    // Algorithm not matching the JWK (an EC key with RS256 / HS256).
    h2["alg"] = "RS256".into();
    assert!(matches!(
        v(&forge(&h2, &c, &sig), "db", NOW),
        Err(JwtError::AlgKeyMismatch { .. })
    ));
    h2["alg"] = "HS256".into();
    assert!(matches!(
        v(&forge(&h2, &c, &sig), "db", NOW),
        Err(JwtError::UnsupportedAlg(_))
    ));
    // Unknown kid, missing kid.
    let mut h3 = h.clone();
    h3["kid"] = "nope".into();
    assert!(matches!(
        v(&forge(&h3, &c, &sig), "db", NOW),
        Err(JwtError::UnknownKid(_))
    ));
    h3.as_object_mut().unwrap().remove("kid");
    assert!(matches!(
        v(&forge(&h3, &c, &sig), "db", NOW),
        Err(JwtError::MissingHeader("kid"))
    ));
    // Signed by another trust domain's key but claiming this one.
    let forged = other
        .mint_jwt_svid(&id("spiffe://other.org/x"), &["db".into()], None, t(NOW))
        .unwrap();
    let (fh, _, fsig) = parts(&forged.token);
    assert!(matches!(
        v(&forge(&fh, &c, &fsig), "db", NOW),
        Err(JwtError::UnknownKid(_))
    ));
    // sub not a SPIFFE ID; missing exp.
    let mut c4 = c.clone();
    c4["sub"] = "web".into();
    assert!(matches!(
        v(&forge(&h, &c4, &sig), "db", NOW),
        Err(JwtError::BadClaim { claim: "sub", .. })
    ));
    // Size limit, shape, garbage.
    assert!(matches!(
        v(&"a".repeat(20_000), "db", NOW),
        Err(JwtError::TooLarge(_))
    ));
    assert!(matches!(v("a.b", "db", NOW), Err(JwtError::Shape)));
    assert!(matches!(
        v("!!.??.**", "db", NOW),
        Err(JwtError::Encoding { .. })
    ));
    assert!(matches!(v("", "db", NOW), Err(JwtError::Shape)));
}

#[test]
fn bundle_is_in_the_spiffe_format_and_round_trips() {
    let ca = new_ca("example.org");
    let doc: Value = serde_json::from_str(&ca.bundle().to_json()).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    let x509: Vec<_> = keys.iter().filter(|k| k["use"] == "x509-svid").collect();
    let jwt: Vec<_> = keys.iter().filter(|k| k["use"] == "jwt-svid").collect();
    assert_eq!((x509.len(), jwt.len()), (1, 1));
    assert_eq!(x509[0]["kty"], "EC");
    assert_eq!(x509[0]["crv"], "P-256");
    assert_eq!(x509[0]["x5c"].as_array().unwrap().len(), 1);
    assert!(x509[0]["x"].is_string() && x509[0]["y"].is_string());
    assert_eq!(jwt[0]["kid"], ca.jwt_kid());
    assert_eq!(jwt[0]["kty"], "EC");
    assert!(doc["spiffe_sequence"].as_u64().unwrap() >= 1);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let parsed = TrustBundle::parse(
        "example.org".parse().unwrap(),
        ca.bundle().to_json().as_bytes(),
    )
    .unwrap();
    assert_eq!(&parsed, ca.bundle());
}

#[test]
fn bundle_parse_is_strict_and_names_the_field() {
    let ca = new_ca("example.org");
    let td: TrustDomain = "example.org".parse().unwrap();
    let good: Value = serde_json::from_str(&ca.bundle().to_json()).unwrap();
    let err = |doc: &Value| {
        TrustBundle::parse(td.clone(), doc.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    };
    let xi = good["keys"]
        .as_array()
        .unwrap()
        .iter()
        .position(|k| k["use"] == "x509-svid")
        .unwrap();
    let ji = good["keys"]
        .as_array()
        .unwrap()
        .iter()
        .position(|k| k["use"] == "jwt-svid")
        .unwrap();

    assert!(err(&json!({})).contains("`keys`"));
    assert!(err(&json!({"keys": 3})).contains("`keys`"));
    let mut d = good.clone();
    d["spiffe_sequence"] = json!(-1);
    assert!(err(&d).contains("spiffe_sequence"));
    let mut d = good.clone();
    d["keys"][xi].as_object_mut().unwrap().remove("use");
    assert!(err(&d).contains(&format!("keys[{xi}].use")));
    let mut d = good.clone();
    let c = d["keys"][xi]["x5c"][0].clone();
    d["keys"][xi]["x5c"] = json!([c.clone(), c]);
    assert!(err(&d).contains(&format!("keys[{xi}].x5c")));
    let mut d = good.clone();
    d["keys"][xi]["x5c"] = json!(["not base64!"]);
    assert!(err(&d).contains(&format!("keys[{xi}].x5c[0]")));
    // The JWK key must be the certificate's.
    let mut d = good.clone();
    d["keys"][xi]["x"] = d["keys"][ji]["x"].clone();
    d["keys"][xi]["y"] = d["keys"][ji]["y"].clone();
    assert!(err(&d).contains("differs"));
    let mut d = good.clone();
    d["keys"][ji].as_object_mut().unwrap().remove("kid");
    assert!(err(&d).contains(&format!("keys[{ji}].kid")));
    let mut d = good.clone();
    d["keys"][ji]["crv"] = "P-999".into();
    assert!(err(&d).contains(&format!("keys[{ji}].crv")));
    let mut d = good.clone();
    d["keys"][ji]["x"] = "AAAA".into();
    assert!(err(&d).contains(&format!("keys[{ji}].x")));
    // Duplicate kid.
    let mut d = good.clone();
    let k = d["keys"][ji].clone();
    d["keys"].as_array_mut().unwrap().push(k);
    assert!(err(&d).contains("duplicate kid"));
    // Unknown use is skipped.
    let mut d = good.clone();
    d["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"use": "future", "kty": "EC"}));
    TrustBundle::parse(td.clone(), d.to_string().as_bytes()).unwrap();
    // Size limit and non-JSON.
    let big = vec![b' '; 2 * 1024 * 1024];
    assert!(matches!(
        TrustBundle::parse(td.clone(), &big),
        Err(BundleError::TooLarge(_))
    ));
    assert!(matches!(
        TrustBundle::parse(td.clone(), b"{"),
        Err(BundleError::Json(_))
    ));
}

#[test]
fn federation_import_validates_domain_and_refuses_rollback() {
    let home = new_ca("example.org");
    let partner = new_ca("partner.org");
    let partner_td: TrustDomain = "partner.org".parse().unwrap();
    let mut bundles = set(&[&home]);
    assert!(bundles
        .import(&partner_td, partner.bundle().to_json().as_bytes())
        .unwrap());
    assert!(
        !bundles
            .import(&partner_td, partner.bundle().to_json().as_bytes())
            .unwrap(),
        "unchanged"
    );
    // Now partner JWT-SVIDs validate here.
    let jwt = partner
        .mint_jwt_svid(&id("spiffe://partner.org/x"), &["db".into()], None, t(NOW))
        .unwrap();
    validate_jwt_svid(&jwt.token, &bundles, "db", t(NOW)).unwrap();
    // A bundle whose roots name another trust domain is refused for partner.org.
    let err = bundles
        .import(&partner_td, home.bundle().to_json().as_bytes())
        .unwrap_err();
    assert!(matches!(err, BundleError::TrustDomain { .. }), "{err}");
    // A lower sequence is a rollback.
    let mut doc: Value = serde_json::from_str(&partner.bundle().to_json()).unwrap();
    doc["spiffe_sequence"] = json!(0);
    assert!(matches!(
        bundles.import(&partner_td, doc.to_string().as_bytes()),
        Err(BundleError::Rollback { .. })
    ));
    // Empty bundle.
    assert!(bundles.import(&partner_td, br#"{"keys":[]}"#).is_err());
}
