//! Posture signals and just-in-time grants through the API: a grant does
//! nothing until someone else approves it, raises the role while active,
//! ends by itself, and every step is in the decision log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use keycard_server::https::ApiClient;
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_need_another_approver_raise_roles_and_expire_and_posture_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kc");
    let o = Overrides {
        data_dir: Some(dir.clone()),
        trust_domain: Some("ctl.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        no_admission: true,
        ..Overrides::default()
    };
    let up = keycard_server::start(UpConfig::parse("", "test", &o).unwrap())
        .await
        .unwrap();
    let c = connect_data_dir(&dir).unwrap();
    let admin = c.client;
    let addr = c
        .endpoints
        .api
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let bundle: Vec<_> = pem::parse_many(std::fs::read(dir.join("bundle.pem")).unwrap())
        .unwrap()
        .into_iter()
        .map(|p| rustls_pki_types::CertificateDer::from(p.into_contents()))
        .collect();
    let t = admin
        .call(
            Method::POST,
            "/v1/api-tokens",
            Some(&json!({"name": "ci", "role": "auditor"})),
        )
        .await
        .unwrap();
    let ci = ApiClient::new(
        addr,
        "localhost",
        &bundle,
        Some(t.body["token"].as_str().unwrap().into()),
    )
    .unwrap();
    let entry = json!({"spiffe_id": "spiffe://ctl.test/job", "selectors": ["unix:uid:4242"]});

    // The auditor cannot write, and asks for a one-minute operator grant.
    assert_eq!(
        ci.call(Method::POST, "/v1/entries", Some(&entry))
            .await
            .unwrap()
            .status,
        403
    );
    let g = ci
        .call(
            Method::POST,
            "/v1/grants",
            Some(&json!({"kind": "role", "role": "operator", "subject": "token:ci", "reason": "incident 42", "duration_secs": 60})),
        )
        .await
        .unwrap();
    assert_eq!(g.status, 201, "{:?}", g.body);
    assert_eq!(g.body["status"], "pending");
    let id = g.body["id"].as_str().unwrap().to_string();
    // Pending: still no write. Self-approval: refused.
    assert_eq!(
        ci.call(Method::POST, "/v1/entries", Some(&entry))
            .await
            .unwrap()
            .status,
        403
    );
    let own = ci
        .call(Method::POST, &format!("/v1/grants/{id}/approve"), None)
        .await
        .unwrap();
    assert_eq!(own.status, 403, "{:?}", own.body);
    // A grant without a reason is refused.
    let no_reason = ci
        .call(Method::POST, "/v1/grants", Some(&json!({"kind": "role", "role": "admin", "subject": "token:ci", "reason": " ", "duration_secs": 60})))
        .await
        .unwrap();
    assert_eq!(no_reason.status, 400);

    // Approved by the admin: the role holds while the grant does.
    let ok = admin
        .call(Method::POST, &format!("/v1/grants/{id}/approve"), None)
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["status"], "active");
    assert_eq!(
        ci.call(Method::POST, "/v1/entries", Some(&entry))
            .await
            .unwrap()
            .status,
        201
    );

    // It ends by itself (the sweep, run here as at its expiry).
    let later = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 61;
    assert_eq!(
        keycard_server::control::expire_grants(&up.state, later).unwrap(),
        1
    );
    let list = admin.call(Method::GET, "/v1/grants", None).await.unwrap();
    assert_eq!(list.body["grants"][0]["status"], "expired");
    let again = json!({"spiffe_id": "spiffe://ctl.test/job2", "selectors": ["unix:uid:4243"]});
    assert_eq!(
        ci.call(Method::POST, "/v1/entries", Some(&again))
            .await
            .unwrap()
            .status,
        403
    );

    // Posture: set with an expiry, validated, listed, cleared.
    let bad = admin
        .call(Method::POST, "/v1/posture", Some(&json!({"subject": "spiffe://ctl.test/job", "attributes": {"risk": {"nested": 1}}, "ttl_secs": 60})))
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"]
        .as_str()
        .unwrap()
        .contains("attributes.risk"));
    let set = admin
        .call(
            Method::POST,
            "/v1/posture",
            Some(&json!({"subject": "spiffe://ctl.test/job", "attributes": {"device_health": "ok", "risk": 0.3}, "ttl_secs": 60})),
        )
        .await
        .unwrap();
    assert_eq!(set.status, 201, "{:?}", set.body);
    let got = ci.call(Method::GET, "/v1/posture", None).await.unwrap();
    assert_eq!(got.body["posture"][0]["attributes"]["risk"], 0.3);
    let cleared = admin
        .call(
            Method::POST,
            "/v1/posture/clear",
            Some(&json!({"subject": "spiffe://ctl.test/job"})),
        )
        .await
        .unwrap();
    assert_eq!(cleared.body["cleared"], true);
    assert_eq!(
        ci.call(Method::GET, "/v1/posture", None)
            .await
            .unwrap()
            .body["posture"],
        json!([])
    );

    // The decision log answers through the API too.
    let d = ci
        .call(
            Method::GET,
            "/v1/decisions?point=control_plane&limit=500",
            None,
        )
        .await
        .unwrap();
    assert_eq!(d.status, 200, "{:?}", d.body);
    let recs = d.body["decisions"].as_array().unwrap();
    assert!(recs
        .iter()
        .any(|r| r["action"] == "grant.approve" && r["actor"] == "token:bootstrap-admin"));
    let bad = ci
        .call(Method::GET, "/v1/decisions?colour=red", None)
        .await
        .unwrap();
    assert_eq!(bad.status, 400);

    up.shutdown(Duration::from_secs(5)).await;

    // Request, approval and expiry are on the record.
    use keycard_store::{AuditStore, EntryFilter};
    let log = keycard_store::SqliteStore::open(dir.join("audit.db")).unwrap();
    let actions: Vec<String> = log
        .query(&EntryFilter::default())
        .unwrap()
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
            v["action"].as_str().unwrap().to_string()
        })
        .collect();
    for want in [
        "grant.request",
        "grant.approve",
        "grant.expire",
        "posture.set",
        "posture.clear",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing: {actions:?}"
        );
    }
}

/// A redaction persisted with the data directory's decision log (as
/// `keycard audit append --mask` leaves it) is applied by the server too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_applies_the_logs_persisted_redaction() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kc");
    let r = keycard_audit::Redaction::new()
        .rule("change.attributes", keycard_audit::RedactAction::Mask)
        .unwrap();
    drop(keycard_server::decisions::open_with(&dir, None, Some((r, None))).unwrap());
    let o = Overrides {
        data_dir: Some(dir.clone()),
        trust_domain: Some("red.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        no_admission: true,
        ..Overrides::default()
    };
    let up = keycard_server::start(UpConfig::parse("", "test", &o).unwrap())
        .await
        .unwrap();
    let admin = connect_data_dir(&dir).unwrap().client;
    let set = admin
        .call(
            Method::POST,
            "/v1/posture",
            Some(&json!({"subject": "spiffe://red.test/a", "attributes": {"location": "Lisbon"}, "ttl_secs": 60})),
        )
        .await
        .unwrap();
    assert_eq!(set.status, 201);
    up.shutdown(Duration::from_secs(5)).await;
    use keycard_store::{AuditStore, EntryFilter};
    let log = keycard_store::SqliteStore::open(dir.join("audit.db")).unwrap();
    let stored: Vec<String> = log
        .query(&EntryFilter::default())
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.data.clone()).unwrap())
        .collect();
    let posture = stored.iter().find(|r| r.contains("posture.set")).unwrap();
    assert!(!posture.contains("Lisbon"), "{posture}");
    assert!(posture.contains("****"), "{posture}");
}
