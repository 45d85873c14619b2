//! Node attestation: single-use join tokens and Kubernetes projected
//! service-account tokens (PSAT), verified against the cluster issuer's
//! JWKS or through a [`TokenReviewer`].

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keycard_core::{JoinToken, Selector, SpiffeId, TokenUse, TrustDomain};
use keycard_store::IdentityStore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::jose::{Jwks, Jws, JwtError};

/// The longest join token accepted from an agent.
pub const MAX_JOIN_TOKEN_BYTES: usize = 256;
/// How many hex digits of the token hash name the agent.
pub const AGENT_ID_HASH_PREFIX: usize = 16;

/// Why node attestation failed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("join token is unknown")]
    UnknownToken,
    #[error("join token has expired")]
    ExpiredToken,
    #[error("join token was already used (replay refused)")]
    ReplayedToken,
    #[error("join token is malformed: {0}")]
    MalformedToken(String),
    #[error("store: {0}")]
    Store(#[from] keycard_store::StoreError),
    #[error("service-account token: {0}")]
    Jwt(#[from] JwtError),
    #[error("service-account token signature does not verify with any key of the cluster's JWKS")]
    Signature,
    #[error("service-account token claim `{claim}`: {reason}")]
    Claim { claim: &'static str, reason: String },
    #[error("service account {0} is not allowed to attest agents")]
    ServiceAccountNotAllowed(String),
    #[error("token review refused the token: {0}")]
    TokenReview(String),
    #[error("attestor configuration: {0}")]
    Config(String),
    /// The cluster's keys or its API server could not be reached: the
    /// token was neither accepted nor refused.
    #[error("cannot check the token now: {0}")]
    Unavailable(String),
    #[error("attested identity is not a valid SPIFFE ID or selector: {0}")]
    Identity(String),
}

/// A node that passed attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// `join_token` or `k8s_psat`.
    pub attestation: &'static str,
    /// Node selectors (matched against node-alias entries).
    pub selectors: Vec<Selector>,
}

/// A freshly generated join token. The secret is shown once to the
/// operator and never stored; `Debug` hides it.
pub struct GeneratedJoinToken {
    /// The secret to give to `keycard agent --join-token`.
    pub token: Zeroizing<String>,
    /// Hex SHA-256 of the secret, as stored.
    pub hash: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// The agent ID it will produce.
    pub agent_id: SpiffeId,
}

impl std::fmt::Debug for GeneratedJoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedJoinToken")
            .field("token", &"<redacted>")
            .field("hash", &self.hash)
            .field("expires_at", &self.expires_at)
            .field("agent_id", &self.agent_id)
            .finish()
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Hex SHA-256 of a join token secret.
pub fn join_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn agent_id_key(hash: &str) -> String {
    format!("join_token/{hash}/agent_id")
}

fn default_agent_id(td: &TrustDomain, hash: &str) -> Result<SpiffeId, AttestError> {
    SpiffeId::new(
        td.clone(),
        &format!(
            "/keycard/agent/join_token/{}",
            &hash[..AGENT_ID_HASH_PREFIX]
        ),
    )
    .map_err(|e| AttestError::Identity(e.to_string()))
}

/// Generates a join token valid for `ttl`, storing only its hash (and the
/// fixed agent ID, if given, as a named value).
pub fn generate_join_token(
    store: &mut dyn IdentityStore,
    td: &TrustDomain,
    ttl: Duration,
    agent_id: Option<SpiffeId>,
    now: SystemTime,
) -> Result<GeneratedJoinToken, AttestError> {
    if let Some(id) = &agent_id {
        if id.trust_domain() != td {
            return Err(AttestError::Config(format!(
                "agent ID {id} is not in trust domain {td}"
            )));
        }
    }
    let secret = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
    let hash = join_token_hash(&secret);
    let expires_at = unix(now).saturating_add(ttl.as_secs());
    let id = match agent_id.clone() {
        Some(id) => id,
        None => default_agent_id(td, &hash)?,
    };
    if let Some(id) = &agent_id {
        store.put_value(&agent_id_key(&hash), id.to_string().as_bytes())?;
    }
    store.put_join_token(&JoinToken {
        hash: hash.clone(),
        expires_at,
        agent_id,
    })?;
    tracing::info!(token_hash = %&hash[..AGENT_ID_HASH_PREFIX], expires_at, agent_id = %id, "join token generated");
    Ok(GeneratedJoinToken {
        token: secret,
        hash,
        expires_at,
        agent_id: id,
    })
}

/// Attests a node by join token: consumes it atomically (so of two agents
/// presenting it, one wins) and returns the agent's identity. Unknown,
/// expired and replayed tokens get distinct errors.
pub fn attest_join_token(
    store: &mut dyn IdentityStore,
    td: &TrustDomain,
    token: &str,
    now: SystemTime,
) -> Result<AttestedNode, AttestError> {
    if token.is_empty()
        || token.len() > MAX_JOIN_TOKEN_BYTES
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AttestError::MalformedToken(format!(
            "expected 1-{MAX_JOIN_TOKEN_BYTES} printable ASCII characters"
        )));
    }
    let hash = join_token_hash(token);
    let short = &hash[..AGENT_ID_HASH_PREFIX];
    let result = store.use_join_token(&hash, unix(now))?;
    match result {
        TokenUse::Consumed => {}
        TokenUse::Unknown => {
            tracing::warn!(token_hash = %short, "join token refused: unknown");
            return Err(AttestError::UnknownToken);
        }
        TokenUse::Expired => {
            tracing::warn!(token_hash = %short, "join token refused: expired");
            return Err(AttestError::ExpiredToken);
        }
        TokenUse::Replayed => {
            tracing::warn!(token_hash = %short, "join token refused: already used");
            return Err(AttestError::ReplayedToken);
        }
    }
    let spiffe_id = match store.value(&agent_id_key(&hash))? {
        Some(bytes) => String::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| AttestError::Identity("stored agent ID".into()))?,
        None => default_agent_id(td, &hash)?,
    };
    let selectors = vec![Selector::new("join_token", &format!("id:{short}"))
        .map_err(|e| AttestError::Identity(e.to_string()))?];
    tracing::info!(agent_id = %spiffe_id, "node attested by join token");
    Ok(AttestedNode {
        spiffe_id,
        attestation: "join_token",
        selectors,
    })
}

// ------------------------------------------------------------------ PSAT --

/// How a cluster's projected service-account tokens are checked.
#[derive(Debug, Clone)]
pub struct PsatConfig {
    /// The cluster's name in keycard (a path segment of the agent ID).
    pub cluster: String,
    /// The audience the agent's token must be bound to (e.g. `keycard`).
    pub audience: String,
    /// Expected `iss`; `None` skips the check.
    pub issuer: Option<String>,
    /// Service accounts (`namespace:name`) allowed to attest agents; at
    /// least one.
    pub allowed_service_accounts: Vec<String>,
}

impl PsatConfig {
    /// Checks the configuration: a cluster name usable in a SPIFFE ID
    /// path, an audience, at least one allowed service account.
    pub fn check(&self) -> Result<(), AttestError> {
        self.validate()
    }

    fn validate(&self) -> Result<(), AttestError> {
        if self.cluster.is_empty()
            || !self
                .cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(AttestError::Config(format!(
                "cluster name {:?} must be [A-Za-z0-9._-]+",
                self.cluster
            )));
        }
        if self.audience.is_empty() {
            return Err(AttestError::Config("audience must not be empty".into()));
        }
        if self.allowed_service_accounts.is_empty() {
            return Err(AttestError::Config(
                "list at least one allowed service account (namespace:name)".into(),
            ));
        }
        Ok(())
    }
}

/// What a PSAT (or a token review) says about the agent's pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsatIdentity {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub node_name: String,
    pub node_uid: Option<String>,
}

fn claim_str<'a>(v: &'a Value, path: &[&str], claim: &'static str) -> Result<&'a str, AttestError> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p).ok_or_else(|| AttestError::Claim {
            claim,
            reason: format!("`{}` is missing", path.join(".")),
        })?;
    }
    cur.as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AttestError::Claim {
            claim,
            reason: format!("`{}` must be a non-empty string", path.join(".")),
        })
}

/// Verifies a projected service-account token against the cluster
/// issuer's JWKS: signature (RS256, ES256 and the other algorithms of
/// [`crate::jose`]), `iss`, `aud` containing the configured audience,
/// `exp`/`nbf`, and the `kubernetes.io` claims.
pub fn verify_psat(
    token: &str,
    config: &PsatConfig,
    jwks: &Jwks,
    now: SystemTime,
) -> Result<PsatIdentity, AttestError> {
    config.validate()?;
    let jws = Jws::decode(token)?;
    let mut verified = false;
    let mut last = None;
    for key in jwks.candidates(jws.kid.as_deref()) {
        match key.verify(
            jws.kid.as_deref().unwrap_or(""),
            &jws.alg,
            jws.signing_input,
            &jws.signature,
        ) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if !verified {
        return Err(match last {
            Some(e @ (JwtError::AlgKeyMismatch { .. } | JwtError::UnsupportedAlg(_))) => {
                AttestError::Jwt(e)
            }
            _ => AttestError::Signature,
        });
    }
    if let Some(want) = &config.issuer {
        let claims = Value::Object(jws.claims.clone());
        let got = claim_str(&claims, &["iss"], "iss")?;
        if got != want {
            return Err(AttestError::Jwt(JwtError::Issuer {
                got: got.to_string(),
                want: want.clone(),
            }));
        }
    }
    jws.check_times(unix(now), 0)?;
    let aud = jws.audiences()?;
    if !aud.contains(&config.audience) {
        return Err(AttestError::Jwt(JwtError::Audience {
            got: aud,
            want: config.audience.clone(),
        }));
    }
    let claims = Value::Object(jws.claims);
    let k8s = claims.get("kubernetes.io").ok_or(AttestError::Claim {
        claim: "kubernetes.io",
        reason: "missing: not a projected service-account token".into(),
    })?;
    let id = PsatIdentity {
        namespace: claim_str(k8s, &["namespace"], "kubernetes.io")?.to_string(),
        service_account: claim_str(k8s, &["serviceaccount", "name"], "kubernetes.io")?.to_string(),
        pod_name: claim_str(k8s, &["pod", "name"], "kubernetes.io")?.to_string(),
        pod_uid: claim_str(k8s, &["pod", "uid"], "kubernetes.io")?.to_string(),
        node_name: claim_str(k8s, &["node", "name"], "kubernetes.io")
            .map_err(|_| AttestError::Claim {
                claim: "kubernetes.io",
                reason: "`node.name` is missing (Kubernetes 1.30+ tokens carry it; otherwise use token review)".into(),
            })?
            .to_string(),
        node_uid: claim_str(k8s, &["node", "uid"], "kubernetes.io").ok().map(String::from),
    };
    Ok(id)
}

/// The agent identity and selectors for an accepted PSAT.
pub fn psat_node(
    td: &TrustDomain,
    config: &PsatConfig,
    id: &PsatIdentity,
) -> Result<AttestedNode, AttestError> {
    config.validate()?;
    let sa = format!("{}:{}", id.namespace, id.service_account);
    if !config.allowed_service_accounts.contains(&sa) {
        tracing::warn!(service_account = %sa, "PSAT refused: service account not allowed");
        return Err(AttestError::ServiceAccountNotAllowed(sa));
    }
    let node_part = id.node_uid.as_deref().unwrap_or(&id.node_name);
    let spiffe_id = SpiffeId::new(
        td.clone(),
        &format!("/keycard/agent/k8s_psat/{}/{node_part}", config.cluster),
    )
    .map_err(|e| AttestError::Identity(e.to_string()))?;
    let sel = |k: &str, v: &str| {
        Selector::new("k8s_psat", &format!("{k}:{v}"))
            .map_err(|e| AttestError::Identity(e.to_string()))
    };
    let selectors = vec![
        sel("cluster", &config.cluster)?,
        sel("agent_ns", &id.namespace)?,
        sel("agent_sa", &id.service_account)?,
        sel("agent_node_name", &id.node_name)?,
    ];
    tracing::info!(agent_id = %spiffe_id, service_account = %sa, node = %id.node_name, "node attested by service-account token");
    Ok(AttestedNode {
        spiffe_id,
        attestation: "k8s_psat",
        selectors,
    })
}

/// Attests a node by PSAT against the cluster issuer's JWKS.
pub fn attest_psat(
    token: &str,
    td: &TrustDomain,
    config: &PsatConfig,
    jwks: &Jwks,
    now: SystemTime,
) -> Result<AttestedNode, AttestError> {
    let id = verify_psat(token, config, jwks, now)?;
    psat_node(td, config, &id)
}

/// The answer of a Kubernetes TokenReview.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenReviewStatus {
    pub authenticated: bool,
    /// `system:serviceaccount:<ns>:<name>`.
    pub username: String,
    pub audiences: Vec<String>,
    /// From `authentication.kubernetes.io/pod-name` etc. in `user.extra`.
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub node_name: Option<String>,
    /// `authentication.kubernetes.io/node-uid` (Kubernetes 1.30+).
    pub node_uid: Option<String>,
    pub error: Option<String>,
}

/// A boxed future, so the trait can be used as `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Asks the Kubernetes API whether a token is valid for `audiences` (the
/// real call lives in the server; tests use a fake).
pub trait TokenReviewer: Send + Sync {
    fn review<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<TokenReviewStatus, AttestError>>;
}

/// Attests a node by PSAT through a TokenReview.
pub async fn attest_psat_with_review(
    token: &str,
    td: &TrustDomain,
    config: &PsatConfig,
    reviewer: &dyn TokenReviewer,
) -> Result<AttestedNode, AttestError> {
    config.validate()?;
    if token.len() > crate::jose::MAX_TOKEN_BYTES {
        return Err(AttestError::Jwt(JwtError::TooLarge(token.len())));
    }
    let audiences = vec![config.audience.clone()];
    let st = reviewer.review(token, &audiences).await?;
    if !st.authenticated {
        return Err(AttestError::TokenReview(
            st.error.unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    if !st.audiences.contains(&config.audience) {
        return Err(AttestError::Jwt(JwtError::Audience {
            got: st.audiences,
            want: config.audience.clone(),
        }));
    }
    let rest = st
        .username
        .strip_prefix("system:serviceaccount:")
        .ok_or_else(|| {
            AttestError::TokenReview(format!("user {:?} is not a service account", st.username))
        })?;
    let (ns, sa) = rest
        .split_once(':')
        .ok_or_else(|| AttestError::TokenReview(format!("user {:?} is malformed", st.username)))?;
    let missing = |what: &str| {
        AttestError::TokenReview(format!(
            "the review does not say the {what} (needs a projected token)"
        ))
    };
    let id = PsatIdentity {
        namespace: ns.to_string(),
        service_account: sa.to_string(),
        pod_name: st.pod_name.ok_or_else(|| missing("pod name"))?,
        pod_uid: st.pod_uid.ok_or_else(|| missing("pod uid"))?,
        node_name: st.node_name.ok_or_else(|| missing("node name"))?,
        node_uid: st.node_uid,
    };
    psat_node(td, config, &id)
}
