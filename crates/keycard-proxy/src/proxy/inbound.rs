//! The inbound listener: in front of the local app.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request as HttpRequest, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::app_h1::{AppH1, BoxError};
use super::io::{Counted, Counters, SkipEmpty};
use super::server_h1::{self, ReqBody};
use super::svid::{peer_of, server_config};
use super::tunnel::{self, Tunnels};
use super::{
    policy_ref, Flow, ListenerHandle, MtlsMode, Protocol, ProxyContext, ProxyError, PEER_ID_HEADER,
    REASON_HEADER,
};
use crate::engine::Reason;
use crate::request::{Peer, Request};

pub(crate) type Body = BoxBody<Bytes, BoxError>;

/// An empty response body.
pub(crate) fn empty_body() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A request body from the client: hyper's (HTTP/2, plaintext) or keycard's
/// own HTTP/1.1 server's.
pub(crate) enum InBody {
    Hyper(Incoming),
    Own(ReqBody),
}

impl hyper::body::Body for InBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            InBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            InBody::Own(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InBody::Hyper(b) => b.is_end_stream(),
            InBody::Own(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            InBody::Hyper(b) => b.size_hint(),
            InBody::Own(b) => b.size_hint(),
        }
    }
}

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
    http: HttpServers,
    app: AppClients,
    conns: Arc<Semaphore>,
    next_request: AtomicU64,
    /// `cfg.app` as a URI authority, made once.
    app_authority: http::uri::Authority,
}

/// Connects to the app whatever the request's authority: the pool is
/// keyed by the authority, so an HTTP/2 request keeps the `:authority` the
/// caller asked for and still reaches the one app behind this listener.
#[derive(Clone)]
pub(crate) struct AppConnector {
    app: SocketAddr,
    timeout: Duration,
}

impl AppConnector {
    pub fn new(app: SocketAddr, timeout: Duration) -> Self {
        AppConnector { app, timeout }
    }

    pub async fn connect(&self) -> std::io::Result<TcpStream> {
        match tokio::time::timeout(self.timeout, TcpStream::connect(self.app)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                Ok(s)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to the app timed out",
            )),
        }
    }
}

impl tower_service::Service<Uri> for AppConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.connect().await.map(TokioIo::new) })
    }
}

/// Pooled plaintext clients to the app: HTTP/1.1, and HTTP/2 with prior
/// knowledge. HTTP/1.1 requests go through keycard's own lean client,
/// except those that ask for an upgrade: hyper's client hands over the
/// upgraded connection.
pub(crate) struct AppClients {
    pub h1: AppH1,
    pub upgrades: Client<AppConnector, SkipEmpty<InBody>>,
    pub h2: Client<AppConnector, SkipEmpty<InBody>>,
    pub connector: AppConnector,
}

impl AppClients {
    pub fn new(app: SocketAddr, limits: &super::Limits) -> Self {
        let c = AppConnector::new(app, limits.connect_timeout);
        let h1 = AppH1::new(c.clone(), limits.pool_idle_timeout, limits.max_header_bytes);
        let upgrades = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(c.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(c.clone());
        AppClients {
            h1,
            upgrades,
            h2,
            connector: c,
        }
    }
}

/// What [`Inbound::admit`] decided.
enum Admitted {
    /// Answered by the proxy (denied, redirected, malformed).
    Refused(Response<Body>),
    /// An authorized CONNECT.
    Connect {
        parts: http::request::Parts,
        protocol: &'static str,
        audit: bool,
    },
    Forward(Forward),
}

/// An authorized request on its way to the app.
struct Forward {
    out: HttpRequest<SkipEmpty<InBody>>,
    /// The client's side of an HTTP/1.1 upgrade, if it asked for one.
    on_client: Option<tunnel::Downstream>,
    protocol: &'static str,
    audit: bool,
    h2: bool,
}

/// hyper's HTTP servers of a listener. A TLS connection names its protocol
/// by ALPN: HTTP/2 is served by the HTTP/2 server directly (HTTP/1.1 by
/// keycard's own, [`server_h1`]); a plaintext one (or TLS without ALPN)
/// goes to the server that tells the two apart by the connection preface.
pub(crate) struct HttpServers {
    pub auto: auto::Builder<TokioExecutor>,
    pub h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// The HTTP protocol a connection negotiated, if it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    Http1,
    Http2,
    Unknown,
}

impl Negotiated {
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Negotiated::Http2,
            Some(b"http/1.1") => Negotiated::Http1,
            _ => Negotiated::Unknown,
        }
    }
}

impl HttpServers {
    /// The same limits on both: hyper's sniffing server wraps its own
    /// HTTP/1.1 and HTTP/2 builders, so each is set here side by side.
    pub fn new(limits: &super::Limits) -> Self {
        let max_buf = limits.max_header_bytes.max(8192);
        let max_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(max_buf);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(max_list)
            .max_concurrent_streams(1024);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(max_list)
            .max_concurrent_streams(1024);
        HttpServers { auto, h2 }
    }

    /// Serve one connection to its end. Each protocol's connection state
    /// is allocated at its own size, not at the size of the largest.
    pub fn serve<'a, I, S>(
        &'a self,
        io: I,
        svc: S,
        proto: Negotiated,
    ) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: hyper::service::Service<HttpRequest<Incoming>, Response = Response<Body>>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
    {
        match proto {
            Negotiated::Http2 => {
                let conn = self.h2.serve_connection(io, svc);
                Box::pin(async move { conn.await.map_err(Into::into) })
            }
            Negotiated::Http1 | Negotiated::Unknown => {
                Box::pin(self.auto.serve_connection_with_upgrades(io, svc))
            }
        }
    }
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
        http: HttpServers::new(&ctx.limits),
        app: AppClients::new(cfg.app, &ctx.limits),
        conns: Arc::new(Semaphore::new(ctx.limits.max_connections)),
        next_request: AtomicU64::new(1),
        app_authority: http::uri::Authority::try_from(cfg.app.to_string())
            .map_err(|e| ProxyError::Config(format!("app address {}: {e}", cfg.app)))?,
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
    /// The own SPIFFE ID when the connection was accepted (the destination
    /// principal of its requests).
    own_id: Option<String>,
    serial: Option<String>,
    src: SocketAddr,
    dst: SocketAddr,
    transport: &'static str,
    sni: Option<String>,
    allowed: AtomicU64,
    denied: AtomicU64,
    in_flight: AtomicU64,
    policy: Mutex<Option<String>>,
    /// Upgraded requests and CONNECT tunnels, which outlive the HTTP exchange.
    tunnels: Tunnels,
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
            local_is_src: false,
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
            // Boxed: the task keeps only what the connection's phase needs.
            let ended =
                Box::pin(self.serve(counted, &counters, info.clone(), None, Negotiated::Unknown))
                    .await;
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
        let negotiated = Negotiated::from_alpn(conn.alpn_protocol());
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
        let ended = Box::pin(self.serve(
            tls,
            &counters,
            info.clone(),
            Some(guard.kill.clone()),
            negotiated,
        ))
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
            own_id: self.ctx.own_id(),
            serial,
            src,
            dst,
            transport,
            sni,
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            policy: Mutex::new(None),
            tunnels: Tunnels::default(),
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
            sink.write(&flow.to_json(&self.ctx.local));
        }
    }

    /// Serve one connection (HTTP or TCP) until it ends, is revoked or idles out.
    async fn serve<S>(
        self: &Arc<Self>,
        io: S,
        counters: &Arc<Counters>,
        info: Arc<ConnInfo>,
        kill: Option<Arc<tokio::sync::Notify>>,
        negotiated: Negotiated,
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
                let work = Box::pin(self.clone().tcp(io, info.clone()));
                tokio::select! {
                    _ = work => Ended::Done,
                    _ = killed => Ended::Revoked,
                    _ = idle => Ended::Idle,
                }
            }
            Protocol::Http => {
                let me = self.clone();
                let inf = info.clone();
                let conn: Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> = if negotiated
                    == Negotiated::Http1
                {
                    let cfg = server_h1::Config {
                        max_head: self.ctx.limits.max_header_bytes,
                        header_timeout: self.ctx.limits.header_read_timeout,
                    };
                    let handler = move |req: HttpRequest<ReqBody>| {
                        let me = me.clone();
                        let inf = inf.clone();
                        Box::pin(async move { me.request(&inf, req.map(InBody::Own)).await })
                            as Pin<Box<dyn Future<Output = Response<Body>> + Send>>
                    };
                    Box::pin(async move {
                        server_h1::serve(io, cfg, handler)
                            .await
                            .map_err(BoxError::from)
                    })
                } else {
                    let svc = service_fn(move |req: HttpRequest<Incoming>| {
                        let req = detach(req).map(InBody::Hyper);
                        let me = me.clone();
                        let inf = inf.clone();
                        // Boxed per request: hyper keeps a slot of the
                        // service future's size for the connection's life.
                        Box::pin(async move { Ok::<_, Infallible>(me.request(&inf, req).await) })
                    });
                    self.http.serve(TokioIo::new(io), svc, negotiated)
                };
                tokio::pin!(conn);
                tokio::pin!(killed);
                tokio::pin!(idle);
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            let reason = http_error_reason(&*e);
                            if let Some(reason) = reason {
                                self.ctx.metrics.refused(DIRECTION, reason);
                            }
                            tracing::debug!(src = %info.src, error = %e, "inbound connection error");
                        }
                    }
                    _ = &mut killed => return Ended::Revoked,
                    _ = &mut idle => return Ended::Idle,
                }
                // Upgraded requests and CONNECT tunnels carry on after the
                // HTTP exchange; the connection ends with them.
                let tunnels = info.tunnels.take();
                if tunnels.is_empty() {
                    return Ended::Done;
                }
                tokio::select! {
                    _ = tunnel::join_all(tunnels) => Ended::Done,
                    _ = &mut killed => Ended::Revoked,
                    _ = &mut idle => Ended::Idle,
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
                principal: info.own_id.clone(),
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
        // The decision log (fail closed): a decision it cannot take is refused.
        let d = match &self.ctx.audit {
            Some(a)
                if !a.admit(
                    SystemTime::now(),
                    req,
                    checked.claims.as_ref(),
                    &d,
                    spent.as_micros() as u64,
                    &[("transport", info.transport), ("protocol", protocol)],
                ) =>
            {
                crate::record::unavailable_decision()
            }
            _ => d,
        };
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

    async fn request(&self, info: &ConnInfo, req: HttpRequest<InBody>) -> Response<Body> {
        info.in_flight.fetch_add(1, Ordering::Relaxed);
        let r = self.request_inner(info, req).await;
        info.in_flight.fetch_sub(1, Ordering::Relaxed);
        r
    }

    /// Authorize, then forward. The decision is taken synchronously, so
    /// only what forwarding needs is kept while the app answers.
    async fn request_inner(&self, info: &ConnInfo, req: HttpRequest<InBody>) -> Response<Body> {
        let t0 = Instant::now();
        match self.admit(info, req) {
            Admitted::Refused(r) => r,
            Admitted::Connect {
                parts,
                protocol,
                audit,
            } => Box::pin(self.connect_tunnel(info, parts, protocol, audit, t0)).await,
            Admitted::Forward(f) => self.forward(info, f, t0).await,
        }
    }

    /// The decision on one request and, when it may pass, the request to send on.
    fn admit(&self, info: &ConnInfo, req: HttpRequest<InBody>) -> Admitted {
        let (mut parts, body) = req.into_parts();
        let protocol = protocol_of(&parts);
        let connect = parts.method == Method::CONNECT;
        let upgrade = match parts.version {
            Version::HTTP_11 if !connect => tunnel::upgrade_of(&parts.headers),
            _ => None,
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
        let raw_target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        // Decide on, and forward, the normal form of the path: what was
        // authorised is what the app sees. CONNECT has no path.
        let path = if connect {
            raw_target.to_string()
        } else {
            match crate::normalize_target(raw_target, self.ctx.authorizer.paths()) {
                Ok(t) if t.redirect => {
                    self.ctx
                        .metrics
                        .request(DIRECTION, protocol, "redirect", None);
                    return Admitted::Refused(redirect(&t.path_and_query()));
                }
                Ok(t) => t.path_and_query(),
                Err(e) => {
                    self.ctx
                        .metrics
                        .request(DIRECTION, protocol, "bad_request", None);
                    tracing::debug!(error = %e, "request target refused");
                    return Admitted::Refused(simple(
                        StatusCode::BAD_REQUEST,
                        "bad request target",
                    ));
                }
            }
        };
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
            if crate::record::is_unavailable(&d) {
                return Admitted::Refused(deny(
                    StatusCode::SERVICE_UNAVAILABLE,
                    crate::record::LOG_UNAVAILABLE,
                ));
            }
            let status = if d.reason == Reason::JwtInvalid {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            return Admitted::Refused(deny(status, &d.reason_header()));
        }
        let audit = d.outcome == keycard_core::Outcome::Audit;
        if connect {
            return Admitted::Connect {
                parts,
                protocol,
                audit,
            };
        }
        if let Some(id) = &info.peer_id {
            if let Ok(v) = HeaderValue::from_str(id) {
                parts.headers.insert(PEER_ID_HEADER, v);
            }
        }
        let h2 = parts.version == Version::HTTP_2 && upgrade.is_none();
        // HTTP/2 keeps the caller's :authority (the connector dials the app
        // whatever it says); HTTP/1.1 keeps its Host header.
        let authority = match parts.uri.authority() {
            Some(a) if h2 => a.clone(),
            _ => self.app_authority.clone(),
        };
        let uri = match Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
        {
            Ok(u) => u,
            Err(_) => {
                return Admitted::Refused(simple(StatusCode::BAD_REQUEST, "bad request target"))
            }
        };
        parts.uri = uri;
        if !h2 {
            parts.version = Version::HTTP_11;
        }
        let on_client = match upgrade {
            Some(u) => {
                tunnel::restore_upgrade(&mut parts.headers, u);
                tunnel::Downstream::take(&mut parts.extensions)
            }
            None => None,
        };
        let out = HttpRequest::from_parts(parts, SkipEmpty::new(body));
        Admitted::Forward(Forward {
            out,
            on_client,
            protocol,
            audit,
            h2,
        })
    }

    /// Send an authorized request to the app and relay its answer.
    async fn forward(&self, info: &ConnInfo, f: Forward, t0: Instant) -> Response<Body> {
        let Forward {
            out,
            on_client,
            protocol,
            audit,
            h2,
        } = f;
        let res = match (h2, on_client) {
            (false, None) => match self.app.h1.send(out).await {
                Ok(resp) => Ok((resp.map(|b| b.map_err(BoxError::from).boxed()), None)),
                Err(e) => Err(BoxError::from(e)),
            },
            (h2, on_client) => {
                let client = if h2 { &self.app.h2 } else { &self.app.upgrades };
                match client.request(out).await {
                    Ok(mut resp) => {
                        let switched = match on_client {
                            Some(down) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                                let up = hyper::upgrade::on(&mut resp);
                                info.tunnels.push(tokio::spawn(tunnel::splice_upgrades(
                                    down,
                                    up,
                                    "inbound upgrade",
                                )));
                                tunnel::upgrade_of(resp.headers())
                            }
                            _ => None,
                        };
                        let resp = resp.map(|b| SkipEmpty::new(b).map_err(BoxError::from).boxed());
                        Ok((resp, switched))
                    }
                    Err(e) => Err(BoxError::from(e)),
                }
            }
        };
        match res {
            Ok((mut resp, switched)) => {
                self.ctx.metrics.request(
                    DIRECTION,
                    protocol,
                    if audit { "audit" } else { "allow" },
                    Some(t0.elapsed().as_secs_f64()),
                );
                strip_hop_by_hop(resp.headers_mut());
                if let Some(u) = switched {
                    tunnel::restore_upgrade(resp.headers_mut(), u);
                }
                resp
            }
            Err(e) => {
                self.ctx.metrics.upstream_error(DIRECTION);
                self.ctx.metrics.request(DIRECTION, protocol, "error", None);
                tracing::warn!(app = %self.cfg.app, error = %e, "the request to the app failed");
                simple(StatusCode::BAD_GATEWAY, "the app did not answer")
            }
        }
    }
}

impl Inbound {
    /// An authorized CONNECT: a byte stream to the app (whatever the target
    /// named; this listener serves one app), 200 once it is connected.
    async fn connect_tunnel(
        &self,
        info: &ConnInfo,
        mut parts: http::request::Parts,
        protocol: &str,
        audit: bool,
        t0: Instant,
    ) -> Response<Body> {
        let Some(down) = tunnel::Downstream::take(&mut parts.extensions) else {
            return simple(StatusCode::BAD_REQUEST, "CONNECT cannot be upgraded here");
        };
        let app = match self.app.connector.connect().await {
            Ok(s) => s,
            Err(e) => {
                self.ctx.metrics.upstream_error(DIRECTION);
                self.ctx.metrics.request(DIRECTION, protocol, "error", None);
                tracing::warn!(app = %self.cfg.app, error = %e, "app unreachable");
                return simple(StatusCode::BAD_GATEWAY, "the app did not answer");
            }
        };
        self.ctx.metrics.request(
            DIRECTION,
            protocol,
            if audit { "audit" } else { "allow" },
            Some(t0.elapsed().as_secs_f64()),
        );
        info.tunnels
            .push(tokio::spawn(tunnel::splice(down, app, "inbound CONNECT")));
        Response::new(empty_body())
    }
}

/// The request with its own copies of the target and header values.
///
/// hyper parses a request head in place: its URI and header values share
/// the connection's read buffer. While they live, hyper's next read (it
/// reads on at once, to notice a closing client) cannot reuse that buffer
/// and allocates another. Copying the few bytes of a head here, before
/// hyper reads again, keeps one read buffer per connection.
/// (HTTP/2 heads are decoded into fresh buffers already.)
fn detach(req: HttpRequest<Incoming>) -> HttpRequest<Incoming> {
    if req.version() == Version::HTTP_2 {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let mut v = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        v.set_sensitive(value.is_sensitive());
        headers.append(name.clone(), v);
    }
    parts.headers = headers;
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    HttpRequest::from_parts(parts, body)
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
        if let Some(s) = err.downcast_ref::<server_h1::ServeError>() {
            return s.reason();
        }
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

/// The tokens of a message's `Connection` fields, trimmed.
pub(crate) fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Remove hop-by-hop headers (keeping `te: trailers`, which gRPC needs).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = connection_tokens(h)
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
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

/// The protocol label of a request: grpc (by content type), http2 or http1.
pub(crate) fn protocol_of(parts: &http::request::Parts) -> &'static str {
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    match (parts.version, grpc) {
        (_, true) => "grpc",
        (Version::HTTP_2, _) => "http2",
        _ => "http1",
    }
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

/// A redirect to the normal form of the request target (the
/// `unescape-and-redirect` handling of encoded slashes).
fn redirect(location: &str) -> Response<Body> {
    let mut r = simple(
        StatusCode::TEMPORARY_REDIRECT,
        "redirect to the normalised path",
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

fn deny(status: StatusCode, reason: &str) -> Response<Body> {
    let mut r = simple(status, &format!("denied: {reason}"));
    if let Ok(v) = HeaderValue::from_str(reason) {
        r.headers_mut().insert(REASON_HEADER, v);
    }
    r
}
