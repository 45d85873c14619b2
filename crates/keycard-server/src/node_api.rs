//! The node API: what `keycard agent` calls on the server.
//!
//! * `POST /v1/agent/attest` (no credential but the attestation itself): a
//!   single-use join token, or a Kubernetes projected service-account token
//!   (`psat`, with the agent's `cluster`; see [`crate::psat`]), and a CSR
//!   for the agent's node key; a join token is spent atomically, the agent
//!   recorded, and the node X509-SVID returned with the trust bundle. A
//!   refused token is 401 (403 for a service account that may not attest,
//!   503 when the cluster's keys cannot be reached), logged, and no SVID.
//! * Every other call is authenticated by the node X509-SVID over mTLS: the
//!   peer must be an attested agent of this trust domain, not banned (a ban
//!   refuses its next call, including a sync already waiting).
//!   - `POST /v1/agent/renew`: a new node SVID for a new CSR.
//!   - `GET /v1/agent/sync?since=V&digest=D`: the entries this agent serves,
//!     the bundle, the revocations after version `V`, and a digest of the
//!     entries and bundle. With `policy_since=R&control_digest=C` also the
//!     enforcer half ([`crate::enforce::EnforcerSync`]): policy and
//!     exception documents changed after revision `R`, and posture and
//!     grants whole when their digest is not `C`. A long poll: when nothing
//!     changed since what the agent holds, the server waits (up to
//!     [`MAX_SYNC_WAIT`]) on its change feed before answering, so changes
//!     reach agents as they happen and a reconnecting agent gets what it
//!     missed.
//!   - `POST /v1/agent/svids` and `POST /v1/agent/jwt`: an X509-SVID (from
//!     the agent's CSR) or a JWT-SVID for an entry this agent serves, and
//!     never for anything else.
//!
//! An agent serves the entries whose parent is the agent or one of its
//! node aliases, and entries with no parent that are not node entries
//! (on a small trust domain, entries created without a parent are served by
//! every agent).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use keycard_core::{AgentRecord, RegistrationEntry, Revocation, SpiffeId};
use keycard_identity::{
    attest_join_token, AttestError, Registry, RevocationSet, SvidKey, SvidOptions, X509Svid,
};

use crate::api::{ApiError, PeerIdentity};
use crate::state::{unix, ServerState};

/// The longest a sync waits for a change before answering unchanged.
pub const MAX_SYNC_WAIT: Duration = Duration::from_secs(30);
/// Largest body of a node API call.
pub const MAX_NODE_BODY: usize = 64 * 1024;
/// Most revocations in one sync answer (`more` says when there are others).
pub const MAX_SYNC_REVOCATIONS: usize = 10_000;
/// How often a waiting sync re-reads a shared (PostgreSQL) store, where
/// another server replica may have made the change.
const SHARED_STORE_POLL: Duration = Duration::from_secs(1);

type ApiResult<T> = Result<T, ApiError>;
type St = State<Arc<ServerState>>;

/// `POST /v1/agent/attest`. `Debug` hides the token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    /// A join token from `keycard token generate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_token: Option<String>,
    /// A Kubernetes projected service-account token bound to the audience
    /// the server's `[[k8s_psat]]` cluster names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psat: Option<String>,
    /// With `psat`: the agent's cluster, as named in the server's
    /// `[[k8s_psat]]` (may be left out when the server has one cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Base64 DER PKCS#10 request for the node key.
    pub csr: String,
}

impl std::fmt::Debug for AttestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestRequest")
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field("psat", &self.psat.as_ref().map(|_| "<redacted>"))
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// An X509-SVID on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SvidResponse {
    pub spiffe_id: String,
    /// Base64 DER, leaf first, then the intermediate.
    pub chain: Vec<String>,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
}

impl SvidResponse {
    fn of(svid: &X509Svid) -> Self {
        SvidResponse {
            spiffe_id: svid.spiffe_id.to_string(),
            chain: svid.chain.iter().map(|c| b64().encode(c)).collect(),
            serial: svid.serial.clone(),
            not_before: unix(svid.not_before),
            not_after: unix(svid.not_after),
        }
    }
}

/// The answer to an attestation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestResponse {
    pub agent_id: String,
    pub svid: SvidResponse,
    /// The trust bundle, SPIFFE format (JWKS).
    pub bundle: serde_json::Value,
}

/// `POST /v1/agent/renew`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsrRequest {
    /// Base64 DER PKCS#10.
    pub csr: String,
}

/// `POST /v1/agent/svids`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySvidRequest {
    pub entry_id: String,
    /// Base64 DER PKCS#10 for the workload key.
    pub csr: String,
}

/// `POST /v1/agent/jwt`: one of `entry_id` and `spiffe_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    pub audience: Vec<String>,
}

/// A JWT-SVID on the wire. `Debug` hides the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct JwtResponse {
    pub spiffe_id: String,
    pub token: String,
    /// Unix seconds.
    pub expires_at: u64,
}

impl std::fmt::Debug for JwtResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtResponse")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/agent/sync` parameters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncQuery {
    /// The revocation version the agent holds (0 at first).
    #[serde(default)]
    pub since: u64,
    /// The digest of the entries and bundle the agent holds ("" at first).
    #[serde(default)]
    pub digest: String,
    /// Seconds to wait for a change (capped at [`MAX_SYNC_WAIT`]); 0 answers
    /// at once.
    #[serde(default)]
    pub wait: Option<u64>,
    /// The policy document revision the agent holds; an agent that sends
    /// it also gets the enforcer half of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_since: Option<u64>,
    /// The digest of the posture and grants the agent holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_digest: Option<String>,
}

/// What an agent holds after a sync.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The revocation version this answer brings the agent to.
    pub version: u64,
    /// Digest of `entries` and `bundle`.
    pub digest: String,
    /// Every entry the agent serves (the whole set, not a delta).
    pub entries: Vec<RegistrationEntry>,
    /// The trust bundle, SPIFFE format (JWKS).
    pub bundle: serde_json::Value,
    /// Revocations in force after `since`, in version order.
    pub revocations: Vec<Revocation>,
    /// More revocations follow: sync again at once.
    #[serde(default)]
    pub more: bool,
    /// Policies, exceptions, posture and grants for the node's enforcers,
    /// when the agent asked (`policy_since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforcer: Option<crate::enforce::EnforcerSync>,
    /// The bundles of federated trust domains (SPIFFE format), by trust
    /// domain; part of `digest`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub federated_bundles: std::collections::BTreeMap<String, serde_json::Value>,
}

/// The node API routes, merged into the API router.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/v1/agent/attest", post(attest))
        .route("/v1/agent/renew", post(renew))
        .route("/v1/agent/sync", get(sync))
        .route("/v1/agent/svids", post(entry_svid))
        .route("/v1/agent/jwt", post(jwt))
        .layer(DefaultBodyLimit::max(MAX_NODE_BODY))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn forbidden(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, msg.into())
}

fn decode_csr(field: &str, v: &str) -> ApiResult<Vec<u8>> {
    if v.is_empty() || v.len() > MAX_NODE_BODY {
        return Err(bad(format!("{field}: a base64 DER PKCS#10 request")));
    }
    let der = b64()
        .decode(v.trim())
        .map_err(|e| bad(format!("{field}: not base64: {e}")))?;
    // Parse before anything is spent (the CA checks the signature).
    use x509_parser::prelude::FromDer;
    x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| bad(format!("{field}: not a PKCS#10 request: {e}")))?;
    Ok(der)
}

/// The attested agent making this call, or why it may not.
fn agent_caller(s: &ServerState, p: &PeerIdentity) -> ApiResult<AgentRecord> {
    let id = p.0.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "agent calls need the agent's node X509-SVID over mTLS".into(),
        )
    })?;
    if id.trust_domain() != &s.config.trust_domain {
        return Err(forbidden(format!("{id} is not in this trust domain")));
    }
    let rec = s
        .store()
        .agent(id)?
        .ok_or_else(|| forbidden(format!("{id} is not an attested agent")))?;
    if rec.banned {
        tracing::warn!(agent = %id, "call from a banned agent refused");
        return Err(forbidden(format!("agent {id} is banned")));
    }
    Ok(rec)
}

fn is_node_entry(e: &RegistrationEntry) -> bool {
    e.selectors
        .iter()
        .all(|s| matches!(s.kind.as_str(), "join_token" | "k8s_psat"))
}

/// The entries `agent` serves, sorted by id.
pub fn served_entries(all: Vec<RegistrationEntry>, agent: &AgentRecord) -> Vec<RegistrationEntry> {
    let reg = Registry::new(all);
    let aliases: Vec<SpiffeId> = reg
        .node_aliases(&agent.selectors)
        .into_iter()
        .cloned()
        .collect();
    let mut out: Vec<RegistrationEntry> = reg
        .entries()
        .iter()
        .filter(|e| match &e.parent_id {
            Some(p) => p == &agent.spiffe_id || aliases.contains(p),
            None => !is_node_entry(e),
        })
        .cloned()
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The digest of what an agent holds besides revocations.
pub fn sync_digest(entries: &[RegistrationEntry], bundle_json: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(entries).unwrap_or_default());
    h.update(b"\n");
    h.update(bundle_json.as_bytes());
    hex::encode(&h.finalize()[..16])
}

fn node_svid(s: &ServerState, id: &SpiffeId, csr: &[u8]) -> ApiResult<X509Svid> {
    s.ca()
        .mint_x509_svid(
            id,
            SvidKey::Csr(csr),
            &SvidOptions::default(),
            SystemTime::now(),
        )
        .map_err(|e| bad(format!("csr: {e}")))
}

fn attest_status(e: &AttestError) -> StatusCode {
    match e {
        AttestError::Store(_) | AttestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        AttestError::MalformedToken(_) | AttestError::Config(_) => StatusCode::BAD_REQUEST,
        AttestError::ServiceAccountNotAllowed(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    }
}

async fn attest(
    State(s): St,
    body: Result<Json<AttestRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<AttestResponse>)> {
    let Json(r) = body.map_err(|e| bad(e.body_text()))?;
    let csr = decode_csr("csr", &r.csr)?;
    let now = SystemTime::now();
    let node = match (r.join_token, r.psat) {
        (Some(_), Some(_)) => return Err(bad("give exactly one of join_token and psat")),
        (Some(token), None) => {
            let td = s.config.trust_domain.clone();
            let res = {
                let mut st = s.store();
                attest_join_token(st.as_mut(), &td, token.trim(), now)
            };
            res.map_err(|e| {
                tracing::warn!(error = %e, "agent attestation refused");
                ApiError(attest_status(&e), format!("join_token: {e}"))
            })?
        }
        (None, Some(token)) => {
            if token.len() > keycard_identity::jose::MAX_TOKEN_BYTES {
                return Err(bad("psat: the token is too large"));
            }
            let td = s.config.trust_domain.clone();
            crate::psat::attest(&s.config.k8s_psat, &td, &token, r.cluster.as_deref())
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, cluster = ?r.cluster, "agent attestation refused (k8s_psat)");
                    ApiError(attest_status(&e), format!("psat: {e}"))
                })?
        }
        (None, None) => return Err(bad("give exactly one of join_token and psat")),
    };
    if s.store().agent(&node.spiffe_id)?.is_some_and(|a| a.banned) {
        tracing::warn!(agent = %node.spiffe_id, "attestation of a banned agent refused");
        return Err(forbidden(format!("agent {} is banned", node.spiffe_id)));
    }
    let svid = node_svid(&s, &node.spiffe_id, &csr)?;
    s.store().put_agent(&AgentRecord {
        spiffe_id: node.spiffe_id.clone(),
        attestation: node.attestation.to_string(),
        selectors: node.selectors.clone(),
        serial: svid.serial.clone(),
        expires_at: unix(svid.not_after),
        banned: false,
        last_seen: unix(now),
    })?;
    tracing::info!(agent = %node.spiffe_id, attestation = node.attestation, serial = %svid.serial, "agent attested");
    let bundle = s.ca().bundle().to_value();
    Ok((
        StatusCode::CREATED,
        Json(AttestResponse {
            agent_id: node.spiffe_id.to_string(),
            svid: SvidResponse::of(&svid),
            bundle,
        }),
    ))
}

async fn renew(
    State(s): St,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<CsrRequest>, JsonRejection>,
) -> ApiResult<Json<SvidResponse>> {
    let mut agent = agent_caller(&s, &p)?;
    let Json(r) = body.map_err(|e| bad(e.body_text()))?;
    let csr = decode_csr("csr", &r.csr)?;
    let svid = node_svid(&s, &agent.spiffe_id, &csr)?;
    agent.serial = svid.serial.clone();
    agent.expires_at = unix(svid.not_after);
    agent.last_seen = unix(SystemTime::now());
    s.store().put_agent(&agent)?;
    tracing::info!(agent = %agent.spiffe_id, serial = %svid.serial, "node SVID renewed");
    Ok(Json(SvidResponse::of(&svid)))
}

/// The agent's view now: served entries, bundle, revocations after `since`.
fn snapshot(s: &ServerState, agent: &AgentRecord, since: u64) -> ApiResult<SyncResponse> {
    let (all, revs) = {
        let st = s.store();
        (st.list_entries()?, st.revocations_since(since)?)
    };
    let entries = served_entries(all, agent);
    let bundle = s.ca().bundle().clone();
    let mut bundle_json = bundle.to_json();
    let federated_bundles: std::collections::BTreeMap<String, serde_json::Value> =
        crate::federation::federated_bundles(s)
            .into_iter()
            .map(|b| (b.trust_domain.to_string(), b.to_value()))
            .collect();
    for (td, b) in &federated_bundles {
        bundle_json.push_str(&format!("\n{td} {b}"));
    }
    let digest = sync_digest(&entries, &bundle_json);
    let now = unix(SystemTime::now());
    let mut version = since;
    let mut revocations = Vec::new();
    let mut more = false;
    for r in revs {
        if revocations.len() == MAX_SYNC_REVOCATIONS {
            more = true;
            break;
        }
        version = version.max(r.version);
        if r.until.is_none_or(|u| u > now) {
            revocations.push(r);
        }
    }
    Ok(SyncResponse {
        version,
        digest,
        entries,
        bundle: bundle.to_value(),
        revocations,
        more,
        federated_bundles,
        enforcer: None,
    })
}

/// The enforcer half of a sync answer, when the agent asks for it.
fn enforcer_part(
    s: &ServerState,
    q: &SyncQuery,
) -> ApiResult<Option<crate::enforce::EnforcerSync>> {
    let Some(since) = q.policy_since else {
        return Ok(None);
    };
    let st = s.store();
    Ok(Some(crate::enforce::snapshot(
        st.as_ref(),
        since,
        q.control_digest.as_deref().unwrap_or(""),
        unix(SystemTime::now()),
    )?))
}

/// Whether an answer brings the agent anything it does not hold.
fn news(resp: &SyncResponse, q: &SyncQuery) -> bool {
    resp.version != q.since
        || resp.digest != q.digest
        || resp.enforcer.as_ref().is_some_and(|e| {
            Some(e.revision) != q.policy_since
                || Some(e.control_digest.as_str()) != q.control_digest.as_deref()
        })
}

async fn sync(
    State(s): St,
    Extension(p): Extension<PeerIdentity>,
    q: Result<Query<SyncQuery>, QueryRejection>,
) -> ApiResult<Json<SyncResponse>> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    let wait = q
        .wait
        .map_or(MAX_SYNC_WAIT, Duration::from_secs)
        .min(MAX_SYNC_WAIT);
    let deadline = Instant::now() + wait;
    // Subscribe before reading, so a change between the read and the wait
    // is not missed.
    let mut changes = s.watch_changes();
    let shared = s.config.postgres.is_some();
    loop {
        let agent = agent_caller(&s, &p)?;
        let mut resp = snapshot(&s, &agent, q.since)?;
        resp.enforcer = enforcer_part(&s, &q)?;
        if news(&resp, &q) {
            return Ok(Json(resp));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Json(resp));
        }
        let mut slice = deadline - now;
        if shared {
            slice = slice.min(SHARED_STORE_POLL);
        }
        if let Ok(Err(_)) = tokio::time::timeout(slice, changes.changed()).await {
            // The server is going away.
            return Ok(Json(resp));
        }
    }
}

/// The served entry `pick` selects, if this agent may have its SVIDs now.
fn authorised_entry(
    s: &ServerState,
    agent: &AgentRecord,
    what: &str,
    pick: impl Fn(&RegistrationEntry) -> bool,
) -> ApiResult<RegistrationEntry> {
    let (all, revs) = {
        let st = s.store();
        (st.list_entries()?, st.revocations_since(0)?)
    };
    let entry = served_entries(all, agent)
        .into_iter()
        .find(|e| pick(e))
        .ok_or_else(|| {
            tracing::warn!(agent = %agent.spiffe_id, %what, "SVID refused: not an entry of this agent");
            forbidden(format!(
                "{what} is not an entry served by agent {}",
                agent.spiffe_id
            ))
        })?;
    let mut set = RevocationSet::new();
    set.apply(&revs);
    set.prune(SystemTime::now());
    set.check_renewal(&entry, &agent.spiffe_id).map_err(|e| {
        tracing::warn!(agent = %agent.spiffe_id, error = %e, "SVID refused: revoked");
        forbidden(e.to_string())
    })?;
    Ok(entry)
}

async fn entry_svid(
    State(s): St,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<EntrySvidRequest>, JsonRejection>,
) -> ApiResult<Json<SvidResponse>> {
    let agent = agent_caller(&s, &p)?;
    let Json(r) = body.map_err(|e| bad(e.body_text()))?;
    if r.entry_id.is_empty() || r.entry_id.len() > 256 {
        return Err(bad("entry_id: 1 to 256 bytes"));
    }
    let csr = decode_csr("csr", &r.csr)?;
    let entry = authorised_entry(&s, &agent, &format!("entry {}", r.entry_id), |e| {
        e.id == r.entry_id
    })?;
    let opts = SvidOptions {
        dns_names: entry.dns_names.clone(),
        ttl: Some(Duration::from_secs(entry.x509_ttl_secs)),
    };
    let svid = s
        .ca()
        .mint_x509_svid(
            &entry.spiffe_id,
            SvidKey::Csr(&csr),
            &opts,
            SystemTime::now(),
        )
        .map_err(|e| bad(format!("csr: {e}")))?;
    tracing::info!(agent = %agent.spiffe_id, entry = %entry.id, spiffe_id = %entry.spiffe_id, serial = %svid.serial, "X509-SVID issued to agent");
    Ok(Json(SvidResponse::of(&svid)))
}

async fn jwt(
    State(s): St,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<JwtRequest>, JsonRejection>,
) -> ApiResult<Json<JwtResponse>> {
    let agent = agent_caller(&s, &p)?;
    let Json(r) = body.map_err(|e| bad(e.body_text()))?;
    if r.audience.is_empty()
        || r.audience.len() > 32
        || r.audience.iter().any(|a| a.is_empty() || a.len() > 512)
    {
        return Err(bad("audience: 1 to 32 non-empty values"));
    }
    let entry = match (&r.entry_id, &r.spiffe_id) {
        (Some(id), None) => authorised_entry(&s, &agent, &format!("entry {id}"), |e| &e.id == id)?,
        (None, Some(sid)) => {
            let sid: SpiffeId = sid.parse().map_err(|e| bad(format!("spiffe_id: {e}")))?;
            authorised_entry(&s, &agent, &sid.to_string(), |e| e.spiffe_id == sid)?
        }
        _ => return Err(bad("give exactly one of entry_id and spiffe_id")),
    };
    let j = s
        .ca()
        .mint_jwt_svid(
            &entry.spiffe_id,
            &r.audience,
            Some(Duration::from_secs(entry.jwt_ttl_secs)),
            SystemTime::now(),
        )
        .map_err(|e| bad(e.to_string()))?;
    tracing::info!(agent = %agent.spiffe_id, spiffe_id = %entry.spiffe_id, "JWT-SVID issued to agent");
    Ok(Json(JwtResponse {
        spiffe_id: j.spiffe_id.to_string(),
        token: j.token,
        expires_at: unix(j.expiry),
    }))
}
