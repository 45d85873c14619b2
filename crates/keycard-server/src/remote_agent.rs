//! `keycard agent`: the node agent that runs apart from the server.
//!
//! On its first start it attests with a single-use join token or, on
//! Kubernetes, with its projected service-account token (PSAT, read from
//! its file at every attestation since the kubelet rotates it), sending a
//! CSR for a node key it generated; the key (0600) and the node X509-SVID
//! stay in its data directory, and from then on it talks to the server over
//! mTLS with that SVID, renewing it at about half-life. A PSAT agent whose
//! node SVID has expired, or whose renewal the server refuses, attests
//! again with the current token (as SPIRE's k8s_psat agents do).
//!
//! It holds a long-poll sync with the server ([`crate::node_api`]): each
//! answer carries the entries it serves, the trust bundle and the
//! revocations since the version it holds, so a change reaches it as it
//! happens and a reconnect brings only what it missed. With enforcer
//! files kept, its position is saved beside them ([`crate::enforce`]), so a
//! restarted agent also asks only for what it missed. Sync failures are
//! retried with exponential backoff and jitter.
//!
//! It keeps a cache of X509-SVIDs, one key per workload entry generated
//! here (the server signs CSRs and never sees the keys), renewed at about
//! half-life with jitter, and serves the Workload API and SDS from that
//! cache. A deleted entry or a revocation removes SVIDs from the cache as
//! soon as the sync brings it. While the server is away, the cache keeps
//! serving until each SVID expires.
//!
//! The agent trusts the server by its SPIFFE ID (`/keycard/server/...` in
//! the trust domain) on a chain to the trust bundle, not by host name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::de::DeserializeOwned;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use keycard_core::{RegistrationEntry, Selector, SpiffeId, TrustDomain};
use keycard_identity::{BundleSet, RevocationSet, TrustBundle};
use keycard_workload_api::{
    BundleMaterial, CompositeAttestor, IdentitySource, JwtSvidMaterial, SourceError, UnixAttestor,
    X509SvidMaterial,
};

use crate::agent::renew_time;
use crate::node_api::{
    AttestRequest, AttestResponse, CsrRequest, EntrySvidRequest, JwtRequest, JwtResponse,
    SvidResponse, SyncResponse,
};
use crate::state::unix;

/// The node key and SVID, PEM, in the agent's data directory (0600).
pub const NODE_FILE: &str = "node.pem";
/// The latest trust bundle's X.509 authorities, PEM.
pub const AGENT_BUNDLE_FILE: &str = "bundle.pem";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_RESPONSE: usize = 32 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const MAX_JWT_CACHE: usize = 4096;

/// Why the agent could not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Call(#[from] CallError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("node SVID: {0}")]
    Node(String),
    #[error("Workload API socket: {0}")]
    Socket(#[from] keycard_workload_api::ServeError),
    #[error("{0}")]
    Config(String),
}

/// Why a call to the server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The server could not be reached or the connection broke: retry.
    #[error("cannot reach {server}: {message}")]
    Transport { server: String, message: String },
    /// The server answered with an error status.
    #[error("{status}: {message}")]
    Status { status: u16, message: String },
    /// The answer was not what the node API sends.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// How the agent reaches its node's kubelet (re-exported for the CLI).
pub use keycard_workload_api::KubeletConfig;

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server, `https://host:port` or `host:port`.
    pub server: String,
    /// The trust bundle to trust the server with (its `bundle.pem`).
    pub trust_bundle: Vec<CertificateDer<'static>>,
    /// Where the node key and SVID live (created 0700).
    pub data_dir: PathBuf,
    /// A join token, for the first start (ignored once attested).
    pub join_token: Option<String>,
    /// A projected service-account token file (Kubernetes), re-read at
    /// every attestation.
    pub psat_token_file: Option<PathBuf>,
    /// The cluster name the server knows this node's cluster by (needed
    /// when the server has several `[[k8s_psat]]` clusters).
    pub psat_cluster: Option<String>,
    /// The Workload API + SDS socket; `None` runs no socket.
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket.
    pub socket_mode: u32,
    /// How long each sync waits for a change on the server.
    pub sync_wait: Duration,
    /// Where the files for the node's enforcers go (revocations, posture,
    /// policies; see [`crate::enforce`]); `None` keeps none.
    pub enforce_dir: Option<PathBuf>,
    /// Attest Kubernetes workloads through this node's kubelet (pod and
    /// container from the caller's cgroup, then the kubelet's pod list);
    /// `None` attests by Unix credentials only.
    pub kubelet: Option<KubeletConfig>,
}

impl AgentConfig {
    /// A configuration with the defaults (socket `<data_dir>/agent.sock`,
    /// mode 0666, 30 s long polls).
    pub fn new(server: &str, trust_bundle: Vec<CertificateDer<'static>>, data_dir: &Path) -> Self {
        AgentConfig {
            server: server.to_string(),
            trust_bundle,
            data_dir: data_dir.to_path_buf(),
            join_token: None,
            psat_token_file: None,
            psat_cluster: None,
            socket: Some(data_dir.join("agent.sock")),
            socket_mode: 0o666,
            sync_wait: crate::node_api::MAX_SYNC_WAIT,
            enforce_dir: Some(data_dir.join(crate::enforce::ENFORCE_DIR)),
            kubelet: None,
        }
    }
}

/// Reads PEM certificates (a `bundle.pem`).
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, AgentError> {
    let bytes = std::fs::read(path).map_err(|source| AgentError::File {
        what: "trust bundle",
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(&bytes)
        .map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(AgentError::Config(format!(
            "{}: no CERTIFICATE in the trust bundle",
            path.display()
        )));
    }
    Ok(certs)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A fresh P-256 key (PKCS#8 DER) and a CSR (DER) for it.
pub fn new_key_and_csr() -> Result<(Vec<u8>, Vec<u8>), AgentError> {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AgentError::Node(format!("key generation: {e}")))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&kp)
        .map_err(|e| AgentError::Node(format!("CSR: {e}")))?;
    Ok((kp.serialize_der(), csr.der().to_vec()))
}

fn decode_chain(svid: &SvidResponse) -> Result<Vec<CertificateDer<'static>>, CallError> {
    if svid.chain.is_empty() {
        return Err(CallError::Decode("an SVID with no certificate".into()));
    }
    svid.chain
        .iter()
        .map(|c| {
            b64()
                .decode(c)
                .map(CertificateDer::from)
                .map_err(|e| CallError::Decode(format!("certificate: {e}")))
        })
        .collect()
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    pkcs8: &[u8],
) -> Result<Arc<CertifiedKey>, AgentError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| AgentError::Node(format!("node key: {e}")))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| AgentError::Node(format!("node key and certificate: {e}")))?;
    Ok(Arc::new(ck))
}

fn not_after(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    u64::try_from(x.validity().not_after.timestamp()).ok()
}

fn not_before(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    u64::try_from(x.validity().not_before.timestamp()).ok()
}

// ------------------------------------------------------------------ TLS --

/// Trusts a server whose certificate chains to the bundle and names a
/// keycard server of the trust domain.
#[derive(Debug)]
struct ServerVerifier {
    roots: RwLock<Arc<RootCertStore>>,
    trust_domain: RwLock<Option<TrustDomain>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerVerifier {
    fn set_roots(&self, certs: &[CertificateDer<'static>]) -> Result<(), AgentError> {
        let roots = crate::https::roots(certs).map_err(|e| AgentError::Tls(e.to_string()))?;
        *self.roots.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(roots);
        Ok(())
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let roots = Arc::clone(&self.roots.read().unwrap_or_else(|p| p.into_inner()));
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let id = crate::https::spiffe_id_of(end_entity).ok_or_else(|| {
            rustls::Error::General("the server certificate has no single SPIFFE ID".into())
        })?;
        if !id.path().starts_with("/keycard/server/") {
            return Err(rustls::Error::General(format!(
                "{id} is not a keycard server"
            )));
        }
        if let Some(td) = &*self.trust_domain.read().unwrap_or_else(|p| p.into_inner()) {
            if id.trust_domain() != td {
                return Err(rustls::Error::General(format!(
                    "{id} is not in trust domain {td}"
                )));
            }
        }
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

/// The node SVID presented to the server, swapped on renewal.
#[derive(Debug, Default)]
struct NodeCert(RwLock<Option<Arc<CertifiedKey>>>);

impl ResolvesClientCert for NodeCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn has_certs(&self) -> bool {
        self.0.read().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

// --------------------------------------------------------------- client --

/// A client of the node API: one HTTP/2 connection over mTLS (the node
/// SVID once attested), re-established when it breaks.
pub struct NodeClient {
    server: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    verifier: Arc<ServerVerifier>,
    node: Arc<NodeCert>,
    conn: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A node identity: the agent's SPIFFE ID, key and SVID chain.
#[derive(Clone)]
pub struct NodeIdentity {
    pub agent_id: SpiffeId,
    pub key_pkcs8: Vec<u8>,
    pub chain: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    /// A client for `server` (`https://host:port`), trusting `bundle`.
    pub fn new(server: &str, bundle: &[CertificateDer<'static>]) -> Result<Self, AgentError> {
        let addr = server
            .strip_prefix("https://")
            .unwrap_or(server)
            .trim_end_matches('/');
        let host = addr
            .rsplit_once(':')
            .map(|(h, _)| h)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                AgentError::Config(format!(
                    "server: expected https://host:port, got {server:?}"
                ))
            })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = match ServerName::try_from(host.to_string()) {
            Ok(n @ ServerName::DnsName(_)) => n,
            _ => ServerName::try_from("localhost").map_err(|e| AgentError::Tls(e.to_string()))?,
        };
        let provider = crate::https::ring();
        let verifier = Arc::new(ServerVerifier {
            roots: RwLock::new(Arc::new(RootCertStore::empty())),
            trust_domain: RwLock::new(None),
            provider: Arc::clone(&provider),
        });
        verifier.set_roots(bundle)?;
        let node = Arc::new(NodeCert::default());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AgentError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
            .with_client_cert_resolver(Arc::clone(&node) as Arc<dyn ResolvesClientCert>);
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        // A resumed session would carry the identity of the first one (none
        // before attestation, the old SVID after renewal): always handshake.
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(NodeClient {
            server: addr.to_string(),
            server_name,
            tls: TlsConnector::from(Arc::new(cfg)),
            verifier,
            node,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// Presents `id` from now on (new connections).
    pub fn set_node(&self, id: &NodeIdentity) -> Result<(), AgentError> {
        let ck = certified_key(id.chain.clone(), &id.key_pkcs8)?;
        *self.node.0.write().unwrap_or_else(|p| p.into_inner()) = Some(ck);
        *self
            .verifier
            .trust_domain
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(id.agent_id.trust_domain().clone());
        Ok(())
    }

    /// Trusts these roots for the server from now on.
    pub fn set_roots(&self, certs: &[CertificateDer<'static>]) -> Result<(), AgentError> {
        self.verifier.set_roots(certs)
    }

    /// Drops the connection (the next call reconnects).
    pub async fn reset(&self) {
        *self.conn.lock().await = None;
    }

    fn transport(&self, message: impl std::fmt::Display) -> CallError {
        CallError::Transport {
            server: self.server.clone(),
            message: message.to_string(),
        }
    }

    async fn sender(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let mut g = self.conn.lock().await;
        if let Some(s) = g.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        *g = None;
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.server),
        )
        .await
        .map_err(|_| self.transport("connect timed out"))?
        .map_err(|e| self.transport(e))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.tls.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| self.transport("TLS handshake timed out"))?
        .map_err(|e| self.transport(format!("TLS: {e}")))?;
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.transport(format!("HTTP/2: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection to the server ended");
            }
        });
        *g = Some(send.clone());
        Ok(send)
    }

    /// One call: `method path` with an optional JSON body, decoded as `T`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let payload = match body {
            Some(b) => {
                Bytes::from(serde_json::to_vec(b).map_err(|e| CallError::Decode(e.to_string()))?)
            }
            None => Bytes::new(),
        };
        let req = http::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| CallError::Decode(e.to_string()))?;
        let result = tokio::time::timeout(timeout, async {
            let mut send = self.sender().await?;
            send.ready().await.map_err(|e| self.transport(e))?;
            let resp = send
                .send_request(req)
                .await
                .map_err(|e| self.transport(e))?;
            let status = resp.status().as_u16();
            let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            Ok::<_, CallError>((status, bytes))
        })
        .await;
        let (status, bytes) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.reset().await;
                return Err(e);
            }
            Err(_) => {
                self.reset().await;
                return Err(self.transport(format!("no answer in {timeout:?}")));
            }
        };
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(CallError::Status { status, message });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// Attests with a join token; returns the node identity and the bundle.
    pub async fn attest_join_token(
        &self,
        token: &str,
    ) -> Result<(NodeIdentity, serde_json::Value), AgentError> {
        self.attest(Some(token.trim().to_string()), None, None)
            .await
    }

    /// Attests with a Kubernetes projected service-account token for
    /// `cluster` (as the server names it; `None` when it has one).
    pub async fn attest_psat(
        &self,
        token: &str,
        cluster: Option<&str>,
    ) -> Result<(NodeIdentity, serde_json::Value), AgentError> {
        self.attest(
            None,
            Some(token.trim().to_string()),
            cluster.map(String::from),
        )
        .await
    }

    async fn attest(
        &self,
        join_token: Option<String>,
        psat: Option<String>,
        cluster: Option<String>,
    ) -> Result<(NodeIdentity, serde_json::Value), AgentError> {
        let (key, csr) = new_key_and_csr()?;
        let req = AttestRequest {
            join_token,
            psat,
            cluster,
            csr: b64().encode(csr),
        };
        let r: AttestResponse = self
            .call(
                http::Method::POST,
                "/v1/agent/attest",
                Some(&req),
                CALL_TIMEOUT,
            )
            .await?;
        let agent_id: SpiffeId = r
            .agent_id
            .parse()
            .map_err(|e| AgentError::Node(format!("agent ID from the server: {e}")))?;
        let chain = decode_chain(&r.svid)?;
        let id = NodeIdentity {
            agent_id,
            key_pkcs8: key,
            chain,
        };
        self.set_node(&id)?;
        // The attestation went over a connection without a client
        // certificate; agent calls need one with the node SVID.
        self.reset().await;
        Ok((id, r.bundle))
    }

    /// Renews the node SVID with a new key; presents it from now on.
    pub async fn renew(&self, agent_id: &SpiffeId) -> Result<NodeIdentity, AgentError> {
        let (key, csr) = new_key_and_csr()?;
        let r: SvidResponse = self
            .call(
                http::Method::POST,
                "/v1/agent/renew",
                Some(&CsrRequest {
                    csr: b64().encode(csr),
                }),
                CALL_TIMEOUT,
            )
            .await?;
        let id = NodeIdentity {
            agent_id: agent_id.clone(),
            key_pkcs8: key,
            chain: decode_chain(&r)?,
        };
        self.set_node(&id)?;
        Ok(id)
    }

    /// One sync: answers at once if the server has something newer than
    /// (`since`, `digest`), else when something changes or `wait` passes.
    pub async fn sync(
        &self,
        since: u64,
        digest: &str,
        wait: Duration,
    ) -> Result<SyncResponse, CallError> {
        self.sync_enforcers(since, digest, None, wait).await
    }

    /// One sync that also asks for the enforcer half: `enforcer` is the
    /// (document revision, control digest) the agent holds.
    pub async fn sync_enforcers(
        &self,
        since: u64,
        digest: &str,
        enforcer: Option<(u64, &str)>,
        wait: Duration,
    ) -> Result<SyncResponse, CallError> {
        let hex = |d: &str| -> String { d.chars().filter(|c| c.is_ascii_hexdigit()).collect() };
        let mut path = format!(
            "/v1/agent/sync?since={since}&digest={}&wait={}",
            hex(digest),
            wait.as_secs()
        );
        if let Some((revision, control)) = enforcer {
            path.push_str(&format!(
                "&policy_since={revision}&control_digest={}",
                hex(control)
            ));
        }
        self.call(http::Method::GET, &path, None::<&()>, wait + CALL_TIMEOUT)
            .await
    }

    /// An X509-SVID for `entry_id`, over a CSR.
    pub async fn entry_svid(&self, entry_id: &str, csr: &[u8]) -> Result<SvidResponse, CallError> {
        self.call(
            http::Method::POST,
            "/v1/agent/svids",
            Some(&EntrySvidRequest {
                entry_id: entry_id.to_string(),
                csr: b64().encode(csr),
            }),
            CALL_TIMEOUT,
        )
        .await
    }

    /// A JWT-SVID for `spiffe_id` and `audience`.
    pub async fn jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
    ) -> Result<JwtResponse, CallError> {
        self.call(
            http::Method::POST,
            "/v1/agent/jwt",
            Some(&JwtRequest {
                entry_id: None,
                spiffe_id: Some(spiffe_id.to_string()),
                audience: audience.to_vec(),
            }),
            CALL_TIMEOUT,
        )
        .await
    }
}

// ---------------------------------------------------------------- files --

fn private_dir(path: &Path) -> Result<(), AgentError> {
    let err = |source| AgentError::File {
        what: "data directory",
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

fn write(path: &Path, data: &[u8], mode: u32, what: &'static str) -> Result<(), AgentError> {
    crate::up::write_file(path, data, mode, what).map_err(|e| AgentError::Node(e.to_string()))
}

fn save_node(dir: &Path, id: &NodeIdentity) -> Result<(), AgentError> {
    let key = keycard_identity::PrivateKey::from_pkcs8_der(id.key_pkcs8.clone());
    let mut text = key.to_pem().to_string();
    for c in &id.chain {
        text.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())));
    }
    write(&dir.join(NODE_FILE), text.as_bytes(), 0o600, "node SVID")
}

/// Reads the projected service-account token (at most
/// [`keycard_identity::jose::MAX_TOKEN_BYTES`]); never logged.
fn read_psat(path: &Path) -> Result<String, AgentError> {
    let bytes = std::fs::read(path).map_err(|source| AgentError::File {
        what: "service-account token",
        path: path.display().to_string(),
        source,
    })?;
    if bytes.len() > keycard_identity::jose::MAX_TOKEN_BYTES {
        return Err(AgentError::Config(format!(
            "{}: over {} bytes: not a service-account token",
            path.display(),
            keycard_identity::jose::MAX_TOKEN_BYTES
        )));
    }
    let token = String::from_utf8(bytes)
        .map_err(|_| AgentError::Config(format!("{}: not text", path.display())))?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(AgentError::Config(format!("{}: empty", path.display())));
    }
    Ok(token)
}

/// The saved node identity, if there is one still valid at `now`.
fn load_node(dir: &Path, now: u64) -> Result<Option<NodeIdentity>, AgentError> {
    let path = dir.join(NODE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AgentError::File {
                what: "node SVID",
                path: path.display().to_string(),
                source,
            })
        }
    };
    let bad = |m: &str| AgentError::Node(format!("{}: {m}", path.display()));
    let blocks = pem::parse_many(&bytes).map_err(|e| bad(&e.to_string()))?;
    let mut key = None;
    let mut chain = Vec::new();
    for b in blocks {
        match b.tag() {
            "PRIVATE KEY" => key = Some(b.into_contents()),
            "CERTIFICATE" => chain.push(CertificateDer::from(b.into_contents())),
            _ => {}
        }
    }
    let key = key.ok_or_else(|| bad("no PRIVATE KEY"))?;
    let leaf = chain.first().ok_or_else(|| bad("no CERTIFICATE"))?;
    let agent_id =
        crate::https::spiffe_id_of(leaf).ok_or_else(|| bad("the certificate has no SPIFFE ID"))?;
    let na = not_after(leaf).ok_or_else(|| bad("unreadable certificate"))?;
    if na <= now {
        tracing::warn!(agent = %agent_id, "the saved node SVID has expired");
        return Ok(None);
    }
    Ok(Some(NodeIdentity {
        agent_id,
        key_pkcs8: key,
        chain,
    }))
}

// ---------------------------------------------------------------- agent --

#[derive(Clone)]
struct CachedSvid {
    entry: RegistrationEntry,
    material: X509SvidMaterial,
    serial: String,
    not_after: u64,
    renew_at: u64,
}

#[derive(Clone)]
struct CachedJwt {
    material: JwtSvidMaterial,
    expires_at: u64,
    renew_at: u64,
}

#[derive(Default)]
struct View {
    version: u64,
    digest: String,
    entries: BTreeMap<String, RegistrationEntry>,
    bundle: Option<TrustBundle>,
    /// Federated trust domains' bundles, from the server.
    federated: BTreeMap<TrustDomain, TrustBundle>,
    revocations: RevocationSet,
    svids: BTreeMap<String, CachedSvid>,
    jwts: HashMap<(SpiffeId, Vec<String>), CachedJwt>,
    /// The server refused this agent (banned or unknown).
    refused: Option<String>,
}

impl View {
    fn allowed(&self, c: &CachedSvid) -> bool {
        self.entries.get(&c.entry.id) == Some(&c.entry)
            && !self.revocations.is_entry_revoked(&c.entry.id)
            && !self.revocations.is_identity_revoked(&c.entry.spiffe_id)
            && !self.revocations.is_serial_revoked(&c.serial)
    }
}

/// A running remote agent's state: what it synced and what it caches.
pub struct RemoteAgent {
    client: NodeClient,
    node: Mutex<NodeIdentity>,
    agent_id: SpiffeId,
    trust_domain: TrustDomain,
    data_dir: PathBuf,
    base_roots: Vec<CertificateDer<'static>>,
    sync_wait: Duration,
    /// Where to re-read the service-account token when attesting again.
    psat: Option<(PathBuf, Option<String>)>,
    view: RwLock<View>,
    updates: watch::Sender<u64>,
    syncs: watch::Sender<u64>,
    wake: Notify,
    /// The files of the node's enforcers, if kept.
    enforce: Option<crate::enforce::EnforcerFiles>,
}

impl std::fmt::Debug for RemoteAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAgent")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// A started agent. Dropping it does not stop it: call
/// [`RunningAgent::shutdown`].
pub struct RunningAgent {
    pub agent: Arc<RemoteAgent>,
    /// The Workload API socket, if one is served.
    pub socket: Option<PathBuf>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for RunningAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAgent")
            .field("agent", &self.agent)
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl RunningAgent {
    /// Stops the sync, the renewals and the socket, waiting up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(grace, all).await;
    }
}

/// Starts an agent: attests (first start) or loads its node SVID, syncs
/// once if the server answers, and runs the sync loop, the renewals and
/// the Workload API socket.
pub async fn start_agent(config: AgentConfig) -> Result<RunningAgent, AgentError> {
    private_dir(&config.data_dir)?;
    let mut roots = config.trust_bundle.clone();
    let saved_bundle = config.data_dir.join(AGENT_BUNDLE_FILE);
    if saved_bundle.exists() {
        match read_pem_certs(&saved_bundle) {
            Ok(c) => roots.extend(c),
            Err(e) => tracing::warn!(error = %e, "ignoring the saved trust bundle"),
        }
    }
    let client = NodeClient::new(&config.server, &roots)?;
    let now = unix(SystemTime::now());
    let node = match load_node(&config.data_dir, now)? {
        Some(id) => {
            if config.join_token.is_some() {
                tracing::info!(agent = %id.agent_id, "already attested; the join token is not used");
            }
            client.set_node(&id)?;
            id
        }
        None => {
            let id = match (&config.psat_token_file, config.join_token.as_deref()) {
                (Some(path), _) => {
                    let token = read_psat(path)?;
                    let (id, _bundle) = client
                        .attest_psat(&token, config.psat_cluster.as_deref())
                        .await?;
                    tracing::info!(agent = %id.agent_id, "attested with a service-account token (k8s_psat)");
                    id
                }
                (None, Some(token)) => {
                    let (id, _bundle) = client.attest_join_token(token).await?;
                    tracing::info!(agent = %id.agent_id, "attested with a join token");
                    id
                }
                (None, None) => {
                    return Err(AgentError::Config(format!(
                    "no valid node SVID in {}: give --join-token or --psat-token-file to attest",
                    config.data_dir.display()
                )))
                }
            };
            save_node(&config.data_dir, &id)?;
            id
        }
    };
    let agent_id = node.agent_id.clone();
    let (updates, _) = watch::channel(0);
    let (syncs, _) = watch::channel(0);
    let enforce = match &config.enforce_dir {
        Some(d) => Some(
            crate::enforce::EnforcerFiles::open(d)
                .map_err(|e| AgentError::Config(format!("enforcer files: {e}")))?,
        ),
        None => None,
    };
    // Where the last run left off (see `crate::enforce`): the revocations
    // it held, so the first sync asks only for what came after.
    let mut view = View::default();
    if let Some(files) = &enforce {
        view.version = files.revocation_version();
        view.revocations.apply(&files.revocations());
        view.revocations.prune(SystemTime::now());
    }
    let agent = Arc::new(RemoteAgent {
        client,
        node: Mutex::new(node),
        trust_domain: agent_id.trust_domain().clone(),
        agent_id,
        data_dir: config.data_dir.clone(),
        base_roots: config.trust_bundle.clone(),
        sync_wait: config.sync_wait,
        psat: config
            .psat_token_file
            .clone()
            .map(|p| (p, config.psat_cluster.clone())),
        view: RwLock::new(view),
        updates,
        syncs,
        wake: Notify::new(),
        enforce,
    });
    // A first sync, if the server answers; the loop retries otherwise.
    let since = agent.read().version;
    let held = agent.enforce.as_ref().map(|f| f.position());
    let first = agent.client.sync_enforcers(
        since,
        "",
        held.as_ref().map(|(r, d)| (*r, d.as_str())),
        Duration::ZERO,
    );
    match first.await {
        Ok(resp) => agent.apply(resp),
        Err(e) => tracing::warn!(error = %e, "first sync failed; will retry"),
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = vec![
        tokio::spawn(Arc::clone(&agent).sync_loop(stop_rx.clone())),
        tokio::spawn(Arc::clone(&agent).maintain_loop(stop_rx.clone())),
    ];
    if let Some(path) = &config.socket {
        let listener = keycard_workload_api::bind_socket(path, config.socket_mode)?;
        let mut attestor = CompositeAttestor::new().with(Arc::new(UnixAttestor::new()));
        if let Some(k) = &config.kubelet {
            let lookup = keycard_workload_api::kubelet_pod_lookup(k)
                .map_err(|e| AgentError::Config(format!("kubelet: {e}")))?;
            attestor = attestor.with(Arc::new(keycard_workload_api::K8sAttestor::new(Arc::new(
                lookup,
            ))));
        }
        let attestor = Arc::new(attestor);
        let (source, mut rx) = (Arc::clone(&agent), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.changed().await;
            };
            if let Err(e) = keycard_workload_api::serve(listener, source, attestor, shutdown).await
            {
                tracing::error!(error = %e, "the Workload API stopped");
            }
        }));
    }
    Ok(RunningAgent {
        agent,
        socket: config.socket.clone(),
        stop,
        tasks,
    })
}

fn jitter(d: Duration) -> Duration {
    // Between half and all of `d`, so reconnecting agents spread out.
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

impl RemoteAgent {
    pub fn agent_id(&self) -> &SpiffeId {
        &self.agent_id
    }

    /// The revocation version the agent holds.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// The SPIFFE IDs of the X509-SVIDs in the cache, by entry id.
    pub fn cached(&self) -> BTreeMap<String, SpiffeId> {
        self.read()
            .svids
            .iter()
            .map(|(k, c)| (k.clone(), c.entry.spiffe_id.clone()))
            .collect()
    }

    /// Counts successful syncs (for waiting in tests and tools).
    pub fn syncs(&self) -> watch::Receiver<u64> {
        self.syncs.subscribe()
    }

    /// The files of the node's enforcers, if this agent keeps them.
    pub fn enforcer_files(&self) -> Option<&crate::enforce::EnforcerFiles> {
        self.enforce.as_ref()
    }

    /// Why the server refuses this agent, if it does.
    pub fn refused(&self) -> Option<String> {
        self.read().refused.clone()
    }

    /// The node API client (for calls beside the agent's own).
    pub fn client(&self) -> &NodeClient {
        &self.client
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.updates.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Applies a sync answer: new entries, bundle and revocations; SVIDs of
    /// deleted, changed or revoked entries leave the cache at once.
    fn apply(&self, mut resp: SyncResponse) {
        if let Some(files) = &self.enforce {
            let now = unix(SystemTime::now());
            match files.apply(&resp.revocations, resp.enforcer.take(), now) {
                Ok(true) => tracing::debug!(dir = %files.dir().display(), "enforcer files updated"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "could not update the enforcer files; enforcers keep the last ones")
                }
            }
        }
        let bundle = serde_json::to_vec(&resp.bundle)
            .ok()
            .and_then(|b| match TrustBundle::parse(self.trust_domain.clone(), &b) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "the server sent an unusable bundle; keeping the last one");
                    None
                }
            });
        let federated: BTreeMap<TrustDomain, TrustBundle> = resp
            .federated_bundles
            .iter()
            .filter_map(|(td, doc)| {
                let td: TrustDomain = td.parse().ok()?;
                if td == self.trust_domain {
                    return None;
                }
                let bytes = serde_json::to_vec(doc).ok()?;
                match TrustBundle::parse(td.clone(), &bytes).and_then(|b| {
                    keycard_identity::bundle::validate_for_domain(&b).map(|()| b)
                }) {
                    Ok(b) => Some((td, b)),
                    Err(e) => {
                        tracing::warn!(trust_domain = %td, error = %e, "the server sent an unusable federated bundle; skipping it");
                        None
                    }
                }
            })
            .collect();
        let mut changed = false;
        let mut new_roots = None;
        {
            let mut v = self.write();
            v.refused = None;
            if v.federated != federated {
                v.federated = federated;
                changed = true;
            }
            v.revocations.apply(&resp.revocations);
            v.version = resp.version;
            v.digest = resp.digest;
            v.entries = resp
                .entries
                .into_iter()
                .filter(|e| e.spiffe_id.trust_domain() == &self.trust_domain)
                .map(|e| (e.id.clone(), e))
                .collect();
            if let Some(b) = bundle {
                if v.bundle.as_ref() != Some(&b) {
                    new_roots = Some(b.x509_authorities.clone());
                    v.bundle = Some(b);
                    changed = true;
                }
            }
            let before = v.svids.len();
            let keep: BTreeMap<String, CachedSvid> = v
                .svids
                .iter()
                .filter(|(_, c)| v.allowed(c))
                .map(|(k, c)| (k.clone(), c.clone()))
                .collect();
            for (k, c) in &v.svids {
                if !keep.contains_key(k) {
                    tracing::info!(entry = %k, spiffe_id = %c.entry.spiffe_id, "SVID removed from the cache (entry deleted, changed or revoked)");
                }
            }
            if keep.len() != before {
                changed = true;
            }
            v.svids = keep;
            let ids: Vec<SpiffeId> = v.entries.values().map(|e| e.spiffe_id.clone()).collect();
            let revs = v.revocations.clone();
            v.jwts
                .retain(|(id, _), _| ids.contains(id) && !revs.is_identity_revoked(id));
            v.revocations.prune(SystemTime::now());
        }
        if let Some(mut roots) = new_roots {
            roots.extend(self.base_roots.iter().cloned());
            if let Err(e) = self.client.set_roots(&roots) {
                tracing::warn!(error = %e, "could not update the server's trust roots");
            }
            let pem: String = roots
                .iter()
                .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
                .collect();
            if let Err(e) = write(
                &self.data_dir.join(AGENT_BUNDLE_FILE),
                pem.as_bytes(),
                0o644,
                "bundle file",
            ) {
                tracing::warn!(error = %e, "could not save the trust bundle");
            }
        }
        if changed {
            self.bump();
        }
        self.syncs.send_modify(|n| *n = n.wrapping_add(1));
        self.wake.notify_one();
    }

    async fn sync_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let (since, digest) = {
                let v = self.read();
                (v.version, v.digest.clone())
            };
            let held = self.enforce.as_ref().map(|f| f.position());
            let enforcer = held.as_ref().map(|(r, d)| (*r, d.as_str()));
            let r = tokio::select! {
                r = self.client.sync_enforcers(since, &digest, enforcer, self.sync_wait) => r,
                _ = stop.changed() => return,
            };
            let wait = match r {
                Ok(resp) => {
                    backoff = BACKOFF_MIN;
                    self.apply(resp);
                    continue;
                }
                Err(CallError::Status { status, message }) if status == 401 || status == 403 => {
                    tracing::error!(agent = %self.agent_id, %message, "the server refuses this agent; dropping every cached SVID");
                    {
                        let mut v = self.write();
                        v.refused = Some(message);
                        v.svids.clear();
                        v.jwts.clear();
                    }
                    self.bump();
                    BACKOFF_MAX
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "sync failed; serving from the cache");
                    backoff
                }
            };
            let sleep = jitter(wait);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn maintain_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut retry = BACKOFF_MIN;
        loop {
            let wait = match self.maintain_once().await {
                Ok(next) => {
                    retry = BACKOFF_MIN;
                    let now = unix(SystemTime::now());
                    Duration::from_secs(next.saturating_sub(now).clamp(1, 3600))
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "could not renew every SVID");
                    let w = jitter(retry);
                    retry = (retry * 2).min(BACKOFF_MAX);
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Renews the node SVID and mints or renews workload SVIDs that are
    /// due. Returns the next time something is due (Unix seconds).
    async fn maintain_once(&self) -> Result<u64, String> {
        let now = unix(SystemTime::now());
        let mut errors = Vec::new();
        // The node SVID, at about half-life.
        let node_due = {
            let n = self.node.lock().unwrap_or_else(|p| p.into_inner());
            let leaf = n.chain.first();
            match (leaf.and_then(not_before), leaf.and_then(not_after)) {
                (Some(nb), Some(na)) => nb + (na.saturating_sub(nb)) / 2,
                _ => now,
            }
        };
        let mut next_node = node_due;
        if now >= node_due && (self.read().refused.is_none() || self.psat.is_some()) {
            match self.client.renew(&self.agent_id).await {
                Ok(id) => {
                    if let Err(e) = save_node(&self.data_dir, &id) {
                        errors.push(format!("saving the node SVID: {e}"));
                    }
                    let leaf = id.chain.first();
                    if let (Some(nb), Some(na)) =
                        (leaf.and_then(not_before), leaf.and_then(not_after))
                    {
                        next_node = renew_time(nb, na, &mut rand::rng());
                    }
                    *self.node.lock().unwrap_or_else(|p| p.into_inner()) = id;
                    tracing::info!(agent = %self.agent_id, "node SVID renewed");
                }
                Err(e) => {
                    let refused = matches!(
                        &e,
                        AgentError::Call(CallError::Status {
                            status: 401 | 403,
                            ..
                        })
                    );
                    let expired = {
                        let n = self.node.lock().unwrap_or_else(|p| p.into_inner());
                        n.chain
                            .first()
                            .and_then(not_after)
                            .is_none_or(|na| na <= now)
                    };
                    match &self.psat {
                        Some(_) if refused || expired => match self.reattest().await {
                            Ok(na) => next_node = na,
                            Err(e2) => errors
                                .push(format!("node SVID renewal: {e}; attesting again: {e2}")),
                        },
                        _ => errors.push(format!("node SVID renewal: {e}")),
                    }
                }
            }
        }
        // Workload SVIDs: new entries, changed ones, and those due.
        let todo: Vec<RegistrationEntry> = {
            let v = self.read();
            if v.refused.is_some() {
                return Ok(now + 60);
            }
            v.entries
                .values()
                .filter(|e| {
                    v.svids
                        .get(&e.id)
                        .is_none_or(|c| c.entry != **e || now >= c.renew_at)
                })
                .cloned()
                .collect()
        };
        let mut changed = false;
        for e in todo {
            match self.mint(&e).await {
                Ok(c) => {
                    let mut v = self.write();
                    // The entry may have gone while this was minted.
                    if v.entries.get(&e.id) == Some(&e) && v.allowed(&c) {
                        v.svids.insert(e.id.clone(), c);
                        changed = true;
                    }
                }
                Err(err) => errors.push(format!("{}: {err}", e.spiffe_id)),
            }
        }
        if changed {
            self.bump();
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let next = self
            .read()
            .svids
            .values()
            .map(|c| c.renew_at)
            .min()
            .unwrap_or(u64::MAX)
            .min(next_node);
        Ok(next)
    }

    /// Attests again with the current service-account token (re-read from
    /// its file); the new node SVID is saved and presented from now on.
    /// Returns when to renew it.
    async fn reattest(&self) -> Result<u64, AgentError> {
        let Some((path, cluster)) = &self.psat else {
            return Err(AgentError::Config("no service-account token file".into()));
        };
        let token = read_psat(path)?;
        // Attest without the refused or expired node SVID.
        *self
            .client
            .node
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.client.reset().await;
        let (id, _bundle) = self.client.attest_psat(&token, cluster.as_deref()).await?;
        if id.agent_id != self.agent_id {
            // The pod moved to another node: this agent's identity is gone.
            return Err(AgentError::Node(format!(
                "the token now attests {}, not {}; restart the agent",
                id.agent_id, self.agent_id
            )));
        }
        save_node(&self.data_dir, &id)?;
        let leaf = id.chain.first();
        let next = match (leaf.and_then(not_before), leaf.and_then(not_after)) {
            (Some(nb), Some(na)) => renew_time(nb, na, &mut rand::rng()),
            _ => unix(SystemTime::now()) + 60,
        };
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = id;
        tracing::info!(agent = %self.agent_id, "attested again with the service-account token");
        Ok(next)
    }

    async fn mint(&self, e: &RegistrationEntry) -> Result<CachedSvid, String> {
        let (key, csr) = new_key_and_csr().map_err(|e| e.to_string())?;
        let r = self
            .client
            .entry_svid(&e.id, &csr)
            .await
            .map_err(|e| e.to_string())?;
        let chain = decode_chain(&r).map_err(|e| e.to_string())?;
        let got = chain.first().and_then(crate::https::spiffe_id_of);
        if got.as_ref() != Some(&e.spiffe_id) {
            return Err(format!(
                "the server returned an SVID for {got:?}, not {}",
                e.spiffe_id
            ));
        }
        tracing::info!(spiffe_id = %e.spiffe_id, serial = %r.serial, not_after = r.not_after, "X509-SVID cached");
        Ok(CachedSvid {
            entry: e.clone(),
            material: X509SvidMaterial {
                spiffe_id: e.spiffe_id.clone(),
                cert_chain: chain.iter().map(|c| c.to_vec()).collect(),
                private_key_pkcs8: key,
                hint: String::new(),
            },
            serial: r.serial,
            not_after: r.not_after,
            renew_at: renew_time(r.not_before, r.not_after, &mut rand::rng()),
        })
    }

    fn bundle_set(&self) -> BundleSet {
        let mut set = BundleSet::new();
        let v = self.read();
        for b in v.federated.values() {
            set.insert(b.clone());
        }
        if let Some(b) = &v.bundle {
            set.insert(b.clone());
        }
        set
    }

    fn fetch_jwt(&self, id: &SpiffeId, audience: &[String]) -> Result<CachedJwt, SourceError> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let handle = Handle::try_current()
            .map_err(|_| SourceError::Unavailable("no async runtime".into()))?;
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(SourceError::Unavailable(
                "JWT-SVIDs need the multi-threaded runtime".into(),
            ));
        }
        let r = tokio::task::block_in_place(|| handle.block_on(self.client.jwt_svid(id, audience)))
            .map_err(|e| match e {
                CallError::Status {
                    status: 403,
                    message,
                } => SourceError::NotEntitled(message),
                CallError::Status {
                    status: 400,
                    message,
                } => SourceError::Invalid(message),
                e => SourceError::Unavailable(e.to_string()),
            })?;
        let now = unix(SystemTime::now());
        Ok(CachedJwt {
            material: JwtSvidMaterial {
                spiffe_id: id.clone(),
                token: r.token,
                hint: String::new(),
            },
            expires_at: r.expires_at,
            renew_at: now + r.expires_at.saturating_sub(now) / 2,
        })
    }
}

impl IdentitySource for RemoteAgent {
    fn x509_svids(&self, selectors: &[Selector]) -> Result<Vec<X509SvidMaterial>, SourceError> {
        let now = unix(SystemTime::now());
        let v = self.read();
        Ok(v.svids
            .values()
            .filter(|c| now < c.not_after && c.entry.matches(selectors) && v.allowed(c))
            .map(|c| c.material.clone())
            .collect())
    }

    fn jwt_svids(
        &self,
        selectors: &[Selector],
        spiffe_id: Option<&SpiffeId>,
        audience: &[String],
    ) -> Result<Vec<JwtSvidMaterial>, SourceError> {
        let mut ids: Vec<SpiffeId> = {
            let v = self.read();
            if let Some(r) = &v.refused {
                return Err(SourceError::Unavailable(format!(
                    "the server refuses this agent: {r}"
                )));
            }
            v.entries
                .values()
                .filter(|e| {
                    e.matches(selectors) && !v.revocations.is_identity_revoked(&e.spiffe_id)
                })
                .map(|e| e.spiffe_id.clone())
                .collect()
        };
        ids.sort();
        ids.dedup();
        if let Some(id) = spiffe_id {
            ids.retain(|i| i == id);
            if ids.is_empty() {
                return Err(SourceError::NotEntitled(format!(
                    "the caller is not entitled to {id}"
                )));
            }
        }
        let mut aud = audience.to_vec();
        aud.sort();
        aud.dedup();
        let now = unix(SystemTime::now());
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let key = (id.clone(), aud.clone());
            let cached = self.read().jwts.get(&key).cloned();
            if let Some(c) = cached.as_ref().filter(|c| now < c.renew_at) {
                out.push(c.material.clone());
                continue;
            }
            match self.fetch_jwt(&id, audience) {
                Ok(c) => {
                    out.push(c.material.clone());
                    let mut v = self.write();
                    if v.jwts.len() >= MAX_JWT_CACHE {
                        v.jwts.retain(|_, j| j.expires_at > now);
                        if v.jwts.len() >= MAX_JWT_CACHE {
                            v.jwts.clear();
                        }
                    }
                    v.jwts.insert(key, c);
                }
                // The server is away: a cached token still valid will do.
                Err(SourceError::Unavailable(m)) => match cached.filter(|c| now < c.expires_at) {
                    Some(c) => out.push(c.material),
                    None => return Err(SourceError::Unavailable(m)),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn bundles(&self) -> BTreeMap<TrustDomain, BundleMaterial> {
        crate::agent::bundle_materials(&self.bundle_set())
    }

    fn validate_jwt(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), SourceError> {
        crate::agent::validate_jwt_with(&self.bundle_set(), token, audience)
    }

    fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    fn trust_domain(&self) -> TrustDomain {
        self.trust_domain.clone()
    }
}
