//! Admission webhook latency under a fixed request rate (open loop).
//!
//! Starts the webhook over HTTPS on 127.0.0.1 with the default packs
//! (pss-restricted, zero-trust) and a durable SQLite decision log, then
//! sends realistic AdmissionReviews (Deployments allowed and denied, Pods of
//! a ReplicaSet, Services, RoleBindings, updates) at a fixed rate over one
//! HTTP/2 connection, as the API server does. Each request is scheduled at
//! its own time and its latency is measured from that time, so a slow
//! answer delays nothing else and is not hidden (no coordinated omission).
//!
//! ```sh
//! CARGO_TARGET_DIR=target/bench-f cargo bench -p keycard-server --bench admission
//! ADMISSION_BENCH_RPS=400 ADMISSION_BENCH_SECS=20 ADMISSION_BENCH_LOG=memory \
//!   ADMISSION_BENCH_PROTO=http1 cargo bench -p keycard-server --bench admission
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/admission_fixtures/mod.rs"]
mod fixtures;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use keycard_server::admission::{
    serve, tls_config_from_pem, AdmissionPolicy, DecisionSink, PolicyOptions, Recorder,
    ServerOptions, Webhook, WebhookConfig,
};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The mix of requests: what a cluster's API server sends during deploys.
fn bodies() -> Vec<(&'static str, Bytes)> {
    use fixtures::*;
    let mut pod = compliant_deployment("web")["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["name"] = json!("web-7d4b9c-x2x9q");
    pod["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
        "uid": "0b5b3c52-0000-4000-8000-000000000001", "controller": true
    }]);
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    });
    let rb = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "web-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]
    });
    let out: Vec<(&'static str, Value)> = vec![
        (
            "deployment-ok",
            review("b-1", "CREATE", "shop", &compliant_deployment("web")),
        ),
        (
            "deployment-denied",
            review("b-2", "CREATE", "shop", &privileged_deployment("web")),
        ),
        ("pod", review("b-3", "CREATE", "shop", &pod)),
        ("service", review("b-4", "CREATE", "shop", &svc)),
        ("rolebinding", review("b-5", "CREATE", "shop", &rb)),
        (
            "deployment-update",
            review("b-6", "UPDATE", "shop", &unlabelled_deployment("web")),
        ),
    ];
    out.into_iter()
        .map(|(name, v)| (name, Bytes::from(serde_json::to_vec(&v).unwrap())))
        .collect()
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (Linux); 0 elsewhere.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

enum Client {
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    H1(Arc<tokio::sync::Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>>),
}

async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    alpn: &[u8],
) -> TokioIo<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    TokioIo::new(
        TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .unwrap(),
    )
}

fn main() {
    let rps: u64 = env("ADMISSION_BENCH_RPS", 200);
    let secs: u64 = env("ADMISSION_BENCH_SECS", 15);
    let warmup_secs: u64 = env("ADMISSION_BENCH_WARMUP_SECS", 3);
    let log_kind: String = env("ADMISSION_BENCH_LOG", "sqlite".to_string());
    let proto: String = env("ADMISSION_BENCH_PROTO", "h2".to_string());
    let server_threads: usize = env("ADMISSION_BENCH_SERVER_THREADS", 2);

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca_pem = ck.cert.pem();
    let tls =
        tls_config_from_pem(ca_pem.as_bytes(), ck.signing_key.serialize_pem().as_bytes()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sink: Option<Arc<dyn DecisionSink>> = match log_kind.as_str() {
        "sqlite" => {
            let key = keycard_audit::Ed25519Signer::generate("bench/decisions").unwrap();
            let store = keycard_store::SqliteStore::open(dir.path().join("audit.db")).unwrap();
            let log =
                keycard_audit::DecisionLog::open("bench/decisions", store, Box::new(key)).unwrap();
            Some(Arc::new(Mutex::new(log)))
        }
        "memory" => Some(Arc::new(keycard_server::admission::MemorySink::new())),
        _ => None,
    };
    let built = Instant::now();
    let policy = AdmissionPolicy::load(&PolicyOptions::default()).unwrap();
    let compile_ms = built.elapsed().as_secs_f64() * 1e3;
    let recorder = sink.map(|s| Recorder::spawn(s, 8192, 1024));
    let webhook = Arc::new(Webhook::new(policy, WebhookConfig::default(), recorder));

    // The server on its own runtime (as in `keycard admission serve`).
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .enable_all()
        .build()
        .unwrap();
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    server_rt.spawn(serve(
        listener,
        Arc::new(tls),
        webhook,
        ServerOptions::default(),
        std::future::pending(),
    ));

    // The load generator on one thread of its own.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bodies = bodies();
    client_rt.block_on(async move {
        let client = if proto == "http1" {
            Client::H1(Arc::new(tokio::sync::Mutex::new(Vec::new())))
        } else {
            let io = connect(addr, &ca_pem, b"h2").await;
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Client::H2(send)
        };
        let client = Arc::new(client);
        let run = |n: u64, measure: bool| {
            let client = Arc::clone(&client);
            let bodies = bodies.clone();
            let ca_pem = ca_pem.clone();
            async move {
                let interval = Duration::from_nanos(1_000_000_000 / rps.max(1));
                let start = tokio::time::Instant::now() + Duration::from_millis(10);
                let results = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..n {
                    let at = start + interval * (i as u32);
                    tokio::time::sleep_until(at).await;
                    let (_, body) = bodies[(i as usize) % bodies.len()].clone();
                    let client = Arc::clone(&client);
                    let results = Arc::clone(&results);
                    let ca_pem = ca_pem.clone();
                    tasks.spawn(async move {
                        let req = Request::post("/validate")
                            .header("content-type", "application/json")
                            .header("host", "localhost")
                            .body(Full::new(body))
                            .unwrap();
                        let outcome = match &*client {
                            Client::H2(s) => {
                                let mut s = s.clone();
                                s.send_request(req).await.ok()
                            }
                            Client::H1(pool) => {
                                let conn = pool.lock().await.pop();
                                let mut conn = match conn {
                                    Some(c) => c,
                                    None => {
                                        let io = connect(addr, &ca_pem, b"http/1.1").await;
                                        let (send, c) =
                                            hyper::client::conn::http1::handshake(io).await.unwrap();
                                        tokio::spawn(c);
                                        send
                                    }
                                };
                                let _ = conn.ready().await;
                                let r = conn.send_request(req).await.ok();
                                pool.lock().await.push(conn);
                                r
                            }
                        };
                        let allowed = match outcome {
                            Some(r) if r.status() == 200 => {
                                let b = r.into_body().collect().await.unwrap().to_bytes();
                                let v: Value = serde_json::from_slice(&b).unwrap();
                                v["response"]["allowed"].as_bool()
                            }
                            _ => None,
                        };
                        let latency = tokio::time::Instant::now() - at;
                        results.lock().unwrap().push((latency, allowed));
                    });
                }
                while tasks.join_next().await.is_some() {}
                let r = results.lock().unwrap().clone();
                if measure {
                    Some(r)
                } else {
                    None
                }
            }
        };
        run(rps * warmup_secs, false).await;
        let cpu0 = cpu_seconds();
        let wall = Instant::now();
        let results = run(rps * secs, true).await.unwrap();
        let wall = wall.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        let mut lat: Vec<Duration> = results.iter().map(|(d, _)| *d).collect();
        lat.sort();
        let q = |p: f64| {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1e3
        };
        let allowed = results.iter().filter(|(_, a)| *a == Some(true)).count();
        let denied = results.iter().filter(|(_, a)| *a == Some(false)).count();
        let errors = results.iter().filter(|(_, a)| a.is_none()).count();
        println!(
            "admission webhook: {rps} req/s for {secs} s over {proto} (TLS, 127.0.0.1), default packs, decision log {log_kind}, {} cores",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
        println!(
            "  policies compiled in {compile_ms:.0} ms; {} requests: {allowed} allowed, {denied} denied, {errors} errors; achieved {:.0} req/s",
            results.len(),
            results.len() as f64 / wall
        );
        println!(
            "  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            q(0.50),
            q(0.90),
            q(0.99),
            q(0.999),
            lat.last().map(|d| d.as_secs_f64() * 1e3).unwrap_or(0.0)
        );
        println!(
            "  process CPU (server + load generator): {:.2} cores busy, {:.0} us per request",
            cpu / wall,
            cpu / results.len().max(1) as f64 * 1e6
        );
        assert_eq!(errors, 0, "every request answered");
    });
    drop(server_rt);
}
