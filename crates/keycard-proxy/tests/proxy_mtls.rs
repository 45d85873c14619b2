#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Two keycard proxies (outbound -> inbound) on loopback, with SVIDs minted
//! by keycard's own CA, between two loopback services.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keycard_core::SpiffeId;
use keycard_identity::{Ca, CaConfig, MemoryKeyStore, RootSource, SvidOptions};
use keycard_proxy::files::{Revocations, Watched};
use keycard_proxy::proxy::admin::{spawn_reload, Watchers};
use keycard_proxy::proxy::inbound::{self, InboundConfig};
use keycard_proxy::proxy::outbound::{self, OutboundConfig};
use keycard_proxy::proxy::{
    Bundles, Expected, IdentityState, ListenerHandle, MtlsMode, Protocol, ProxyContext, Svid,
    PEER_ID_HEADER, REASON_HEADER,
};
use keycard_proxy::record::RecordSink;
use keycard_proxy::{compile_str, Authorizer, Mode};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TD: &str = "example.org";
const SERVER: &str = "spiffe://example.org/ns/prod/sa/api";
const WEB: &str = "spiffe://example.org/ns/prod/sa/web";
const BATCH: &str = "spiffe://example.org/ns/prod/sa/batch";
const FOREIGN: &str = "spiffe://other.org/ns/prod/sa/web";
const T: Duration = Duration::from_secs(10);

fn ca(td: &str) -> Ca {
    Ca::open(
        CaConfig::new(td.parse().unwrap(), "t"),
        RootSource::Generate,
        &mut keycard_store::MemoryStore::new(),
        &MemoryKeyStore::new(),
        SystemTime::now(),
    )
    .unwrap()
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

fn bundles(cas: &[&Ca]) -> Bundles {
    let mut b = Bundles::new();
    for ca in cas {
        b.insert(ca.trust_domain().as_str(), &ca.bundle().x509_authorities)
            .unwrap();
    }
    b
}

fn policy() -> keycard_proxy::PolicySet {
    compile_str(
        "p.yaml",
        &format!(
            r#"
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {{name: api-allow-web, namespace: prod}}
spec:
  selector: {{spiffeIds: ["{SERVER}"]}}
  rules:
  - from: [{{source: {{principals: ["{WEB}", "{FOREIGN}"]}}}}]
"#
        ),
        Mode::Enforce,
    )
    .unwrap()
}

/// The app behind the inbound proxy: echoes the body and tells what it saw.
async fn app(hits: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let hits = hits.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let seen: Vec<String> = req
                            .headers()
                            .get_all(PEER_ID_HEADER)
                            .iter()
                            .map(|v| v.to_str().unwrap().to_string())
                            .collect();
                        let seen = if seen.is_empty() {
                            "none".to_string()
                        } else {
                            seen.join(",")
                        };
                        let version = format!("{:?}", req.version());
                        let seen_path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        let host = req
                            .headers()
                            .get("host")
                            .map(|v| v.to_str().unwrap().to_string())
                            .or_else(|| req.uri().authority().map(|a| a.to_string()))
                            .unwrap_or_default();
                        let grpc = req
                            .headers()
                            .get("content-type")
                            .is_some_and(|v| v == "application/grpc");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        // A well-behaved app: no empty DATA frames (an HTTP/2
                        // peer closes a connection after too many of them).
                        let mut frames: VecDeque<Result<Frame<Bytes>, std::convert::Infallible>> =
                            VecDeque::new();
                        if !body.is_empty() {
                            frames.push_back(Ok(Frame::data(body)));
                        }
                        if grpc {
                            frames.push_back(Ok(Frame::trailers(trailers)));
                        }
                        let mut r = Response::new(StreamBody::new(futures::stream::iter(frames)));
                        r.headers_mut().insert("x-seen-peer", seen.parse().unwrap());
                        r.headers_mut()
                            .insert("x-seen-version", version.parse().unwrap());
                        r.headers_mut().insert("x-seen-host", host.parse().unwrap());
                        r.headers_mut()
                            .insert("x-seen-path", seen_path.parse().unwrap());
                        if grpc {
                            r.headers_mut()
                                .insert("content-type", "application/grpc".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TCP echo app.
async fn echo_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn local0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn sink(path: &Path) -> RecordSink {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    RecordSink::start(
        Box::new(f),
        Arc::new(keycard_proxy::metrics::Metrics::new()),
    )
    .unwrap()
}

struct Server {
    ctx: Arc<ProxyContext>,
    inbound: ListenerHandle,
    hits: Arc<AtomicU64>,
    decisions: PathBuf,
    flows: PathBuf,
    _dir: tempfile::TempDir,
}

async fn server(
    ca: &Ca,
    trusted: &[&Ca],
    mode: MtlsMode,
    protocol: Protocol,
    authz: Authorizer,
    app_addr: Option<SocketAddr>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let identity = IdentityState::with(svid(ca, SERVER), bundles(trusted));
    let mut ctx = ProxyContext::new(identity, Arc::new(authz));
    let decisions = dir.path().join("decisions.jsonl");
    let flows = dir.path().join("flows.jsonl");
    ctx.decisions = Some(sink(&decisions));
    ctx.flows = Some(sink(&flows));
    ctx.limits.max_header_bytes = 16 * 1024;
    let ctx = Arc::new(ctx);
    let hits = Arc::new(AtomicU64::new(0));
    let app_addr = match app_addr {
        Some(a) => a,
        None => app(hits.clone()).await,
    };
    let inbound = inbound::start(
        ctx.clone(),
        InboundConfig {
            listen: local0(),
            app: app_addr,
            mode,
            protocol,
            server_names: Vec::new(),
        },
    )
    .await
    .unwrap();
    Server {
        ctx,
        inbound,
        hits,
        decisions,
        flows,
        _dir: dir,
    }
}

async fn client(
    ca: &Ca,
    trusted: &[&Ca],
    id: &str,
    upstream: SocketAddr,
    expected: &str,
    protocol: Protocol,
) -> (Arc<ProxyContext>, ListenerHandle) {
    let identity = IdentityState::with(svid(ca, id), bundles(trusted));
    let ctx = Arc::new(ProxyContext::new(
        identity,
        Arc::new(Authorizer::with_policies(
            compile_str("none.yaml", "", Mode::Enforce).unwrap(),
        )),
    ));
    let out = outbound::start(
        ctx.clone(),
        OutboundConfig {
            listen: local0(),
            upstream,
            expected: Expected::parse(expected).unwrap(),
            protocol,
            server_name: None,
        },
    )
    .await
    .unwrap();
    (ctx, out)
}

fn h1() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

struct Got {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

async fn send(
    c: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Got {
    let resp = tokio::time::timeout(T, c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let collected = tokio::time::timeout(T, body.collect())
        .await
        .unwrap()
        .unwrap();
    let trailers = collected.trailers().cloned();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

fn get(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

fn hdr<'a>(g: &'a Got, name: &str) -> &'a str {
    g.headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// Lines of a JSON-lines file, waiting (bounded) until `pred` holds for one.
async fn wait_line(path: &Path, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                if pred(&v) {
                    return v;
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no matching line in {}: {:?}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_http2_and_grpc_cross_two_proxies_with_the_verified_identity() {
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let (_c, out) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;

    // HTTP/1.1, with a forged identity header that must not reach the app.
    let mut req = get(out.addr, "/v1/items?x=1");
    req.headers_mut().insert(
        PEER_ID_HEADER,
        "spiffe://example.org/ns/prod/sa/admin".parse().unwrap(),
    );
    let g = send(&h1(), req).await;
    assert_eq!(g.status, 200, "{:?}", g.body);
    assert_eq!(hdr(&g, "x-seen-peer"), WEB);
    assert_eq!(hdr(&g, "x-seen-version"), "HTTP/1.1");
    // The Host the app asked for survives both hops.
    assert_eq!(hdr(&g, "x-seen-host"), out.addr.to_string());

    // HTTP/2 with a body.
    let req = Request::post(format!("http://{}/upload", out.addr))
        .body(Full::new(Bytes::from_static(b"hello over h2")))
        .unwrap();
    let g = send(&h2(), req).await;
    assert_eq!(g.status, 200);
    assert_eq!(&g.body[..], b"hello over h2");
    assert_eq!(hdr(&g, "x-seen-peer"), WEB);
    assert_eq!(hdr(&g, "x-seen-version"), "HTTP/2.0");
    // The app sees the :authority its caller asked for, not its own address.
    assert_eq!(hdr(&g, "x-seen-host"), out.addr.to_string());

    // gRPC-shaped: h2, application/grpc, a length-prefixed message, trailers back.
    let msg = [0u8, 0, 0, 0, 3, b'a', b'b', b'c'];
    let req = Request::post(format!("http://{}/pkg.Svc/Method", out.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::copy_from_slice(&msg)))
        .unwrap();
    let g = send(&h2(), req).await;
    assert_eq!(g.status, 200);
    assert_eq!(&g.body[..], &msg);
    assert_eq!(
        g.trailers
            .expect("grpc trailers")
            .get("grpc-status")
            .unwrap(),
        "0"
    );
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);

    // Every request has an allow record naming the policy.
    let rec = wait_line(&srv.decisions, |v| {
        v["action"] == "POST /pkg.Svc/Method" && v["outcome"] == "allow"
    })
    .await;
    assert_eq!(rec["subject"], WEB);
    assert_eq!(rec["resource"], SERVER);
    assert_eq!(rec["policy"], "prod/api-allow-web");
    assert_eq!(rec["attributes"]["transport"], "mtls");
    assert_eq!(rec["attributes"]["protocol"], "grpc");
    // Over HTTP/2 the inbound decides on the :authority the caller's app used.
    let rec = wait_line(&srv.decisions, |v| v["action"] == "POST /upload").await;
    assert_eq!(rec["attributes"]["host"], out.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_policy_admits_one_identity_and_denies_another() {
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let (_a, web) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;
    let (_b, batch) = client(&ca, &[&ca], BATCH, srv.inbound.addr, SERVER, Protocol::Http).await;

    let g = send(&h1(), get(web.addr, "/v1/items")).await;
    assert_eq!(g.status, 200);
    for c in [h1(), h2()] {
        let g = send(&c, get(batch.addr, "/v1/items")).await;
        assert_eq!(g.status, StatusCode::FORBIDDEN);
        assert_eq!(
            hdr(&g, REASON_HEADER),
            "prod/api-allow-web/-: no_allow_match"
        );
    }
    // The denied requests never reached the app.
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    let rec = wait_line(&srv.decisions, |v| v["outcome"] == "deny").await;
    assert_eq!(rec["subject"], BATCH);
    assert_eq!(rec["reason"], "no_allow_match");
    assert_eq!(rec["policy"], "prod/api-allow-web");
}

/// A DENY on `/admin` holds for every spelling of `/admin`, and the app
/// receives the normal form the decision was made on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_is_normalised_before_the_decision_and_forwarded_as_decided() {
    let ca = ca(TD);
    let policies = compile_str(
        "p.yaml",
        &format!(
            r#"
apiVersion: keycard.dev/v1
kind: AuthorizationPolicy
metadata: {{name: admin-deny, namespace: prod}}
spec:
  selector: {{spiffeIds: ["{SERVER}"]}}
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/admin", "/admin/*"]}}}}]
"#
        ),
        Mode::Enforce,
    )
    .unwrap();
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policies),
        None,
    )
    .await;
    let (_a, web) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;
    for c in [h1(), h2()] {
        for p in [
            "/admin",
            "/./admin",
            "//admin",
            "/x/../admin",
            "/%61dmin",
            "/admin/./users",
            "/x/..//admin/users",
        ] {
            let g = send(&c, get(web.addr, p)).await;
            assert_eq!(g.status, StatusCode::FORBIDDEN, "{p} was not denied");
        }
        // An encoded slash is refused outright (the default).
        let g = send(&c, get(web.addr, "/x%2F..%2Fadmin")).await;
        assert_eq!(g.status, StatusCode::BAD_REQUEST);
        // Allowed paths reach the app in their normal form, query kept.
        let g = send(&c, get(web.addr, "/a/./b//c/../d?q=%2F")).await;
        assert_eq!(g.status, 200);
        assert_eq!(hdr(&g, "x-seen-path"), "/a/b/d?q=%2F");
    }
    // Only the two allowed requests reached the app.
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_trust_domain_is_refused_at_the_handshake_unless_federated() {
    let ca = ca(TD);
    let other = ca_other();
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    // The caller trusts example.org (so it could verify the server), but
    // the server has no bundle for other.org.
    let (_f, foreign) = client(
        &other,
        &[&other, &ca],
        FOREIGN,
        srv.inbound.addr,
        SERVER,
        Protocol::Http,
    )
    .await;
    let g = send(&h1(), get(foreign.addr, "/v1/items")).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 0);
    // The server counts its failed handshake after the alert left: wait (bounded).
    let deadline = tokio::time::Instant::now() + T;
    while srv.ctx.metrics.handshake_failures("inbound") < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no handshake failure counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The outbound side refuses a server that is not the expected ID.
    let (_w, wrong) = client(
        &ca,
        &[&ca],
        WEB,
        srv.inbound.addr,
        "spiffe://example.org/ns/prod/sa/not-api",
        Protocol::Http,
    )
    .await;
    let g = send(&h1(), get(wrong.addr, "/")).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    assert_eq!(srv.hits.load(Ordering::SeqCst), 0);

    // Federated: once the server trusts other.org's bundle, the same
    // caller gets through (the policy allows it by SPIFFE ID).
    srv.ctx.identity.set_bundles(bundles(&[&ca, &other]));
    let g = send(&h1(), get(foreign.addr, "/v1/items")).await;
    assert_eq!(g.status, 200);
    assert_eq!(hdr(&g, "x-seen-peer"), FOREIGN);
}

fn ca_other() -> Ca {
    ca("other.org")
}

/// The serial of the certificate the inbound presents to a new handshake.
async fn presented_serial(addr: SocketAddr, ca: &Ca) -> String {
    let tls = mtls_to(addr, ca, &[b"http/1.1"]).await;
    keycard_proxy::proxy::svid::peer_of(tls.get_ref().1)
        .unwrap()
        .serial
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_certificates_mid_traffic_drops_no_request() {
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let (cctx, out) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;
    let before = presented_serial(srv.inbound.addr, &ca).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    for (i, c) in [h1(), h2(), h1(), h2()].into_iter().enumerate() {
        let stop = stop.clone();
        let addr = out.addr;
        loops.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) || n < 20 {
                let g = send(&c, get(addr, &format!("/loop/{i}/{n}"))).await;
                assert_eq!(g.status, 200, "request {i}/{n} failed: {:?}", g.body);
                assert_eq!(hdr(&g, "x-seen-peer"), WEB);
                n += 1;
            }
            n
        }));
    }
    // Rotate both sides several times while the loops run; a fresh client
    // (new handshakes) joins after each rotation.
    let mut fresh_ok = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        srv.ctx.identity.set_svid(svid(&ca, SERVER));
        cctx.identity.set_svid(svid(&ca, WEB));
        let (_x, fresh) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;
        let g = send(&h2(), get(fresh.addr, "/fresh")).await;
        assert_eq!(g.status, 200);
        fresh_ok += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for l in loops {
        total += tokio::time::timeout(Duration::from_secs(60), l)
            .await
            .unwrap()
            .unwrap();
    }
    assert!(total >= 80);
    assert_eq!(fresh_ok, 5);
    // New handshakes get the new certificate.
    let after = presented_serial(srv.inbound.addr, &ca).await;
    assert_ne!(before, after);
    assert_eq!(after, srv.ctx.identity.svid().unwrap().info.serial);
    assert_eq!(srv.ctx.metrics.handshake_failures("inbound"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_plaintext_and_records_it_strict_refuses_it() {
    let ca = ca(TD);
    let open = compile_str("none.yaml", "", Mode::Enforce).unwrap();
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Permissive,
        Protocol::Http,
        Authorizer::with_policies(open),
        None,
    )
    .await;
    // Plaintext straight to the inbound listener, with a forged identity.
    let mut req = get(srv.inbound.addr, "/plain");
    req.headers_mut()
        .insert(PEER_ID_HEADER, WEB.parse().unwrap());
    let g = send(&h1(), req).await;
    assert_eq!(g.status, 200);
    assert_eq!(hdr(&g, "x-seen-peer"), "none");
    // mTLS on the same port still works and carries the identity.
    let (_c, out) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;
    let g = send(&h2(), get(out.addr, "/tls")).await;
    assert_eq!(g.status, 200);
    assert_eq!(hdr(&g, "x-seen-peer"), WEB);
    assert_eq!(srv.ctx.metrics.connections("inbound", "plaintext"), 1);
    assert_eq!(srv.ctx.metrics.connections("inbound", "mtls"), 1);
    let rec = wait_line(&srv.decisions, |v| v["action"] == "GET /plain").await;
    assert_eq!(rec["attributes"]["transport"], "plaintext");
    assert_eq!(rec["outcome"], "allow");
    let rec = wait_line(&srv.decisions, |v| v["action"] == "GET /tls").await;
    assert_eq!(rec["attributes"]["transport"], "mtls");

    // Strict: the same plaintext request is refused and counted.
    let strict = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(compile_str("none.yaml", "", Mode::Enforce).unwrap()),
        None,
    )
    .await;
    let r = tokio::time::timeout(T, h1().request(get(strict.inbound.addr, "/plain")))
        .await
        .unwrap();
    assert!(r.is_err(), "strict mode answered plaintext");
    assert_eq!(strict.hits.load(Ordering::SeqCst), 0);
    assert_eq!(
        strict
            .ctx
            .metrics
            .refused_count("inbound", "plaintext_in_strict"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_identity_is_denied_and_its_open_connection_closed() {
    let ca = ca(TD);
    let dir = tempfile::tempdir().unwrap();
    let rev_path = dir.path().join("revoked.yaml");
    std::fs::write(&rev_path, "spiffeIds: []\n").unwrap();
    let revocations = Arc::new(Watched::open(&rev_path, Revocations::parse).unwrap());
    let authz = Authorizer::with_policies(policy()).revocations(revocations.clone());
    let echo = echo_app().await;
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Tcp,
        authz,
        Some(echo),
    )
    .await;
    let _reload = spawn_reload(
        srv.ctx.clone(),
        Watchers {
            revocations: Some(revocations),
            ..Watchers::default()
        },
        Duration::from_millis(50),
    );
    let (_c, out) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Tcp).await;

    // An open, working connection.
    let mut conn = TcpStream::connect(out.addr).await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(T, conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(srv.ctx.conns.len(), 1);

    // Revoke: the connection is closed by the proxy.
    std::fs::write(&rev_path, format!("spiffeIds: [\"{WEB}\"]\n")).unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(T, conn.read_to_end(&mut rest))
        .await
        .expect("the revoked connection stayed open");
    assert!(r.is_err() || rest.is_empty());
    // A new connection is denied at once (closed without echo).
    let mut again = TcpStream::connect(out.addr).await.unwrap();
    let _ = again.write_all(b"ping").await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, again.read_to_end(&mut rest))
        .await
        .expect("the denied connection stayed open");
    assert!(rest.is_empty());
    let rec = wait_line(&srv.decisions, |v| v["reason"] == "revoked").await;
    assert_eq!(rec["subject"], WEB);
    // The closed connection's flow record: identity, bytes, verdict deny.
    let flow = wait_line(&srv.flows, |v| {
        v["src"]["identity"] == WEB && v["bytes"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(flow["verdict"], "deny");
    assert_eq!(flow["dst"]["identity"], SERVER);
    assert_eq!(flow["protocol"], "TCP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_counted_and_others_keep_being_served() {
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let (cctx, out) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;

    // TLS garbage: a handshake record header followed by junk.
    let mut s = TcpStream::connect(srv.inbound.addr).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut rest))
        .await
        .expect("garbage connection stayed open");
    assert!(srv.ctx.metrics.handshake_failures("inbound") >= 1);

    // Malformed HTTP to the outbound listener: 400.
    let mut s = TcpStream::connect(out.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n")
        .await
        .unwrap();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut resp))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(cctx.metrics.refused_count("outbound", "malformed_http"), 1);

    // Oversized headers: 431, counted.
    let mut s = TcpStream::connect(out.addr).await.unwrap();
    let big = "a".repeat(200 * 1024);
    let _ = s
        .write_all(format!("GET / HTTP/1.1\r\nHost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await;
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut resp))
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    assert_eq!(
        cctx.metrics.refused_count("outbound", "header_too_large"),
        1
    );

    // An unknown SNI is refused at the handshake.
    let named = {
        let identity = srv.ctx.identity.clone();
        let ctx = Arc::new(ProxyContext::new(
            identity,
            Arc::new(Authorizer::with_policies(policy())),
        ));
        inbound::start(
            ctx,
            InboundConfig {
                listen: local0(),
                app: srv.inbound.addr,
                mode: MtlsMode::Strict,
                protocol: Protocol::Http,
                server_names: vec!["api.prod.svc".into()],
            },
        )
        .await
        .unwrap()
    };
    let identity = IdentityState::with(svid(&ca, WEB), bundles(&[&ca]));
    let ccfg = keycard_proxy::proxy::svid::client_config(
        &identity,
        Expected::parse(TD).unwrap(),
        &[b"http/1.1"],
    )
    .unwrap();
    let conn = tokio_rustls::TlsConnector::from(Arc::new(ccfg));
    let tcp = TcpStream::connect(named.addr).await.unwrap();
    let r = tokio::time::timeout(
        T,
        conn.connect(
            rustls::pki_types::ServerName::try_from("evil.example").unwrap(),
            tcp,
        ),
    )
    .await
    .unwrap();
    assert!(r.is_err(), "unknown SNI accepted");
    let tcp = TcpStream::connect(named.addr).await.unwrap();
    let r = tokio::time::timeout(
        T,
        conn.connect(
            rustls::pki_types::ServerName::try_from("api.prod.svc").unwrap(),
            tcp,
        ),
    )
    .await
    .unwrap();
    assert!(r.is_ok(), "known SNI refused");

    // Everyone else is still served.
    let g = send(&h1(), get(out.addr, "/still")).await;
    assert_eq!(g.status, 200);
    assert_eq!(hdr(&g, "x-seen-peer"), WEB);
}

/// A WebSocket-like app on raw TCP: answers `Upgrade: echo` with 101
/// (telling the identity it saw), then echoes bytes; anything else gets 400.
async fn upgrade_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let head = read_head(&mut s).await.to_ascii_lowercase();
                if !head.contains("\r\nupgrade: echo\r\n") || !head.contains("connection: upgrade")
                {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let peer = head
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{PEER_ID_HEADER}: ")))
                    .unwrap_or("none")
                    .trim()
                    .to_string();
                let resp = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\nx-seen-peer: {peer}\r\n\r\n"
                );
                s.write_all(resp.as_bytes()).await.unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Read an HTTP head (to the blank line), bounded.
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 16 * 1024, "head too long");
        let n = tokio::time::timeout(T, s.read(&mut b))
            .await
            .expect("head timed out")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(T, s.read_exact(&mut buf))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_and_connect_become_byte_streams_after_authorization() {
    let ca = ca(TD);
    let up_app = upgrade_app().await;
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        Some(up_app),
    )
    .await;
    let (_a, web) = client(&ca, &[&ca], WEB, srv.inbound.addr, SERVER, Protocol::Http).await;
    let (_b, batch) = client(&ca, &[&ca], BATCH, srv.inbound.addr, SERVER, Protocol::Http).await;
    let upgrade =
        b"GET /ws HTTP/1.1\r\nhost: api.prod\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n";

    // Allowed: 101 end to end, the app saw the verified identity, then bytes both ways.
    let mut s = TcpStream::connect(web.addr).await.unwrap();
    s.write_all(upgrade).await.unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("\r\nupgrade: echo\r\n"), "{head}");
    assert!(head.contains(&format!("x-seen-peer: {WEB}")), "{head}");
    echoes(&mut s, b"ping").await;
    echoes(&mut s, &[7u8; 100_000]).await;
    drop(s);

    // Denied: 403 with the reason, and the app never sees the upgrade.
    let mut s = TcpStream::connect(batch.addr).await.unwrap();
    s.write_all(upgrade).await.unwrap();
    let head = read_head(&mut s).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert!(head.contains(REASON_HEADER), "{head}");
    let rec = wait_line(&srv.decisions, |v| {
        v["action"] == "GET /ws" && v["outcome"] == "deny"
    })
    .await;
    assert_eq!(rec["subject"], BATCH);

    // CONNECT: authorized on the inbound, then a byte stream to its app.
    let echo = echo_app().await;
    let tcp_srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        Some(echo),
    )
    .await;
    let (_c, web2) = client(
        &ca,
        &[&ca],
        WEB,
        tcp_srv.inbound.addr,
        SERVER,
        Protocol::Http,
    )
    .await;
    let (_d, batch2) = client(
        &ca,
        &[&ca],
        BATCH,
        tcp_srv.inbound.addr,
        SERVER,
        Protocol::Http,
    )
    .await;
    let connect = b"CONNECT db.prod:5432 HTTP/1.1\r\nhost: db.prod:5432\r\n\r\n";
    let mut s = TcpStream::connect(web2.addr).await.unwrap();
    s.write_all(connect).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    echoes(&mut s, b"hello through CONNECT").await;
    let rec = wait_line(&tcp_srv.decisions, |v| v["outcome"] == "allow").await;
    assert_eq!(rec["attributes"]["method"], "CONNECT");
    assert_eq!(rec["attributes"]["host"], "db.prod:5432");
    assert_eq!(rec["subject"], WEB);
    let mut s = TcpStream::connect(batch2.addr).await.unwrap();
    s.write_all(connect).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

/// A client proxy whose upstream connections write flow records and idle
/// out quickly (so that their records are written during the test).
async fn recording_client(
    ca: &Ca,
    id: &str,
    upstream: SocketAddr,
    expected: &str,
    flows: &Path,
    local: keycard_proxy::proxy::LocalWorkload,
) -> (Arc<ProxyContext>, ListenerHandle) {
    let identity = IdentityState::with(svid(ca, id), bundles(&[ca]));
    let mut ctx = ProxyContext::new(
        identity,
        Arc::new(Authorizer::with_policies(
            compile_str("none.yaml", "", Mode::Enforce).unwrap(),
        )),
    );
    ctx.flows = Some(sink(flows));
    ctx.local = local;
    ctx.limits.pool_idle_timeout = Duration::from_millis(200);
    let ctx = Arc::new(ctx);
    let out = outbound::start(
        ctx.clone(),
        OutboundConfig {
            listen: local0(),
            upstream,
            expected: Expected::parse(expected).unwrap(),
            protocol: Protocol::Http,
            server_name: None,
        },
    )
    .await
    .unwrap();
    (ctx, out)
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn wait_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let v = lines(path);
        if v.len() >= n {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {} of {n} lines: {v:?}",
            path.display(),
            v.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_proxies_write_flow_records_that_flows_ingest_reads_as_one_connection() {
    use keycard_flows::ingest::{IngestOptions, Ingester, Verdict};
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out_flows = dir.path().join("out.jsonl");
    let (_c, web) = recording_client(
        &ca,
        WEB,
        srv.inbound.addr,
        SERVER,
        &out_flows,
        Default::default(),
    )
    .await;
    let g = send(&h1(), get(web.addr, "/v1/items")).await;
    assert_eq!(g.status, 200);
    // The pooled upstream connection idles out: both ends record it.
    let out = wait_lines(&out_flows, 1).await;
    let inb = wait_lines(&srv.flows, 1).await;
    assert_eq!(out[0]["src"]["identity"], WEB);
    assert_eq!(out[0]["dst"]["identity"], SERVER);
    assert_eq!(out[0]["dst"]["port"], srv.inbound.addr.port());
    assert_eq!(out[0]["verdict"], "allow");
    assert_eq!(inb[0]["src"]["identity"], WEB);
    assert_eq!(inb[0]["src"]["port"], out[0]["src"]["port"]);
    assert_eq!(inb[0]["verdict"], "allow");
    assert_eq!(inb[0]["policy"], "prod/api-allow-web#rules[0]");

    let mut ing = Ingester::new(
        None,
        IngestOptions {
            strict: true,
            ..IngestOptions::default()
        },
    );
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&out_flows).unwrap(),
        std::fs::read_to_string(&srv.flows).unwrap()
    );
    ing.ingest_reader("flows.jsonl", both.as_bytes()).unwrap();
    let (edges, rep) = ing.finish().unwrap();
    assert_eq!(rep.error_count, 0, "{:?}", rep.errors);
    assert_eq!(rep.flows, 2);
    assert_eq!(rep.connections, 1, "the two ends are one connection");
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0].verdict, Verdict::Allowed);
    assert_eq!(edges[0].port, srv.inbound.addr.port());
    assert!(edges[0].bytes > 0);

    // The local workload is named; a refused upstream (not the expected
    // identity) is a deny record on both sides.
    let wrong_flows = dir.path().join("wrong.jsonl");
    let (_w, wrong) = recording_client(
        &ca,
        WEB,
        srv.inbound.addr,
        "spiffe://example.org/ns/prod/sa/someone-else",
        &wrong_flows,
        keycard_proxy::proxy::LocalWorkload {
            namespace: Some("prod".into()),
            pod: None,
            workload: Some(("Deployment".into(), "web".into())),
        },
    )
    .await;
    let g = send(&h1(), get(wrong.addr, "/v1/items")).await;
    assert_eq!(g.status, StatusCode::BAD_GATEWAY);
    let rec = wait_line(&wrong_flows, |v| v["verdict"] == "deny").await;
    assert_eq!(rec["src"]["workload"]["name"], "web");
    assert!(rec["dst"].get("identity").is_none(), "{rec}");
    wait_line(&srv.flows, |v| v["verdict"] == "deny").await;
    let mut ing = Ingester::new(
        None,
        IngestOptions {
            strict: true,
            ..IngestOptions::default()
        },
    );
    let text = std::fs::read_to_string(&wrong_flows).unwrap();
    ing.ingest_reader("wrong.jsonl", text.as_bytes()).unwrap();
    let (edges, rep) = ing.finish().unwrap();
    assert_eq!(rep.error_count, 0, "{:?}", rep.errors);
    assert!(
        edges
            .iter()
            .any(|e| e.verdict == Verdict::Denied && e.src.display() == "prod/web[Deployment]"),
        "{edges:?}"
    );
}

/// One mTLS connection to `addr` as WEB, offering `alpn`.
async fn mtls_to(
    addr: SocketAddr,
    ca: &Ca,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    mtls_with(addr, Arc::new(web_client(ca, alpn))).await
}

/// The client config of WEB, trusting `ca`, offering `alpn`.
fn web_client(ca: &Ca, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let identity = IdentityState::with(svid(ca, WEB), bundles(&[ca]));
    keycard_proxy::proxy::svid::client_config(&identity, Expected::parse(TD).unwrap(), alpn)
        .unwrap()
}

async fn mtls_with(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        T,
        tokio_rustls::TlsConnector::from(cfg).connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        ),
    )
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_verified_afresh_never_resumed() {
    // A resumed TLS session skips certificate verification: the identity
    // would be the one verified when the session began, whatever happened
    // to the bundle or the certificate's validity since.
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let mut cfg = web_client(&ca, &[b"http/1.1"]);
    cfg.resumption = rustls::client::Resumption::in_memory_sessions(16);
    let cfg = Arc::new(cfg);
    for i in 0..2 {
        let io = mtls_with(srv.inbound.addr, cfg.clone()).await;
        assert_eq!(
            io.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "connection {i}"
        );
        // The answer comes after any session ticket the server would send.
        let req = Request::get("/v1/items")
            .header("host", "api")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(request_on(io, false, req).await.status(), 200);
    }
}

/// One request over an HTTP/1.1 or HTTP/2 client connection on `io`.
async fn request_on(
    io: tokio_rustls::client::TlsStream<TcpStream>,
    h2: bool,
    req: Request<Full<Bytes>>,
) -> Response<Bytes> {
    let io = TokioIo::new(io);
    let res = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        tokio::time::timeout(T, send.send_request(req)).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        tokio::time::timeout(T, send.send_request(req)).await
    };
    let (parts, body) = res.unwrap().unwrap().into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_are_served_by_their_alpn_or_by_their_preface_without_one() {
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let addr = srv.inbound.addr;
    // (ALPN offered, speak HTTP/2, the version the app must see)
    let cases: [(&[&[u8]], bool, &str); 4] = [
        (&[b"http/1.1"], false, "HTTP/1.1"),
        (&[b"h2"], true, "HTTP/2.0"),
        (&[], false, "HTTP/1.1"),
        (&[], true, "HTTP/2.0"),
    ];
    for (alpn, h2, app_sees) in cases {
        let io = mtls_to(addr, &ca, alpn).await;
        let negotiated = io.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        assert_eq!(negotiated.as_deref(), alpn.first().copied());
        // A client-supplied identity header never reaches the app, and the
        // headers the app does see arrive intact (they are copied out of
        // the proxy's read buffer before the request goes on).
        let uri = if h2 {
            format!("https://{addr}/v1/items?q=a%2Fb&n=1")
        } else {
            "/v1/items?q=a%2Fb&n=1".to_string()
        };
        let mut req = Request::get(uri)
            .header(PEER_ID_HEADER, "spiffe://example.org/ns/prod/sa/admin")
            .header("x-custom-header", "value with spaces; and=signs")
            .body(Full::new(Bytes::new()))
            .unwrap();
        if !h2 {
            req.headers_mut().insert("host", "api".parse().unwrap());
        }
        let r = request_on(io, h2, req).await;
        let case = format!("alpn {alpn:?}, h2 {h2}");
        assert_eq!(r.status(), 200, "{case}");
        assert_eq!(hdr_of(&r, "x-seen-peer"), WEB, "{case}");
        assert_eq!(hdr_of(&r, "x-seen-version"), app_sees, "{case}");
        assert_eq!(hdr_of(&r, "x-seen-path"), "/v1/items?q=a%2Fb&n=1", "{case}");
    }
    assert_eq!(srv.hits.load(Ordering::SeqCst), 4);
}

fn hdr_of(r: &Response<Bytes>, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Send `input` on a new mTLS HTTP/1.1 connection; what comes back before
/// the proxy closes it.
async fn raw_h1(addr: SocketAddr, ca: &Ca, input: &[u8]) -> String {
    let mut io = mtls_to(addr, ca, &[b"http/1.1"]).await;
    io.write_all(input).await.unwrap();
    let mut out = Vec::new();
    // The proxy closes after a refusal or a `connection: close` request.
    let _ = tokio::time::timeout(T, io.read_to_end(&mut out))
        .await
        .expect("the proxy neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_http1_refuses_smuggling_shapes_counts_them_and_serves_pipelines() {
    let ca = ca(TD);
    let srv = server(
        &ca,
        &[&ca],
        MtlsMode::Strict,
        Protocol::Http,
        Authorizer::with_policies(policy()),
        None,
    )
    .await;
    let addr = srv.inbound.addr;
    let get = "GET /v1/items HTTP/1.1\r\nhost: api\r\n\r\n";

    // Pipelined requests on one connection: each answered, in order.
    let out = raw_h1(
        addr,
        &ca,
        format!("{get}{get}GET /v1/items HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(out.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{out}");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);

    // Both lengths, with a request hidden behind them: refused, and the
    // hidden request never reaches the app.
    let smuggle = format!(
        "POST /v1/items HTTP/1.1\r\nhost: api\r\ncontent-length: 4\r\n\
         transfer-encoding: chunked\r\n\r\n0\r\n\r\n{get}"
    );
    let out = raw_h1(addr, &ca, smuggle.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        srv.ctx.metrics.refused_count("inbound", "malformed_http"),
        1
    );

    // A head over the limit (16 KiB here): 431, counted.
    let big = format!(
        "GET /v1/items HTTP/1.1\r\nhost: api\r\nx-big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let out = raw_h1(addr, &ca, big.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    assert_eq!(
        srv.ctx.metrics.refused_count("inbound", "header_too_large"),
        1
    );

    // A body sent only after the proxy asked for it, then answered.
    let mut io = mtls_to(addr, &ca, &[b"http/1.1"]).await;
    io.write_all(
        b"POST /v1/items HTTP/1.1\r\nhost: api\r\nexpect: 100-continue\r\n\
          content-length: 2\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut first = [0u8; 25];
    tokio::time::timeout(T, io.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    io.write_all(b"{}").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, io.read_to_end(&mut out))
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 4);
}
