//! The server's own HTTPS calls to others: the Kubernetes issuer's JWKS and
//! OIDC discovery, the API server's TokenReview, and other trust domains'
//! bundle endpoints. One request per connection (these calls are rare),
//! HTTP/1.1, an overall time limit and a limit on the answer's size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use keycard_core::SpiffeId;

/// Where system CA bundles usually live (used when no CA file is given).
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Why an outbound call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OutboundError {
    #[error("URL {0:?}: expected https://host[:port]/path")]
    Url(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: the answer is over {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// A parsed `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl HttpsUrl {
    pub fn parse(s: &str) -> Result<Self, OutboundError> {
        let uri: http::Uri = s.parse().map_err(|_| OutboundError::Url(s.into()))?;
        if uri.scheme_str() != Some("https") {
            return Err(OutboundError::Url(s.into()));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| OutboundError::Url(s.into()))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/".to_string());
        Ok(HttpsUrl {
            host,
            port: uri.port_u16().unwrap_or(443),
            path,
        })
    }

    /// The same server, another path.
    pub fn with_path(&self, path: &str) -> Self {
        HttpsUrl {
            path: path.to_string(),
            ..self.clone()
        }
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "https://{}{}", self.authority(), self.path)
    }
}

/// Reads PEM certificates from `path`, or the system's CA bundle when
/// `path` is `None`.
pub fn load_roots(path: Option<&std::path::Path>) -> Result<RootCertStore, OutboundError> {
    let (bytes, name) = match path {
        Some(p) => (
            std::fs::read(p).map_err(|e| OutboundError::Tls(format!("{}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => {
            let found = std::env::var_os("SSL_CERT_FILE")
                .map(std::path::PathBuf::from)
                .into_iter()
                .chain(SYSTEM_CA_FILES.iter().map(std::path::PathBuf::from))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    OutboundError::Tls(
                        "no system CA bundle found (give a CA file or set SSL_CERT_FILE)".into(),
                    )
                })?;
            (
                std::fs::read(&found)
                    .map_err(|e| OutboundError::Tls(format!("{}: {e}", found.display())))?,
                found.display().to_string(),
            )
        }
    };
    let mut roots = RootCertStore::empty();
    let pems = pem::parse_many(&bytes).map_err(|e| OutboundError::Tls(format!("{name}: {e}")))?;
    for p in pems.into_iter().filter(|p| p.tag() == "CERTIFICATE") {
        // A system bundle may hold a certificate rustls cannot use; skip it.
        let _ = roots.add(CertificateDer::from(p.into_contents()));
    }
    if roots.is_empty() {
        return Err(OutboundError::Tls(format!("{name}: no usable CERTIFICATE")));
    }
    Ok(roots)
}

/// A client configuration that checks the server's name against `roots`
/// (the Web PKI way).
pub fn web_tls(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::https::ring())
        .with_safe_default_protocol_versions()
        .map_err(|e| OutboundError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration that trusts a server presenting an X509-SVID
/// with exactly `id`, chained to `roots` (the bundle of `id`'s trust
/// domain): the `https_spiffe` profile. The host name is not checked.
pub fn spiffe_tls(
    roots: &[CertificateDer<'static>],
    id: SpiffeId,
) -> Result<Arc<rustls::ClientConfig>, OutboundError> {
    let provider = crate::https::ring();
    let roots = crate::https::roots(roots).map_err(|e| OutboundError::Tls(e.to_string()))?;
    let verifier = Arc::new(SpiffeIdVerifier {
        roots: Arc::new(roots),
        id,
        provider: Arc::clone(&provider),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OutboundError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct SpiffeIdVerifier {
    roots: Arc<RootCertStore>,
    id: SpiffeId,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for SpiffeIdVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match crate::https::spiffe_id_of(end_entity) {
            Some(id) if id == self.id => Ok(ServerCertVerified::assertion()),
            Some(id) => Err(rustls::Error::General(format!(
                "the bundle endpoint is {id}, not {}",
                self.id
            ))),
            None => Err(rustls::Error::General(
                "the bundle endpoint's certificate has no single SPIFFE ID".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// One outbound request. `Debug` leaves out the headers and body (they may
/// carry tokens).
pub struct Request<'a> {
    pub method: http::Method,
    pub url: &'a HttpsUrl,
    pub headers: Vec<(http::header::HeaderName, String)>,
    pub body: Option<Vec<u8>>,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

/// Sends `req` over `tls`; returns the status and the body.
pub async fn call(
    tls: Arc<rustls::ClientConfig>,
    req: Request<'_>,
) -> Result<(u16, Bytes), OutboundError> {
    let url = req.url.to_string();
    let timeout = req.timeout;
    tokio::time::timeout(timeout, call_inner(tls, req))
        .await
        .map_err(|_| OutboundError::Timeout { url, timeout })?
}

async fn call_inner(
    tls: Arc<rustls::ClientConfig>,
    req: Request<'_>,
) -> Result<(u16, Bytes), OutboundError> {
    let url = req.url.to_string();
    let transport = |m: String| OutboundError::Transport {
        url: url.clone(),
        message: m,
    };
    let name = ServerName::try_from(req.url.host.clone())
        .map_err(|e| OutboundError::Url(format!("{url}: {e}")))?;
    let tcp = tokio::net::TcpStream::connect((req.url.host.as_str(), req.url.port))
        .await
        .map_err(|e| transport(format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| transport(format!("TLS: {e}")))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(format!("HTTP: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = http::Request::builder()
        .method(req.method)
        .uri(&req.url.path)
        .header(http::header::HOST, req.url.authority())
        .header(http::header::ACCEPT, "application/json");
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    let body = Full::new(Bytes::from(req.body.unwrap_or_default()));
    let request = b.body(body).map_err(|e| transport(e.to_string()))?;
    let resp = send
        .send_request(request)
        .await
        .map_err(|e| transport(format!("HTTP: {e}")))?;
    let status = resp.status().as_u16();
    let limit = req.max_bytes;
    if resp
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(OutboundError::TooLarge { url, limit });
    }
    let bytes = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                OutboundError::TooLarge {
                    url: url.clone(),
                    limit,
                }
            } else {
                transport(e.to_string())
            }
        })?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpsUrl::parse("https://127.0.0.1:8443/bundle").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8443, "/bundle")
        );
        let u = HttpsUrl::parse("https://kubernetes.default.svc").unwrap();
        assert_eq!((u.port, u.path.as_str()), (443, "/"));
        assert_eq!(u.to_string(), "https://kubernetes.default.svc:443/");
        let u = HttpsUrl::parse("https://[::1]:9/x?y=1").unwrap();
        assert_eq!((u.host.as_str(), u.path.as_str()), ("::1", "/x?y=1"));
        assert_eq!(u.to_string(), "https://[::1]:9/x?y=1");
        assert!(HttpsUrl::parse("http://example.org/").is_err());
        assert!(HttpsUrl::parse("example.org").is_err());
    }
}
