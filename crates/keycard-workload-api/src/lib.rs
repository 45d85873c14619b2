//! The SPIFFE Workload API and Envoy SDS servers on the agent's Unix socket,
//! with kernel-based workload attestation.
//!
//! The servers are generic over an [`IdentitySource`] (the agent's cache of
//! SVIDs and bundles) and an [`Attestor`] (what the kernel says about the
//! caller). One socket serves both gRPC services:
//!
//! * `SpiffeWorkloadAPI` (`FetchX509SVID`, `FetchX509Bundles`,
//!   `FetchJWTSVID`, `FetchJWTBundles`, `ValidateJWTSVID`), every call
//!   carrying the `workload.spiffe.io: true` header;
//! * `envoy.service.secret.v3.SecretDiscoveryService` (`StreamSecrets`,
//!   `FetchSecrets`) with SPIRE's resource names (`default`, `ROOTCA`, `ALL`,
//!   `spiffe://<td>`, `spiffe://<td>/<path>`).
//!
//! Every call is attested from the peer credentials of its connection
//! (`SO_PEERCRED`, captured at accept time), and gets only what the source
//! says those selectors are entitled to.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use keycard_workload_api::{bind_socket, serve, IdentitySource, UnixAttestor};
//! # async fn run<S: IdentitySource>(source: Arc<S>) -> Result<(), Box<dyn std::error::Error>> {
//! let listener = bind_socket(std::path::Path::new("/run/keycard/agent.sock"), 0o666)?;
//! let attestor = Arc::new(UnixAttestor::new());
//! serve(listener, source, attestor, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

pub use keycard_core::{Selector, SpiffeId, TrustDomain};

pub mod attest;
pub mod h2fix;
pub mod proto;
mod sds;
mod server;
mod workload;

pub use attest::k8s::{
    match_pod, parse_cgroup_container, pods_from_pod_list_json, CgroupContainer, ContainerInfo,
    K8sAttestor, PodInfo, PodLookup, RefreshOptions, RefreshingPodLookup, StaticPodLookup,
};
pub use attest::kubelet::{
    kubelet_pod_lookup, KubeletClient, KubeletConfig, KubeletError, KubeletPodLookup,
};
pub use attest::unix::UnixAttestor;
pub use attest::{AttestError, Attestor, CompositeAttestor, PeerCred};
pub use sds::SDS_SECRET_TYPE_URL;
pub use server::{
    bind_socket, serve, serve_with, ConnInfo, ServeError, ServeOptions, WORKLOAD_API_HEADER,
};

/// An X509-SVID and its key, as the source hands it to the servers.
#[derive(Clone, PartialEq, Eq)]
pub struct X509SvidMaterial {
    /// The SVID's identity (its URI SAN).
    pub spiffe_id: SpiffeId,
    /// DER certificates, leaf first, then intermediates.
    pub cert_chain: Vec<Vec<u8>>,
    /// The leaf's private key, PKCS#8 DER.
    pub private_key_pkcs8: Vec<u8>,
    /// Operator guidance when a workload has several SVIDs; may be empty.
    pub hint: String,
}

impl std::fmt::Debug for X509SvidMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509SvidMaterial")
            .field("spiffe_id", &self.spiffe_id)
            .field("cert_chain_len", &self.cert_chain.len())
            .field("private_key_pkcs8", &"<redacted>")
            .field("hint", &self.hint)
            .finish()
    }
}

/// A JWT-SVID, as the source hands it to the servers.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSvidMaterial {
    /// The `sub` of the token.
    pub spiffe_id: SpiffeId,
    /// The token, JWS compact serialization.
    pub token: String,
    /// Operator guidance when a workload has several SVIDs; may be empty.
    pub hint: String,
}

impl std::fmt::Debug for JwtSvidMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSvidMaterial")
            .field("spiffe_id", &self.spiffe_id)
            .field("token", &"<redacted>")
            .field("hint", &self.hint)
            .finish()
    }
}

/// The trust material of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BundleMaterial {
    /// X.509 authorities (CA certificates), DER.
    pub x509_authorities: Vec<Vec<u8>>,
    /// The SPIFFE bundle's JWKS JSON, with the `jwt-svid` keys.
    pub jwks: Vec<u8>,
}

/// Why the source could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// The caller's selectors entitle it to nothing (or not to this).
    #[error("not entitled: {0}")]
    NotEntitled(String),
    /// The request is malformed (bad SPIFFE ID, bad token, wrong audience).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The source cannot answer now (no SVID minted yet, server unreachable).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("internal: {0}")]
    Internal(String),
}

/// What the agent knows: the SVIDs each set of selectors is entitled to,
/// the bundles, and a change counter. Implemented by the agent's cache.
pub trait IdentitySource: Send + Sync + 'static {
    /// SVIDs the attested caller is entitled to (from the agent cache; fast).
    /// Empty vec = not entitled to anything. The first is the default.
    fn x509_svids(&self, selectors: &[Selector]) -> Result<Vec<X509SvidMaterial>, SourceError>;
    /// JWT-SVIDs for `audience`; `spiffe_id` restricts to one of the
    /// caller's identities.
    fn jwt_svids(
        &self,
        selectors: &[Selector],
        spiffe_id: Option<&SpiffeId>,
        audience: &[String],
    ) -> Result<Vec<JwtSvidMaterial>, SourceError>;
    /// Bundles by trust domain: own first, plus federated.
    fn bundles(&self) -> BTreeMap<TrustDomain, BundleMaterial>;
    /// Validates a JWT-SVID for `audience`: its SPIFFE ID and claims.
    fn validate_jwt(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), SourceError>;
    /// A counter that changes whenever any SVID or bundle changes (rotation,
    /// revocation, federation): streams re-send on change.
    fn updates(&self) -> tokio::sync::watch::Receiver<u64>;
    /// The trust domain this agent belongs to (own bundle in
    /// `X509SVID.bundle`, SDS `ROOTCA`).
    fn trust_domain(&self) -> TrustDomain;
}

/// Concatenated DER, as the Workload API carries chains and bundles.
pub(crate) fn concat_der(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(certs.iter().map(Vec::len).sum());
    for c in certs {
        out.extend_from_slice(c);
    }
    out
}
