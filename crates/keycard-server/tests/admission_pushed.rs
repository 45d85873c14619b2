//! `keycard up`'s webhook follows what is pushed through the API: a Rego
//! policy denies within a bounded wait, an exception (and then an approved
//! exception grant, until it expires) lets the object in, a pushed set that
//! does not compile leaves the last good policies in force, and deleting
//! the policy lets the object in again. A Gatekeeper template that reads
//! the request's userInfo and operation decides on the real request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Method;
use keycard_server::https::ApiClient;
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::{json, Value};

const POLICY: &str = r#"# METADATA
# title: Nothing labelled deny-me
# custom:
#   id: team-deny-me
#   severity: high
package team.denyme

import rego.v1

deny contains {"msg": msg} if {
	input.metadata.labels["keycard-test"] == "deny-me"
	msg := sprintf("%s is labelled deny-me", [input.metadata.name])
}
"#;

const TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sonlydeployer
spec:
  crd:
    spec:
      names:
        kind: K8sOnlyDeployer
      validation:
        openAPIV3Schema:
          type: object
          properties:
            user: {type: string}
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package k8sonlydeployer
      violation[{"msg": msg}] {
        input.review.operation == "UPDATE"
        input.review.userInfo.username != input.parameters.user
        msg := sprintf("%v may not update %v", [input.review.userInfo.username, input.review.name])
      }
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sOnlyDeployer
metadata:
  name: only-ci-updates
  annotations:
    keycard.dev/severity: high
spec:
  match:
    kinds:
    - apiGroups: [""]
      kinds: [Pod]
  parameters:
    user: system:serviceaccount:ci:deployer
"#;

/// A pod the default packs admit, labelled for the pushed policy.
fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ok", "namespace": "prod", "labels": {
            "owner": "team-a", "data-classification": "internal", "keycard-test": "deny-me"
        }},
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
    })
}

fn review(uid: &str, operation: &str, user: &str) -> Value {
    let mut request = json!({
        "uid": uid,
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "ok",
        "namespace": "prod",
        "operation": operation,
        "userInfo": {"username": user, "uid": "u-1", "groups": ["system:authenticated"]},
        "object": pod(),
        "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": format!("{}Options", if operation == "CREATE" { "Create" } else { "Update" })}
    });
    if operation == "UPDATE" {
        request["oldObject"] = pod();
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

struct Harness {
    webhook: ApiClient,
    admin: ApiClient,
    addr: SocketAddr,
    bundle: Vec<rustls_pki_types::CertificateDer<'static>>,
    n: u32,
}

impl Harness {
    /// One decision: (allowed, status message).
    async fn decide(&mut self, operation: &str, user: &str) -> (bool, String) {
        self.n += 1;
        let r = self
            .webhook
            .call(
                Method::POST,
                "/validate",
                Some(&review(&format!("uid-{}", self.n), operation, user)),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.body);
        let resp = &r.body["response"];
        (
            resp["allowed"].as_bool().unwrap(),
            resp["status"]["message"].as_str().unwrap_or("").to_string(),
        )
    }

    /// Waits (at most 10 s, 50 requests) for the CREATE by alice to be
    /// decided `allowed`; returns the last message.
    async fn until(&mut self, allowed: bool) -> String {
        self.until_op(allowed, "CREATE", "alice").await
    }

    async fn until_op(&mut self, allowed: bool, operation: &str, user: &str) -> String {
        let start = Instant::now();
        let mut last = String::new();
        for _ in 0..50 {
            let (a, msg) = self.decide(operation, user).await;
            if a == allowed {
                return msg;
            }
            last = msg;
            if start.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{operation} by {user} not allowed={allowed} within 10 s; last: {last}");
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.admin.call(method, path, body.as_ref()).await.unwrap();
        assert!(r.status < 300, "{path}: {} {:?}", r.status, r.body);
        r.body
    }
}

async fn start(tmp: &tempfile::TempDir, td: &str) -> (keycard_server::Up, Harness) {
    let dir = tmp.path().join("kc");
    let o = Overrides {
        data_dir: Some(dir.clone()),
        trust_domain: Some(td.into()),
        api_listen: Some("127.0.0.1:0".into()),
        admission_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let up = keycard_server::start(UpConfig::parse("", "test", &o).unwrap())
        .await
        .unwrap();
    let url = up.endpoints.admission.clone().expect("admission enabled");
    let wh_addr = url
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
    let webhook = ApiClient::new(wh_addr, "localhost", &bundle, None).unwrap();
    let c = connect_data_dir(&dir).unwrap();
    let addr = c
        .endpoints
        .api
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let h = Harness {
        webhook,
        admin: c.client,
        addr,
        bundle,
        n: 0,
    };
    (up, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_rego_exceptions_and_grants_reach_the_webhook() {
    let tmp = tempfile::tempdir().unwrap();
    let (up, mut h) = start(&tmp, "pushed.test").await;

    // Nothing pushed yet: the default packs admit the pod.
    assert!(h.decide("CREATE", "alice").await.0);

    // A pushed Rego policy denies it, naming its rule.
    h.api(
        Method::POST,
        "/v1/policies",
        Some(json!({"name": "deny-me", "kind": "rego", "text": POLICY})),
    )
    .await;
    let msg = h.until(false).await;
    assert!(msg.contains("team-deny-me"), "{msg}");
    assert!(msg.contains("ok is labelled deny-me"), "{msg}");

    // An exception lets it in; deleting the exception blocks it again.
    let ex = "exceptions:\n- rule: team-deny-me\n  match: {kind: Pod, namespace: prod, name: ok}\n  owner: team-a@example.com\n  reason: migration\n  expires: 2099-12-31\n";
    h.api(
        Method::POST,
        "/v1/exceptions",
        Some(json!({"name": "migration", "text": ex})),
    )
    .await;
    h.until(true).await;
    h.api(Method::DELETE, "/v1/exceptions/migration", None)
        .await;
    h.until(false).await;

    // An exception grant: nothing while pending, lets the pod in once
    // approved by someone else, and ends when it expires.
    let t = h
        .api(
            Method::POST,
            "/v1/api-tokens",
            Some(json!({"name": "dev", "role": "auditor"})),
        )
        .await;
    let dev = ApiClient::new(
        h.addr,
        "localhost",
        &h.bundle,
        Some(t["token"].as_str().unwrap().into()),
    )
    .unwrap();
    let g = dev
        .call(
            Method::POST,
            "/v1/grants",
            Some(&json!({
                "kind": "exception", "policy": "deny-me", "rule": "team-deny-me",
                "resource": "Pod/prod/*", "subject": "token:dev",
                "reason": "incident 7", "duration_secs": 600
            })),
        )
        .await
        .unwrap();
    assert_eq!(g.status, 201, "{:?}", g.body);
    let id = g.body["id"].as_str().unwrap().to_string();
    // A grant for another namespace, approved, changes nothing for prod.
    let other = dev
        .call(
            Method::POST,
            "/v1/grants",
            Some(&json!({
                "kind": "exception", "policy": "deny-me", "rule": "team-deny-me",
                "resource": "Pod/staging/*", "subject": "token:dev",
                "reason": "incident 8", "duration_secs": 600
            })),
        )
        .await
        .unwrap();
    let other_id = other.body["id"].as_str().unwrap().to_string();
    h.api(
        Method::POST,
        &format!("/v1/grants/{other_id}/approve"),
        None,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        !h.decide("CREATE", "alice").await.0,
        "pending or unrelated grants do not except"
    );
    h.api(Method::POST, &format!("/v1/grants/{id}/approve"), None)
        .await;
    h.until(true).await;
    let later = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 601;
    assert_eq!(
        keycard_server::control::expire_grants(&up.state, later).unwrap(),
        2
    );
    h.until(false).await;

    // A stored set that does not compile (written past the API's
    // validation): logged, and the last good policies stay in force.
    {
        use keycard_store::PutMode;
        let doc = json!({
            "name": "broken", "kind": "rego", "text": "package broken\ndeny contains x if {\n",
            "digest": "", "updated_by": "test", "updated_at": 0
        });
        up.state
            .store()
            .put_document(
                "policy",
                "broken",
                &serde_json::to_vec(&doc).unwrap(),
                PutMode::Create,
            )
            .unwrap();
        up.state.changed();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (allowed, msg) = h.decide("CREATE", "alice").await;
    assert!(!allowed && msg.contains("team-deny-me"), "{msg}");
    h.api(Method::DELETE, "/v1/policies/broken", None).await;

    // Deleting the policy lets the pod in.
    h.api(Method::DELETE, "/v1/policies/deny-me", None).await;
    h.until(true).await;

    up.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_gatekeeper_template_reads_the_requests_user_and_operation() {
    let tmp = tempfile::tempdir().unwrap();
    let (up, mut h) = start(&tmp, "gk.test").await;
    h.api(
        Method::POST,
        "/v1/policies",
        Some(json!({"name": "only-deployer", "kind": "gatekeeper", "text": TEMPLATE})),
    )
    .await;
    // alice's UPDATE is denied by the template, naming her.
    let msg = h.until_op(false, "UPDATE", "alice").await;
    assert!(msg.contains("alice may not update ok"), "{msg}");
    assert!(msg.contains("K8sOnlyDeployer/only-ci-updates"), "{msg}");
    // The deployer's UPDATE and alice's CREATE are allowed.
    assert!(
        h.decide("UPDATE", "system:serviceaccount:ci:deployer")
            .await
            .0
    );
    assert!(h.decide("CREATE", "alice").await.0);
    up.shutdown(Duration::from_secs(5)).await;
}
