//! `keycard up` runs the admission webhook: a privileged pod is denied
//! with the rule named, a hardened one admitted, and both decisions land
//! in the data directory's decision log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use http::Method;
use keycard_server::https::ApiClient;
use keycard_server::{Overrides, UpConfig};
use serde_json::{json, Value};

fn review(uid: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": "prod",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_the_admission_webhook_and_logs_its_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kc");
    let o = Overrides {
        data_dir: Some(dir.clone()),
        trust_domain: Some("adm.test".into()),
        api_listen: Some("127.0.0.1:0".into()),
        admission_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let up = keycard_server::start(UpConfig::parse("", "test", &o).unwrap())
        .await
        .unwrap();
    let url = up.endpoints.admission.clone().expect("admission enabled");
    let addr = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let bundle: Vec<_> = pem::parse_many(std::fs::read(dir.join("bundle.pem")).unwrap())
        .unwrap()
        .into_iter()
        .map(|p| rustls_pki_types::CertificateDer::from(p.into_contents()))
        .collect();
    let client = ApiClient::new(addr, "localhost", &bundle, None).unwrap();

    let bad = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "root", "namespace": "prod"},
        "spec": {"containers": [{"name": "c", "image": "nginx:latest", "securityContext": {"privileged": true}}]}
    });
    let r = client
        .call(Method::POST, "/validate", Some(&review("uid-bad", bad)))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    let resp = &r.body["response"];
    assert_eq!(resp["uid"], "uid-bad");
    assert_eq!(resp["allowed"], false);
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(msg.contains("privileged"), "{msg}");

    let good = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ok", "namespace": "prod", "labels": {"owner": "team-a", "data-classification": "internal"}},
        "spec": {
            "automountServiceAccountToken": false,
            "serviceAccountName": "ok",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c",
                "image": "registry.example/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                "securityContext": {
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}
                }
            }]
        }
    });
    let r = client
        .call(Method::POST, "/validate", Some(&review("uid-good", good)))
        .await
        .unwrap();
    assert_eq!(r.body["response"]["uid"], "uid-good");
    // Blocking findings deny; anything else (e.g. the registry allow-list
    // with no registries configured) may warn but must not deny a hardened pod.
    let allowed = r.body["response"]["allowed"].as_bool().unwrap();
    assert!(allowed, "{:?}", r.body);

    up.shutdown(Duration::from_secs(5)).await;
    use keycard_store::{AuditStore, EntryFilter};
    let log = keycard_store::SqliteStore::open(dir.join("audit.db")).unwrap();
    let recs = log
        .query(&EntryFilter {
            point: Some("admission".into()),
            ..EntryFilter::default()
        })
        .unwrap();
    let ids: Vec<String> = recs
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.data).unwrap();
            format!(
                "{} {}",
                v["id"].as_str().unwrap(),
                v["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert!(ids.contains(&"uid-bad deny".to_string()), "{ids:?}");
    assert!(ids.contains(&"uid-good allow".to_string()), "{ids:?}");
}
