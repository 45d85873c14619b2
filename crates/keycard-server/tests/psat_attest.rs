//! Kubernetes PSAT node attestation end to end: a real `keycard server`
//! with two `[[k8s_psat]]` clusters, one checked against a test issuer's
//! JWKS found through OIDC discovery over HTTPS on 127.0.0.1, one through a
//! fake TokenReview API server over HTTPS on 127.0.0.1. `keycard agent`
//! attests with a token file and serves the entries of its node alias; a
//! replayed token re-attests the same node; a wrong audience, an expired
//! token, a forged signature and a service account not allowed are refused
//! with 401/403 and no SVID.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Json;
use http::Method;
use keycard_identity::jose::Es256Signer;
use keycard_server::remote_agent::{read_pem_certs, start_agent, AgentConfig, NodeClient};
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Map, Value};

const T: Duration = Duration::from_secs(20);
const TD: &str = "psat.test";
const AUD: &str = "keycard";
const REVIEW_BEARER: &str = "reviewer-bearer-token";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A test CA and a server certificate for 127.0.0.1 it issued.
struct TestPki {
    ca_pem: String,
    cert: Vec<CertificateDer<'static>>,
    key_pkcs8: Vec<u8>,
}

fn pki() -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test issuer CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        cert: vec![cert.der().clone()],
        key_pkcs8: key.serialize_der(),
    }
}

/// Serves `router` over HTTPS on 127.0.0.1 with the PKI's certificate.
async fn serve_https(pki: &TestPki, router: axum::Router) -> SocketAddr {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.key_pkcs8.clone()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(pki.cert.clone(), key)
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keycard_server::https::serve(
        listener,
        Arc::new(cfg),
        router,
        std::future::pending(),
    ));
    addr
}

/// The cluster's token issuer: a P-256 key, its JWKS behind OIDC discovery.
struct Issuer {
    signer: Es256Signer,
    fetches: Arc<AtomicUsize>,
}

fn signer() -> Es256Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    Es256Signer::from_pkcs8(&kp.serialize_der()).unwrap()
}

async fn start_issuer(pki: &TestPki) -> (Issuer, SocketAddr) {
    let signer = signer();
    let mut jwk = Map::new();
    signer.public_key().write_jwk(&mut jwk);
    jwk.insert("kid".into(), signer.kid().into());
    jwk.insert("use".into(), "sig".into());
    let jwks = json!({"keys": [Value::Object(jwk)]});
    let fetches = Arc::new(AtomicUsize::new(0));
    let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let (f, a) = (Arc::clone(&fetches), Arc::clone(&addr_cell));
    let router = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let a = Arc::clone(&a);
                async move {
                    let addr = a.lock().unwrap().unwrap();
                    Json(json!({
                        "issuer": format!("https://{addr}"),
                        "jwks_uri": format!("https://{addr}/openid/v1/jwks"),
                    }))
                }
            }),
        )
        .route(
            "/openid/v1/jwks",
            get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { Json(jwks) }
            }),
        );
    let addr = serve_https(pki, router).await;
    *addr_cell.lock().unwrap() = Some(addr);
    (Issuer { signer, fetches }, addr)
}

fn claims(aud: &str, exp: u64, ns: &str, sa: &str, node: &str) -> Map<String, Value> {
    let v = json!({
        "aud": [aud],
        "exp": exp,
        "iat": now() - 10,
        "nbf": now() - 10,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {
            "namespace": ns,
            "serviceaccount": {"name": sa, "uid": "sa-uid"},
            "pod": {"name": format!("{sa}-pod"), "uid": format!("pod-uid-{node}")},
            "node": {"name": node, "uid": format!("uid-{node}")}
        }
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// The fake API server's TokenReview: `good-*` tokens authenticate as
/// keycard:keycard-agent on node `n-review`, anything else is refused.
#[derive(Default)]
struct Review {
    calls: AtomicUsize,
    bad_bearer: AtomicUsize,
}

async fn token_review(
    State(r): State<Arc<Review>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (http::StatusCode, Json<Value>) {
    r.calls.fetch_add(1, Ordering::SeqCst);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if bearer != format!("Bearer {REVIEW_BEARER}") {
        r.bad_bearer.fetch_add(1, Ordering::SeqCst);
        return (
            http::StatusCode::UNAUTHORIZED,
            Json(json!({"kind": "Status", "message": "Unauthorized"})),
        );
    }
    let token = body["spec"]["token"].as_str().unwrap_or("");
    let audiences = body["spec"]["audiences"].clone();
    let status = if token.starts_with("good-") {
        json!({
            "authenticated": true,
            "audiences": audiences,
            "user": {
                "username": "system:serviceaccount:keycard:keycard-agent",
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["keycard-agent-r"],
                    "authentication.kubernetes.io/pod-uid": ["pod-uid-r"],
                    "authentication.kubernetes.io/node-name": ["n-review"],
                }
            }
        })
    } else {
        json!({"authenticated": false, "error": "[invalid bearer token, service account token has expired]"})
    };
    (
        http::StatusCode::CREATED,
        Json(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status}),
        ),
    )
}

fn server_config(dir: &Path, issuer: SocketAddr, review: SocketAddr) -> UpConfig {
    let ca = dir.join("test-ca.pem");
    let bearer = dir.join("reviewer.token");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&bearer, REVIEW_BEARER).unwrap();
    let text = format!(
        r#"
[[k8s_psat]]
cluster = "jwks-cluster"
audience = "{AUD}"
allowed_service_accounts = ["keycard:keycard-agent"]
issuer = "https://kubernetes.default.svc.cluster.local"
jwks_url = "https://{issuer}/.well-known/openid-configuration"
jwks_ca_file = "{ca}"
jwks_refresh = "1h"

[[k8s_psat]]
cluster = "review-cluster"
audience = "{AUD}"
allowed_service_accounts = ["keycard:keycard-agent"]
token_review_url = "https://{review}"
token_review_ca_file = "{ca}"
token_review_token_file = "{bearer}"
"#,
        ca = ca.display(),
        bearer = bearer.display(),
    );
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some(TD.into()),
        api_listen: Some("127.0.0.1:0".into()),
        no_admission: true,
        ..Overrides::default()
    };
    let mut c = UpConfig::parse(&text, "test", &o).unwrap();
    c.agent_enabled = false;
    c
}

async fn api(dir: &Path, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = connect_data_dir(dir).unwrap().client;
    let r = c.call(method, path, body.as_ref()).await.unwrap();
    (r.status, r.body)
}

async fn refused(client: &NodeClient, token: &str, cluster: &str) -> (u16, String) {
    match client.attest_psat(token, Some(cluster)).await {
        Err(keycard_server::remote_agent::AgentError::Call(
            keycard_server::remote_agent::CallError::Status { status, message },
        )) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psat_agents_attest_by_jwks_and_token_review_and_bad_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let pki = pki();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("test-ca.pem"), &pki.ca_pem).unwrap();
    let (issuer, issuer_addr) = start_issuer(&pki).await;
    let review = Arc::new(Review::default());
    let review_addr = serve_https(
        &pki,
        axum::Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                post(token_review),
            )
            .with_state(Arc::clone(&review)),
    )
    .await;
    let up = keycard_server::start(server_config(&dir, issuer_addr, review_addr))
        .await
        .unwrap();
    let url = up.endpoints.api.clone();
    let bundle = read_pem_certs(&dir.join("bundle.pem")).unwrap();

    // A node entry on the PSAT selectors, and a workload under it.
    let (st, b) = api(
        &dir,
        Method::POST,
        "/v1/entries",
        Some(json!({
            "spiffe_id": format!("spiffe://{TD}/nodes/jwks-cluster"),
            "selectors": ["k8s_psat:cluster:jwks-cluster", "k8s_psat:agent_ns:keycard"],
        })),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = api(
        &dir,
        Method::POST,
        "/v1/entries",
        Some(json!({
            "spiffe_id": format!("spiffe://{TD}/web"),
            "parent_id": format!("spiffe://{TD}/nodes/jwks-cluster"),
            "selectors": ["unix:uid:12345"],
        })),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let web_entry = b["id"].as_str().unwrap().to_string();

    // `keycard agent --psat-token-file`: attests, syncs, and mints the
    // workload SVID of its node alias.
    let good = issuer
        .signer
        .sign(&claims(
            AUD,
            now() + 3600,
            "keycard",
            "keycard-agent",
            "node-1",
        ))
        .unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, &good).unwrap();
    let mut cfg = AgentConfig::new(&url, bundle.clone(), &tmp.path().join("agent"));
    cfg.psat_token_file = Some(token_file.clone());
    cfg.psat_cluster = Some("jwks-cluster".into());
    cfg.socket = None;
    let agent = tokio::time::timeout(T, start_agent(cfg))
        .await
        .unwrap()
        .unwrap();
    let agent_id = format!("spiffe://{TD}/keycard/agent/k8s_psat/jwks-cluster/uid-node-1");
    assert_eq!(agent.agent.agent_id().to_string(), agent_id);
    let rec = up
        .state
        .store()
        .agent(&agent_id.parse().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(rec.attestation, "k8s_psat");
    let sels: Vec<String> = rec.selectors.iter().map(|s| s.to_string()).collect();
    for want in [
        "k8s_psat:cluster:jwks-cluster",
        "k8s_psat:agent_ns:keycard",
        "k8s_psat:agent_sa:keycard-agent",
        "k8s_psat:agent_node_name:node-1",
    ] {
        assert!(sels.iter().any(|s| s == want), "{want} not in {sels:?}");
    }
    let deadline = Instant::now() + T;
    while !agent.agent.cached().contains_key(&web_entry) {
        assert!(
            Instant::now() < deadline,
            "the node alias's entry never reached the agent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        issuer.fetches.load(Ordering::SeqCst),
        1,
        "the JWKS is cached"
    );

    // The same token again (a replay, or a restarted agent): the same node.
    let client = NodeClient::new(&url, &bundle).unwrap();
    let (again, _) = client
        .attest_psat(&good, Some("jwks-cluster"))
        .await
        .unwrap();
    assert_eq!(again.agent_id.to_string(), agent_id);

    // Refusals: 401/403 with the reason, and no SVID.
    let other = NodeClient::new(&url, &bundle).unwrap();
    let wrong_aud = issuer
        .signer
        .sign(&claims(
            "vault",
            now() + 3600,
            "keycard",
            "keycard-agent",
            "node-2",
        ))
        .unwrap();
    let (st, msg) = refused(&other, &wrong_aud, "jwks-cluster").await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("audience"), "{msg}");
    let expired = issuer
        .signer
        .sign(&claims(
            AUD,
            now() - 60,
            "keycard",
            "keycard-agent",
            "node-2",
        ))
        .unwrap();
    let (st, msg) = refused(&other, &expired, "jwks-cluster").await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("expired"), "{msg}");
    // Signed by another key under the issuer's kid.
    let forged = {
        let other_key = signer();
        let real = good.split('.').collect::<Vec<_>>();
        let fake = other_key
            .sign(&claims(
                AUD,
                now() + 3600,
                "keycard",
                "keycard-agent",
                "node-2",
            ))
            .unwrap();
        let f = fake.split('.').collect::<Vec<_>>();
        format!("{}.{}.{}", real[0], f[1], f[2])
    };
    let (st, msg) = refused(&other, &forged, "jwks-cluster").await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("signature"), "{msg}");
    // A forged signature makes the server look for a rotated key, at most
    // every 30 s: the JWKS was fetched once at most since.
    assert!(issuer.fetches.load(Ordering::SeqCst) <= 2);
    let not_allowed = issuer
        .signer
        .sign(&claims(AUD, now() + 3600, "default", "default", "node-2"))
        .unwrap();
    let (st, msg) = refused(&other, &not_allowed, "jwks-cluster").await;
    assert_eq!(st, 403, "{msg}");
    assert!(msg.contains("default:default"), "{msg}");
    let (st, msg) = refused(&other, &good, "no-such-cluster").await;
    assert_eq!(st, 400, "{msg}");
    // None of the refused nodes was recorded.
    let agents = up.state.store().list_agents().unwrap();
    assert!(
        agents
            .iter()
            .all(|a| !a.spiffe_id.to_string().ends_with("node-2")),
        "{agents:?}"
    );

    // TokenReview: the API server decides; its bearer token is sent.
    let (node, _) = other
        .attest_psat("good-opaque", Some("review-cluster"))
        .await
        .unwrap();
    assert_eq!(
        node.agent_id.to_string(),
        format!("spiffe://{TD}/keycard/agent/k8s_psat/review-cluster/n-review")
    );
    let third = NodeClient::new(&url, &bundle).unwrap();
    let (st, msg) = refused(&third, "stale-token", "review-cluster").await;
    assert_eq!(st, 401, "{msg}");
    assert!(msg.contains("expired"), "{msg}");
    assert_eq!(review.calls.load(Ordering::SeqCst), 2);
    assert_eq!(review.bad_bearer.load(Ordering::SeqCst), 0);
    // A reviewer credential the API server refuses: 503, not a verdict.
    std::fs::write(dir.join("reviewer.token"), "wrong").unwrap();
    let (st, msg) = refused(&third, "good-opaque", "review-cluster").await;
    assert_eq!(st, 503, "{msg}");
    assert_eq!(review.bad_bearer.load(Ordering::SeqCst), 1);

    // The token file is re-read: a new token (another pod on another node)
    // attests that node on the next start.
    let next = issuer
        .signer
        .sign(&claims(
            AUD,
            now() + 3600,
            "keycard",
            "keycard-agent",
            "node-3",
        ))
        .unwrap();
    std::fs::write(&token_file, &next).unwrap();
    agent.shutdown(Duration::from_secs(2)).await;
    let mut cfg = AgentConfig::new(&url, bundle.clone(), &tmp.path().join("agent-3"));
    cfg.psat_token_file = Some(token_file);
    cfg.psat_cluster = Some("jwks-cluster".into());
    cfg.socket = None;
    let agent3 = tokio::time::timeout(T, start_agent(cfg))
        .await
        .unwrap()
        .unwrap();
    assert!(agent3.agent.agent_id().to_string().ends_with("/uid-node-3"));
    agent3.shutdown(Duration::from_secs(2)).await;
    up.shutdown(Duration::from_secs(2)).await;
}
