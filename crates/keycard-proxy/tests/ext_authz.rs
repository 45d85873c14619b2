#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The ext_authz server in process: gRPC Check, the HTTP variant, metrics
//! and health, decision records, and reload through the serve loop.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use keycard_proxy::serve::{start, DecisionLog, ServeConfig};
use keycard_proxy::Mode;
use tokio::time::timeout;

const POLICIES: &str = r#"
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: prod}
spec:
  rules:
  - name: web-reads
    from: [{source: {principals: ["spiffe://example.org/ns/prod/sa/web"]}}]
    to: [{operation: {methods: [GET]}}]
---
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: prod}
spec:
  action: DENY
  rules:
  - name: admin
    to: [{operation: {paths: ["/admin/*"]}}]
"#;

fn peer(principal: &str, ip: &str, port: u32) -> Peer {
    Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..SocketAddress::default()
            })),
        }),
        principal: principal.into(),
        ..Peer::default()
    }
}

fn check(source: &str, method: &str, path: &str) -> CheckRequest {
    let mut headers = HashMap::new();
    headers.insert("x-request-id".to_string(), "rid-1".to_string());
    headers.insert(":authority".to_string(), "api".to_string());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(source, "10.0.0.1", 40000)),
            destination: Some(peer(
                "spiffe://example.org/ns/prod/sa/api",
                "10.0.0.2",
                8080,
            )),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    host: "api".into(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: api\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_http_metrics_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("p/api.yaml"), POLICIES).unwrap();
    let log = dir.path().join("decisions.jsonl");
    let running = start(ServeConfig {
        policy_dir: dir.path().join("p"),
        default_mode: Mode::Enforce,
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        jwks: Vec::new(),
        revocations: None,
        posture: None,
        decision_log: Some(DecisionLog::File(log.clone())),
        poll_interval: Duration::from_millis(50),
        accept_unnormalised_paths: false,
    })
    .await
    .unwrap();
    let grpc = running.grpc.unwrap();
    let mut client = timeout(
        Duration::from_secs(5),
        AuthorizationClient::connect(format!("http://{grpc}")),
    )
    .await
    .unwrap()
    .unwrap();

    // Allowed: OK and the principal header for upstream.
    let resp = timeout(
        Duration::from_secs(5),
        client.check(check("spiffe://example.org/ns/prod/sa/web", "GET", "/v1/x")),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    assert_eq!(resp.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = resp.http_response else {
        panic!("{resp:?}")
    };
    let h = ok.headers[0].header.as_ref().unwrap();
    assert_eq!(
        (h.key.as_str(), h.value.as_str()),
        ("x-keycard-principal", "spiffe://example.org/ns/prod/sa/web")
    );

    // Denied by the DENY policy: PERMISSION_DENIED, 403 and the reason header.
    let resp = client
        .check(check(
            "spiffe://example.org/ns/prod/sa/web",
            "GET",
            "/admin/users",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status.as_ref().unwrap().code,
        tonic::Code::PermissionDenied as i32
    );
    let Some(HttpResponse::DeniedResponse(denied)) = resp.http_response else {
        panic!()
    };
    assert_eq!(denied.status.unwrap().code, 403);
    let h = denied.headers[0].header.as_ref().unwrap();
    assert_eq!(
        (h.key.as_str(), h.value.as_str()),
        ("x-keycard-reason", "prod/no-admin/admin: denied_by_policy")
    );

    // Another caller: no ALLOW rule matches.
    let resp = client
        .check(check("spiffe://example.org/ns/dev/sa/x", "GET", "/v1/x"))
        .await
        .unwrap()
        .into_inner();
    let Some(HttpResponse::DeniedResponse(denied)) = resp.http_response else {
        panic!()
    };
    assert_eq!(
        denied.headers[0].header.as_ref().unwrap().value,
        "prod/api/-: no_allow_match"
    );

    // A path Envoy did not normalise is denied even for an allowed caller:
    // Envoy would forward it as spelled, not as decided.
    for p in ["/v1/./x", "/v1//x", "/%761/x", "/v1/x%2F.."] {
        let resp = client
            .check(check("spiffe://example.org/ns/prod/sa/web", "GET", p))
            .await
            .unwrap()
            .into_inner();
        let Some(HttpResponse::DeniedResponse(denied)) = resp.http_response else {
            panic!("{p} was allowed: {resp:?}")
        };
        assert!(
            denied.headers[0]
                .header
                .as_ref()
                .unwrap()
                .value
                .ends_with("bad_request"),
            "{p}: {denied:?}"
        );
    }
    // The normal form with a query is fine.
    let resp = client
        .check(check(
            "spiffe://example.org/ns/prod/sa/web",
            "GET",
            "/v1/x?a=%2F",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");

    // A CheckRequest without attributes is decided, not a crash.
    let resp = client
        .check(CheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status.unwrap().code,
        0,
        "no destination: no policy applies"
    );

    // The HTTP variant: identity from the headers Envoy sets.
    let http = running.http.unwrap();
    let (status, head, _) = http_get(
        http,
        "/v1/x",
        "x-keycard-source-principal: spiffe://example.org/ns/prod/sa/web\r\nx-keycard-destination-principal: spiffe://example.org/ns/prod/sa/api\r\n",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("x-keycard-principal: spiffe://example.org/ns/prod/sa/web"),
        "{head}"
    );
    let (status, head, body) = http_get(
        http,
        "/admin/x",
        "x-keycard-source-principal: spiffe://example.org/ns/prod/sa/web\r\nx-keycard-destination-principal: spiffe://example.org/ns/prod/sa/api\r\n",
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        head.contains("x-keycard-reason: prod/no-admin/admin: denied_by_policy"),
        "{head}"
    );
    assert!(body.contains("denied_by_policy"));

    // Metrics and health.
    let m = running.metrics.unwrap();
    let (status, _, body) = http_get(m, "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("keycard_authz_requests_total{transport=\"grpc\"} 9"),
        "{body}"
    );
    assert!(
        body.contains("keycard_authz_requests_total{transport=\"http\"} 2"),
        "{body}"
    );
    assert!(body.contains("keycard_authz_decisions_total{outcome=\"deny\",reason=\"denied_by_policy\",policy=\"prod/no-admin\"} 2"), "{body}");
    assert!(
        body.contains(
            "keycard_authz_decisions_total{outcome=\"deny\",reason=\"bad_request\",policy=\"\"} 4"
        ),
        "{body}"
    );
    assert!(
        body.contains("keycard_authz_check_duration_seconds_bucket"),
        "{body}"
    );
    assert!(body.contains("keycard_authz_policies 2"), "{body}");
    assert_eq!(http_get(m, "/healthz", "").await.0, 200);
    assert_eq!(http_get(m, "/readyz", "").await.0, 200);

    // A broken policy file: counted, the old set stays in force.
    std::fs::write(dir.path().join("p/broken.yaml"), "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: b}\nspec: {action: NOPE}\n").unwrap();
    let mut counted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, _, body) = http_get(m, "/metrics", "").await;
        if body.contains("keycard_authz_reload_errors_total{file=\"policies\"} 1") {
            counted = true;
            break;
        }
    }
    assert!(counted, "the reload error was not counted");
    let (_, _, ready) = http_get(m, "/readyz", "").await;
    assert!(ready.contains("broken.yaml:1: spec.action"), "{ready}");
    let resp = client
        .check(check("spiffe://example.org/ns/prod/sa/web", "GET", "/v1/x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status.unwrap().code,
        0,
        "the last good set stays in force"
    );

    // A fixed file is picked up: now everything is denied.
    std::fs::write(dir.path().join("p/broken.yaml"), "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: b}\nspec: {action: DENY, rules: [{}]}\n").unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let resp = client
            .check(check("spiffe://example.org/ns/prod/sa/web", "GET", "/v1/x"))
            .await
            .unwrap()
            .into_inner();
        if resp.status.unwrap().code != 0 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the fixed policy file was not picked up");

    running.stop().await;
    // Decision records: one per check, the documented shape.
    let text = std::fs::read_to_string(&log).unwrap();
    let recs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(recs.len() >= 7, "{text}");
    let first = &recs[0];
    assert_eq!(first["point"], "ext_authz");
    assert_eq!(first["id"], "rid-1");
    assert_eq!(first["outcome"], "allow");
    assert_eq!(first["subject"], "spiffe://example.org/ns/prod/sa/web");
    assert_eq!(first["resource"], "spiffe://example.org/ns/prod/sa/api");
    assert_eq!(first["policy"], "prod/api");
    assert_eq!(first["rule"], "web-reads");
    assert_eq!(first["reason"], "allowed_by_policy");
    assert_eq!(first["attributes"]["source"]["address"], "10.0.0.1:40000");
}

type Running = keycard_proxy::serve::Running;
type Switch = std::sync::Arc<std::sync::atomic::AtomicBool>;
type Writer = keycard_audit::writer::AuditWriter<
    keycard_audit::testing::FailingStore<keycard_store::MemoryStore>,
>;
use std::sync::Arc;

/// A server whose decision log is over a store that fails on command.
async fn with_failing_log(
    mode: keycard_audit::FailureMode,
) -> (Running, Switch, Arc<Writer>, tempfile::TempDir) {
    use keycard_audit::writer::{AuditWriter, WriterConfig};
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("p")).unwrap();
    std::fs::write(dir.path().join("p/api.yaml"), POLICIES).unwrap();
    let key = keycard_audit::Ed25519Signer::generate("keycard/decisions").unwrap();
    let (store, fail) =
        keycard_audit::testing::FailingStore::new(keycard_store::MemoryStore::new());
    let log = keycard_audit::DecisionLog::open("keycard/decisions", store, Box::new(key)).unwrap();
    let writer = std::sync::Arc::new(
        AuditWriter::start(
            log,
            WriterConfig {
                queue: 4,
                retry: Duration::from_millis(20),
                mode,
                ..WriterConfig::default()
            },
        )
        .unwrap(),
    );
    let running = keycard_proxy::serve::start_writer(
        ServeConfig {
            policy_dir: dir.path().join("p"),
            default_mode: Mode::Enforce,
            grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
            http_listen: Some("127.0.0.1:0".parse().unwrap()),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            jwks: Vec::new(),
            revocations: None,
            posture: None,
            decision_log: None,
            poll_interval: Duration::from_secs(60),
            accept_unnormalised_paths: false,
        },
        Some(writer.clone()),
    )
    .await
    .unwrap();
    (running, fail, writer, dir)
}

async fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_fail_closed_denies_until_writes_succeed() {
    use std::sync::atomic::Ordering;
    let (running, fail, writer, _dir) =
        with_failing_log(keycard_audit::FailureMode::FailClosed).await;
    let grpc = running.grpc.unwrap();
    let http = running.http.unwrap();
    let mut client = timeout(
        Duration::from_secs(5),
        AuthorizationClient::connect(format!("http://{grpc}")),
    )
    .await
    .unwrap()
    .unwrap();
    let web = "spiffe://example.org/ns/prod/sa/web";
    let allowed =
        |r: &envoy_types::ext_authz::v3::pb::CheckResponse| r.status.as_ref().unwrap().code == 0;

    let r = client
        .check(check(web, "GET", "/v1/x"))
        .await
        .unwrap()
        .into_inner();
    assert!(allowed(&r));
    wait_for("the first record committed", || {
        writer.stats().committed == 1
    })
    .await;

    // The store fails: the next record cannot be committed; from then on
    // every request is denied with the reason header, over gRPC and HTTP.
    fail.store(true, Ordering::Release);
    let _ = client.check(check(web, "GET", "/v1/y")).await.unwrap();
    wait_for("the log to be unavailable", || !writer.available()).await;
    let r = client
        .check(check(web, "GET", "/v1/z"))
        .await
        .unwrap()
        .into_inner();
    assert!(!allowed(&r), "fail closed: {r:?}");
    let Some(HttpResponse::DeniedResponse(denied)) = r.http_response else {
        panic!("{r:?}")
    };
    assert_eq!(denied.status.unwrap().code, 503);
    let h = denied.headers[0].header.as_ref().unwrap();
    assert_eq!(
        (h.key.as_str(), h.value.as_str()),
        ("x-keycard-reason", "decision-log-unavailable")
    );
    let (status, head, _) = http_get(
        http,
        "/v1/z",
        "x-keycard-source-principal: spiffe://example.org/ns/prod/sa/web\r\nx-keycard-destination-principal: spiffe://example.org/ns/prod/sa/api\r\n",
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        head.contains("x-keycard-reason: decision-log-unavailable"),
        "{head}"
    );
    let metrics = running.metrics.unwrap();
    let (_, _, body) = http_get(metrics, "/metrics", "").await;
    assert!(body.contains("keycard_audit_available 0"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let (status, _, _) = http_get(metrics, "/readyz", "").await;
    assert_eq!(status, 503);

    // Writes succeed again: the held batch is stored and requests pass.
    fail.store(false, Ordering::Release);
    wait_for("recovery", || writer.available()).await;
    let r = client
        .check(check(web, "GET", "/v1/after"))
        .await
        .unwrap()
        .into_inner();
    assert!(allowed(&r), "{r:?}");
    // Nothing accepted was lost: the record held while the store failed,
    // the two refusals and the last allow are all committed.
    wait_for("every record committed", || writer.stats().committed == 5).await;
    assert_eq!(writer.stats().dropped, 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_fail_open_allows_and_counts_drops() {
    use std::sync::atomic::Ordering;
    let (running, fail, writer, _dir) =
        with_failing_log(keycard_audit::FailureMode::FailOpen).await;
    let grpc = running.grpc.unwrap();
    let mut client = timeout(
        Duration::from_secs(5),
        AuthorizationClient::connect(format!("http://{grpc}")),
    )
    .await
    .unwrap()
    .unwrap();
    let web = "spiffe://example.org/ns/prod/sa/web";
    fail.store(true, Ordering::Release);
    let _ = client.check(check(web, "GET", "/v1/y")).await.unwrap();
    wait_for("the log to be unavailable", || !writer.available()).await;
    for _ in 0..5 {
        let r = client
            .check(check(web, "GET", "/v1/z"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status.unwrap().code,
            0,
            "fail open lets allowed requests through"
        );
    }
    // The policy's own denials still stand.
    let r = client
        .check(check(web, "DELETE", "/admin/x"))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(r.status.unwrap().code, 0);
    // One record held by the failing commit, four queued, the rest dropped
    // and counted.
    assert_eq!(writer.stats().dropped, 2);
    let (_, _, body) = http_get(running.metrics.unwrap(), "/metrics", "").await;
    assert!(
        body.contains("keycard_audit_records_dropped_total 2"),
        "{body}"
    );
    running.stop().await;
}

/// Checks per second over one gRPC connection (16 in flight), without and
/// with the decision log (SQLite, fail closed). Run with `--ignored
/// --nocapture`; it prints the ratio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run explicitly"]
async fn audit_log_cost_ratio() {
    let n: usize = std::env::var("AUDIT_RATIO_CHECKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut rates = Vec::new();
    for with_log in [false, true, false, true] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/api.yaml"), POLICIES).unwrap();
        let audit =
            with_log.then(|| keycard_proxy::record::AuditLogConfig::new(dir.path().join("log")));
        let running = keycard_proxy::serve::start_with(
            ServeConfig {
                policy_dir: dir.path().join("p"),
                default_mode: Mode::Enforce,
                grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
                http_listen: None,
                metrics_listen: None,
                jwks: Vec::new(),
                revocations: None,
                posture: None,
                decision_log: None,
                poll_interval: Duration::from_secs(60),
                accept_unnormalised_paths: false,
            },
            audit,
        )
        .await
        .unwrap();
        let grpc = running.grpc.unwrap();
        let client = timeout(
            Duration::from_secs(5),
            AuthorizationClient::connect(format!("http://{grpc}")),
        )
        .await
        .unwrap()
        .unwrap();
        let t0 = std::time::Instant::now();
        let mut tasks = Vec::new();
        for t in 0..16 {
            let mut c = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in (t..n).step_by(16) {
                    let path = if i % 4 == 0 { "/admin/x" } else { "/v1/x" };
                    let r = c
                        .check(check("spiffe://example.org/ns/prod/sa/web", "GET", path))
                        .await
                        .unwrap()
                        .into_inner();
                    assert!(r.status.is_some());
                }
            }));
        }
        for t in tasks {
            timeout(Duration::from_secs(300), t).await.unwrap().unwrap();
        }
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        if let Some(a) = &running.state.audit {
            let s = a.writer().stats();
            println!(
                "  log: committed {} dropped {} refused {}",
                s.committed,
                s.dropped,
                a.refused()
            );
            assert_eq!(a.refused(), 0);
        }
        running.stop().await;
        println!("with_log={with_log}: {rate:.0} checks/s");
        rates.push((with_log, rate));
    }
    let avg = |w: bool| {
        let v: Vec<f64> = rates.iter().filter(|r| r.0 == w).map(|r| r.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    println!(
        "ext_authz checks/s with the decision log / without: {:.2}",
        avg(true) / avg(false)
    );
}
