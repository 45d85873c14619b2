//! The workload's identity for TLS: its X509-SVID (served to peers, swapped
//! atomically on rotation) and the trust bundles peers are verified
//! against, per the X509-SVID specification.
//!
//! * [`IdentityState`] holds the current SVID and bundles. rustls asks it
//!   for a certificate at every handshake ([`SvidResolver`]), so a rotation
//!   takes effect for the next handshake while established connections keep
//!   the certificate they were made with: nothing is dropped.
//! * [`SpiffeVerifier`] verifies a peer chain with rustls-webpki against the
//!   bundle of the trust domain named in the peer's one URI SAN (federated
//!   trust domains are simply more bundles), checks the leaf is an SVID (not
//!   a CA, may sign, one `spiffe://` URI SAN) and, when connecting out,
//!   that the server is the expected SPIFFE ID or in the expected trust
//!   domain. DNS names play no part.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::TrustAnchor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why an SVID, a bundle or a peer certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

fn invalid(m: impl Into<String>) -> SvidError {
    SvidError::Invalid(m.into())
}

/// What the X509-SVID specification requires of a leaf, read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    pub spiffe_id: SpiffeId,
    /// Lower-case hex, no separators, no leading zeros.
    pub serial: String,
    pub not_after: SystemTime,
}

/// Parse a leaf and check it is an X509-SVID leaf: exactly one URI SAN, a
/// valid SPIFFE ID; not a CA; digitalSignature set, keyCertSign and
/// cRLSign not set.
pub fn leaf_info(der: &[u8]) -> Result<LeafInfo, SvidError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| invalid(format!("certificate does not parse: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| invalid(format!("subjectAltName: {e}")))?
        .ok_or_else(|| invalid("no URI SAN (not an X509-SVID)"))?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let uri = uris
        .next()
        .ok_or_else(|| invalid("no URI SAN (not an X509-SVID)"))?;
    if uris.next().is_some() {
        return Err(invalid("more than one URI SAN (not an X509-SVID)"));
    }
    let spiffe_id: SpiffeId = uri
        .parse()
        .map_err(|e| invalid(format!("URI SAN {uri:?} is not a SPIFFE ID: {e}")))?;
    if let Ok(Some(bc)) = cert.basic_constraints() {
        if bc.value.ca {
            return Err(invalid("leaf is a CA certificate"));
        }
    }
    if let Ok(Some(ku)) = cert.key_usage() {
        if !ku.value.digital_signature() {
            return Err(invalid("leaf lacks keyUsage digitalSignature"));
        }
        if ku.value.key_cert_sign() || ku.value.crl_sign() {
            return Err(invalid("leaf has keyCertSign or cRLSign"));
        }
    }
    let serial = crate::files::normalize_serial(&cert.raw_serial_as_string());
    let secs = cert.validity().not_after.timestamp().max(0) as u64;
    Ok(LeafInfo {
        spiffe_id,
        serial,
        not_after: UNIX_EPOCH + Duration::from_secs(secs),
    })
}

/// The workload's current SVID, ready to serve.
pub struct Svid {
    pub info: LeafInfo,
    pub certified: Arc<CertifiedKey>,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.info.spiffe_id.to_string())
            .field("serial", &self.info.serial)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Svid {
    /// From a chain (leaf first) and a PKCS#8/SEC1/PKCS#1 DER key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, SvidError> {
        let leaf = chain
            .first()
            .ok_or_else(|| invalid("empty certificate chain"))?;
        let info = leaf_info(leaf)?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| invalid(format!("private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signer);
        certified
            .keys_match()
            .map_err(|e| invalid(format!("private key does not match the certificate: {e}")))?;
        Ok(Svid {
            info,
            certified: Arc::new(certified),
        })
    }

    /// From PEM text: the chain (leaf first) and the private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, SvidError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| invalid(format!("private key PEM: {e}")))?;
        Self::new(chain, key)
    }
}

/// Trust anchors per trust domain (the own domain and federated ones).
#[derive(Default)]
pub struct Bundles {
    anchors: HashMap<String, Vec<TrustAnchor<'static>>>,
}

impl fmt::Debug for Bundles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m: Vec<(&String, usize)> = self.anchors.iter().map(|(k, v)| (k, v.len())).collect();
        m.sort();
        f.debug_map().entries(m).finish()
    }
}

impl Bundles {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the X.509 authorities (DER) of a trust domain.
    pub fn insert(
        &mut self,
        trust_domain: &str,
        roots: &[CertificateDer<'_>],
    ) -> Result<(), SvidError> {
        let mut anchors = Vec::with_capacity(roots.len());
        for r in roots {
            let a = webpki::anchor_from_trusted_cert(r)
                .map_err(|e| invalid(format!("bundle of {trust_domain}: {e:?}")))?;
            anchors.push(a.to_owned());
        }
        self.anchors
            .entry(trust_domain.to_string())
            .or_default()
            .extend(anchors);
        Ok(())
    }

    /// Add authorities from PEM text.
    pub fn insert_pem(&mut self, trust_domain: &str, pem: &[u8]) -> Result<(), SvidError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("bundle PEM of {trust_domain}: {e}")))?;
        if roots.is_empty() {
            return Err(invalid(format!(
                "bundle of {trust_domain} has no certificate"
            )));
        }
        self.insert(trust_domain, &roots)
    }

    pub fn trust_domains(&self) -> impl Iterator<Item = &str> {
        self.anchors.keys().map(String::as_str)
    }

    fn get(&self, td: &str) -> Option<&[TrustAnchor<'static>]> {
        self.anchors.get(td).map(Vec::as_slice)
    }
}

/// The current SVID and bundles, shared by every listener; updated by a
/// source (files or the Workload API).
#[derive(Default)]
pub struct IdentityState {
    svid: RwLock<Option<Arc<Svid>>>,
    bundles: RwLock<Arc<Bundles>>,
}

impl fmt::Debug for IdentityState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityState")
            .field("svid", &self.svid())
            .field("bundles", &self.bundles())
            .finish()
    }
}

impl IdentityState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn with(svid: Svid, bundles: Bundles) -> Arc<Self> {
        let s = Self::new();
        s.set_svid(svid);
        s.set_bundles(bundles);
        s
    }

    /// Swap the SVID; the next handshake uses it.
    pub fn set_svid(&self, svid: Svid) {
        tracing::info!(spiffe_id = %svid.info.spiffe_id, serial = %svid.info.serial, "SVID in force");
        let svid = Arc::new(svid);
        match self.svid.write() {
            Ok(mut g) => *g = Some(svid),
            Err(p) => *p.into_inner() = Some(svid),
        }
    }

    pub fn set_bundles(&self, bundles: Bundles) {
        let b = Arc::new(bundles);
        match self.bundles.write() {
            Ok(mut g) => *g = b,
            Err(p) => *p.into_inner() = b,
        }
    }

    pub fn svid(&self) -> Option<Arc<Svid>> {
        match self.svid.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn bundles(&self) -> Arc<Bundles> {
        match self.bundles.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Ready to serve: an SVID and at least one bundle.
    pub fn is_ready(&self) -> bool {
        self.svid().is_some() && self.bundles().anchors.values().any(|a| !a.is_empty())
    }

    /// Load (or reload) from PEM files: own chain and key, the own trust
    /// domain's bundle, and federated bundles `(trust domain, file)`.
    pub fn load_files(
        &self,
        cert: &Path,
        key: &Path,
        bundle: &Path,
        federated: &[(String, std::path::PathBuf)],
    ) -> Result<(), SvidError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| SvidError::File {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        };
        let svid = Svid::from_pem(&read(cert)?, &read(key)?)?;
        let mut b = Bundles::new();
        b.insert_pem(svid.info.spiffe_id.trust_domain().as_str(), &read(bundle)?)?;
        for (td, p) in federated {
            b.insert_pem(td, &read(p)?)?;
        }
        self.set_bundles(b);
        self.set_svid(svid);
        Ok(())
    }
}

/// Serves the current SVID at every handshake (server and client side).
#[derive(Debug)]
pub struct SvidResolver {
    state: Arc<IdentityState>,
    /// When not empty, a client's SNI must be one of these (or absent).
    server_names: Vec<String>,
}

impl SvidResolver {
    pub fn new(state: Arc<IdentityState>, server_names: Vec<String>) -> Self {
        SvidResolver {
            state,
            server_names,
        }
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            if !self.server_names.is_empty()
                && !self
                    .server_names
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(sni))
            {
                tracing::debug!(sni, "unknown SNI refused");
                return None;
            }
        }
        self.state.svid().map(|s| s.certified.clone())
    }
}

impl rustls::client::ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.state.svid().map(|s| s.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.state.svid().is_some()
    }
}

/// Which server an outbound connection accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Exactly this SPIFFE ID.
    Id(String),
    /// Any SPIFFE ID of this trust domain.
    TrustDomain(String),
}

impl Expected {
    /// `spiffe://td/path` is an ID; `spiffe://td` or `td` a trust domain.
    pub fn parse(s: &str) -> Result<Self, SvidError> {
        let rest = s.strip_prefix("spiffe://").unwrap_or(s);
        if rest.contains('/') {
            let id: SpiffeId = s
                .parse()
                .map_err(|e| invalid(format!("{s:?} is not a SPIFFE ID: {e}")))?;
            Ok(Expected::Id(id.to_string()))
        } else {
            let td: keycard_core::TrustDomain = rest
                .parse()
                .map_err(|e| invalid(format!("{s:?} is not a trust domain: {e}")))?;
            Ok(Expected::TrustDomain(td.to_string()))
        }
    }

    fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Expected::Id(e) => *e == id.to_string(),
            Expected::TrustDomain(td) => id.trust_domain().as_str() == td,
        }
    }
}

/// Verifies peers per the X509-SVID specification; TLS 1.3 signatures with ring.
pub struct SpiffeVerifier {
    state: Arc<IdentityState>,
    expected: Option<Expected>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for SpiffeVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

fn tls_err(m: String) -> rustls::Error {
    rustls::Error::General(m)
}

impl SpiffeVerifier {
    /// For accepting clients (any SPIFFE ID a bundle vouches for; policy decides).
    pub fn for_clients(state: Arc<IdentityState>) -> Self {
        SpiffeVerifier {
            state,
            expected: None,
            provider: provider(),
        }
    }

    /// For connecting to a server that must match `expected`.
    pub fn for_server(state: Arc<IdentityState>, expected: Expected) -> Self {
        SpiffeVerifier {
            state,
            expected: Some(expected),
            provider: provider(),
        }
    }

    /// Verify a peer chain now; the peer's leaf information.
    pub fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<LeafInfo, SvidError> {
        let info = leaf_info(end_entity)?;
        let td = info.spiffe_id.trust_domain().as_str().to_string();
        let bundles = self.state.bundles();
        let anchors = bundles
            .get(&td)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| invalid(format!("no trust bundle for trust domain {td}")))?;
        let ee =
            EndEntityCert::try_from(end_entity).map_err(|e| invalid(format!("leaf: {e:?}")))?;
        ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|e| {
            invalid(format!(
                "chain of {} does not verify against the bundle of {td}: {e:?}",
                info.spiffe_id
            ))
        })?;
        if let Some(exp) = &self.expected {
            if !exp.matches(&info.spiffe_id) {
                return Err(invalid(format!(
                    "server is {}, expected {exp:?}",
                    info.spiffe_id
                )));
            }
        }
        Ok(info)
    }
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_chain(end_entity, intermediates, now, KeyUsage::server_auth())
            .map_err(|e| tls_err(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

impl ClientCertVerifier for SpiffeVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify_chain(end_entity, intermediates, now, KeyUsage::client_auth())
            .map_err(|e| tls_err(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// TLS 1.3 server config: mTLS required, ALPN h2 and http/1.1, no resumption.
///
/// A resumed session skips certificate verification: its peer would keep
/// the identity verified when the session began, after the bundle dropped
/// its trust domain or the certificate expired. So every connection makes
/// a full handshake, and no session state is kept per client.
pub fn server_config(
    state: &Arc<IdentityState>,
    server_names: Vec<String>,
) -> Result<rustls::ServerConfig, SvidError> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid(e.to_string()))?
        .with_client_cert_verifier(Arc::new(SpiffeVerifier::for_clients(state.clone())))
        .with_cert_resolver(Arc::new(SvidResolver::new(state.clone(), server_names)));
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    c.send_tls13_tickets = 0;
    Ok(c)
}

/// TLS 1.3 client config presenting the SVID and expecting `expected`;
/// `alpn` offered. It does not try to resume sessions (keycard's servers
/// refuse to, see [`server_config`]).
pub fn client_config(
    state: &Arc<IdentityState>,
    expected: Expected,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, SvidError> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeVerifier::for_server(
            state.clone(),
            expected,
        )))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(state.clone(), Vec::new())));
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    c.resumption = rustls::client::Resumption::disabled();
    Ok(c)
}

/// The verified peer's leaf information of an established connection.
pub fn peer_of(conn: &rustls::CommonState) -> Option<LeafInfo> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| leaf_info(leaf).ok())
}
