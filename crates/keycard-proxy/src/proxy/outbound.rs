//! The outbound listener: between the local app and a remote service.
//!
//! Plaintext in from the app (loopback only), mTLS out to the upstream
//! proxy with the workload's SVID. The upstream's certificate must be an
//! X509-SVID for the expected SPIFFE ID (or trust domain). HTTP requests go
//! over pooled connections (HTTP/1.1 requests over HTTP/1.1, HTTP/2 and
//! gRPC multiplexed over one HTTP/2 connection); TCP is one upstream
//! connection per app connection. HTTP/1.1 upgrades (WebSocket) and
//! CONNECT become byte streams over an upstream connection of their own.
//!
//! Every upstream connection, refused ones included, ends in a flow record
//! (the local workload as the source, the verified upstream as the
//! destination); the inbound proxy at the other end records the same
//! connection from its side, and `keycard flows ingest` merges the two.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::{Method, Request as HttpRequest, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::app_h1::BoxError;
use super::inbound::{
    http_error_reason, protocol_of, simple, strip_hop_by_hop, Body, HttpServers, Negotiated,
};
use super::io::{Counted, Counters, SkipEmpty};
use super::svid::{client_config, Expected, IdentityState};
use super::tunnel;
use super::{
    Flow, ListenerHandle, LocalWorkload, Protocol, ProxyContext, ProxyError, REASON_HEADER,
};
use crate::record::RecordSink;

const DIRECTION: &str = "outbound";

/// An outbound listener.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Where the app connects (plaintext; connections from other than loopback are refused).
    pub listen: SocketAddr,
    /// The upstream keycard proxy (its inbound listener).
    pub upstream: SocketAddr,
    /// Who the upstream must be.
    pub expected: Expected,
    pub protocol: Protocol,
    /// SNI to send; none by default (identity is checked by SPIFFE ID, not name).
    pub server_name: Option<String>,
}

/// Opens mTLS connections to the upstream; what the pooled clients call.
#[derive(Clone)]
pub struct MtlsConnector {
    tls: TlsConnector,
    upstream: SocketAddr,
    name: ServerName<'static>,
    timeout: std::time::Duration,
    flows: Option<Arc<FlowOut>>,
}

/// Where the flow records of upstream connections go.
struct FlowOut {
    sink: RecordSink,
    identity: Arc<IdentityState>,
    local: LocalWorkload,
}

impl FlowOut {
    fn write(&self, flow: Flow) {
        self.sink.write(&flow.to_json(&self.local));
    }
}

/// What the requests over one upstream connection met; every response
/// carries it (a connector extra), so the outbound can count them.
#[derive(Debug, Default)]
pub struct UpstreamVerdicts {
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl UpstreamVerdicts {
    fn count(&self, allowed: bool) {
        let c = if allowed { &self.allowed } else { &self.denied };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The flow of one upstream connection, written when the connection is dropped.
struct OpenFlow {
    out: Arc<FlowOut>,
    start: SystemTime,
    local: SocketAddr,
    upstream: SocketAddr,
    peer_id: Option<String>,
    counters: Arc<Counters>,
    verdicts: Arc<UpstreamVerdicts>,
}

impl Drop for OpenFlow {
    fn drop(&mut self) {
        let (rx, tx) = self.counters.get();
        self.out.write(Flow {
            start: self.start,
            src_id: self
                .out
                .identity
                .svid()
                .map(|s| s.info.spiffe_id.to_string()),
            src: self.local,
            dst_id: self.peer_id.take(),
            dst: self.upstream,
            local_is_src: true,
            bytes_in: rx,
            bytes_out: tx,
            allowed: self.verdicts.allowed.load(Ordering::Relaxed),
            denied: self.verdicts.denied.load(Ordering::Relaxed),
            policy: None,
        });
    }
}

impl MtlsConnector {
    pub fn new(
        ctx: &ProxyContext,
        upstream: SocketAddr,
        expected: Expected,
        server_name: Option<&str>,
        alpn: &[&[u8]],
    ) -> Result<Self, ProxyError> {
        let cfg = client_config(&ctx.identity, expected, alpn)?;
        let name = match server_name {
            Some(n) => ServerName::try_from(n.to_string())
                .map_err(|e| ProxyError::Config(format!("server name {n:?}: {e}")))?,
            None => ServerName::IpAddress(upstream.ip().into()),
        };
        Ok(MtlsConnector {
            tls: TlsConnector::from(Arc::new(cfg)),
            upstream,
            name,
            timeout: ctx.limits.connect_timeout,
            flows: ctx.flows.as_ref().map(|sink| {
                Arc::new(FlowOut {
                    sink: sink.clone(),
                    identity: ctx.identity.clone(),
                    local: ctx.local.clone(),
                })
            }),
        })
    }

    /// Connect and handshake (bounded by the connect timeout).
    pub async fn connect(&self) -> io::Result<MtlsStream> {
        let fut = async {
            let start = SystemTime::now();
            let tcp = TcpStream::connect(self.upstream).await?;
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().unwrap_or(self.upstream);
            let tcp = Counted::new(tcp);
            let counters = tcp.counters.clone();
            let verdicts = Arc::new(UpstreamVerdicts::default());
            let flow = |peer_id| {
                self.flows.as_ref().map(|out| OpenFlow {
                    out: out.clone(),
                    start,
                    local,
                    upstream: self.upstream,
                    peer_id,
                    counters: counters.clone(),
                    verdicts: verdicts.clone(),
                })
            };
            let tls = match self.tls.connect(self.name.clone(), tcp).await {
                Ok(t) => t,
                Err(e) => {
                    // Refused (the upstream is not who it must be, or the
                    // handshake failed): a deny record, written on drop.
                    verdicts.count(false);
                    drop(flow(None));
                    return Err(e);
                }
            };
            let peer_id = super::svid::peer_of(tls.get_ref().1).map(|l| l.spiffe_id.to_string());
            let flow = flow(peer_id);
            Ok(MtlsStream {
                tls,
                verdicts,
                _flow: flow,
            })
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connecting to the upstream timed out",
            )),
        }
    }
}

impl tower_service::Service<Uri> for MtlsConnector {
    type Response = TokioIo<MtlsStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<MtlsStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move { me.connect().await.map(TokioIo::new) })
    }
}

/// An mTLS connection to the upstream; its flow record is written when it is dropped.
pub struct MtlsStream {
    tls: TlsStream<Counted<TcpStream>>,
    verdicts: Arc<UpstreamVerdicts>,
    _flow: Option<OpenFlow>,
}

impl MtlsStream {
    /// The SPIFFE ID the upstream presented (verified).
    pub fn peer_id(&self) -> Option<String> {
        super::svid::peer_of(self.tls.get_ref().1).map(|l| l.spiffe_id.to_string())
    }

    /// Count a request carried by this connection as allowed or denied.
    pub fn count(&self, allowed: bool) {
        self.verdicts.count(allowed);
    }
}

impl Connection for MtlsStream {
    fn connected(&self) -> Connected {
        let c = Connected::new().extra(self.verdicts.clone());
        if self.tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            c.negotiated_h2()
        } else {
            c
        }
    }
}

impl AsyncRead for MtlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }
}

/// Pooled mTLS clients to the upstream: HTTP/1.1 and HTTP/2.
pub struct UpstreamClients {
    h1: Client<MtlsConnector, SkipEmpty<Incoming>>,
    h2: Client<MtlsConnector, SkipEmpty<Incoming>>,
    authority: String,
}

impl UpstreamClients {
    pub fn new(ctx: &ProxyContext, cfg: &OutboundConfig) -> Result<Self, ProxyError> {
        let name = cfg.server_name.as_deref();
        let c1 = MtlsConnector::new(
            ctx,
            cfg.upstream,
            cfg.expected.clone(),
            name,
            &[b"http/1.1"],
        )?;
        let c2 = MtlsConnector::new(ctx, cfg.upstream, cfg.expected.clone(), name, &[b"h2"])?;
        let limits = &ctx.limits;
        let h1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(c1);
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .build(c2);
        Ok(UpstreamClients {
            h1,
            h2,
            authority: cfg
                .server_name
                .clone()
                .unwrap_or_else(|| cfg.upstream.to_string()),
        })
    }
}

struct Outbound {
    ctx: Arc<ProxyContext>,
    cfg: OutboundConfig,
    http: HttpServers,
    upstream: UpstreamClients,
    tcp: MtlsConnector,
    conns: Arc<Semaphore>,
}

/// Bind and start serving.
pub async fn start(
    ctx: Arc<ProxyContext>,
    cfg: OutboundConfig,
) -> Result<ListenerHandle, ProxyError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ProxyError::Io {
            what: format!("outbound listener {}", cfg.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Io {
        what: "outbound listener".into(),
        source,
    })?;
    let out = Arc::new(Outbound {
        http: HttpServers::new(&ctx.limits),
        upstream: UpstreamClients::new(&ctx, &cfg)?,
        tcp: MtlsConnector::new(
            &ctx,
            cfg.upstream,
            cfg.expected.clone(),
            cfg.server_name.as_deref(),
            &[],
        )?,
        conns: Arc::new(Semaphore::new(ctx.limits.max_connections)),
        ctx,
        cfg,
    });
    tracing::info!(%addr, upstream = %out.cfg.upstream, expected = ?out.cfg.expected, protocol = out.cfg.protocol.as_str(), "outbound listening");
    let task = tokio::spawn(accept_loop(out, listener));
    Ok(ListenerHandle::new(addr, task))
}

async fn accept_loop(out: Arc<Outbound>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "outbound accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !peer.ip().is_loopback() {
            out.ctx.metrics.refused(DIRECTION, "not_loopback");
            continue;
        }
        let Ok(permit) = out.conns.clone().try_acquire_owned() else {
            out.ctx.metrics.refused(DIRECTION, "max_connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        out.ctx.metrics.connection(DIRECTION, "plaintext");
        let o = out.clone();
        tokio::spawn(async move {
            let _open = o.ctx.metrics.open(DIRECTION);
            let counted = Counted::new(stream);
            let counters = counted.counters.clone();
            match o.cfg.protocol {
                Protocol::Tcp => o.tcp_conn(counted).await,
                Protocol::Http => o.http_conn(counted).await,
            }
            let (rx, tx) = counters.get();
            o.ctx.metrics.bytes(DIRECTION, rx, tx);
            drop(permit);
        });
    }
}

impl Outbound {
    async fn tcp_conn(&self, mut app: Counted<TcpStream>) {
        let mut up = match self.tcp.connect().await {
            Ok(s) => s,
            Err(e) => {
                self.ctx.metrics.upstream_error(DIRECTION);
                tracing::warn!(upstream = %self.cfg.upstream, error = %e, "upstream mTLS connect failed");
                return;
            }
        };
        // The upstream verified and the connection carried: the inbound at
        // the other end decides, and records its own verdict.
        up.count(true);
        let copy = tokio::io::copy_bidirectional(&mut app, &mut up);
        if let Err(e) = copy.await {
            tracing::debug!(error = %e, "outbound tcp copy ended");
        }
    }

    async fn http_conn(self: &Arc<Self>, app: Counted<TcpStream>) {
        let me = self.clone();
        let tunnels = Arc::new(tunnel::Tunnels::default());
        let t = tunnels.clone();
        let svc = service_fn(move |req: HttpRequest<Incoming>| {
            let me = me.clone();
            let t = t.clone();
            async move { Ok::<_, Infallible>(me.request(req, &t).await) }
        });
        // The local app speaks plaintext: HTTP/1.1 or HTTP/2 by its preface.
        if let Err(e) = self
            .http
            .serve(TokioIo::new(app), svc, Negotiated::Unknown)
            .await
        {
            if let Some(reason) = http_error_reason(&*e) {
                self.ctx.metrics.refused(DIRECTION, reason);
            }
            tracing::debug!(error = %e, "outbound connection error");
        }
        // Upgraded requests and CONNECT tunnels: the connection lasts as long as they do.
        tunnel::join_all(tunnels.take()).await;
    }

    async fn request(
        &self,
        req: HttpRequest<Incoming>,
        tunnels: &tunnel::Tunnels,
    ) -> Response<Body> {
        let t0 = Instant::now();
        let (mut parts, body) = req.into_parts();
        let protocol = protocol_of(&parts);
        let connect = parts.method == Method::CONNECT;
        let upgrade = match parts.version {
            Version::HTTP_11 if !connect => tunnel::upgrade_of(&parts.headers),
            _ => None,
        };
        strip_hop_by_hop(&mut parts.headers);
        if connect {
            return self.connect(parts, body, protocol, t0, tunnels).await;
        }
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let h2 = parts.version == Version::HTTP_2 && upgrade.is_none();
        // The connector always dials the upstream; the URI's authority is
        // the pool key and, over HTTP/2, the :authority the upstream sees,
        // so HTTP/2 keeps the app's own (HTTP/1.1 keeps its Host header).
        let authority = match parts.uri.authority() {
            Some(a) if h2 => a.as_str().to_string(),
            _ => self.upstream.authority.clone(),
        };
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(pq)
            .build()
        else {
            return simple(StatusCode::BAD_REQUEST, "bad request target");
        };
        parts.uri = uri;
        if !h2 {
            parts.version = Version::HTTP_11;
        }
        let on_app = match upgrade {
            Some(u) => {
                tunnel::restore_upgrade(&mut parts.headers, u);
                parts.extensions.remove::<OnUpgrade>()
            }
            None => None,
        };
        let out = HttpRequest::from_parts(parts, SkipEmpty::new(body));
        let res = if h2 {
            self.upstream.h2.request(out).await
        } else {
            self.upstream.h1.request(out).await
        };
        match res {
            Ok(mut resp) => {
                self.counted(&resp, protocol, t0);
                let switched = match on_app {
                    Some(down) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                        let up = hyper::upgrade::on(&mut resp);
                        tunnels.push(tokio::spawn(tunnel::splice_upgrades(
                            tunnel::Downstream::Hyper(down),
                            up,
                            "outbound upgrade",
                        )));
                        tunnel::upgrade_of(resp.headers())
                    }
                    _ => None,
                };
                let (mut rp, rb) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                if let Some(u) = switched {
                    tunnel::restore_upgrade(&mut rp.headers, u);
                }
                Response::from_parts(rp, SkipEmpty::new(rb).map_err(BoxError::from).boxed())
            }
            Err(e) => self.failed(protocol, &e),
        }
    }

    /// Count a response: a denial is the upstream proxy's 401/403 with its reason header.
    fn counted<B>(&self, resp: &Response<B>, protocol: &str, t0: Instant) {
        let denied = matches!(
            resp.status(),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED
        ) && resp.headers().contains_key(REASON_HEADER);
        if let Some(v) = resp.extensions().get::<Arc<UpstreamVerdicts>>() {
            v.count(!denied);
        }
        self.ctx.metrics.request(
            DIRECTION,
            protocol,
            if denied { "deny" } else { "allow" },
            Some(t0.elapsed().as_secs_f64()),
        );
    }

    /// CONNECT: carried to the upstream proxy over an HTTP/1.1 connection
    /// of its own (the inbound authorizes it and tunnels to its app), then
    /// a byte stream between the app and that connection.
    async fn connect(
        &self,
        mut parts: http::request::Parts,
        body: Incoming,
        protocol: &str,
        t0: Instant,
        tunnels: &tunnel::Tunnels,
    ) -> Response<Body> {
        let Some(down) = parts.extensions.remove::<OnUpgrade>() else {
            return simple(StatusCode::BAD_REQUEST, "CONNECT cannot be upgraded here");
        };
        let Some(authority) = parts.uri.authority().cloned() else {
            return simple(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let Ok(uri) = Uri::builder().authority(authority).build() else {
            return simple(StatusCode::BAD_REQUEST, "bad request target");
        };
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let out = HttpRequest::from_parts(parts, SkipEmpty::new(body));
        match self.upstream.h1.request(out).await {
            Ok(mut resp) => {
                self.counted(&resp, protocol, t0);
                if resp.status().is_success() {
                    let up = hyper::upgrade::on(&mut resp);
                    tunnels.push(tokio::spawn(tunnel::splice_upgrades(
                        tunnel::Downstream::Hyper(down),
                        up,
                        "outbound CONNECT",
                    )));
                }
                let (mut rp, rb) = resp.into_parts();
                strip_hop_by_hop(&mut rp.headers);
                Response::from_parts(rp, SkipEmpty::new(rb).map_err(BoxError::from).boxed())
            }
            Err(e) => self.failed(protocol, &e),
        }
    }

    fn failed(&self, protocol: &str, e: &hyper_util::client::legacy::Error) -> Response<Body> {
        self.ctx.metrics.upstream_error(DIRECTION);
        self.ctx.metrics.request(DIRECTION, protocol, "error", None);
        tracing::warn!(upstream = %self.cfg.upstream, error = %e, "upstream request failed");
        let mut r = simple(
            StatusCode::BAD_GATEWAY,
            "the upstream proxy could not be reached or failed verification",
        );
        r.headers_mut().insert(
            REASON_HEADER,
            http::HeaderValue::from_static("upstream: connect or mTLS failed"),
        );
        r
    }
}
