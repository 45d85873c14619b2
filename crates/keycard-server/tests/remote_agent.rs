//! `keycard server` and `keycard agent` as separate parts: join-token
//! attestation (once; replays, unknown and expired tokens refused), the
//! long-poll sync carrying entries to the agent while it runs, the agent
//! serving a real SPIFFE client (the `spiffe` crate) over its socket,
//! deletion, a server outage (the cache keeps serving; changes arrive when
//! the server returns), bans, and an agent asking for an entry it does not
//! serve.
//!
//! The server runs on its own runtime in its own thread, so stopping it
//! closes every connection as a killed process would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Method;
use keycard_server::https::ApiClient;
use keycard_server::remote_agent::{
    new_key_and_csr, read_pem_certs, start_agent, AgentConfig, CallError, NodeClient,
};
use keycard_server::state::ServerState;
use keycard_server::{connect_data_dir, Overrides, UpConfig};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
const TD: &str = "agent.test";

fn config(dir: &Path, port: u16) -> UpConfig {
    let o = Overrides {
        data_dir: Some(dir.to_path_buf()),
        trust_domain: Some(TD.into()),
        api_listen: Some(format!("127.0.0.1:{port}")),
        no_admission: true,
        ..Overrides::default()
    };
    let mut c = UpConfig::parse("", "test", &o).unwrap();
    c.agent_enabled = false;
    c
}

/// A `keycard server` on its own runtime and thread.
struct Server {
    state: Arc<ServerState>,
    addr: SocketAddr,
    api: ApiClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let cfg = config(dir, port);
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let up = keycard_server::start(cfg).await.unwrap();
                assert!(up.endpoints.socket.is_empty(), "no local agent socket");
                tx.send((Arc::clone(&up.state), up.endpoints.clone()))
                    .unwrap();
                let _ = stop_rx.await;
                up.shutdown(Duration::from_secs(2)).await;
            });
            // Drops every connection the server still holds.
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        let (state, endpoints) = rx.recv_timeout(T).expect("server started");
        let addr: SocketAddr = endpoints
            .api
            .trim_start_matches("https://")
            .parse()
            .unwrap();
        let api = connect_data_dir(dir).unwrap().client;
        Server {
            state,
            addr,
            api,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self.api.call(method, path, body.as_ref()).await.unwrap();
        (r.status, r.body)
    }

    async fn join_token(&self) -> String {
        let (st, b) = self
            .call(Method::POST, "/v1/join-tokens", Some(json!({})))
            .await;
        assert_eq!(st, 201, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    async fn create_entry(&self, path: &str, parent: Option<&str>) -> String {
        let mut body = json!({
            "spiffe_id": format!("spiffe://{TD}{path}"),
            "selectors": [format!("unix:uid:{}", my_uid())],
        });
        if let Some(p) = parent {
            body["parent_id"] = json!(p);
        }
        let (st, b) = self.call(Method::POST, "/v1/entries", Some(body)).await;
        assert_eq!(st, 201, "{b}");
        b["id"].as_str().unwrap().to_string()
    }
}

fn bundle(dir: &Path) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    read_pem_certs(&dir.join("bundle.pem")).unwrap()
}

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid()
}

async fn fetch_id(socket: &Path) -> Result<String, String> {
    let client = tokio::time::timeout(
        T,
        spiffe::WorkloadApiClient::connect_to(format!("unix://{}", socket.display())),
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

/// Polls `check` until it holds, failing after `T`.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + T;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status(r: Result<impl std::fmt::Debug, CallError>) -> (u16, String) {
    match r {
        Err(CallError::Status { status, message }) => (status, message),
        other => panic!("expected an error status, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_attest_once_and_bad_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let server = Server::start(&dir, 0);
    let token = server.join_token().await;

    let client = NodeClient::new(&server.url(), &bundle(&dir)).unwrap();
    // No node SVID yet: agent calls are refused.
    let (st, msg) = status(client.sync(0, "", Duration::ZERO).await);
    assert_eq!(st, 401, "{msg}");

    let (node, bundle_json) = client.attest_join_token(&token).await.unwrap();
    assert!(
        node.agent_id
            .to_string()
            .starts_with(&format!("spiffe://{TD}/keycard/agent/join_token/")),
        "{}",
        node.agent_id
    );
    assert!(bundle_json["keys"].is_array(), "{bundle_json}");
    let leaf = &node.chain[0];
    assert_eq!(
        keycard_server::https::spiffe_id_of(leaf).unwrap(),
        node.agent_id
    );
    // The server recorded the agent with its node SVID's serial.
    let rec = server.state.store().agent(&node.agent_id).unwrap().unwrap();
    assert_eq!(rec.attestation, "join_token");
    assert!(!rec.banned && !rec.serial.is_empty() && rec.expires_at > 0);
    assert_eq!(rec.selectors.len(), 1);

    // Now the agent is known over mTLS.
    let first = client.sync(0, "", Duration::ZERO).await.unwrap();
    assert!(first.entries.is_empty());
    assert!(!first.digest.is_empty());

    // The same token again, from another client: a replay.
    let other = NodeClient::new(&server.url(), &bundle(&dir)).unwrap();
    let e = other
        .attest_join_token(&token)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("already used"), "{e}");
    // Unknown.
    let e = other
        .attest_join_token(&"ab".repeat(32))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("unknown"), "{e}");
    // Expired: issued an hour ago for ten minutes.
    let expired = {
        let mut st = server.state.store();
        keycard_identity::generate_join_token(
            st.as_mut(),
            &TD.parse().unwrap(),
            Duration::from_secs(600),
            None,
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap()
    };
    let e = other
        .attest_join_token(&expired.token)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && e.contains("expired"), "{e}");
    // Garbage in the body names the field.
    let (st, msg) = status(
        other
            .call::<Value>(
                Method::POST,
                "/v1/agent/attest",
                Some(&json!({"join_token": token, "csr": "not base64!"})),
                T,
            )
            .await,
    );
    assert_eq!(st, 400);
    assert!(msg.contains("csr"), "{msg}");

    // The node SVID renews over mTLS, and the record follows.
    let renewed = client.renew(&node.agent_id).await.unwrap();
    let rec2 = server.state.store().agent(&node.agent_id).unwrap().unwrap();
    assert_ne!(rec2.serial, rec.serial);
    assert_ne!(renewed.chain[0], node.chain[0]);
    drop(server.state.clone());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_live_changes_and_survives_an_outage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let server = Server::start(&dir, 0);
    let addr = server.addr;
    let token = server.join_token().await;

    let adir = tmp.path().join("agent");
    let mut cfg = AgentConfig::new(&server.url(), bundle(&dir), &adir);
    cfg.join_token = Some(token);
    let socket: PathBuf = adir.join("agent.sock");
    let agent = start_agent(cfg).await.unwrap();
    let a = Arc::clone(&agent.agent);
    let agent_id = a.agent_id().to_string();

    // The node key is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(adir.join("node.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "node.pem mode {mode:o}");

    // Nothing to serve yet.
    assert!(fetch_id(&socket).await.is_err());

    // An entry created on the server reaches the running agent.
    let app = server.create_entry("/app", Some(&agent_id)).await;
    until("the entry's SVID on the socket", || async {
        fetch_id(&socket).await.as_deref() == Ok("spiffe://agent.test/app")
    })
    .await;

    // Deletion removes it.
    let (st, _) = server
        .call(Method::DELETE, &format!("/v1/entries/{app}"), None)
        .await;
    assert_eq!(st, 200);
    until("the SVID to leave the cache", || async {
        a.cached().is_empty()
    })
    .await;
    assert!(fetch_id(&socket).await.is_err());

    // An entry parented elsewhere is not served here.
    server
        .create_entry(
            "/elsewhere",
            Some("spiffe://agent.test/keycard/agent/other"),
        )
        .await;
    let web = server.create_entry("/web", Some(&agent_id)).await;
    until("the new entry", || async {
        fetch_id(&socket).await.as_deref() == Ok("spiffe://agent.test/web")
    })
    .await;
    assert_eq!(a.cached().len(), 1, "{:?}", a.cached());
    assert!(a.cached().contains_key(&web));

    // The server goes away: the cache keeps serving.
    drop(server.state.clone());
    server.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fetch_id(&socket).await.as_deref(),
        Ok("spiffe://agent.test/web")
    );

    // It comes back on the same address; the agent reconnects on its own
    // (no restart) and picks up what changed while it was away and after.
    let server = Server::start(&dir, addr.port());
    let (st, _) = server
        .call(Method::DELETE, &format!("/v1/entries/{web}"), None)
        .await;
    assert_eq!(st, 200);
    server.create_entry("/api", Some(&agent_id)).await;
    until("the entry made after the outage", || async {
        fetch_id(&socket).await.as_deref() == Ok("spiffe://agent.test/api")
    })
    .await;
    assert_eq!(a.cached().len(), 1, "{:?}", a.cached());

    // Banned: the server refuses it at once, and it stops serving.
    let (st, b) = server
        .call(
            Method::POST,
            "/v1/agents/ban",
            Some(json!({"spiffe_id": agent_id})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    until("the banned agent to drop its cache", || async {
        a.refused().is_some() && a.cached().is_empty()
    })
    .await;
    assert!(fetch_id(&socket).await.is_err());
    agent.shutdown(Duration::from_secs(2)).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_only_their_entries_and_bans_take_effect_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("server");
    let server = Server::start(&dir, 0);
    let a = NodeClient::new(&server.url(), &bundle(&dir)).unwrap();
    let (na, _) = a
        .attest_join_token(&server.join_token().await)
        .await
        .unwrap();
    let b = NodeClient::new(&server.url(), &bundle(&dir)).unwrap();
    let (nb, _) = b
        .attest_join_token(&server.join_token().await)
        .await
        .unwrap();
    let entry = server
        .create_entry("/b-only", Some(&nb.agent_id.to_string()))
        .await;
    let (_, csr) = new_key_and_csr().unwrap();

    // A does not serve B's entry: no X509-SVID, no JWT-SVID, not in its sync.
    let (st, msg) = status(a.entry_svid(&entry, &csr).await);
    assert_eq!(st, 403, "{msg}");
    let id: keycard_core::SpiffeId = format!("spiffe://{TD}/b-only").parse().unwrap();
    let (st, _) = status(a.jwt_svid(&id, &["db".to_string()]).await);
    assert_eq!(st, 403);
    assert!(a
        .sync(0, "", Duration::ZERO)
        .await
        .unwrap()
        .entries
        .is_empty());
    let (st, _) = status(a.entry_svid("no-such-entry", &csr).await);
    assert_eq!(st, 403);

    // B does, for exactly that ID.
    let svid = b.entry_svid(&entry, &csr).await.unwrap();
    assert_eq!(svid.spiffe_id, id.to_string());
    let jwt = b.jwt_svid(&id, &["db".to_string()]).await.unwrap();
    assert_eq!(jwt.spiffe_id, id.to_string());
    let synced = b.sync(0, "", Duration::ZERO).await.unwrap();
    assert_eq!(synced.entries.len(), 1);

    // A long poll with nothing new waits; a ban ends it with 403 at once.
    let current = a.sync(0, "", Duration::ZERO).await.unwrap();
    let a = Arc::new(a);
    let waiting = {
        let a = Arc::clone(&a);
        let (v, d) = (current.version, current.digest.clone());
        tokio::spawn(async move { a.sync(v, &d, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the long poll waits for a change");
    let (st, body) = server
        .call(
            Method::POST,
            "/v1/agents/ban",
            Some(json!({"spiffe_id": na.agent_id.to_string()})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let r = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting sync ends on the ban")
        .unwrap();
    let (st, msg) = status(r);
    assert_eq!(st, 403);
    assert!(msg.contains("banned"), "{msg}");
    let (st, _) = status(
        a.renew(&na.agent_id)
            .await
            .map(|_| ())
            .map_err(|e| match e {
                keycard_server::remote_agent::AgentError::Call(c) => c,
                e => panic!("{e}"),
            }),
    );
    assert_eq!(st, 403);

    // B is unaffected and learns of the ban through its feed.
    let after = b
        .sync(synced.version, &synced.digest, Duration::ZERO)
        .await
        .unwrap();
    assert!(after
        .revocations
        .iter()
        .any(|r| r.subject == na.agent_id.to_string()));
    server.stop();
}
