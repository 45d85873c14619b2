#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Added latency and throughput of keycard proxy hops, on loopback.
//!
//! Paths, each HTTP/1.1 keep-alive GET of a small body:
//! * `direct`: client -> app (plaintext);
//! * `inbound`: client --mTLS--> inbound proxy -> app (the client holds an SVID);
//! * `mesh`: client -> outbound proxy --mTLS--> inbound proxy -> app.
//!
//! The proxies run on one runtime with ONE worker thread; the app and the
//! load generator on their own. Latency: sequential requests on one
//! connection, p50/p99. Throughput: `CONC` connections for `SECS` seconds.
//!
//! `cargo bench -p keycard-proxy --bench proxy_hop` (env: N, CONC, SECS;
//! ENVOY=<path to the envoy binary> adds an Envoy inbound hop with the same mTLS).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keycard_core::SpiffeId;
use keycard_identity::{Ca, CaConfig, MemoryKeyStore, RootSource, SvidOptions};
use keycard_proxy::proxy::inbound::{self, InboundConfig};
use keycard_proxy::proxy::outbound::{self, MtlsConnector, OutboundConfig};
use keycard_proxy::proxy::{
    Bundles, Expected, IdentityState, MtlsMode, Protocol, ProxyContext, Svid,
};
use keycard_proxy::{compile_str, Authorizer, Mode};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

const SERVER: &str = "spiffe://bench.test/ns/prod/sa/api";
const WEB: &str = "spiffe://bench.test/ns/prod/sa/web";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn svid(ca: &Ca, id: &str) -> Svid {
    let id: SpiffeId = id.parse().unwrap();
    let (s, key) = ca
        .mint_x509_svid_with_key(&id, &SvidOptions::default(), SystemTime::now())
        .unwrap();
    Svid::new(
        s.chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec())),
    )
    .unwrap()
}

fn bundles(ca: &Ca) -> Bundles {
    let mut b = Bundles::new();
    b.insert(ca.trust_domain().as_str(), &ca.bundle().x509_authorities)
        .unwrap();
    b
}

fn policy() -> keycard_proxy::PolicySet {
    compile_str(
        "p.yaml",
        &format!(
            "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: api, namespace: prod}}\nspec:\n  selector: {{spiffeIds: [\"{SERVER}\"]}}\n  rules:\n  - from: [{{source: {{principals: [\"{WEB}\"]}}}}]\n    to: [{{operation: {{methods: [GET], paths: [\"/bench/*\"]}}}}]\n"
        ),
        Mode::Enforce,
    )
    .unwrap()
}

async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello from the app\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

type Send = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + std::marker::Send>>
        + std::marker::Send
        + Sync,
>;

fn plain_sender(addr: SocketAddr) -> Send {
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{addr}/bench/x").parse().unwrap();
    Arc::new(move || {
        let c = c.clone();
        let uri = uri.clone();
        Box::pin(async move {
            let r = c.get(uri).await.unwrap();
            assert_eq!(r.status(), 200);
            r.into_body().collect().await.unwrap();
        })
    })
}

fn mtls_sender(conn: MtlsConnector, addr: SocketAddr) -> Send {
    let c: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(conn);
    let uri: http::Uri = format!("http://{addr}/bench/x").parse().unwrap();
    Arc::new(move || {
        let c = c.clone();
        let uri = uri.clone();
        Box::pin(async move {
            let r = c.get(uri).await.unwrap();
            assert_eq!(r.status(), 200);
            r.into_body().collect().await.unwrap();
        })
    })
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A fresh client per path: `make` runs on the load runtime.
fn measure(
    load: &tokio::runtime::Runtime,
    name: &str,
    make: &dyn Fn() -> Send,
    n: u64,
    conc: u64,
    secs: u64,
) -> (Duration, Duration, f64) {
    load.block_on(async {
        let send = make();
        for _ in 0..200 {
            send().await;
        }
        let mut lat = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = Instant::now();
            send().await;
            lat.push(t.elapsed());
        }
        lat.sort();
        let (p50, p99) = (pct(&lat, 0.50), pct(&lat, 0.99));
        // Throughput: `conc` loops, each with its own connection.
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let send = make();
            let (stop, done) = (stop.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    send().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start_count = done.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let rps = (done.load(Ordering::Relaxed) - start_count) as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        println!(
            "{name:<8} p50 {:>7.1} us  p99 {:>7.1} us  {:>8.0} req/s ({conc} connections)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            rps
        );
        (p50, p99, rps)
    })
}

/// Start Envoy (binary `envoy`) with one worker: downstream TLS 1.3 mTLS
/// with the server's SVID, client certificates checked against the bundle,
/// the client's URI SAN passed on (x-forwarded-client-cert), then the app.
fn start_envoy(
    envoy: &str,
    ca: &Ca,
    app: SocketAddr,
    dir: &std::path::Path,
) -> (std::process::Child, SocketAddr) {
    let id: SpiffeId = SERVER.parse().unwrap();
    let (s, key) = ca
        .mint_x509_svid_with_key(&id, &SvidOptions::default(), SystemTime::now())
        .unwrap();
    std::fs::write(dir.join("chain.pem"), s.chain_pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.to_pem().as_bytes()).unwrap();
    std::fs::write(dir.join("bundle.pem"), ca.bundle().x509_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let cfg = format!(
        r#"
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {{filename: "{d}/chain.pem"}}
              private_key: {{filename: "{d}/key.pem"}}
            validation_context:
              trusted_ca: {{filename: "{d}/bundle.pem"}}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: in
          codec_type: AUTO
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: {{uri: true}}
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: app}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app_port}}}}}}}
"#,
        app_port = app.port()
    );
    std::fs::write(dir.join("envoy.yaml"), cfg).unwrap();
    let child = std::process::Command::new(envoy)
        .arg("-c")
        .arg(dir.join("envoy.yaml"))
        .args(["--concurrency", "1", "--log-level", "error"])
        .arg("--base-id")
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "envoy did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs it once, small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = env("N", if quick { 200 } else { 20_000 });
    let conc = env("CONC", if quick { 2 } else { 16 });
    let secs = env("SECS", if quick { 1 } else { 5 });

    let ca = Ca::open(
        CaConfig::new("bench.test".parse().unwrap(), "b"),
        RootSource::Generate,
        &mut keycard_store::MemoryStore::new(),
        &MemoryKeyStore::new(),
        SystemTime::now(),
    )
    .unwrap();

    let app_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let app_addr = app_rt.block_on(app());

    // The proxies: one worker thread between them.
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server_ctx = Arc::new(ProxyContext::new(
        IdentityState::with(svid(&ca, SERVER), bundles(&ca)),
        Arc::new(Authorizer::with_policies(policy())),
    ));
    let client_ctx = Arc::new(ProxyContext::new(
        IdentityState::with(svid(&ca, WEB), bundles(&ca)),
        Arc::new(Authorizer::with_policies(
            compile_str("none", "", Mode::Enforce).unwrap(),
        )),
    ));
    let (inb, outb) = proxy_rt.block_on(async {
        let inb = inbound::start(
            server_ctx.clone(),
            InboundConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                app: app_addr,
                mode: MtlsMode::Strict,
                protocol: Protocol::Http,
                server_names: Vec::new(),
            },
        )
        .await
        .unwrap();
        let outb = outbound::start(
            client_ctx.clone(),
            OutboundConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream: inb.addr,
                expected: Expected::parse(SERVER).unwrap(),
                protocol: Protocol::Http,
                server_name: None,
            },
        )
        .await
        .unwrap();
        (inb, outb)
    });

    let load = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "keycard proxy hop, HTTP/1.1 GET on loopback, {n} sequential requests for latency, {secs} s for throughput; proxies on 1 worker thread"
    );
    let (d50, d99, drps) = measure(&load, "direct", &|| plain_sender(app_addr), n, conc, secs);
    let inbound_addr = inb.addr;
    let cctx = client_ctx.clone();
    let (i50, i99, irps) = measure(
        &load,
        "inbound",
        &|| {
            let conn = MtlsConnector::new(
                &cctx,
                inbound_addr,
                Expected::parse(SERVER).unwrap(),
                None,
                &[b"http/1.1"],
            )
            .unwrap();
            mtls_sender(conn, inbound_addr)
        },
        n,
        conc,
        secs,
    );
    let out_addr = outb.addr;
    let (m50, m99, mrps) = measure(&load, "mesh", &|| plain_sender(out_addr), n, conc, secs);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "added by the inbound hop (mTLS client -> proxy -> app): p50 {:+.1} us, p99 {:+.1} us; throughput {:.0} vs direct {:.0} req/s",
        us(i50) - us(d50),
        us(i99) - us(d99),
        irps,
        drps
    );
    println!(
        "added by outbound + inbound (app -> proxy =mTLS=> proxy -> app): p50 {:+.1} us, p99 {:+.1} us; throughput {:.0} req/s",
        us(m50) - us(d50),
        us(m99) - us(d99),
        mrps
    );
    if let Ok(envoy) = std::env::var("ENVOY") {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, envoy_addr) = start_envoy(&envoy, &ca, app_addr, dir.path());
        let cctx = client_ctx.clone();
        let (e50, e99, erps) = measure(
            &load,
            "envoy",
            &|| {
                let conn = MtlsConnector::new(
                    &cctx,
                    envoy_addr,
                    Expected::parse(SERVER).unwrap(),
                    None,
                    &[b"http/1.1"],
                )
                .unwrap();
                mtls_sender(conn, envoy_addr)
            },
            n,
            conc,
            secs,
        );
        let _ = child.kill();
        let _ = child.wait();
        println!(
            "added by an Envoy inbound hop (same mTLS, 1 worker): p50 {:+.1} us, p99 {:+.1} us; throughput {:.0} req/s",
            us(e50) - us(d50),
            us(e99) - us(d99),
            erps
        );
        println!(
            "keycard/envoy: added p50 {:.2}x, throughput {:.2}x",
            (us(i50) - us(d50)) / (us(e50) - us(d50)),
            irps / erps
        );
    }
    drop((inb, outb));
}
