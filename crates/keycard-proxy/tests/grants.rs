#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Just-in-time grants: an active exception grant lets its principal past
//! the policy it names until it expires, the decision names the grant, and
//! a grants file that breaks keeps the last good set.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keycard_proxy::files::{ExtraFiles, Watched};
use keycard_proxy::grants::Grants;
use keycard_proxy::serve::{start_writer_files, DecisionLog, ServeConfig};
use keycard_proxy::{
    compile_str, Authorizer, AuthzDecision, Mode, Outcome, Peer, PolicyStore, Reason, Request,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BATCH: &str = "spiffe://td/ns/prod/sa/batch";
const WEB: &str = "spiffe://td/ns/prod/sa/web";
const ONCALL: &str = "spiffe://td/ns/prod/sa/oncall-7";
/// The destination: in namespace prod, where the policies apply.
const API: &str = "spiffe://td/ns/prod/sa/api";
const NOW: i64 = 1_800_000_000;

/// A DENY policy with two rules (admin paths; deletes) and an ALLOW
/// policy for web and batch.
const POLICIES: &str = r#"
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: prod}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin/*"]}}]
  - name: no-deletes
    to: [{operation: {methods: [DELETE]}}]
---
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: api-callers, namespace: prod}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: ["spiffe://td/ns/prod/sa/web", "spiffe://td/ns/prod/sa/batch"]}}]
"#;

fn req(principal: &str, method: &str, path: &str) -> Request {
    Request {
        source: Peer {
            principal: Some(principal.into()),
            ..Peer::default()
        },
        destination: Peer {
            principal: Some(API.into()),
            ..Peer::default()
        },
        method: method.into(),
        path: path.into(),
        ..Request::default()
    }
}

fn grant(id: &str, policy: &str, rule: &str, resource: &str, status: &str, expires: i64) -> Value {
    json!({
        "id": id, "kind": "exception", "policy": policy, "rule": rule,
        "resource": resource, "subject": resource, "requester": "alice",
        "reason": "incident 42", "duration_secs": 600, "status": status,
        "approver": "bob", "requested_at": NOW - 10, "expires_at": expires,
    })
}

/// Writes the file as the agent does: beside, then renamed over.
fn write_grants(path: &Path, grants: &[Value]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&json!({ "grants": grants })).unwrap(),
    )
    .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn authorizer(grants: &Path) -> (Authorizer, Arc<Watched<Grants>>) {
    let set = compile_str("inline.yaml", POLICIES, Mode::Enforce).unwrap();
    let w = Arc::new(Watched::open(grants, Grants::parse).unwrap());
    let a = Authorizer::new(Arc::new(PolicyStore::fixed(set))).grants(w.clone());
    (a, w)
}

fn decide(a: &Authorizer, r: &Request, now: i64) -> AuthzDecision {
    a.check_full(r, now).decision
}

#[test]
fn an_active_grant_exempts_from_a_deny_policy_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.json");
    write_grants(&path, &[]);
    let (a, w) = authorizer(&path);
    let admin = req(BATCH, "GET", "/admin/jobs");

    // Without a grant.
    let d = decide(&a, &admin, NOW);
    assert_eq!(
        (d.outcome, d.reason, d.policy.as_deref(), d.rule.as_deref()),
        (
            Outcome::Deny,
            Reason::DeniedByPolicy,
            Some("prod/deny-admin"),
            Some("rules[0]")
        )
    );
    assert_eq!(d.grant, None);

    // With an active grant for rule 0 of that policy, for batch only.
    write_grants(
        &path,
        &[grant(
            "g-1",
            "prod/deny-admin",
            "0",
            BATCH,
            "active",
            NOW + 60,
        )],
    );
    assert!(w.reload_if_changed().unwrap());
    let d = decide(&a, &admin, NOW);
    assert_eq!(
        (d.outcome, d.reason, d.policy.as_deref(), d.rule.as_deref()),
        (
            Outcome::Allow,
            Reason::AllowedByGrant,
            Some("prod/deny-admin"),
            Some("rules[0]")
        )
    );
    assert_eq!(d.grant.as_deref(), Some("g-1"));
    assert!(d.detail.as_deref().unwrap().contains("grant g-1"), "{d:?}");
    assert_eq!(
        d.to_core().reason.split(':').next(),
        Some("allowed_by_grant")
    );
    assert_eq!(
        d.reason_header(),
        "prod/deny-admin/rules[0]: allowed_by_grant"
    );
    // Another principal is still denied.
    assert_eq!(
        decide(&a, &req(WEB, "GET", "/admin/jobs"), NOW).reason,
        Reason::DeniedByPolicy
    );
    // A rule the grant does not cover still denies, even where the
    // covered one matches too.
    let d = decide(&a, &req(BATCH, "DELETE", "/admin/jobs"), NOW);
    assert_eq!(
        (d.outcome, d.rule.as_deref(), d.grant),
        (Outcome::Deny, Some("no-deletes"), None)
    );
    // An ordinary request stays an ordinary allow (no grant named).
    let d = decide(&a, &req(BATCH, "GET", "/v1/jobs"), NOW);
    assert_eq!((d.reason, d.grant), (Reason::AllowedByPolicy, None));

    // At its expiry the grant stops applying, with no reload.
    assert_eq!(decide(&a, &admin, NOW + 59).reason, Reason::AllowedByGrant);
    let d = decide(&a, &admin, NOW + 60);
    assert_eq!(
        (d.outcome, d.reason),
        (Outcome::Deny, Reason::DeniedByPolicy)
    );
    assert_eq!(d.grant, None);
}

#[test]
fn a_grant_on_an_allow_policy_admits_its_principals_and_a_star_rule_covers_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.json");
    write_grants(
        &path,
        &[
            grant(
                "g-2",
                "prod/api-callers",
                "*",
                "spiffe://td/ns/prod/sa/oncall-*",
                "active",
                NOW + 60,
            ),
            grant("g-3", "prod/deny-admin", "*", ONCALL, "active", NOW + 30),
        ],
    );
    let (a, _) = authorizer(&path);
    let d = decide(&a, &req(ONCALL, "GET", "/v1/jobs"), NOW);
    assert_eq!(
        (d.outcome, d.reason, d.policy.as_deref(), d.grant.as_deref()),
        (
            Outcome::Allow,
            Reason::AllowedByGrant,
            Some("prod/api-callers"),
            Some("g-2")
        )
    );
    // Both rules of the DENY policy are covered: the DENY grant is named.
    let d = decide(&a, &req(ONCALL, "DELETE", "/admin/jobs"), NOW);
    assert_eq!(
        (d.outcome, d.reason, d.policy.as_deref(), d.grant.as_deref()),
        (
            Outcome::Allow,
            Reason::AllowedByGrant,
            Some("prod/deny-admin"),
            Some("g-3")
        )
    );
    // The DENY grant ends first; then the DENY policy decides again.
    let d = decide(&a, &req(ONCALL, "DELETE", "/admin/jobs"), NOW + 30);
    assert_eq!(d.reason, Reason::DeniedByPolicy);
    // After both expire, no ALLOW match.
    let d = decide(&a, &req(ONCALL, "GET", "/v1/jobs"), NOW + 60);
    assert_eq!((d.outcome, d.reason), (Outcome::Deny, Reason::NoAllowMatch));
    // Another principal outside the prefix gets nothing.
    let other = "spiffe://td/ns/prod/sa/other";
    assert_eq!(
        decide(&a, &req(other, "GET", "/v1/jobs"), NOW).reason,
        Reason::NoAllowMatch
    );
}

#[test]
fn pending_expired_and_other_grants_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.json");
    let mut role = grant("g-role", "prod/deny-admin", "*", BATCH, "active", NOW + 60);
    role["kind"] = json!("role");
    role["role"] = json!("admin");
    let mut no_expiry = grant("g-6", "prod/deny-admin", "*", BATCH, "active", 0);
    no_expiry["expires_at"] = Value::Null;
    write_grants(
        &path,
        &[
            grant("g-4", "prod/deny-admin", "*", BATCH, "pending", NOW + 60),
            grant("g-5", "prod/deny-admin", "*", BATCH, "expired", NOW + 60),
            grant("g-7", "prod/deny-admin", "*", BATCH, "active", NOW - 1),
            grant("g-8", "prod/other-policy", "*", BATCH, "active", NOW + 60),
            grant(
                "g-9",
                "prod/deny-admin",
                "no-deletes",
                BATCH,
                "active",
                NOW + 60,
            ),
            no_expiry,
            role,
        ],
    );
    let (a, w) = authorizer(&path);
    assert_eq!(w.current().ignored, 4, "pending, expired, no expiry, role");
    let d = decide(&a, &req(BATCH, "GET", "/admin/jobs"), NOW);
    assert_eq!(
        (d.outcome, d.reason, d.rule.as_deref(), d.grant),
        (
            Outcome::Deny,
            Reason::DeniedByPolicy,
            Some("rules[0]"),
            None
        )
    );
}

#[test]
fn a_malformed_grants_file_keeps_the_last_good_set_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.json");
    write_grants(
        &path,
        &[grant(
            "g-1",
            "prod/deny-admin",
            "*",
            BATCH,
            "active",
            NOW + 60,
        )],
    );
    let (a, w) = authorizer(&path);
    let admin = req(BATCH, "GET", "/admin/jobs");
    assert_eq!(decide(&a, &admin, NOW).grant.as_deref(), Some("g-1"));

    let mut bad = grant("g-2", "prod/deny-admin", "*", BATCH, "active", NOW + 60);
    bad.as_object_mut().unwrap().remove("resource");
    write_grants(&path, &[bad]);
    let e = w.reload_if_changed().unwrap_err();
    assert!(
        e.to_string().contains("grants.json") && e.to_string().contains("grants[0].resource"),
        "{e}"
    );
    assert_eq!(w.reload_errors(), 1);
    assert!(w.last_error().unwrap().contains("grants[0].resource"));
    assert_eq!(
        decide(&a, &admin, NOW).grant.as_deref(),
        Some("g-1"),
        "the last good set stays in force"
    );
    // Not JSON at all: the same.
    std::fs::write(&path, "{\"grants\": [").unwrap();
    assert!(w.reload_if_changed().is_err());
    assert_eq!(decide(&a, &admin, NOW).grant.as_deref(), Some("g-1"));
    // Unknown status.
    write_grants(
        &path,
        &[grant(
            "g-2",
            "prod/deny-admin",
            "*",
            BATCH,
            "approved",
            NOW + 60,
        )],
    );
    let e = w.reload_if_changed().unwrap_err();
    assert!(e.to_string().contains("grants[0].status"), "{e}");
    // Fixed: the new set replaces the old.
    write_grants(
        &path,
        &[grant(
            "g-2",
            "prod/deny-admin",
            "*",
            BATCH,
            "active",
            NOW + 60,
        )],
    );
    assert!(w.reload_if_changed().unwrap());
    assert_eq!(w.last_error(), None);
    assert_eq!(decide(&a, &admin, NOW).grant.as_deref(), Some("g-2"));
}

/// One ext_authz HTTP check: status and x-keycard-reason.
async fn check(addr: SocketAddr, principal: &str, path: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: api\r\nx-keycard-source-principal: {principal}\r\nx-keycard-destination-principal: {API}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("ext_authz answers");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let reason = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-keycard-reason: ")
                .map(|r| r.trim().to_string())
        })
        .unwrap_or_default();
    (status, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_picks_up_a_grant_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("p.yaml"), POLICIES).unwrap();
    let grants = dir.path().join("grants.json");
    write_grants(&grants, &[]);
    let log = dir.path().join("decisions.jsonl");
    let running = start_writer_files(
        ServeConfig {
            policy_dir: policies,
            default_mode: Mode::Enforce,
            grpc_listen: None,
            http_listen: Some("127.0.0.1:0".parse().unwrap()),
            metrics_listen: None,
            jwks: Vec::new(),
            revocations: None,
            posture: None,
            decision_log: Some(DecisionLog::File(log.clone())),
            poll_interval: Duration::from_millis(50),
            accept_unnormalised_paths: false,
        },
        None,
        ExtraFiles {
            grants: Some(grants.clone()),
        },
    )
    .await
    .unwrap();
    let addr = running.http.unwrap();
    assert_eq!(check(addr, BATCH, "/admin/jobs").await.0, 403);

    let now = keycard_proxy::time::unix_now();
    write_grants(
        &grants,
        &[grant(
            "g-live",
            "prod/deny-admin",
            "*",
            BATCH,
            "active",
            now + 600,
        )],
    );
    let start = Instant::now();
    let (status, reason) = loop {
        let got = check(addr, BATCH, "/admin/jobs").await;
        if got.0 == 200 || start.elapsed() > Duration::from_secs(5) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200, "the grant was picked up without a restart");
    let _ = reason;
    running.stop().await;

    // Records are written by a thread of their own: wait for this one.
    let start = Instant::now();
    let (text, granted) = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let granted: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["reason"] == "allowed_by_grant")
            .collect();
        if !granted.is_empty() || start.elapsed() > Duration::from_secs(5) {
            break (text, granted);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!granted.is_empty(), "{text}");
    let r = &granted[0];
    assert_eq!(r["outcome"], "allow");
    assert_eq!(r["policy"], "prod/deny-admin");
    assert_eq!(r["attributes"]["grant"], "g-live");
    assert!(r["attributes"]["detail"]
        .as_str()
        .unwrap()
        .contains("grant g-live"));
    assert!(
        text.lines().any(|l| l.contains("denied_by_policy")),
        "{text}"
    );
}
