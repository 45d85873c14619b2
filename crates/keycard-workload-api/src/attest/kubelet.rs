//! The kubelet client of the Kubernetes attestor: `GET https://<node>:10250/pods`
//! (the pods of this node, as the kubelet sees them) with the node agent's
//! service-account token, verifying the kubelet's certificate.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use keycard_workload_api::attest::kubelet::{KubeletConfig, kubelet_pod_lookup};
//! # use keycard_workload_api::K8sAttestor;
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = KubeletConfig {
//!     node_name: Some("node-a".into()),
//!     ..KubeletConfig::default()
//! };
//! let attestor = K8sAttestor::new(Arc::new(kubelet_pod_lookup(&config)?));
//! # Ok(()) }
//! ```
//!
//! Every failure (the kubelet down, slow, answering garbage or too much, a
//! certificate that does not verify, a refused token) fails the lookup, so
//! the caller is refused; a stale pod list never answers for it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::k8s::{pods_from_pod_list_json, PodInfo, RefreshOptions, RefreshingPodLookup};
use super::AttestError;

/// The service-account token of a pod (projected, rotated by the kubelet).
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// The cluster CA as mounted in every pod.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The kubelet's authenticated port.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Token files larger than this are refused.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// CA files larger than this are refused.
const MAX_CA_BYTES: u64 = 4 << 20;

/// Why a kubelet client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    /// The URL is not `https://host[:port]`.
    #[error("kubelet URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("kubelet CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The TLS configuration could not be built.
    #[error("kubelet TLS: {0}")]
    Tls(String),
}

/// Where and how to reach the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletConfig {
    /// `https://host[:port]`; `None` = `https://<node_name>:10250`, or
    /// `https://127.0.0.1:10250` without a node name (host network).
    pub url: Option<String>,
    /// The CA that signed the kubelet's serving certificate (PEM); `None` =
    /// [`DEFAULT_CA_FILE`]. The certificate must name the URL's host.
    pub ca_file: Option<PathBuf>,
    /// Do not verify the kubelet's certificate at all. For clusters whose
    /// kubelets serve self-signed certificates; a warning is logged, since
    /// anyone who can intercept the connection can then name the pods.
    pub skip_verify: bool,
    /// The bearer token sent to the kubelet, re-read whenever the file
    /// changes (projected tokens rotate).
    pub token_file: PathBuf,
    /// This node's name: the default host, and pods the kubelet lists on
    /// another node are ignored.
    pub node_name: Option<String>,
    /// Longest one request may take, connect to last byte.
    pub timeout: Duration,
    /// Largest pod list accepted.
    pub max_response_bytes: usize,
    /// Caching and refresh.
    pub refresh: RefreshOptions,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            url: None,
            ca_file: None,
            skip_verify: false,
            token_file: PathBuf::from(DEFAULT_TOKEN_FILE),
            node_name: None,
            timeout: Duration::from_secs(2),
            max_response_bytes: 32 << 20,
            refresh: RefreshOptions::default(),
        }
    }
}

impl KubeletConfig {
    /// The URL to reach: [`Self::url`], or the default from the node name;
    /// an error when it is not `https://host[:port]`.
    pub fn resolved_url(&self) -> Result<String, KubeletError> {
        let url = match (&self.url, &self.node_name) {
            (Some(u), _) if !u.is_empty() => u.clone(),
            (_, Some(n)) if !n.is_empty() => format!("https://{n}:{DEFAULT_KUBELET_PORT}"),
            _ => format!("https://127.0.0.1:{DEFAULT_KUBELET_PORT}"),
        };
        parse_url(&url)?;
        Ok(url)
    }
}

/// Identifies one version of a file: `(dev, inode, mtime s, mtime ns, size)`.
type FileKey = (u64, u64, i64, i64, u64);

/// A token file, re-read when it changes. The token is never logged.
struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(FileKey, String)>>,
}

impl TokenFile {
    fn read(&self) -> Result<String, AttestError> {
        let err = |reason: String| {
            AttestError::PodLookup(format!(
                "kubelet token file {}: {reason}",
                self.path.display()
            ))
        };
        let meta = std::fs::metadata(&self.path).map_err(|e| err(e.to_string()))?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size(),
        );
        if let Ok(c) = self.cached.lock() {
            if let Some((k, t)) = c.as_ref() {
                if *k == key {
                    return Ok(t.clone());
                }
            }
        }
        if meta.size() > MAX_TOKEN_BYTES {
            return Err(err(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| err(e.to_string()))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return Err(err("empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("not a bearer token".into()));
        }
        tracing::debug!(path = %self.path.display(), "read the kubelet token");
        if let Ok(mut c) = self.cached.lock() {
            *c = Some((key, token.clone()));
        }
        Ok(token)
    }
}

/// Accepts any kubelet certificate (`skip_verify`), still checking that
/// the handshake is signed by the key the certificate carries.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads the CA certificates of a PEM file.
fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, KubeletError> {
    let err = |reason: String| KubeletError::Ca {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_CA_BYTES {
        return Err(err(format!("larger than {MAX_CA_BYTES} bytes")));
    }
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(&bytes)
        .map_err(|e| err(e.to_string()))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(err("no CERTIFICATE in it".into()));
    }
    Ok(certs)
}

/// A client of one kubelet's `/pods`.
pub struct KubeletClient {
    host: String,
    port: u16,
    authority: String,
    server_name: ServerName<'static>,
    tls: tokio_rustls::TlsConnector,
    token: TokenFile,
    node_name: Option<String>,
    timeout: Duration,
    max_bytes: usize,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletClient")
            .field("authority", &self.authority)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Splits `https://host[:port][/]` into host (no brackets) and port.
fn parse_url(url: &str) -> Result<(String, u16), KubeletError> {
    let bad = |reason: &str| KubeletError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&format!("{e} (expected https://host[:port])")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("only https is supported (the read-only port is not)"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("give the scheme, host and port only"));
    }
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad("user information is not allowed"));
    }
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    Ok((host, auth.port_u16().unwrap_or(DEFAULT_KUBELET_PORT)))
}

impl KubeletClient {
    /// Checks the configuration and loads the CA (the token is read per
    /// request, so a missing token is a lookup failure, not a start failure).
    pub fn new(config: &KubeletConfig) -> Result<Self, KubeletError> {
        let url = config.resolved_url()?;
        let (host, port) = parse_url(&url)?;
        let server_name = ServerName::try_from(host.clone()).map_err(|e| KubeletError::Url {
            url: url.clone(),
            reason: format!("host {host:?}: {e}"),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| KubeletError::Tls(e.to_string()))?;
        let tls = if config.skip_verify {
            tracing::warn!(
                kubelet = %url,
                "kubelet certificate verification is disabled (skip_verify): \
                 whoever can intercept this connection can decide workload identities"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        } else {
            let ca_path = config
                .ca_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE));
            let mut roots = rustls::RootCertStore::empty();
            for c in read_ca(&ca_path)? {
                roots.add(c).map_err(|e| KubeletError::Ca {
                    path: ca_path.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(KubeletClient {
            host,
            port,
            authority,
            server_name,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            token: TokenFile {
                path: config.token_file.clone(),
                cached: Mutex::new(None),
            },
            node_name: config.node_name.clone().filter(|n| !n.is_empty()),
            timeout: config.timeout,
            max_bytes: config.max_response_bytes,
        })
    }

    /// The pods of this node, as the kubelet lists them now.
    pub async fn fetch_pods(&self) -> Result<Vec<PodInfo>, AttestError> {
        let token = self.token.read()?;
        let body = tokio::time::timeout(self.timeout, self.get_pods(&token))
            .await
            .map_err(|_| {
                AttestError::PodLookup(format!(
                    "kubelet {} did not answer within {:?}",
                    self.authority, self.timeout
                ))
            })??;
        let mut pods = pods_from_pod_list_json(&body)?;
        if let Some(node) = &self.node_name {
            let before = pods.len();
            pods.retain(|p| p.node_name.is_empty() || p.node_name == *node);
            if pods.len() != before {
                tracing::warn!(
                    node = %node,
                    ignored = before - pods.len(),
                    "the kubelet listed pods of another node; ignored"
                );
            }
        }
        Ok(pods)
    }

    /// [`Self::fetch_pods`] from synchronous code (the attestor runs on a
    /// blocking thread): on a runtime of its own, so it neither needs nor
    /// stalls the caller's.
    pub fn fetch_pods_blocking(&self) -> Result<Vec<PodInfo>, AttestError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| AttestError::PodLookup(format!("kubelet client runtime: {e}")))?;
        rt.block_on(self.fetch_pods())
    }

    async fn get_pods(&self, token: &str) -> Result<Bytes, AttestError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            AttestError::PodLookup(format!("kubelet {}: {what}: {e}", self.authority))
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| fail("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| fail("TLS", &e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| fail("HTTP", &e))?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "kubelet connection closed");
            }
        });
        let mut auth = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| AttestError::PodLookup("kubelet token: not a header value".into()))?;
        auth.set_sensitive(true);
        let req = http::Request::get("/pods")
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "keycard-agent")
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail("request", &e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail("request", &e))?;
        let status = resp.status();
        if !status.is_success() {
            conn.abort();
            let hint = match status.as_u16() {
                401 => " (the token was refused)",
                403 => " (the token may not read nodes/proxy)",
                _ => "",
            };
            return Err(AttestError::PodLookup(format!(
                "kubelet {}: GET /pods answered {status}{hint}",
                self.authority
            )));
        }
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_bytes as u64) {
            conn.abort();
            return Err(AttestError::PodLookup(format!(
                "kubelet {}: pod list larger than {} bytes",
                self.authority, self.max_bytes
            )));
        }
        let body = Limited::new(resp.into_body(), self.max_bytes)
            .collect()
            .await
            .map_err(|e| {
                AttestError::PodLookup(format!(
                    "kubelet {}: reading the pod list (limit {} bytes): {e}",
                    self.authority, self.max_bytes
                ))
            })?
            .to_bytes();
        conn.abort();
        Ok(body)
    }
}

/// A [`PodLookup`](super::k8s::PodLookup) backed by the kubelet: cached,
/// refreshed on a miss, every failure logged and refused.
pub type KubeletPodLookup =
    RefreshingPodLookup<Box<dyn Fn() -> Result<Vec<PodInfo>, AttestError> + Send + Sync>>;

/// The kubelet client of `config` behind a [`RefreshingPodLookup`].
pub fn kubelet_pod_lookup(config: &KubeletConfig) -> Result<KubeletPodLookup, KubeletError> {
    let client = KubeletClient::new(config)?;
    tracing::info!(kubelet = %client.authority, node = ?client.node_name, "Kubernetes attestation through the kubelet");
    let fetch: Box<dyn Fn() -> Result<Vec<PodInfo>, AttestError> + Send + Sync> =
        Box::new(move || {
            client.fetch_pods_blocking().inspect_err(|e| {
                tracing::warn!(error = %e, "kubelet pod list failed; refusing attestation");
            })
        });
    Ok(RefreshingPodLookup::with_options(fetch, config.refresh))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("https://node-a:10250").unwrap(),
            ("node-a".into(), 10250)
        );
        assert_eq!(
            parse_url("https://10.0.0.5").unwrap(),
            ("10.0.0.5".into(), 10250)
        );
        assert_eq!(parse_url("https://[::1]:1/").unwrap(), ("::1".into(), 1));
        for bad in [
            "http://node-a:10255",
            "node-a:10250",
            "https://node-a:10250/pods",
            "https://u:p@node-a",
            "https://",
            "",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_ca_fails_at_setup_unless_skip_verify() {
        let dir = tempfile::tempdir().unwrap();
        let config = KubeletConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..KubeletConfig::default()
        };
        assert!(matches!(
            KubeletClient::new(&config),
            Err(KubeletError::Ca { .. })
        ));
        std::fs::write(dir.path().join("empty.pem"), "no pem here").unwrap();
        let config = KubeletConfig {
            ca_file: Some(dir.path().join("empty.pem")),
            ..KubeletConfig::default()
        };
        assert!(KubeletClient::new(&config).is_err());
        let config = KubeletConfig {
            skip_verify: true,
            ..config
        };
        assert!(KubeletClient::new(&config).is_ok());
    }

    #[test]
    fn the_token_is_reread_when_it_changes_and_refused_when_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let t = TokenFile {
            path: path.clone(),
            cached: Mutex::new(None),
        };
        assert!(t.read().is_err());
        std::fs::write(&path, "first-token\n").unwrap();
        assert_eq!(t.read().unwrap(), "first-token");
        // Projected tokens are swapped in by a rename: a new inode.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-token-longer").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(t.read().unwrap(), "second-token-longer");
        std::fs::write(&path, "  \n").unwrap();
        let e = t.read().unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
        std::fs::write(&path, "bad\u{7f}token").unwrap();
        assert!(t.read().is_err());
    }
}
