//! The inbound listener: in front of the local app.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request as HttpRequest, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::io::{Counted, Counters, SkipEmpty};
use super::svid::{peer_of, server_config};
use super::{
    policy_ref, Flow, ListenerHandle, MtlsMode, Protocol, ProxyContext, ProxyError, PEER_ID_HEADER,
    REASON_HEADER,
};
use crate::engine::Reason;
use crate::request::{Peer, Request};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

const DIRECTION: &str = "inbound";

/// An inbound listener.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    pub listen: SocketAddr,
    /// The app, reached in plaintext (normally on loopback).
    pub app: SocketAddr,
    pub mode: MtlsMode,
    pub protocol: Protocol,
    /// When not empty, a TLS client's SNI must be one of these (or absent).
    pub server_names: Vec<String>,
}

struct Inbound {
    ctx: Arc<ProxyContext>,
    cfg: InboundConfig,
    acceptor: TlsAcceptor,
    http: auto::Builder<TokioExecutor>,
    app: AppClients,
    conns: Arc<Semaphore>,
    next_request: AtomicU64,
}

/// Pooled plaintext clients to one address: HTTP/1.1, and HTTP/2 with prior knowledge.
pub(crate) struct AppClients {
    pub h1: Client<HttpConnector, SkipEmpty<Incoming>>,
    pub h2: Client<HttpConnector, SkipEmpty<Incoming>>,
}

impl AppClients {
    pub fn new(limits: &super::Limits) -> Self {
        let mut c = HttpConnector::new();
        c.set_nodelay(true);
        c.set_connect_timeout(Some(limits.connect_timeout));
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(c.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(c);
        AppClients { h1, h2 }
    }
}

/// The HTTP server settings every listener uses.
pub(crate) fn http_builder(limits: &super::Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(1024);
    b
}

/// Bind and start serving.
pub async fn start(
    ctx: Arc<ProxyContext>,
    cfg: InboundConfig,
) -> Result<ListenerHandle, ProxyError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ProxyError::Io {
            what: format!("inbound listener {}", cfg.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Io {
        what: "inbound listener".into(),
        source,
    })?;
    let tls = server_config(&ctx.identity, cfg.server_names.clone())?;
    let inbound = Arc::new(Inbound {
        acceptor: TlsAcceptor::from(Arc::new(tls)),
        http: http_builder(&ctx.limits),
        app: AppClients::new(&ctx.limits),
        conns: Arc::new(Semaphore::new(ctx.limits.max_connections)),
        next_request: AtomicU64::new(1),
        ctx,
        cfg,
    });
    tracing::info!(%addr, app = %inbound.cfg.app, mode = ?inbound.cfg.mode, protocol = inbound.cfg.protocol.as_str(), "inbound listening");
    let task = tokio::spawn(accept_loop(inbound, listener));
    Ok(ListenerHandle::new(addr, task))
}

async fn accept_loop(inbound: Arc<Inbound>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "inbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = inbound.conns.clone().try_acquire_owned() else {
            inbound.ctx.metrics.refused(DIRECTION, "max_connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ib = inbound.clone();
        tokio::spawn(async move {
            ib.connection(stream, peer).await;
            drop(permit);
        });
    }
}

/// What one connection knows, shared with its requests.
struct ConnInfo {
    peer_id: Option<String>,
    serial: Option<String>,
    src: SocketAddr,
    dst: SocketAddr,
    transport: &'static str,
    sni: Option<String>,
    allowed: AtomicU64,
    denied: AtomicU64,
    in_flight: AtomicU64,
    policy: Mutex<Option<String>>,
}

enum Ended {
    Done,
    Revoked,
    Idle,
}

impl Inbound {
    async fn connection(self: Arc<Self>, stream: TcpStream, src: SocketAddr) {
        let ctx = &self.ctx;
        let _open = ctx.metrics.open(DIRECTION);
        let start = SystemTime::now();
        let dst = stream.local_addr().unwrap_or(self.cfg.listen);
        let limits = &ctx.limits;
        // Tell TLS from plaintext by the first byte (a TLS record of type handshake).
        let mut first = [0u8; 1];
        let is_tls =
            match tokio::time::timeout(limits.handshake_timeout, stream.peek(&mut first)).await {
                Ok(Ok(1..)) => first[0] == 0x16,
                Ok(Ok(_)) | Ok(Err(_)) => return,
                Err(_) => {
                    ctx.metrics.refused(DIRECTION, "handshake_timeout");
                    return;
                }
            };
        let counted = Counted::new(stream);
        let counters = counted.counters.clone();
        let mut flow = Flow {
            start,
            src_id: None,
            src,
            dst_id: ctx.own_id(),
            dst,
            bytes_in: 0,
            bytes_out: 0,
            allowed: 0,
            denied: 0,
            policy: None,
        };
        if !is_tls {
            if self.cfg.mode == MtlsMode::Strict {
                ctx.metrics.refused(DIRECTION, "plaintext_in_strict");
                tracing::debug!(%src, "plaintext connection refused (strict mTLS)");
                self.finish(flow, &counters);
                return;
            }
            ctx.metrics.connection(DIRECTION, "plaintext");
            let info = Arc::new(self.info(None, None, src, dst, "plaintext", None));
            let ended = self.serve(counted, &counters, info.clone(), None).await;
            self.end(&mut flow, &info, ended);
            self.finish(flow, &counters);
            return;
        }
        let tls =
            match tokio::time::timeout(limits.handshake_timeout, self.acceptor.accept(counted))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    ctx.metrics.handshake_failure(DIRECTION);
                    tracing::info!(%src, error = %e, "inbound TLS handshake failed");
                    self.finish(flow, &counters);
                    return;
                }
                Err(_) => {
                    ctx.metrics.handshake_failure(DIRECTION);
                    ctx.metrics.refused(DIRECTION, "handshake_timeout");
                    self.finish(flow, &counters);
                    return;
                }
            };
        let (_, conn) = tls.get_ref();
        let sni = conn.server_name().map(str::to_string);
        let Some(leaf) = peer_of(conn) else {
            // The verifier requires a client certificate; defensive only.
            ctx.metrics.handshake_failure(DIRECTION);
            self.finish(flow, &counters);
            return;
        };
        ctx.metrics.connection(DIRECTION, "mtls");
        let peer_id = leaf.spiffe_id.to_string();
        flow.src_id = Some(peer_id.clone());
        let guard = ctx.conns.register(&peer_id, Some(&leaf.serial));
        let info = Arc::new(self.info(
            Some(peer_id),
            Some(leaf.serial.clone()),
            src,
            dst,
            "mtls",
            sni,
        ));
        let ended = self
            .serve(tls, &counters, info.clone(), Some(guard.kill.clone()))
            .await;
        drop(guard);
        self.end(&mut flow, &info, ended);
        self.finish(flow, &counters);
    }

    fn info(
        &self,
        peer_id: Option<String>,
        serial: Option<String>,
        src: SocketAddr,
        dst: SocketAddr,
        transport: &'static str,
        sni: Option<String>,
    ) -> ConnInfo {
        ConnInfo {
            peer_id,
            serial,
            src,
            dst,
            transport,
            sni,
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            policy: Mutex::new(None),
        }
    }

    fn end(&self, flow: &mut Flow, info: &ConnInfo, ended: Ended) {
        flow.allowed = info.allowed.load(Ordering::Relaxed);
        flow.denied = info.denied.load(Ordering::Relaxed);
        flow.policy = info.policy.lock().ok().and_then(|g| g.clone());
        match ended {
            Ended::Revoked => {
                self.ctx.metrics.revoked_closed(1);
                flow.denied += 1;
                tracing::info!(peer = ?info.peer_id, "connection closed: identity revoked");
            }
            Ended::Idle => tracing::debug!(src = %info.src, "idle connection closed"),
            Ended::Done => {}
        }
    }

    fn finish(&self, mut flow: Flow, counters: &Counters) {
        let (rx, tx) = counters.get();
        flow.bytes_in = rx;
        flow.bytes_out = tx;
        self.ctx.metrics.bytes(DIRECTION, rx, tx);
        if let Some(sink) = &self.ctx.flows {
            sink.write(&flow.to_json());
        }
    }

    /// Serve one connection (HTTP or TCP) until it ends, is revoked or idles out.
    async fn serve<S>(
        self: &Arc<Self>,
        io: S,
        counters: &Arc<Counters>,
        info: Arc<ConnInfo>,
        kill: Option<Arc<tokio::sync::Notify>>,
    ) -> Ended
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let killed = async {
            match &kill {
                Some(k) => k.notified().await,
                None => std::future::pending().await,
            }
        };
        let idle = idle_watch(counters.clone(), info.clone(), self.ctx.limits.idle_timeout);
        match self.cfg.protocol {
            Protocol::Tcp => {
                let work = self.clone().tcp(io, info.clone());
                tokio::select! {
                    _ = work => Ended::Done,
                    _ = killed => Ended::Revoked,
                    _ = idle => Ended::Idle,
                }
            }
            Protocol::Http => {
                let me = self.clone();
                let inf = info.clone();
                let svc = service_fn(move |req: HttpRequest<Incoming>| {
                    let me = me.clone();
                    let inf = inf.clone();
                    async move { Ok::<_, Infallible>(me.request(&inf, req).await) }
                });
                let conn = self.http.serve_connection(TokioIo::new(io), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            let reason = http_error_reason(&*e);
                            if let Some(reason) = reason {
                                self.ctx.metrics.refused(DIRECTION, reason);
                            }
                            tracing::debug!(src = %info.src, error = %e, "inbound connection error");
                        }
                        Ended::Done
                    }
                    _ = killed => Ended::Revoked,
                    _ = idle => Ended::Idle,
                }
            }
        }
    }

    /// Opaque TCP: authorize the connection once, then copy both ways.
    async fn tcp<S>(self: Arc<Self>, mut io: S, info: Arc<ConnInfo>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let req = self.attrs(
            &info,
            String::new(),
            String::new(),
            String::new(),
            Vec::new(),
        );
        let (allowed, _) = self.decide(&info, &req, "tcp");
        if !allowed {
            return;
        }
        let app = match tokio::time::timeout(
            self.ctx.limits.connect_timeout,
            TcpStream::connect(self.cfg.app),
        )
        .await
        {
            Ok(Ok(s)) => s,
            _ => {
                self.ctx.metrics.upstream_error(DIRECTION);
                return;
            }
        };
        let _ = app.set_nodelay(true);
        let mut app = app;
        if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut app).await {
            tracing::debug!(error = %e, "inbound tcp copy ended");
        }
    }

    fn attrs(
        &self,
        info: &ConnInfo,
        id: String,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    ) -> Request {
        let id = if id.is_empty() {
            format!(
                "kc-{:x}-{:x}",
                std::process::id(),
                self.next_request.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            id
        };
        let host = headers
            .iter()
            .find(|(k, _)| k == "host")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        Request {
            id,
            source: Peer {
                principal: info.peer_id.clone(),
                ip: Some(info.src.ip()),
                port: Some(info.src.port()),
            },
            destination: Peer {
                principal: self.ctx.own_id(),
                ip: Some(info.dst.ip()),
                port: Some(info.dst.port()),
            },
            source_cert_serial: info.serial.clone(),
            host,
            method,
            path,
            headers,
            sni: info.sni.clone(),
            ..Request::default()
        }
    }

    /// Decide, count, record; (allowed, decision).
    fn decide(
        &self,
        info: &ConnInfo,
        req: &Request,
        protocol: &str,
    ) -> (bool, crate::AuthzDecision) {
        let t0 = Instant::now();
        let checked = self.ctx.authorizer.check_full(req, crate::time::unix_now());
        let spent = t0.elapsed();
        let d = checked.decision;
        self.ctx
            .authz_metrics
            .observe("proxy", &d, spent.as_secs_f64());
        if let Some(sink) = &self.ctx.decisions {
            let mut rec = crate::record::record(
                "proxy",
                SystemTime::now(),
                req,
                checked.claims.as_ref(),
                &d,
                spent.as_micros() as u64,
            );
            if let Some(attrs) = rec.get_mut("attributes").and_then(|a| a.as_object_mut()) {
                attrs.insert("transport".into(), info.transport.into());
                attrs.insert("protocol".into(), protocol.into());
            }
            sink.write(&rec);
        }
        let allowed = d.is_allowed();
        if allowed {
            info.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            info.denied.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut p) = info.policy.lock() {
            if !allowed || p.is_none() {
                *p = policy_ref(&d);
            }
        }
        (allowed, d)
    }

    async fn request(&self, info: &ConnInfo, req: HttpRequest<Incoming>) -> Response<Body> {
        info.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = self.request_inner(info, req).await;
        info.in_flight.fetch_sub(1, Ordering::Relaxed);
        r
    }

    async fn request_inner(&self, info: &ConnInfo, req: HttpRequest<Incoming>) -> Response<Body> {
        let t0 = Instant::now();
        let (mut parts, body) = req.into_parts();
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        let protocol = match (parts.version, grpc) {
            (_, true) => "grpc",
            (Version::HTTP_2, _) => "http2",
            _ => "http1",
        };
        // A client never speaks for the proxy: drop any copy of the identity header.
        strip_headers(&mut parts.headers);
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if !headers.iter().any(|(k, _)| k == "host") {
            if let Some(a) = parts.uri.authority() {
                headers.push(("host".into(), a.as_str().to_string()));
            }
        }
        let rid = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let areq = self.attrs(
            info,
            rid,
            parts.method.as_str().to_string(),
            path.clone(),
            headers,
        );
        let (allowed, d) = self.decide(info, &areq, protocol);
        if !allowed {
            let outcome = "deny";
            self.ctx.metrics.request(DIRECTION, protocol, outcome, None);
            let status = if d.reason == Reason::JwtInvalid {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            return deny(status, &d.reason_header());
        }
        if let Some(id) = &info.peer_id {
            if let Ok(v) = HeaderValue::from_str(id) {
                parts.headers.insert(PEER_ID_HEADER, v);
            }
        }
        let uri = match Uri::builder()
            .scheme("http")
            .authority(self.cfg.app.to_string())
            .path_and_query(path)
            .build()
        {
            Ok(u) => u,
            Err(_) => return simple(StatusCode::BAD_REQUEST, "bad request target"),
        };
        parts.uri = uri;
        let h2 = parts.version == Version::HTTP_2;
        if !h2 {
            parts.version = Version::HTTP_11;
        }
        let out = HttpRequest::from_parts(parts, SkipEmpty::new(body));
        let res = if h2 {
            self.app.h2.request(out).await
        } else {
            self.app.h1.request(out).await
        };
        match res {
            Ok(resp) => {
                self.ctx.metrics.request(
                    DIRECTION,
                    protocol,
                    if d.outcome == keycard_core::Outcome::Audit {
                        "audit"
                    } else {
                        "allow"
                    },
                    Some(t0.elapsed().as_secs_f64()),
                );
                let (mut rp, rb) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                Response::from_parts(rp, SkipEmpty::new(rb).boxed())
            }
            Err(e) => {
                self.ctx.metrics.upstream_error(DIRECTION);
                self.ctx.metrics.request(DIRECTION, protocol, "error", None);
                tracing::warn!(app = %self.cfg.app, error = %e, "app unreachable");
                simple(StatusCode::BAD_GATEWAY, "the app did not answer")
            }
        }
    }
}

/// Close connections that carry nothing for `timeout` with no request in flight.
async fn idle_watch(counters: Arc<Counters>, info: Arc<ConnInfo>, timeout: std::time::Duration) {
    let mut last = counters.get();
    loop {
        tokio::time::sleep(timeout).await;
        let now = counters.get();
        if now == last && info.in_flight.load(Ordering::Relaxed) == 0 {
            return;
        }
        last = now;
    }
}

/// The metric reason of a connection-level HTTP error, if it is the client's fault.
pub(crate) fn http_error_reason(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some("header_too_large");
            }
            if h.is_parse() || h.is_parse_status() {
                return Some("malformed_http");
            }
            if h.is_timeout() {
                return Some("header_timeout");
            }
            return None;
        }
        cur = err.source();
    }
    None
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
    "trailer",
];

/// Remove hop-by-hop headers (keeping `te: trailers`, which gRPC needs).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    let te_trailers = h
        .get_all(http::header::TE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("trailers")));
    h.remove(http::header::TE);
    if te_trailers {
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Hop-by-hop headers and any client-supplied identity header.
pub(crate) fn strip_headers(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(PEER_ID_HEADER);
}

pub(crate) fn simple(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{text}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn deny(status: StatusCode, reason: &str) -> Response<Body> {
    let mut r = simple(status, &format!("denied: {reason}"));
    if let Ok(v) = HeaderValue::from_str(reason) {
        r.headers_mut().insert(REASON_HEADER, v);
    }
    r
}
