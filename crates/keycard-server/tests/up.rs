//! `keycard up` end to end, in process: the API with its credentials and
//! roles, registration through it, the SVID reaching a real SPIFFE client
//! (the `spiffe` crate) over the agent's socket, deletion stopping it at
//! once, and a restart keeping every piece of state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use http::Method;
use keycard_server::https::ApiClient;
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::json;

const T: Duration = Duration::from_secs(15);

fn config(dir: &Path) -> UpConfig {
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some("up.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        agent_socket: Some(dir.join("agent.sock")),
        no_admission: true,
        ..Overrides::default()
    };
    UpConfig::parse("", "test", &o).unwrap()
}

fn my_uid() -> u32 {
    // The test process's own uid, as the kernel reports it for its files.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

async fn fetch_id(socket: &str) -> Result<String, String> {
    let client = tokio::time::timeout(
        T,
        spiffe::WorkloadApiClient::connect_to(format!("unix://{socket}")),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let svid = tokio::time::timeout(T, client.fetch_x509_svid())
        .await
        .map_err(|_| "fetch timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(svid.spiffe_id().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_registers_serves_revokes_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kc");
    let up = keycard_server::start(config(&dir)).await.unwrap();
    let token = up
        .new_admin_token
        .clone()
        .expect("first start makes a token");

    // Secrets are not readable by others.
    use std::os::unix::fs::PermissionsExt;
    for f in ["admin.token", "keycard.db"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{f} has mode {mode:o}");
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "data dir mode {mode:o}");

    // The CLI path: everything from the data directory.
    let c = connect_data_dir(&dir).unwrap();
    let api = c.client;
    assert_eq!(c.endpoints.trust_domain, "up.test");

    // No credential, a wrong one, a weak one.
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
    let anon = ApiClient::new(addr, "localhost", &bundle, None).unwrap();
    assert_eq!(
        anon.call(Method::GET, "/v1/entries", None)
            .await
            .unwrap()
            .status,
        401
    );
    let wrong = ApiClient::new(addr, "localhost", &bundle, Some("kc_nope".into())).unwrap();
    assert_eq!(
        wrong
            .call(Method::GET, "/v1/entries", None)
            .await
            .unwrap()
            .status,
        401
    );
    let r = api
        .call(
            Method::POST,
            "/v1/api-tokens",
            Some(&json!({"name": "ci", "role": "auditor"})),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let auditor = ApiClient::new(
        addr,
        "localhost",
        &bundle,
        Some(r.body["token"].as_str().unwrap().to_string()),
    )
    .unwrap();
    assert_eq!(
        auditor
            .call(Method::GET, "/v1/entries", None)
            .await
            .unwrap()
            .status,
        200
    );
    let denied = auditor
        .call(
            Method::POST,
            "/v1/entries",
            Some(&json!({"spiffe_id": "spiffe://up.test/x", "selectors": ["unix:uid:1"]})),
        )
        .await
        .unwrap();
    assert_eq!(denied.status, 403, "{:?}", denied.body);
    // Public: health, OpenAPI, bundle.
    assert_eq!(
        anon.call(Method::GET, "/healthz", None)
            .await
            .unwrap()
            .status,
        200
    );
    let oa = anon.call(Method::GET, "/openapi.json", None).await.unwrap();
    assert_eq!(oa.body["openapi"], "3.1.0");
    let b = anon.call(Method::GET, "/bundle", None).await.unwrap();
    assert!(b.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["use"] == "x509-svid"));

    // Bad input: named field, 400.
    let bad = api
        .call(
            Method::POST,
            "/v1/entries",
            Some(&json!({"spiffe_id": "spiffe://other.td/x", "selectors": ["unix:uid:1"]})),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let bad = api
        .call(
            Method::POST,
            "/v1/entries",
            Some(&json!({"spiffe_id": "spiffe://up.test/x", "selectors": ["unix:uid:one"]})),
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["error"].as_str().unwrap().contains("selectors"),
        "{:?}",
        bad.body
    );

    // Before registration, this process is entitled to nothing.
    let socket = c.endpoints.socket.clone();
    assert!(fetch_id(&socket).await.is_err());

    // Register this process by uid; the agent serves its SVID.
    let created = api
        .call(
            Method::POST,
            "/v1/entries",
            Some(&json!({"spiffe_id": "spiffe://up.test/me", "selectors": [format!("unix:uid:{}", my_uid())]})),
        )
        .await
        .unwrap();
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let mut got = Err(String::new());
    for _ in 0..50 {
        got = fetch_id(&socket).await;
        if got.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.unwrap(), "spiffe://up.test/me");

    // Metrics: the SVID's and the CA's seconds to expiry, for an auditor.
    assert_eq!(
        anon.call(Method::GET, "/metrics", None)
            .await
            .unwrap()
            .status,
        401
    );
    let m = auditor.call(Method::GET, "/metrics", None).await.unwrap();
    assert_eq!(m.status, 200);
    let text = m.body.as_str().unwrap().to_string();
    let svid_line = text
        .lines()
        .find(|l| {
            l.starts_with("keycard_certificate_expiry_seconds") && l.contains("spiffe://up.test/me")
        })
        .unwrap_or_else(|| panic!("no SVID expiry in {text}"));
    let secs: f64 = svid_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((3000.0..=3600.0).contains(&secs), "{svid_line}");
    assert!(text.contains("kind=\"intermediate\""), "{text}");
    assert!(text.contains("keycard_entries 1"), "{text}");

    // Delete: no more SVID, and the revocation is in the feed.
    let del = api
        .call(Method::DELETE, &format!("/v1/entries/{id}"), None)
        .await
        .unwrap();
    assert_eq!(del.status, 200);
    let mut gone = false;
    for _ in 0..50 {
        if fetch_id(&socket).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a deleted entry's SVID is no longer served");
    let feed = api
        .call(Method::GET, "/v1/revocations?since=0", None)
        .await
        .unwrap();
    let revs = feed.body["revocations"].as_array().unwrap();
    assert!(revs
        .iter()
        .any(|r| r["kind"] == "entry" && r["subject"] == id.as_str()));

    // Keep one entry across the restart.
    let kept = api
        .call(
            Method::POST,
            "/v1/entries",
            Some(&json!({"spiffe_id": "spiffe://up.test/kept", "selectors": [format!("unix:uid:{}", my_uid())]})),
        )
        .await
        .unwrap();
    assert_eq!(kept.status, 201);
    let bundle_before = std::fs::read(dir.join("bundle.pem")).unwrap();
    up.shutdown(Duration::from_secs(5)).await;

    // Every administrative change is in the decision log, with its actor,
    // and the log verifies.
    {
        use keycard_store::{AuditStore, EntryFilter};
        let log = keycard_store::SqliteStore::open(dir.join("audit.db")).unwrap();
        let recs = log
            .query(&EntryFilter {
                point: Some("control_plane".into()),
                ..EntryFilter::default()
            })
            .unwrap();
        let actions: Vec<String> = recs
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
                format!(
                    "{} {}",
                    v["action"].as_str().unwrap(),
                    v["actor"].as_str().unwrap()
                )
            })
            .collect();
        for want in [
            "api_token.create keycard up",
            "api_token.create token:bootstrap-admin",
            "entry.create token:bootstrap-admin",
            "entry.delete token:bootstrap-admin",
        ] {
            assert!(
                actions.iter().any(|a| a == want),
                "{want} missing from {actions:?}"
            );
        }
        // The refused (403) attempt by the auditor changed nothing and is
        // not an administrative change.
        assert!(!actions.iter().any(|a| a.ends_with("token:ci")));
        let verifier = std::fs::read_to_string(dir.join("audit.pub")).unwrap();
        let verifier: keycard_audit::Ed25519Verifier = verifier.trim().parse().unwrap();
        let mut set = keycard_audit::VerifierSet::new();
        set.add(verifier).unwrap();
        let report = keycard_audit::verify(&log, "keycard/decisions", &set, None).unwrap();
        assert_eq!(report.records_checked, report.size);
        assert!(
            report.checkpoints_checked >= 1,
            "shutdown signs a checkpoint"
        );
    }

    // Restart: same root, same token, same entries; no new admin token.
    let up = keycard_server::start(config(&dir)).await.unwrap();
    assert!(up.new_admin_token.is_none());
    assert_eq!(
        std::fs::read(dir.join("bundle.pem")).unwrap(),
        bundle_before
    );
    let api = connect_data_dir(&dir).unwrap().client;
    let list = api.call(Method::GET, "/v1/entries", None).await.unwrap();
    let entries = list.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["spiffe_id"], "spiffe://up.test/kept");
    assert_eq!(
        std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim(),
        token
    );
    let mut got = Err(String::new());
    for _ in 0..50 {
        got = fetch_id(&up.endpoints.socket).await;
        if got.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.unwrap(), "spiffe://up.test/kept");
    up.shutdown(Duration::from_secs(5)).await;
}
