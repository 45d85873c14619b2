//! The webhook's decisions, through its library API: allowed, denied with
//! the findings named, warnings, audit-only, exceptions, DELETE, bad
//! requests, and every decision in the decision log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod admission_fixtures;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use admission_fixtures::*;
use keycard_audit::{DecisionLog, Ed25519Signer, Outcome, VerifierSet};
use keycard_core::Severity;
use keycard_server::admission::{
    AdmissionPolicy, DecisionSink, MemorySink, PolicyOptions, Recorder, Reply, Webhook,
    WebhookConfig, MAX_WARNING_CHARS,
};
use serde_json::{json, Value};

fn policy(opts: PolicyOptions) -> AdmissionPolicy {
    AdmissionPolicy::load(&opts).unwrap()
}

fn webhook(config: WebhookConfig, opts: PolicyOptions) -> (Webhook, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    let recorder = Recorder::spawn(sink.clone(), 64, 16);
    (Webhook::new(policy(opts), config, Some(recorder)), sink)
}

async fn send(w: &Webhook, review: &Value) -> Reply {
    let body = serde_json::to_vec(review).unwrap();
    tokio::time::timeout(Duration::from_secs(30), w.review(&body))
        .await
        .expect("the webhook answers in bounded time")
}

fn response(r: &Reply) -> &Value {
    &r.body["response"]
}

#[tokio::test]
async fn compliant_deployment_is_allowed_without_warnings() {
    let (w, sink) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let r = send(
        &w,
        &review("uid-ok", "CREATE", "payments", &compliant_deployment("api")),
    )
    .await;
    assert_eq!(r.http_status, 200);
    assert_eq!(r.body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(r.body["kind"], "AdmissionReview");
    assert_eq!(response(&r)["uid"], "uid-ok");
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
    assert!(response(&r).get("warnings").is_none(), "{}", r.body);
    let recs = sink.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Allow);
    assert_eq!(recs[0].id, "uid-ok");
    assert_eq!(recs[0].resource, "deployments.apps/payments/api");
    assert_eq!(recs[0].subject, "system:serviceaccount:ci:deployer");
    assert_eq!(recs[0].action, "create");
    assert!(recs[0].input_digest.starts_with("sha256:"));
}

#[tokio::test]
async fn privileged_deployment_is_denied_with_its_findings() {
    let (w, sink) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let r = send(
        &w,
        &review(
            "uid-bad",
            "CREATE",
            "payments",
            &privileged_deployment("api"),
        ),
    )
    .await;
    let resp = response(&r);
    assert_eq!(resp["allowed"], false, "{}", r.body);
    assert_eq!(resp["status"]["code"], 403);
    let msg = resp["status"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("keycard denied Deployment payments/api: "),
        "{msg}"
    );
    assert!(msg.contains("[zt-privileged] (critical)"), "{msg}");
    assert!(msg.contains("[zt-image-digest] (high)"), "{msg}");
    assert!(msg.contains("keycard audit why uid-bad"), "{msg}");
    let recs = sink.records();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Deny);
    assert!(!recs[0].rule.is_empty());
    let findings = recs[0].attributes.as_ref().unwrap()["findings"]
        .as_array()
        .unwrap()
        .clone();
    assert!(findings
        .iter()
        .any(|f| f["rule"] == "zt-privileged" && f["blocking"] == true));
}

#[tokio::test]
async fn medium_findings_warn_within_kubernetes_limits() {
    let (w, sink) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let r = send(
        &w,
        &review(
            "uid-warn",
            "CREATE",
            "payments",
            &unlabelled_deployment("api"),
        ),
    )
    .await;
    let resp = response(&r);
    assert_eq!(resp["allowed"], true, "{}", r.body);
    let warnings: Vec<&str> = resp["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("[zt-required-labels]")),
        "{warnings:?}"
    );
    assert!(warnings
        .iter()
        .all(|w| w.chars().count() <= MAX_WARNING_CHARS));
    assert_eq!(sink.records()[0].outcome, Outcome::Allow);
}

#[tokio::test]
async fn blocking_severity_is_configurable() {
    // With critical as the bar, the :latest image (high) only warns; the
    // privileged container (critical) still denies.
    let cfg = WebhookConfig {
        fail_on: Some(Severity::Critical),
        ..WebhookConfig::default()
    };
    let (w, _) = webhook(cfg, PolicyOptions::default());
    let r = send(
        &w,
        &review("u1", "CREATE", "p", &privileged_deployment("api")),
    )
    .await;
    let msg = response(&r)["status"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("zt-privileged") && !msg.contains("zt-image-digest"),
        "{msg}"
    );
    let warnings = response(&r)["warnings"].to_string();
    assert!(warnings.contains("[zt-image-digest]"), "{warnings}");
    // Medium as the bar: the missing label denies.
    let cfg = WebhookConfig {
        fail_on: Some(Severity::Medium),
        ..WebhookConfig::default()
    };
    let (w, _) = webhook(cfg, PolicyOptions::default());
    let r = send(
        &w,
        &review("u2", "CREATE", "p", &unlabelled_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false, "{}", r.body);
}

#[tokio::test]
async fn audit_only_allows_and_records_what_it_would_deny() {
    let cfg = WebhookConfig {
        dry_run: true,
        ..WebhookConfig::default()
    };
    let (w, sink) = webhook(cfg, PolicyOptions::default());
    let r = send(
        &w,
        &review(
            "uid-dry",
            "CREATE",
            "payments",
            &privileged_deployment("api"),
        ),
    )
    .await;
    let resp = response(&r);
    assert_eq!(resp["allowed"], true, "{}", r.body);
    assert!(resp.get("status").is_none());
    let warnings = resp["warnings"].to_string();
    assert!(
        warnings.contains("keycard audit-only, would deny: [zt-privileged]"),
        "{warnings}"
    );
    let recs = sink.records();
    assert_eq!(recs[0].outcome, Outcome::Audit);
    assert_eq!(recs[0].rule, r.decision.as_ref().unwrap().blocking[0].rule);
    assert_eq!(recs[0].attributes.as_ref().unwrap()["auditOnly"], true);
}

#[tokio::test]
async fn excepted_findings_do_not_deny() {
    let dir = tempfile::tempdir().unwrap();
    let ex = dir.path().join("exceptions.yaml");
    std::fs::write(
        &ex,
        "exceptions:\n  - rule: zt-privileged\n    match: {kind: Deployment, namespace: payments, name: api}\n    owner: team-payments@example.com\n    reason: vendor agent needs it until 4.2\n    expires: 2099-12-31\n  - rule: pss-baseline-privileged\n    match: {kind: Deployment, namespace: payments, name: api}\n    owner: team-payments@example.com\n    reason: vendor agent needs it until 4.2\n    expires: 2099-12-31\n  - rule: zt-image-digest\n    match: {labels: {app: api}}\n    owner: team-payments@example.com\n    reason: digest pinned by the release pipeline\n    expires: 2099-12-31\n",
    )
    .unwrap();
    let opts = PolicyOptions {
        exceptions: Some(ex),
        ..PolicyOptions::default()
    };
    let (w, sink) = webhook(WebhookConfig::default(), opts);
    let r = send(
        &w,
        &review(
            "uid-ex",
            "CREATE",
            "payments",
            &privileged_deployment("api"),
        ),
    )
    .await;
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
    // The same object elsewhere is not covered by the first exception.
    let r2 = send(
        &w,
        &review("uid-ex2", "CREATE", "other", &privileged_deployment("api")),
    )
    .await;
    assert_eq!(response(&r2)["allowed"], false, "{}", r2.body);
    let msg = response(&r2)["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("zt-privileged") && !msg.contains("zt-image-digest"),
        "{msg}"
    );
    let recs = sink.records();
    let f = &recs[0].attributes.as_ref().unwrap()["findings"];
    assert!(
        f.as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule"] == "zt-privileged"
                && f["exception"]["owner"] == "team-payments@example.com"),
        "{f}"
    );
}

#[tokio::test]
async fn expired_exceptions_no_longer_apply() {
    let dir = tempfile::tempdir().unwrap();
    let ex = dir.path().join("exceptions.yaml");
    std::fs::write(
        &ex,
        "exceptions:\n  - rule: \"*\"\n    owner: someone@example.com\n    expires: 2020-01-01\n",
    )
    .unwrap();
    let opts = PolicyOptions {
        exceptions: Some(ex),
        ..PolicyOptions::default()
    };
    let (w, _) = webhook(WebhookConfig::default(), opts);
    let r = send(
        &w,
        &review("u", "CREATE", "p", &privileged_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false);
}

#[tokio::test]
async fn delete_is_allowed_and_recorded_without_evaluation() {
    let (w, sink) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let r = send(
        &w,
        &review(
            "uid-del",
            "DELETE",
            "payments",
            &privileged_deployment("api"),
        ),
    )
    .await;
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
    let recs = sink.records();
    assert_eq!(recs[0].action, "delete");
    assert_eq!(recs[0].outcome, Outcome::Allow);
    assert!(
        recs[0].reason.starts_with("DELETE is not evaluated"),
        "{}",
        recs[0].reason
    );
}

#[tokio::test]
async fn update_of_an_object_being_deleted_is_not_blocked() {
    let (w, _) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let mut d = privileged_deployment("api");
    d["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let r = send(&w, &review("u", "UPDATE", "p", &d)).await;
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
    // An ordinary update of the same object is judged.
    let r = send(
        &w,
        &review("u2", "UPDATE", "p", &privileged_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false, "{}", r.body);
}

#[tokio::test]
async fn status_subresource_is_skipped_but_ephemeral_containers_are_judged() {
    let (w, _) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let mut rv = review("u", "UPDATE", "p", &privileged_deployment("api"));
    rv["request"]["subResource"] = json!("status");
    assert_eq!(response(&send(&w, &rv).await)["allowed"], true);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"owner": "x", "data-classification": "internal"}},
        "spec": {"containers": [], "ephemeralContainers": [{"name": "debug", "image": "busybox", "securityContext": {"privileged": true}}]}
    });
    let mut rv = review("u2", "UPDATE", "p", &pod);
    rv["request"]["subResource"] = json!("ephemeralcontainers");
    let r = send(&w, &rv).await;
    assert_eq!(response(&r)["allowed"], false, "{}", r.body);
}

#[tokio::test]
async fn dry_run_requests_are_judged_and_marked() {
    let (w, sink) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let mut rv = review("u", "CREATE", "p", &privileged_deployment("api"));
    rv["request"]["dryRun"] = json!(true);
    let r = send(&w, &rv).await;
    assert_eq!(response(&r)["allowed"], false);
    assert_eq!(
        sink.records()[0].attributes.as_ref().unwrap()["dryRunRequest"],
        true
    );
}

#[tokio::test]
async fn namespaces_get_advisory_warnings_not_denials() {
    // A Namespace is created before its NetworkPolicies can exist: the
    // cross-object default-deny rule warns at admission.
    let (w, _) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}});
    let mut rv = review("u", "CREATE", "", &ns);
    rv["request"]["namespace"] = Value::Null;
    let r = send(&w, &rv).await;
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
    assert!(
        response(&r)["warnings"]
            .to_string()
            .contains("zt-default-deny-ingress"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn missing_fields_get_clear_answers() {
    let (w, sink) = webhook(WebhookConfig::default(), PolicyOptions::default());
    // With a uid: an AdmissionReview denial naming the field.
    let mut rv = review("uid-x", "CREATE", "p", &compliant_deployment("api"));
    rv["request"].as_object_mut().unwrap().remove("object");
    let r = send(&w, &rv).await;
    assert_eq!(r.http_status, 200);
    assert_eq!(response(&r)["uid"], "uid-x");
    assert_eq!(response(&r)["allowed"], false);
    assert_eq!(response(&r)["status"]["code"], 400);
    let msg = response(&r)["status"]["message"].as_str().unwrap();
    assert!(msg.contains("request.object: is missing"), "{msg}");
    // Without a uid: HTTP 400 with a Status body.
    let mut rv = review("uid-y", "CREATE", "p", &compliant_deployment("api"));
    rv["request"].as_object_mut().unwrap().remove("uid");
    let r = send(&w, &rv).await;
    assert_eq!(r.http_status, 400);
    assert_eq!(r.body["kind"], "Status");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("request.uid: is missing"));
    let r = w.review(b"{not json").await;
    assert_eq!(r.http_status, 400);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    // Nothing unparseable is recorded as a decision.
    assert!(sink.records().is_empty());
}

#[tokio::test]
async fn gatekeeper_constraints_apply() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("required-labels.yaml"), GATEKEEPER_POLICY).unwrap();
    let opts = PolicyOptions {
        policies: vec![dir.path().to_path_buf()],
        ..PolicyOptions::default()
    };
    let (w, _) = webhook(WebhookConfig::default(), opts);
    let r = send(
        &w,
        &review("u", "CREATE", "p", &compliant_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false, "{}", r.body);
    let msg = response(&r)["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("[K8sRequiredLabels/deployments-need-costcenter]")
            && msg.contains("you must provide labels"),
        "{msg}"
    );
    let mut d = compliant_deployment("api");
    d["metadata"]["labels"]["costcenter"] = json!("cc-42");
    let r = send(&w, &review("u2", "CREATE", "p", &d)).await;
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
}

#[tokio::test]
async fn policy_is_replaced_without_restart() {
    let (w, _) = webhook(WebhookConfig::default(), PolicyOptions::default());
    let r = send(
        &w,
        &review("u", "CREATE", "p", &privileged_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false);
    w.set_policy(policy(PolicyOptions {
        packs: vec!["none".into()],
        ..PolicyOptions::default()
    }));
    let r = send(
        &w,
        &review("u2", "CREATE", "p", &privileged_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], true, "{}", r.body);
}

#[tokio::test]
async fn runaway_policy_denies_with_an_error_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.rego"),
        "package slow\n\ndeny contains n if {\n  input.kind == \"Deployment\"\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  n := i * j\n  n < 0\n}\n",
    )
    .unwrap();
    let opts = PolicyOptions {
        packs: vec!["none".into()],
        policies: vec![dir.path().to_path_buf()],
        timeout: Some(Duration::from_millis(200)),
        ..PolicyOptions::default()
    };
    let cfg = WebhookConfig {
        eval_timeout: Duration::from_secs(5),
        ..WebhookConfig::default()
    };
    let (w, sink) = webhook(cfg, opts);
    let r = send(
        &w,
        &review("u", "CREATE", "p", &compliant_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false, "{}", r.body);
    assert_eq!(response(&r)["status"]["code"], 500);
    assert!(response(&r)["status"]["message"]
        .as_str()
        .unwrap()
        .starts_with("keycard could not evaluate Deployment p/api"));
    assert_eq!(sink.records()[0].outcome, Outcome::Error);
}

/// A sink that always fails, as a full disk does.
struct Broken;
impl DecisionSink for Broken {
    fn append(&self, _: Vec<keycard_audit::Record>) -> Result<(), String> {
        Err("disk full".into())
    }
}

#[tokio::test]
async fn unrecorded_allows_fail_closed_by_default_and_open_when_asked() {
    let mk = |cfg| {
        Webhook::new(
            policy(PolicyOptions::default()),
            cfg,
            Some(Recorder::spawn(Arc::new(Broken), 8, 8)),
        )
    };
    let w = mk(WebhookConfig::default());
    let r = send(
        &w,
        &review("u", "CREATE", "p", &compliant_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], false);
    assert_eq!(response(&r)["status"]["code"], 503);
    assert!(response(&r)["status"]["message"]
        .as_str()
        .unwrap()
        .contains("disk full"));
    let w = mk(WebhookConfig {
        log_failure: keycard_audit::FailureMode::FailOpen,
        ..WebhookConfig::default()
    });
    let r = send(
        &w,
        &review("u", "CREATE", "p", &compliant_deployment("api")),
    )
    .await;
    assert_eq!(response(&r)["allowed"], true);
}

#[tokio::test]
async fn decisions_land_in_the_tamper_evident_log() {
    let key = Ed25519Signer::generate("keycard.test/decisions").unwrap();
    let log = DecisionLog::open(
        "keycard.test/decisions",
        keycard_store::MemoryStore::new(),
        Box::new(key.clone()),
    )
    .unwrap();
    let log = Arc::new(Mutex::new(log));
    let recorder = Recorder::spawn(log.clone(), 64, 16);
    let w = Webhook::new(
        policy(PolicyOptions::default()),
        WebhookConfig::default(),
        Some(recorder),
    );
    send(
        &w,
        &review("uid-a", "CREATE", "payments", &compliant_deployment("a")),
    )
    .await;
    send(
        &w,
        &review("uid-b", "CREATE", "payments", &privileged_deployment("b")),
    )
    .await;
    let mut log = log.lock().unwrap();
    assert_eq!(log.size(), 2);
    log.checkpoint().unwrap();
    let trusted = VerifierSet::new().with(key.verifier()).unwrap();
    keycard_audit::verify(log.store(), "keycard.test/decisions", &trusted, None).unwrap();
    let why = keycard_audit::why(log.store(), "keycard.test/decisions", &trusted, "uid-b").unwrap();
    assert_eq!(why[0].record.outcome, Outcome::Deny);
    assert_eq!(
        why[0].record.point,
        keycard_audit::EnforcementPoint::Admission
    );
    assert_eq!(why[0].record.resource, "deployments.apps/payments/b");
    assert!(!why[0].record.bundle_revision.is_empty());
}
