//! Agent sync all the way to the enforcers: a `keycard server`, a remote
//! agent keeping its enforcer files, and `keycard authz serve`'s ext_authz
//! server (HTTP variant) pointed at those files, as an operator would run
//! them on one node. Through the API only: a policy push changes decisions
//! without a restart, a posture update changes a decision, a revocation of
//! an identity is enforced within a second (measured), an invalid policy
//! is refused and changes nothing, and an agent that was away catches up
//! (and a sync after a change carries only that change). Also `keycard
//! up`'s own agent keeping the same files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use keycard_proxy::serve::{start as serve_authz, ServeConfig};
use keycard_proxy::Mode;
use keycard_server::enforce::{POLICIES_DIR, POSTURE_FILE, REVOCATIONS_FILE};
use keycard_server::https::ApiClient;
use keycard_server::remote_agent::{read_pem_certs, start_agent, AgentConfig, RunningAgent};
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TD: &str = "sync.test";
const T: Duration = Duration::from_secs(20);
/// The target: a change through the API enforced within this.
const TARGET: Duration = Duration::from_secs(1);

fn id(path: &str) -> String {
    format!("spiffe://{TD}{path}")
}

fn policy(principals: &[&str]) -> String {
    let p: Vec<String> = principals
        .iter()
        .map(|p| format!("\"{}\"", id(p)))
        .collect();
    format!(
        "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: api-callers}}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [{}]}}}}]\n    when: [{{key: posture.device_health, values: [healthy]}}]\n",
        p.join(", ")
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn call(api: &ApiClient, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = tokio::time::timeout(T, api.call(method, path, body.as_ref()))
        .await
        .expect("API answers")
        .unwrap();
    (r.status, r.body)
}

async fn set_posture(api: &ApiClient, who: &str, health: &str) {
    let (st, b) = call(
        api,
        Method::POST,
        "/v1/posture",
        Some(json!({"subject": id(who), "attributes": {"device_health": health}, "ttl_secs": 600})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
}

/// One ext_authz HTTP check as Envoy would send it: the status code.
async fn check(addr: SocketAddr, principal: &str) -> u16 {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /v1/orders HTTP/1.1\r\nhost: api\r\nx-keycard-source-principal: {principal}\r\nconnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("ext_authz answers")
}

/// Polls (every 10 ms) until `principal` gets `want`; the time it took.
async fn until_status(addr: SocketAddr, principal: &str, want: u16, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = check(addr, principal).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{principal}: still {got}, not {want}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start_node_agent(dir: &Path, server: &str, token: Option<String>) -> RunningAgent {
    let mut cfg = AgentConfig::new(
        server,
        read_pem_certs(&dir.join("bundle.pem")).unwrap(),
        &dir.join("agent"),
    );
    cfg.join_token = token;
    cfg.socket = None;
    cfg.sync_wait = Duration::from_secs(5);
    tokio::time::timeout(T, start_agent(cfg))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_changes_reach_an_ext_authz_server_through_the_agent_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        trust_domain: Some(TD.into()),
        api_listen: Some(format!("127.0.0.1:{}", free_port())),
        no_admission: true,
        ..Overrides::default()
    };
    let mut cfg = UpConfig::parse("", "test", &o).unwrap();
    cfg.agent_enabled = false;
    let up = keycard_server::start(cfg).await.unwrap();
    let server = up.endpoints.api.clone();
    let api = connect_data_dir(dir.path()).unwrap().client;

    // Before any agent: one policy, posture for two callers.
    let (st, b) = call(
        &api,
        Method::PUT,
        "/v1/policies/api-callers",
        Some(json!({"kind": "authz", "text": policy(&["/web"])})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    set_posture(&api, "/web", "healthy").await;
    set_posture(&api, "/batch", "healthy").await;

    let (_, b) = call(&api, Method::POST, "/v1/join-tokens", Some(json!({}))).await;
    let token = b["token"].as_str().unwrap().to_string();
    let agent = start_node_agent(dir.path(), &server, Some(token)).await;
    let files = dir.path().join("agent").join("enforce");
    assert!(
        files.join(REVOCATIONS_FILE).exists(),
        "the first sync writes the files"
    );

    // The enforcer, started on the agent's files, as
    // `keycard authz serve --policy-dir … --revocations … --posture … --poll-ms 100`.
    let authz = serve_authz(ServeConfig {
        policy_dir: files.join(POLICIES_DIR),
        default_mode: Mode::Enforce,
        grpc_listen: None,
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: None,
        jwks: Vec::new(),
        revocations: Some(files.join(REVOCATIONS_FILE)),
        posture: Some(files.join(POSTURE_FILE)),
        decision_log: None,
        poll_interval: Duration::from_millis(100),
        accept_unnormalised_paths: false,
    })
    .await
    .unwrap();
    let addr = authz.http.unwrap();
    assert_eq!(
        check(addr, &id("/web")).await,
        200,
        "policy and posture synced"
    );
    assert_eq!(check(addr, &id("/batch")).await, 403, "not in the policy");

    // An invalid policy is refused with its file, line and field; nothing changes.
    let (st, b) = call(
        &api,
        Method::PUT,
        "/v1/policies/api-callers",
        Some(json!({"kind": "authz", "text": policy(&["/web"]).replace("ALLOW", "PERMIT")})),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains("api-callers.yaml:") && err.contains("spec.action"),
        "{err}"
    );
    // An auditor may read but not push.
    let (_, t) = call(
        &api,
        Method::POST,
        "/v1/api-tokens",
        Some(json!({"name": "ro", "role": "auditor"})),
    )
    .await;
    let auditor = ApiClient::new(
        server.trim_start_matches("https://").parse().unwrap(),
        "localhost",
        &read_pem_certs(&dir.path().join("bundle.pem")).unwrap(),
        Some(t["token"].as_str().unwrap().to_string()),
    )
    .unwrap();
    let (st, _) = call(&auditor, Method::DELETE, "/v1/policies/api-callers", None).await;
    assert_eq!(st, 403, "an auditor cannot delete a policy");
    let (st, b) = call(&auditor, Method::GET, "/v1/policies/api-callers", None).await;
    assert_eq!(
        (st, b["kind"].as_str()),
        (200, Some("authz")),
        "but reads it"
    );

    // A policy push changes decisions without a restart.
    let t0 = Instant::now();
    let (st, b) = call(
        &api,
        Method::PUT,
        "/v1/policies/api-callers",
        Some(json!({"kind": "authz", "text": policy(&["/web", "/batch"])})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let took = until_status(addr, &id("/batch"), 200, TARGET).await;
    eprintln!(
        "policy push -> enforced: {:?} (API call included: {:?})",
        took,
        t0.elapsed()
    );

    // A posture update changes a decision.
    let t0 = Instant::now();
    set_posture(&api, "/batch", "compromised").await;
    let took = until_status(addr, &id("/batch"), 403, TARGET).await;
    eprintln!(
        "posture update -> enforced: {:?} (API call included: {:?})",
        took,
        t0.elapsed()
    );

    // A revocation of an identity: new requests denied within a second.
    let t0 = Instant::now();
    let (st, b) = call(
        &api,
        Method::POST,
        "/v1/revocations",
        Some(json!({"kind": "identity", "subject": id("/web"), "reason": "key leaked"})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let took = until_status(addr, &id("/web"), 403, TARGET).await;
    let total = t0.elapsed();
    eprintln!("revocation -> enforced: {took:?} (API call included: {total:?})");
    assert!(total < TARGET, "revocation took {total:?}");

    // A sync after one change carries that change only.
    let files_state = agent.agent.enforcer_files().unwrap();
    let (rev, digest) = files_state.position();
    let (st, _) = call(
        &api,
        Method::PUT,
        "/v1/exceptions/legacy",
        Some(json!({"text": "exceptions:\n- rule: zt-image-digest\n  owner: team@example.com\n  reason: vendor image\n  expires: 2099-01-01\n"})),
    )
    .await;
    assert_eq!(st, 200);
    let resp = agent
        .agent
        .client()
        .sync_enforcers(
            agent.agent.version(),
            "",
            Some((rev, &digest)),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let e = resp.enforcer.unwrap();
    assert_eq!(e.documents.len(), 1, "only the new exceptions document");
    assert_eq!(e.documents[0].name, "legacy");
    assert!(
        e.posture.is_none() && e.grants.is_none(),
        "posture unchanged: not resent"
    );

    // The agent goes away; changes happen; it comes back and catches up.
    agent.shutdown(Duration::from_secs(2)).await;
    let (st, _) = call(&api, Method::DELETE, "/v1/policies/api-callers", None).await;
    assert_eq!(st, 200);
    set_posture(&api, "/batch", "healthy").await;
    assert_eq!(
        check(addr, &id("/batch")).await,
        403,
        "the enforcer still holds the last files"
    );
    let again = start_node_agent(dir.path(), &server, None).await;
    // No policy now: the ext_authz server allows every caller it does not
    // deny, and /web stays revoked.
    until_status(addr, &id("/batch"), 200, Duration::from_secs(5)).await;
    assert_eq!(
        check(addr, &id("/web")).await,
        403,
        "revocations are kept across the reconnect"
    );
    let (server_rev, _) = {
        let (_, b) = call(&api, Method::GET, "/v1/policies", None).await;
        (b["revision"].as_u64().unwrap(), b)
    };
    assert_eq!(
        again.agent.enforcer_files().unwrap().position().0,
        server_rev
    );

    again.shutdown(Duration::from_secs(2)).await;
    authz.stop().await;
    up.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keycard_up_keeps_enforcer_files_for_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let o = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        trust_domain: Some(TD.into()),
        api_listen: Some(format!("127.0.0.1:{}", free_port())),
        no_admission: true,
        ..Overrides::default()
    };
    let cfg = UpConfig::parse("", "test", &o).unwrap();
    let up = keycard_server::start(cfg).await.unwrap();
    let api = connect_data_dir(dir.path()).unwrap().client;
    let files = dir.path().join("enforce");
    let revocations = files.join(REVOCATIONS_FILE);
    let start = Instant::now();
    while !revocations.exists() {
        assert!(start.elapsed() < T, "keycard up wrote no enforcer files");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let (st, _) = call(
        &api,
        Method::POST,
        "/v1/revocations",
        Some(json!({"kind": "identity", "subject": id("/gone"), "reason": "test"})),
    )
    .await;
    assert_eq!(st, 201);
    let watched = Arc::new(
        keycard_proxy::files::Watched::open(&revocations, keycard_proxy::files::Revocations::parse)
            .unwrap(),
    );
    loop {
        let _ = watched.reload_if_changed();
        if watched.current().is_revoked(Some(&id("/gone")), None) {
            break;
        }
        assert!(
            t0.elapsed() < TARGET,
            "the local agent did not write the revocation in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("keycard up: revocation -> file: {:?}", t0.elapsed());
    up.shutdown(Duration::from_secs(2)).await;
}
