//! A restarted `keycard agent` resumes its sync where it stopped: its
//! position (revocation version, document revision, control digest) and
//! what its enforcer files were built from are saved in the enforce
//! directory. With the server down, the restarted agent keeps the last
//! files in place; when the server is back, its first sync starts from the
//! saved position, so the server sends only what it missed (observed by
//! marking the saved state: what the server does not resend keeps the
//! mark), and the files end up current.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use keycard_server::enforce::{
    EnforcerFiles, ENFORCE_DIR, POLICIES_DIR, REVOCATIONS_FILE, SYNC_STATE_FILE,
};
use keycard_server::https::ApiClient;
use keycard_server::remote_agent::{read_pem_certs, start_agent, AgentConfig, RunningAgent};
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::{json, Value};

const TD: &str = "resume.test";
const T: Duration = Duration::from_secs(20);
const MARK: &str = "# kept from the saved state";

fn id(path: &str) -> String {
    format!("spiffe://{TD}{path}")
}

fn allow(name: &str, principal: &str) -> String {
    format!(
        "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [\"{}\"]}}}}]\n",
        id(principal)
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

async fn start_server(dir: &Path, listen: &str) -> keycard_server::Up {
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some(TD.into()),
        api_listen: Some(listen.to_string()),
        no_admission: true,
        ..Overrides::default()
    };
    let mut cfg = UpConfig::parse("", "test", &o).unwrap();
    cfg.agent_enabled = false;
    tokio::time::timeout(T, keycard_server::start(cfg))
        .await
        .unwrap()
        .unwrap()
}

async fn start_node_agent(dir: &Path, server: &str, token: Option<String>) -> RunningAgent {
    let mut cfg = AgentConfig::new(
        server,
        read_pem_certs(&dir.join("bundle.pem")).unwrap(),
        &dir.join("agent"),
    );
    cfg.join_token = token;
    cfg.socket = None;
    cfg.sync_wait = Duration::from_secs(2);
    tokio::time::timeout(T, start_agent(cfg))
        .await
        .unwrap()
        .unwrap()
}

/// Every policy file's text, joined.
fn policy_texts(enforce: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(enforce.join(POLICIES_DIR))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_from_its_saved_position() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let up = start_server(dir.path(), &listen).await;
    let server = up.endpoints.api.clone();
    let api = connect_data_dir(dir.path()).unwrap().client;
    for (name, who) in [("api-callers", "/web"), ("other", "/batch")] {
        let (st, b) = call(
            &api,
            Method::PUT,
            &format!("/v1/policies/{name}"),
            Some(json!({"kind": "authz", "text": allow(name, who)})),
        )
        .await;
        assert_eq!(st, 200, "{b}");
    }
    let (st, _) = call(
        &api,
        Method::POST,
        "/v1/revocations",
        Some(json!({"kind": "identity", "subject": id("/old"), "reason": "t"})),
    )
    .await;
    assert_eq!(st, 201);
    let (_, b) = call(&api, Method::POST, "/v1/join-tokens", Some(json!({}))).await;
    let token = b["token"].as_str().unwrap().to_string();

    // First run: a full sync, then the agent stops.
    let first = start_node_agent(dir.path(), &server, Some(token)).await;
    let enforce = dir.path().join("agent").join(ENFORCE_DIR);
    let version = first.agent.version();
    let (revision, digest) = first.agent.enforcer_files().unwrap().position();
    assert!(version >= 1 && revision >= 2, "{version} {revision}");
    first.shutdown(Duration::from_secs(2)).await;
    let revs = std::fs::read_to_string(enforce.join(REVOCATIONS_FILE)).unwrap();
    assert!(revs.contains(&id("/old")));

    // Mark the saved state: a revocation and a document the server will
    // not resend to an agent that asks from this position keep the mark;
    // an agent starting from nothing would get the originals back.
    let state_path = enforce.join(SYNC_STATE_FILE);
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    for r in state["revocations"].as_array_mut().unwrap() {
        if r["subject"] == id("/old") {
            r["subject"] = json!(id("/marker"));
        }
    }
    for d in state["documents"].as_array_mut().unwrap() {
        if d["name"] == "other" {
            let text = format!("{MARK}\n{}", d["text"].as_str().unwrap());
            d["text"] = json!(text);
        }
    }
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    // While the agent is away: a revocation and a policy change.
    let (st, _) = call(
        &api,
        Method::POST,
        "/v1/revocations",
        Some(json!({"kind": "identity", "subject": id("/web"), "reason": "leaked"})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, _) = call(
        &api,
        Method::PUT,
        "/v1/policies/api-callers",
        Some(json!({"kind": "authz", "text": allow("api-callers", "/reader")})),
    )
    .await;
    assert_eq!(st, 200);
    let (_, b) = call(&api, Method::GET, "/v1/policies", None).await;
    let server_revision = b["revision"].as_u64().unwrap();
    assert!(server_revision > revision);

    // The server goes down; the agent restarts without it.
    up.shutdown(Duration::from_secs(2)).await;
    let policies_before = policy_texts(&enforce);
    let again = start_node_agent(dir.path(), &server, None).await;
    assert_eq!(
        again.agent.version(),
        version,
        "revocation position restored"
    );
    assert_eq!(
        again.agent.enforcer_files().unwrap().position(),
        (revision, digest.clone()),
        "document position restored"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        std::fs::read_to_string(enforce.join(REVOCATIONS_FILE)).unwrap(),
        revs,
        "the last revocations stay in place while the server is away"
    );
    assert_eq!(
        policy_texts(&enforce),
        policies_before,
        "the last policies stay in place while the server is away"
    );

    // The server comes back on the same address; the agent catches up.
    let up = start_server(dir.path(), &listen).await;
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(enforce.join(REVOCATIONS_FILE)).unwrap();
        if text.contains(&id("/web")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the agent did not catch up: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while again.agent.enforcer_files().unwrap().position().0 != server_revision
        || again.agent.version() == version
    {
        assert!(start.elapsed() < T, "documents not caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revs = std::fs::read_to_string(enforce.join(REVOCATIONS_FILE)).unwrap();
    assert!(revs.contains(&id("/marker")), "{revs}");
    assert!(
        !revs.contains(&id("/old")),
        "revocation 1 was not sent again: the sync asked since={version}: {revs}"
    );
    let policies = policy_texts(&enforce);
    assert!(
        policies.contains(&id("/reader")),
        "the change arrived: {policies}"
    );
    assert!(!policies.contains(&id("/web")), "{policies}");
    assert!(
        policies.contains(MARK),
        "the unchanged document was not sent again: the sync asked policy_since={revision}: {policies}"
    );
    assert!(again.agent.version() > version);
    // The position saved now is the new one.
    let saved = EnforcerFiles::open(&enforce).unwrap();
    assert_eq!(saved.position().0, server_revision);
    assert_eq!(saved.revocation_version(), again.agent.version());

    again.shutdown(Duration::from_secs(2)).await;
    up.shutdown(Duration::from_secs(2)).await;
}
