//! The outbound listener: between the local app and a remote service.
//!
//! Plaintext in from the app (loopback only), mTLS out to the upstream
//! proxy with the workload's SVID. The upstream's certificate must be an
//! X509-SVID for the expected SPIFFE ID (or trust domain). HTTP requests go
//! over pooled connections (HTTP/1.1 requests over HTTP/1.1, HTTP/2 and
//! gRPC multiplexed over one HTTP/2 connection); TCP is one upstream
//! connection per app connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request as HttpRequest, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::inbound::{http_builder, http_error_reason, simple, strip_hop_by_hop, Body};
use super::io::{Counted, SkipEmpty};
use super::svid::{client_config, Expected};
use super::{ListenerHandle, Protocol, ProxyContext, ProxyError, REASON_HEADER};

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
        })
    }

    /// Connect and handshake (bounded by the connect timeout).
    pub async fn connect(&self) -> io::Result<MtlsStream> {
        let fut = async {
            let tcp = TcpStream::connect(self.upstream).await?;
            let _ = tcp.set_nodelay(true);
            let tls = self.tls.connect(self.name.clone(), tcp).await?;
            Ok(MtlsStream(tls))
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

/// An mTLS connection to the upstream.
pub struct MtlsStream(TlsStream<TcpStream>);

impl MtlsStream {
    /// The SPIFFE ID the upstream presented (verified).
    pub fn peer_id(&self) -> Option<String> {
        super::svid::peer_of(self.0.get_ref().1).map(|l| l.spiffe_id.to_string())
    }
}

impl Connection for MtlsStream {
    fn connected(&self) -> Connected {
        let c = Connected::new();
        if self.0.get_ref().1.alpn_protocol() == Some(b"h2") {
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
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MtlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
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
    http: hyper_util::server::conn::auto::Builder<TokioExecutor>,
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
        http: http_builder(&ctx.limits),
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
        let copy = tokio::io::copy_bidirectional(&mut app, &mut up);
        if let Err(e) = copy.await {
            tracing::debug!(error = %e, "outbound tcp copy ended");
        }
    }

    async fn http_conn(self: &Arc<Self>, app: Counted<TcpStream>) {
        let me = self.clone();
        let svc = service_fn(move |req: HttpRequest<Incoming>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.request(req).await) }
        });
        if let Err(e) = self.http.serve_connection(TokioIo::new(app), svc).await {
            if let Some(reason) = http_error_reason(&*e) {
                self.ctx.metrics.refused(DIRECTION, reason);
            }
            tracing::debug!(error = %e, "outbound connection error");
        }
    }

    async fn request(&self, req: HttpRequest<Incoming>) -> Response<Body> {
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
        strip_hop_by_hop(&mut parts.headers);
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let h2 = parts.version == Version::HTTP_2;
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
        let out = HttpRequest::from_parts(parts, SkipEmpty::new(body));
        let res = if h2 {
            self.upstream.h2.request(out).await
        } else {
            self.upstream.h1.request(out).await
        };
        match res {
            Ok(resp) => {
                self.ctx.metrics.request(
                    DIRECTION,
                    protocol,
                    if resp.status() == StatusCode::FORBIDDEN {
                        "deny"
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
    }
}
