//! ext_authz gRPC Check throughput and latency under load: the server in
//! process on 127.0.0.1, a tonic client load loop (CONNS connections,
//! STREAMS concurrent requests each) for SECONDS seconds.
//!
//! `KEYCARD_LOAD_SECONDS`, `KEYCARD_LOAD_CONNS`, `KEYCARD_LOAD_CONCURRENCY`,
//! `KEYCARD_LOAD_SERVER_THREADS` override the defaults (5 s, 4, 64, 1).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use keycard_proxy::serve::{start, ServeConfig};
use keycard_proxy::Mode;

fn env(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn check() -> CheckRequest {
    let mut headers = HashMap::new();
    headers.insert("x-tenant".to_string(), "shared".to_string());
    headers.insert("user-agent".to_string(), "load".to_string());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                principal: "spiffe://example.org/ns/ns9/sa/client9".into(),
                ..Peer::default()
            }),
            destination: Some(Peer {
                principal: "spiffe://example.org/ns/prod/sa/api".into(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".into(),
                    path: "/api/v9/items".into(),
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

fn main() {
    // `cargo bench` passes --bench; any filter argument is ignored.
    let seconds = env("KEYCARD_LOAD_SECONDS", 5);
    let conns = env("KEYCARD_LOAD_CONNS", 4) as usize;
    let concurrency = env("KEYCARD_LOAD_CONCURRENCY", 64) as usize;
    let server_threads = env("KEYCARD_LOAD_SERVER_THREADS", 1) as usize;
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return eprintln!("tempdir: {e}"),
    };
    let mut policies = String::new();
    for n in 0..10 {
        policies.push_str(&format!(
            "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{n}}}\nspec:\n  rules:\n  - from: [{{source: {{principals: [\"spiffe://example.org/ns/ns{n}/sa/client{n}\"]}}}}]\n    to: [{{operation: {{methods: [GET], paths: [\"/api/v{n}/*\"]}}}}]\n    when: [{{key: \"request.headers[x-tenant]\", values: [shared]}}]\n---\n"
        ));
    }
    if std::fs::write(dir.path().join("p.yaml"), policies).is_err() {
        return eprintln!("cannot write policies");
    }
    // The server on its own runtime (SERVER_THREADS workers), the load on another.
    let server_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return eprintln!("runtime: {e}"),
    };
    let cfg = ServeConfig {
        policy_dir: dir.path().to_path_buf(),
        default_mode: Mode::Enforce,
        grpc_listen: "127.0.0.1:0".parse().ok(),
        http_listen: None,
        metrics_listen: None,
        jwks: Vec::new(),
        revocations: None,
        posture: None,
        decision_log: None,
        poll_interval: Duration::from_secs(60),
        accept_unnormalised_paths: false,
    };
    let running = match server_rt.block_on(start(cfg)) {
        Ok(r) => r,
        Err(e) => return eprintln!("start: {e}"),
    };
    let Some(addr) = running.grpc else { return };
    let load_rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return eprintln!("runtime: {e}"),
    };
    let (count, mut lat) = load_rt.block_on(async move {
        let mut tasks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let warmup = Instant::now() + Duration::from_millis(500);
        for _ in 0..conns {
            let Ok(client) = AuthorizationClient::connect(format!("http://{addr}")).await else {
                eprintln!("connect failed");
                return (0, Vec::new());
            };
            for _ in 0..concurrency / conns.max(1) {
                let mut c = client.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let req = check();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match c.check(req.clone()).await {
                            Ok(r) if r.get_ref().status.as_ref().is_some_and(|s| s.code == 0) => {}
                            other => {
                                eprintln!("unexpected response: {other:?}");
                                break;
                            }
                        }
                        if t >= warmup {
                            lat.push(t.elapsed());
                        }
                    }
                    lat
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            if let Ok(l) = t.await {
                all.extend(l);
            }
        }
        (all.len(), all)
    });
    server_rt.block_on(running.stop());
    if lat.is_empty() {
        return eprintln!("no requests completed");
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let secs = seconds as f64 - 0.5;
    println!(
        "ext_authz gRPC Check: {count} checks in {secs:.1} s = {:.0} checks/s; latency p50 {:?} p90 {:?} p99 {:?} max {:?} \
         (server threads {server_threads}, {conns} connections, {concurrency} in flight, client on 1 thread in the same process)",
        count as f64 / secs,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat[lat.len() - 1]
    );
}
