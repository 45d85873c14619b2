//! HTTPS for the webhook: `POST /validate` and `GET /healthz` over HTTP/1.1
//! and HTTP/2 (hyper 1, tokio-rustls), with bounded bodies, headers, time
//! and connections.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::webhook::{error_body, Webhook};

/// The webhook's path.
pub const VALIDATE_PATH: &str = "/validate";
/// Liveness and readiness.
pub const HEALTH_PATH: &str = "/healthz";

/// Bounds of the HTTPS server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Most connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Most time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Most time from a request's first byte to its whole header.
    pub header_timeout: Duration,
    /// Most time to read a body and answer.
    pub request_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_streams: u32,
    /// On shutdown, how long open connections get to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_streams: 256,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A rustls server configuration from PEM certificate chain and key (ring
/// provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1).
pub fn tls_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::ServerConfig, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ServerError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(
            "certificate PEM: no CERTIFICATE block found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| ServerError::Tls(format!("private key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key: {e}")))?;
    with_alpn(&mut cfg);
    Ok(cfg)
}

/// Offers HTTP/2 and HTTP/1.1 by ALPN (the API server's Go client uses h2
/// when offered). Call it on a configuration built elsewhere.
pub fn with_alpn(cfg: &mut rustls::ServerConfig) {
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let reason = status
        .canonical_reason()
        .unwrap_or("Error")
        .replace(' ', "");
    respond(status, &error_body(status.as_u16(), &reason, message))
}

fn is_json(req: &Request<impl Body>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Answers one HTTP request: the webhook at [`VALIDATE_PATH`], health at
/// [`HEALTH_PATH`]. Mount it in another hyper service to serve the webhook
/// next to other routes.
pub async fn handle<B>(webhook: &Webhook, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, HEALTH_PATH) => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            r
        }
        (&Method::POST, VALIDATE_PATH) => validate(webhook, req).await,
        (_, VALIDATE_PATH) | (_, HEALTH_PATH) => {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            let allow = if req.uri().path() == VALIDATE_PATH {
                "POST"
            } else {
                "GET, HEAD"
            };
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static(allow));
            r
        }
        (_, path) => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no such path {:?}: the webhook is at {VALIDATE_PATH}",
                clip_path(path)
            ),
        ),
    }
}

fn clip_path(p: &str) -> String {
    p.chars().take(100).collect()
}

/// Bytes read and thrown away after an early answer (415, 413), so the
/// client's request is consumed and it reads the answer instead of a reset
/// connection; past this the connection is closed.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;

/// Reads the body up to `max` bytes. `Ok(None)`: it is larger (the rest is
/// drained up to [`DRAIN_BYTES`]).
async fn read_body<B>(body: B, max: usize) -> Result<Option<Bytes>, String>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| e.into().to_string())?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let n = bytes::Buf::remaining(&data);
        seen = seen.saturating_add(n);
        if seen > max {
            if seen > DRAIN_BYTES {
                return Ok(None);
            }
            continue;
        }
        buf.extend_from_slice(&bytes::Buf::copy_to_bytes(&mut data, n));
    }
    Ok((seen <= max).then(|| buf.freeze()))
}

async fn validate<B>(webhook: &Webhook, req: Request<B>) -> Response<Full<Bytes>>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = webhook.config().max_body_bytes;
    if !is_json(&req) {
        let _ = read_body(req.into_body(), 0).await;
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type: application/json (an AdmissionReview)",
        );
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        if declared.is_some_and(|n| n <= DRAIN_BYTES as u64) {
            let _ = read_body(req.into_body(), 0).await;
        }
        return too_large(max);
    }
    let body = match read_body(req.into_body(), max).await {
        Ok(Some(b)) => b,
        Ok(None) => return too_large(max),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the request body: {e}"),
            );
        }
    };
    let reply = webhook.review(&body).await;
    let status = StatusCode::from_u16(reply.http_status).unwrap_or(StatusCode::OK);
    respond(status, &reply.body)
}

fn too_large(max: usize) -> Response<Full<Bytes>> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than the limit of {max} bytes"),
    )
}

/// Serves the webhook on `listener` with TLS until `shutdown` completes,
/// then lets open connections finish (up to the grace period). `tls`
/// should offer ALPN h2 and http/1.1 (see [`with_alpn`]).
pub async fn serve<F>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    webhook: Arc<Webhook>,
    opts: ServerOptions,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send,
{
    let acceptor = TlsAcceptor::from(tls);
    let limit = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let webhook = Arc::clone(&webhook);
        let opts = opts.clone();
        let stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            connection(tcp, peer, acceptor, webhook, opts, stop).await;
        });
    }
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(opts.shutdown_grace, drain)
        .await
        .is_err()
    {
        conns.abort_all();
    }
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    webhook: Arc<Webhook>,
    opts: ServerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let request_timeout = opts.request_timeout;
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let webhook = Arc::clone(&webhook);
        async move {
            let resp = match tokio::time::timeout(request_timeout, handle(&webhook, req)).await {
                Ok(r) => r,
                Err(_) => error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("the request took longer than {request_timeout:?}"),
                ),
            };
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(opts.max_streams)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Runs the webhook server on its own runtime until SIGINT or SIGTERM:
/// the standalone `keycard admission serve`.
pub fn run_until_signal(
    listen: SocketAddr,
    tls: rustls::ServerConfig,
    webhook: Arc<Webhook>,
    opts: ServerOptions,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("keycard-admission")
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        on_listening(listener.local_addr()?);
        serve(listener, Arc::new(tls), webhook, opts, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down the admission webhook");
}
