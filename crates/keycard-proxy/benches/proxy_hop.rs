#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Added latency and throughput of keycard proxy hops, on loopback.
//!
//! Paths, each HTTP/1.1 keep-alive GET of a small body:
//! * `direct`: client -> app (plaintext);
//! * `inbound`: client --mTLS--> inbound proxy -> app (the client holds an SVID);
//! * `mesh`: client -> outbound proxy --mTLS--> inbound proxy -> app.
//!
//! The proxies run on one runtime with ONE worker thread; the app and the
//! load generator on their own. The load generator is a lean pipelined HTTP/1.1 client over the same
//! rustls mTLS, so that the proxy is what is measured. Latency: sequential
//! requests on one connection, p50/p99. Throughput: `CONC` keep-alive
//! connections with `DEPTH` pipelined requests each, `SECS` seconds per
//! round, `ROUNDS` rounds that interleave the paths; best and median.
//!
//! `cargo bench -p keycard-proxy --bench proxy_hop` (env: N, CONC, DEPTH,
//! SECS, ROUNDS; ENVOY=<path to the envoy binary> adds an Envoy
//! inbound hop with the same mTLS and one worker).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keycard_core::SpiffeId;
use keycard_identity::{Ca, CaConfig, MemoryKeyStore, RootSource, SvidOptions};
use keycard_proxy::proxy::inbound::{self, InboundConfig};
use keycard_proxy::proxy::outbound::{self, MtlsConnector, OutboundConfig};
use keycard_proxy::proxy::{
    Bundles, Expected, IdentityState, MtlsMode, Protocol, ProxyContext, Svid,
};
use keycard_proxy::{compile_str, Authorizer, Mode};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A boxed byte stream: plaintext TCP or mTLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + std::marker::Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + std::marker::Send> Stream for T {}

type Dial = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Box<dyn Stream>> + std::marker::Send>,
        > + std::marker::Send
        + Sync,
>;

fn plain_dial(addr: SocketAddr) -> Dial {
    Arc::new(move || {
        Box::pin(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            let _ = s.set_nodelay(true);
            Box::new(s) as Box<dyn Stream>
        })
    })
}

fn mtls_dial(conn: MtlsConnector) -> Dial {
    let conn = Arc::new(conn);
    Arc::new(move || {
        let conn = conn.clone();
        Box::pin(async move { Box::new(conn.connect().await.unwrap()) as Box<dyn Stream> })
    })
}

const REQUEST: &[u8] = b"GET /bench/x HTTP/1.1\r\nhost: api.bench\r\n\r\n";

/// A lean HTTP/1.1 client: keep-alive, `depth` requests written at once
/// (pipelined), responses counted by their Content-Length. It costs the
/// shared CPUs far less than a full client, so the proxy is what is measured.
struct Pipelined {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
    batch: Vec<u8>,
    depth: usize,
}

impl Pipelined {
    fn new(s: Box<dyn Stream>, depth: usize) -> Self {
        Pipelined {
            s,
            buf: Vec::with_capacity(64 * 1024),
            batch: REQUEST.repeat(depth),
            depth,
        }
    }

    /// Send `depth` requests and read their responses (every one a 200).
    async fn round(&mut self) {
        self.s.write_all(&self.batch).await.unwrap();
        let mut done = 0;
        let mut pos = 0;
        while done < self.depth {
            match parse_response(&self.buf[pos..]) {
                Some(n) => {
                    pos += n;
                    done += 1;
                }
                None => {
                    self.buf.drain(..pos);
                    pos = 0;
                    let mut chunk = [0u8; 16 * 1024];
                    let n = self.s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the server closed the connection");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        self.buf.drain(..pos);
    }
}

/// The length of one complete 200 response at the start of `b`, if there is one.
fn parse_response(b: &[u8]) -> Option<usize> {
    let end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..end]).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .expect("a response without content-length");
    (b.len() >= end + len).then_some(end + len)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sequential requests on one connection: (p50, p99).
fn latency(load: &tokio::runtime::Runtime, dial: &Dial, n: u64) -> (Duration, Duration) {
    load.block_on(async {
        let mut c = Pipelined::new(dial().await, 1);
        for _ in 0..200 {
            c.round().await;
        }
        let mut lat = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = Instant::now();
            c.round().await;
            lat.push(t.elapsed());
        }
        lat.sort();
        (pct(&lat, 0.50), pct(&lat, 0.99))
    })
}

/// `conc` connections, each `depth` requests in flight, for `secs`: req/s.
fn throughput(
    load: &tokio::runtime::Runtime,
    dial: &Dial,
    conc: u64,
    depth: usize,
    secs: f64,
) -> f64 {
    load.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..conc {
            let mut c = Pipelined::new(dial().await, depth);
            let (stop, done) = (stop.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    c.round().await;
                    done.fetch_add(depth as u64, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let start_count = done.load(Ordering::Relaxed);
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let rps = (done.load(Ordering::Relaxed) - start_count) as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        rps
    })
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
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
    let depth = env("DEPTH", if quick { 2 } else { 8 }) as usize;
    let secs = env("SECS", if quick { 1 } else { 3 }) as f64;
    let rounds = env("ROUNDS", if quick { 1 } else { 5 });
    let ca = Ca::open(
        CaConfig::new("bench.test".parse().unwrap(), "b"),
        RootSource::Generate,
        &mut keycard_store::MemoryStore::new(),
        &MemoryKeyStore::new(),
        SystemTime::now(),
    )
    .unwrap();

    let app_rt = runtime("app");
    let app_addr = app_rt.block_on(app());

    // The proxies: one worker thread between them.
    let proxy_rt = runtime("proxy");
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

    let load = runtime("load");
    println!(
        "keycard proxy hop, HTTP/1.1 GET on loopback; latency: {n} sequential requests; throughput: \
         {conc} keep-alive connections x {depth} pipelined requests, {secs} s, best of {rounds} \
         interleaved rounds; proxies on 1 worker thread"
    );
    let mtls = |addr: SocketAddr| {
        mtls_dial(
            MtlsConnector::new(
                &client_ctx,
                addr,
                Expected::parse(SERVER).unwrap(),
                None,
                &[b"http/1.1"],
            )
            .unwrap(),
        )
    };
    let envoy = std::env::var("ENVOY").ok().map(|path| {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr) = start_envoy(&path, &ca, app_addr, dir.path());
        (child, addr, dir)
    });
    let mut paths: Vec<(&str, Dial)> = vec![
        ("direct", plain_dial(app_addr)),
        ("inbound", mtls(inb.addr)),
        ("mesh", plain_dial(outb.addr)),
    ];
    if let Some((_, addr, _)) = &envoy {
        paths.push(("envoy", mtls(*addr)));
    }
    let mut lat = Vec::new();
    for (name, dial) in &paths {
        let (p50, p99) = latency(&load, dial, n);
        lat.push((p50, p99));
        println!(
            "{name:<8} p50 {:>7.1} us  p99 {:>7.1} us",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
    // Throughput rounds interleave the paths, so that a burst of load from
    // elsewhere on the machine does not fall on one of them only.
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        let mut line = format!("round {round}:");
        for (i, (name, dial)) in paths.iter().enumerate() {
            let r = throughput(&load, dial, conc, depth, secs);
            rps[i].push(r);
            line.push_str(&format!(" {name} {r:.0}"));
        }
        if let (Some(k), Some(e)) = (rps.get(1), rps.get(3)) {
            if let (Some(k), Some(e)) = (k.last(), e.last()) {
                line.push_str(&format!("  keycard/envoy {:.2}x", k / e));
            }
        }
        println!("{line} req/s");
    }
    let best = |v: &Vec<f64>| v.iter().cloned().fold(0.0, f64::max);
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for (i, (name, _)) in paths.iter().enumerate() {
        println!(
            "{name:<8} throughput best {:>8.0} req/s, median {:>8.0} req/s",
            best(&rps[i]),
            median(&rps[i])
        );
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (d50, d99) = lat[0];
    let (i50, i99) = lat[1];
    let (m50, m99) = lat[2];
    println!(
        "added by the inbound hop (mTLS client -> proxy -> app): p50 {:+.1} us, p99 {:+.1} us",
        us(i50) - us(d50),
        us(i99) - us(d99)
    );
    println!(
        "added by outbound + inbound (app -> proxy =mTLS=> proxy -> app): p50 {:+.1} us, p99 {:+.1} us",
        us(m50) - us(d50),
        us(m99) - us(d99)
    );
    if let Some((mut child, _, _dir)) = envoy {
        let _ = child.kill();
        let _ = child.wait();
        let (e50, e99) = lat[3];
        println!(
            "added by an Envoy inbound hop (same mTLS, 1 worker): p50 {:+.1} us, p99 {:+.1} us",
            us(e50) - us(d50),
            us(e99) - us(d99)
        );
        println!(
            "keycard/envoy: added p50 {:.2}x; throughput best {:.2}x, median {:.2}x",
            (us(i50) - us(d50)) / (us(e50) - us(d50)),
            best(&rps[1]) / best(&rps[3]),
            median(&rps[1]) / median(&rps[3])
        );
    }
    drop((inb, outb));
}
