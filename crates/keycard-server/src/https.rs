//! HTTPS plumbing shared by the API and the CLI: the server side (rustls
//! with the server's own X509-SVID, optional client SVIDs, HTTP/1.1 and
//! HTTP/2) and a small client that trusts only the trust bundle.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use keycard_core::SpiffeId;

use crate::api::PeerIdentity;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body the client reads.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why TLS could not be set up or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

pub(crate) fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn roots(bundle: &[CertificateDer<'static>]) -> Result<RootCertStore, HttpsError> {
    let mut roots = RootCertStore::empty();
    for c in bundle {
        roots
            .add(c.clone())
            .map_err(|e| HttpsError::Tls(format!("trust bundle certificate: {e}")))?;
    }
    Ok(roots)
}

/// The SPIFFE ID in a certificate's URI SAN, if it has exactly one.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = x.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|g| match g {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let first = uris.next()?;
    if uris.next().is_some() {
        return None;
    }
    first.parse().ok()
}

/// Serves `router` over HTTPS on `listener` until `shutdown` resolves.
/// Each request carries the client's [`PeerIdentity`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            serve_one(tcp, remote, acceptor, router).await;
        });
    }
}

async fn serve_one(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return;
        }
    };
    let peer = PeerIdentity(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(spiffe_id_of),
    );
    let svc = TowerToHyperService::new(router.layer(axum::Extension(peer)));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// A client of keycard's API: trusts only the trust bundle, sends a bearer
/// token, one request per connection (the CLI makes a handful).
#[derive(Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    token: Option<String>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A response: status and parsed JSON body (or the raw text as a string).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub body: serde_json::Value,
}

impl ApiClient {
    /// A client for the server at `addr` whose certificate names `host`.
    pub fn new(
        addr: SocketAddr,
        host: &str,
        bundle: &[CertificateDer<'static>],
        token: Option<String>,
    ) -> Result<Self, HttpsError> {
        let cfg = rustls::ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| HttpsError::Tls(e.to_string()))?
            .with_root_certificates(roots(bundle)?)
            .with_no_client_auth();
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| HttpsError::Tls(format!("server name {host:?}: {e}")))?;
        Ok(ApiClient {
            addr,
            server_name,
            tls: TlsConnector::from(Arc::new(cfg)),
            token,
        })
    }

    /// Sends `method path` with an optional JSON body.
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ApiResponse, HttpsError> {
        let t = Duration::from_secs(30);
        tokio::time::timeout(t, self.call_inner(method, path, body))
            .await
            .map_err(|_| HttpsError::Timeout(t))?
    }

    async fn call_inner(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<ApiResponse, HttpsError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|source| HttpsError::Connect {
                addr: self.addr.to_string(),
                source,
            })?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| HttpsError::Tls(format!("handshake with {}: {e}", self.addr)))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = match body {
            Some(v) => Bytes::from(v.to_string()),
            None => Bytes::new(),
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "localhost")
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(payload))
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?
            .to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok(ApiResponse { status, body })
    }
}
