//! High availability, as an operator runs it: two `keycard server`
//! processes (the real binary) on one PostgreSQL database, each on its own
//! port with its own intermediate CA under the shared root.
//!
//! - Writes through both APIs at once (entry creates and deletes,
//!   revocations, posture) end with both servers listing exactly the same
//!   state: nothing acknowledged lost, nothing duplicated.
//! - An agent attested at one server renews at the other, and the SVID the
//!   second issued is accepted by the first.
//! - A server killed with SIGKILL in the middle of a write burst loses
//!   nothing it acknowledged, and the other keeps serving.
//! - The database going away (every connection terminated, new ones
//!   refused) makes calls fail with 503 and a clear error; when it comes
//!   back, the same processes serve again without a restart.
//!
//! Needs `KEYCARD_TEST_POSTGRES`; the test works in a database of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use keycard_server::https::ApiClient;
use keycard_server::remote_agent::read_pem_certs;
use keycard_server::remote_agent::NodeClient;
use keycard_store::testing::TestDatabase;
use serde_json::{json, Value};

const TD: &str = "ha.test";
/// Writes each server takes in the concurrent phase.
const WRITES_PER_SERVER: usize = 200;
/// Concurrent clients per server.
const CLIENTS: usize = 8;

struct Server {
    dir: PathBuf,
    child: Option<Child>,
    api: std::net::SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    /// Starts `keycard server` as instance `name` in `dir` (with `config` as
    /// its configuration file) and waits until it listens.
    fn start(name: &'static str, dir: &Path, postgres: &str, config: &str) -> Server {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.with_extension("toml");
        std::fs::write(&cfg, config).unwrap();
        let _ = std::fs::remove_file(dir.join("up.json"));
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_keycard"))
            .args(["server", "--config"])
            .arg(&cfg)
            .args([
                "--trust-domain",
                TD,
                "--api-listen",
                "127.0.0.1:0",
                "--instance",
                name,
            ])
            .arg("--data-dir")
            .arg(dir)
            .env("KEYCARD_POSTGRES", postgres)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Server {
            dir: dir.to_path_buf(),
            child: Some(child),
            api: "127.0.0.1:1".parse().unwrap(),
        };
        let start = Instant::now();
        loop {
            if let Ok(b) = std::fs::read(dir.join("up.json")) {
                if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                    let api = v["api"].as_str().unwrap().trim_start_matches("https://");
                    s.api = api.parse().unwrap();
                    break;
                }
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{name} exited with {st}:\n{}", s.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{name} did not start:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("https://{}", self.api)
    }

    /// An API client trusting the roots in `bundle_pem`.
    fn client(&self, bundle_pem: &Path, token: &str) -> ApiClient {
        let roots = read_pem_certs(bundle_pem).unwrap();
        ApiClient::new(self.api, "localhost", &roots, Some(token.to_string())).unwrap()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard or URL-safe alphabet, padded or not.
fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'-' => 62,
            b'_' => 63,
            _ => B64.iter().position(|x| *x == c).unwrap() as u32,
        };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn pem(tag: &str, der: &[u8]) -> String {
    let b = b64_encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

/// The operator hands the first server's root to the second: its
/// certificate (the bundle file) and its key (from the key store), as PEM
/// files, the key 0600.
fn export_root(from: &Path, to: &Path) -> String {
    let key_file = std::fs::read_dir(from.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{TD}.root."))
        })
        .expect("the generated root key");
    let key_pem = pem("PRIVATE KEY", &std::fs::read(key_file).unwrap());
    std::fs::create_dir_all(to).unwrap();
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to.join("root.key"))
            .unwrap();
        f.write_all(key_pem.as_bytes()).unwrap();
    }
    std::fs::copy(from.join("bundle.pem"), to.join("root.pem")).unwrap();
    format!(
        "[ca]\nroot_cert = \"{}\"\nroot_key = \"{}\"\n",
        to.join("root.pem").display(),
        to.join("root.key").display()
    )
}

/// Runs `f` (a step on the test database through its blocking
/// administrative client, which must not run on a runtime's thread) on a
/// thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

async fn call(c: &ApiClient, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    match c.call(method, path, body.as_ref()).await {
        Ok(r) => (r.status, r.body),
        Err(e) => (0, json!({ "error": e.to_string() })),
    }
}

/// What one client got acknowledged.
#[derive(Debug, Default)]
struct Acked {
    created: Vec<String>,
    deleted: Vec<String>,
    revoked: Vec<String>,
    posture: Vec<String>,
    failures: Vec<(u16, String)>,
}

/// One client's share of the mixed workload against one server: entry
/// creates (every third one deleted again, through the same server),
/// revocations and posture writes.
async fn workload(c: ApiClient, server: &'static str, client: usize, writes: usize) -> Acked {
    let mut a = Acked::default();
    let mut i = 0;
    let mut n = 0;
    while n < writes {
        let tag = format!("{server}-{client}-{i}");
        let (status, body) = match i % 5 {
            0..=2 => {
                let r = call(
                    &c,
                    Method::POST,
                    "/v1/entries",
                    Some(json!({
                        "spiffe_id": format!("spiffe://{TD}/w/{tag}"),
                        "selectors": [format!("unix:uid:{}", 1000 + i)],
                    })),
                )
                .await;
                if r.0 == 201 {
                    a.created.push(r.1["id"].as_str().unwrap().to_string());
                }
                r
            }
            3 => {
                let r = call(
                    &c,
                    Method::POST,
                    "/v1/revocations",
                    Some(json!({
                        "kind": "identity",
                        "subject": format!("spiffe://{TD}/revoked/{tag}"),
                        "reason": "ha test",
                    })),
                )
                .await;
                if r.0 == 201 {
                    a.revoked.push(format!("spiffe://{TD}/revoked/{tag}"));
                }
                r
            }
            _ => {
                let r = call(
                    &c,
                    Method::POST,
                    "/v1/posture",
                    Some(json!({
                        "subject": format!("device-{tag}"),
                        "attributes": { "compliant": true },
                        "ttl_secs": 3600,
                    })),
                )
                .await;
                if r.0 == 201 {
                    a.posture.push(format!("device-{tag}"));
                }
                r
            }
        };
        if !(200..300).contains(&status) {
            a.failures.push((status, body.to_string()));
        }
        n += 1;
        // Delete every third entry created (the 1st, 4th, 7th...).
        if i % 5 == 2 && n < writes && a.created.len() > a.deleted.len() * 3 + 1 {
            let id = a.created[a.deleted.len() * 3].clone();
            let r = call(&c, Method::DELETE, &format!("/v1/entries/{id}"), None).await;
            if r.0 == 200 {
                a.deleted.push(id);
            } else {
                a.failures.push((r.0, r.1.to_string()));
            }
            n += 1;
        }
        i += 1;
    }
    a
}

/// Runs `writes` operations against `server` from `CLIENTS` clients.
async fn burst(c: &ApiClient, server: &'static str, writes: usize) -> Acked {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|k| tokio::spawn(workload(c.clone(), server, k, writes / CLIENTS)))
        .collect();
    let mut all = Acked::default();
    for t in tasks {
        let a = t.await.unwrap();
        all.created.extend(a.created);
        all.deleted.extend(a.deleted);
        all.revoked.extend(a.revoked);
        all.posture.extend(a.posture);
        all.failures.extend(a.failures);
    }
    all
}

async fn entry_ids(c: &ApiClient) -> Vec<String> {
    let (status, body) = call(c, Method::GET, "/v1/entries", None).await;
    assert_eq!(status, 200, "{body}");
    body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn revocations(c: &ApiClient) -> Vec<Value> {
    let (status, body) = call(c, Method::GET, "/v1/revocations", None).await;
    assert_eq!(status, 200, "{body}");
    body["revocations"].as_array().unwrap().clone()
}

async fn posture_subjects(c: &ApiClient) -> Vec<String> {
    let (status, body) = call(c, Method::GET, "/v1/posture", None).await;
    assert_eq!(status, 200, "{body}");
    let mut v: Vec<String> = body["posture"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["subject"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn count<T: Ord + Clone>(items: &[T]) -> BTreeMap<T, usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.clone()).or_insert(0) += 1;
    }
    m
}

/// The JWT authorities' key ids in a SPIFFE bundle document.
fn jwt_kids(bundle: &Value) -> BTreeSet<String> {
    bundle["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_servers_on_one_postgres_serve_together_and_survive_kills_and_outages() {
    let db = match TestDatabase::create("ha_e2e") {
        Ok(Some(db)) => db,
        Ok(None) => {
            eprintln!("skipped: KEYCARD_TEST_POSTGRES is not set (a PostgreSQL to test against)");
            return;
        }
        Err(e) => panic!("creating the test database: {e}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Server A creates the trust domain; the operator gives its root to B.
    let a = Server::start("a", &tmp.path().join("a"), db.conninfo(), "");
    let b_config = export_root(&tmp.path().join("a"), &tmp.path().join("b-root"));
    let mut b = Server::start("b", &tmp.path().join("b"), db.conninfo(), &b_config);
    assert!(
        !tmp.path().join("b/admin.token").exists(),
        "the bootstrap admin token is made once per trust domain"
    );
    let bundle_pem = tmp.path().join("a/bundle.pem");
    let roots = read_pem_certs(&bundle_pem).unwrap();
    assert_eq!(roots.len(), 1);
    assert_eq!(
        read_pem_certs(&tmp.path().join("b/bundle.pem")).unwrap(),
        roots,
        "one root for both servers"
    );
    let token = std::fs::read_to_string(tmp.path().join("a/admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let ca = a.client(&bundle_pem, &token);
    let cb = b.client(&bundle_pem, &token);

    rt.block_on(async {
        // 1. Both APIs take writes at once.
        let (ra, rb) = tokio::join!(
            burst(&ca, "a", WRITES_PER_SERVER),
            burst(&cb, "b", WRITES_PER_SERVER)
        );
        for (name, r) in [("a", &ra), ("b", &rb)] {
            assert!(r.failures.is_empty(), "{name}: {:?}", r.failures);
            assert!(r.created.len() >= WRITES_PER_SERVER / 3, "{name}: {r:?}");
            assert!(!r.deleted.is_empty() && !r.revoked.is_empty() && !r.posture.is_empty());
        }
        let created: Vec<String> = ra.created.iter().chain(&rb.created).cloned().collect();
        let deleted: BTreeSet<String> = ra.deleted.iter().chain(&rb.deleted).cloned().collect();
        let mut expected: Vec<String> = created
            .iter()
            .filter(|id| !deleted.contains(*id))
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(count(&created).len(), created.len(), "entry ids are unique");

        // Both servers list exactly the same state, and it is exactly what
        // was acknowledged.
        let (ea, eb) = (entry_ids(&ca).await, entry_ids(&cb).await);
        assert_eq!(ea, eb, "both servers list the same entries");
        assert_eq!(ea, expected, "every acknowledged create is there once, every delete gone");

        let (va, vb) = (revocations(&ca).await, revocations(&cb).await);
        assert_eq!(va, vb, "both servers list the same revocations");
        let versions: Vec<u64> = va.iter().map(|r| r["version"].as_u64().unwrap()).collect();
        assert_eq!(versions, (1..=va.len() as u64).collect::<Vec<_>>(), "versions are dense");
        let subjects: Vec<String> = va
            .iter()
            .map(|r| r["subject"].as_str().unwrap().to_string())
            .collect();
        let by_subject = count(&subjects);
        for s in ra.revoked.iter().chain(&rb.revoked) {
            assert_eq!(by_subject.get(s), Some(&1), "revocation of {s}");
        }
        for id in &deleted {
            assert_eq!(by_subject.get(id), Some(&1), "deleting entry {id} revoked it once");
        }
        assert_eq!(va.len(), ra.revoked.len() + rb.revoked.len() + deleted.len());

        let (pa, pb) = (posture_subjects(&ca).await, posture_subjects(&cb).await);
        assert_eq!(pa, pb, "both servers list the same posture");
        let mut acked: Vec<String> = ra.posture.iter().chain(&rb.posture).cloned().collect();
        acked.sort();
        assert_eq!(pa, acked);

        // 2. One bundle: both servers publish both JWT keys (each re-reads
        // the shared trust state every two seconds).
        let deadline = Instant::now() + Duration::from_secs(20);
        let (bundle_a, bundle_b) = loop {
            let (_, ba) = call(&ca, Method::GET, "/bundle", None).await;
            let (_, bb) = call(&cb, Method::GET, "/bundle", None).await;
            if jwt_kids(&ba).len() >= 2 && jwt_kids(&ba) == jwt_kids(&bb) {
                break (ba, bb);
            }
            assert!(Instant::now() < deadline, "bundles differ: {ba} / {bb}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(bundle_a["spiffe_sequence"], bundle_b["spiffe_sequence"]);

        // 3. An agent attested at A renews at B; A accepts what B issued.
        let (status, body) = call(&ca, Method::POST, "/v1/join-tokens", Some(json!({}))).await;
        assert_eq!(status, 201, "{body}");
        let join = body["token"].as_str().unwrap().to_string();
        let at_a = NodeClient::new(&a.url(), &roots).unwrap();
        let (node, _) = at_a.attest_join_token(&join).await.unwrap();
        let at_b = NodeClient::new(&b.url(), &roots).unwrap();
        at_b.set_node(&node).unwrap();
        let renewed = at_b.renew(&node.agent_id).await.unwrap();
        // From now on B sees the renewed SVID.
        at_b.reset().await;
        assert!(
            issued_by(&renewed.chain, "b") && !issued_by(&renewed.chain, "a"),
            "B's own intermediate signed the renewal"
        );
        // A verifies B's SVID against its bundle when the agent calls it.
        let back_at_a = NodeClient::new(&a.url(), &roots).unwrap();
        back_at_a.set_node(&renewed).unwrap();
        back_at_a
            .sync(0, "", Duration::from_secs(0))
            .await
            .expect("A accepts the node SVID B issued");
        // A JWT-SVID minted at B names a key A's bundle carries.
        let (status, body) = call(
            &cb,
            Method::POST,
            "/v1/entries",
            Some(json!({
                "spiffe_id": format!("spiffe://{TD}/jwt-app"),
                "parent_id": node.agent_id.to_string(),
                "selectors": ["unix:uid:4242"],
            })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let jwt = at_b
            .jwt_svid(&format!("spiffe://{TD}/jwt-app").parse().unwrap(), &["db".to_string()])
            .await
            .expect("a JWT-SVID from B");
        let header: Value =
            serde_json::from_slice(&b64_decode(jwt.token.split('.').next().unwrap())).unwrap();
        let kid = header["kid"].as_str().unwrap().to_string();
        assert!(jwt_kids(&bundle_a).contains(&kid), "A's bundle has B's key {kid}");

        // 4. SIGKILL B in the middle of a write burst: everything B
        // acknowledged is there, and A keeps serving.
        let before: BTreeSet<String> = entry_ids(&ca).await.into_iter().collect();
        let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let workers: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let (cb, acked) = (cb.clone(), Arc::clone(&acked));
                tokio::spawn(async move {
                    for i in 0..100 {
                        let (status, body) = call(
                            &cb,
                            Method::POST,
                            "/v1/entries",
                            Some(json!({
                                "spiffe_id": format!("spiffe://{TD}/kill/{k}-{i}"),
                                "selectors": ["unix:uid:7"],
                            })),
                        )
                        .await;
                        match status {
                            201 => acked.lock().unwrap().push(body["id"].as_str().unwrap().to_string()),
                            0 => return, // the server is gone
                            other => panic!("unexpected {other}: {body}"),
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < 40 {
            assert!(Instant::now() < deadline, "the burst did not get going");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.kill();
        for w in workers {
            w.await.unwrap();
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() < CLIENTS * 100, "B was killed mid-burst");
        let after: BTreeSet<String> = entry_ids(&ca).await.into_iter().collect();
        for id in &acked {
            assert!(after.contains(id), "entry {id} was acknowledged by B but is lost");
        }
        let new: BTreeSet<_> = after.difference(&before).collect();
        assert!(
            new.len() >= acked.len() && new.len() <= acked.len() + CLIENTS,
            "{} new entries for {} acknowledged (at most one unacknowledged in flight per client)",
            new.len(),
            acked.len()
        );
        let (status, body) = call(
            &ca,
            Method::POST,
            "/v1/entries",
            Some(json!({ "spiffe_id": format!("spiffe://{TD}/after-kill"), "selectors": ["unix:uid:8"] })),
        )
        .await;
        assert_eq!(status, 201, "A keeps serving: {body}");

        // 5. The database goes away: calls fail with 503 and say why.
        off_runtime(|| db.refuse_connections(true)).unwrap();
        off_runtime(|| db.terminate_connections()).unwrap();
        for i in 0..3 {
            let (status, body) = call(&ca, Method::GET, "/v1/entries", None).await;
            assert_eq!(status, 503, "read {i} while the database is down: {body}");
            let msg = body["error"].as_str().unwrap_or_default();
            assert!(msg.contains("database is unreachable"), "a clear error: {msg}");
            let (status, body) = call(
                &ca,
                Method::POST,
                "/v1/posture",
                Some(json!({ "subject": format!("down-{i}"), "attributes": { "x": 1 }, "ttl_secs": 60 })),
            )
            .await;
            assert_eq!(status, 503, "write {i} while the database is down: {body}");
        }
        // The public bundle needs no database: it is still served.
        let (status, _) = call(&ca, Method::GET, "/bundle", None).await;
        assert_eq!(status, 200);

        // It comes back: the same process serves again.
        off_runtime(|| db.refuse_connections(false)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = call(&ca, Method::GET, "/v1/entries", None).await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "A did not reconnect: {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, body) = call(
            &ca,
            Method::POST,
            "/v1/posture",
            Some(json!({ "subject": "back", "attributes": { "x": 1 }, "ttl_secs": 60 })),
        )
        .await;
        assert_eq!(status, 201, "writes work again: {body}");
        assert!(posture_subjects(&ca).await.contains(&"back".to_string()));
        assert!(!posture_subjects(&ca).await.contains(&"down-0".to_string()));
    });

    // 6. B restarts on its data directory and serves the same state.
    let b2 = Server::start("b", &tmp.path().join("b"), db.conninfo(), &b_config);
    let cb2 = b2.client(&bundle_pem, &token);
    rt.block_on(async {
        assert_eq!(entry_ids(&cb2).await, entry_ids(&ca).await);
    });
    drop(b2);
    drop(a);
}

/// Whether the chain's intermediate is instance `instance`'s.
fn issued_by<C: AsRef<[u8]>>(chain: &[C], instance: &str) -> bool {
    let cn = format!("keycard intermediate CA {TD} {instance}");
    chain
        .get(1)
        .is_some_and(|c| c.as_ref().windows(cn.len()).any(|w| w == cn.as_bytes()))
}
