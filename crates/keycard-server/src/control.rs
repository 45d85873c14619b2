//! Continuous verification inputs: posture signals per identity, and
//! just-in-time grants.
//!
//! - **Posture**: attributes of an identity (device health, location, risk
//!   score, anything a signal source knows), set through the API with an
//!   expiry. Enforcers read them as `posture.<name>` in policy conditions;
//!   an expired signal is gone, so a stale "healthy" never stands.
//! - **Grants**: a time-boxed role or policy exception with a requester, an
//!   approver (never the requester) and a reason. A grant does nothing until
//!   approved, ends by itself at its expiry, and every request, approval and
//!   expiry is recorded in the decision log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use keycard_store::{IdentityStore, StoreError};

use crate::api::{caller, record, ApiError, ApiResult, PeerIdentity};
use crate::auth::Role;
use crate::state::{unix, ServerState};

const POSTURE_PREFIX: &str = "posture/";
const GRANT_PREFIX: &str = "grant/";
/// Longest posture signal or grant.
const MAX_TTL: u64 = 30 * 86400;
/// Most attributes in one posture signal.
const MAX_ATTRIBUTES: usize = 32;

/// The posture of one identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Posture {
    /// A SPIFFE ID or user name.
    pub subject: String,
    /// `device_health`, `location`, `risk`, ...: strings, numbers or booleans.
    pub attributes: BTreeMap<String, Value>,
    pub set_by: String,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What a grant gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GrantKind {
    /// An API role for a principal (`token:<name>` or a SPIFFE ID).
    Role { role: Role },
    /// An exception to a policy rule, for resources matching `resource`
    /// (exact, or a prefix ending in `*`).
    Exception {
        policy: String,
        rule: String,
        resource: String,
    },
}

/// Where a grant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    Pending,
    Active,
    Expired,
}

/// A just-in-time grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    #[serde(flatten)]
    pub kind: GrantKind,
    /// Who or what it is for.
    pub subject: String,
    pub requester: String,
    pub reason: String,
    pub duration_secs: u64,
    pub status: GrantStatus,
    pub approver: Option<String>,
    /// Unix seconds.
    pub requested_at: u64,
    pub expires_at: Option<u64>,
}

impl Grant {
    /// Is it in force at `now`?
    pub fn active_at(&self, now: u64) -> bool {
        self.status == GrantStatus::Active && self.expires_at.is_some_and(|e| now < e)
    }
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Malformed(format!("{key}: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Malformed(e.to_string()))
}

/// Every posture signal still valid at `now`.
pub fn postures(store: &dyn IdentityStore, now: u64) -> Result<Vec<Posture>, StoreError> {
    store
        .values_with_prefix(POSTURE_PREFIX)?
        .into_iter()
        .map(|(k, v)| decode::<Posture>(&k, &v))
        .filter(|p| p.as_ref().map_or(true, |p| now < p.expires_at))
        .collect()
}

/// Every grant, with `status` brought up to date for `now`.
pub fn grants(store: &dyn IdentityStore, now: u64) -> Result<Vec<Grant>, StoreError> {
    let mut out: Vec<Grant> = store
        .values_with_prefix(GRANT_PREFIX)?
        .into_iter()
        .map(|(k, v)| decode::<Grant>(&k, &v))
        .collect::<Result<_, _>>()?;
    for g in &mut out {
        if g.status == GrantStatus::Active && !g.active_at(now) {
            g.status = GrantStatus::Expired;
        }
    }
    Ok(out)
}

/// The highest role an active grant gives `principal` at `now`, if any.
pub fn granted_role(
    store: &dyn IdentityStore,
    principal: &str,
    now: u64,
) -> Result<Option<Role>, StoreError> {
    Ok(grants(store, now)?
        .into_iter()
        .filter(|g| g.subject == principal && g.active_at(now))
        .filter_map(|g| match g.kind {
            GrantKind::Role { role } => Some(role),
            GrantKind::Exception { .. } => None,
        })
        .max())
}

/// Marks grants past their expiry as expired, recording each expiry in the
/// decision log; returns how many expired.
pub fn expire_grants(state: &ServerState, now: u64) -> Result<usize, String> {
    let due: Vec<Grant> = {
        let st = state.store();
        st.values_with_prefix(GRANT_PREFIX)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter_map(|(k, v)| decode::<Grant>(&k, &v).ok())
            .filter(|g| g.status == GrantStatus::Active && !g.active_at(now))
            .collect()
    };
    for g in &due {
        state
            .decisions
            .admin("keycard", "grant.expire", &g.subject, json!(g))
            .map_err(|e| e.to_string())?;
        let mut done = g.clone();
        done.status = GrantStatus::Expired;
        let bytes = encode(&done).map_err(|e| e.to_string())?;
        state
            .store()
            .put_value(&format!("{GRANT_PREFIX}{}", g.id), &bytes)
            .map_err(|e| e.to_string())?;
        tracing::info!(grant = %g.id, subject = %g.subject, "grant expired");
    }
    if !due.is_empty() {
        state.changed();
    }
    Ok(due.len())
}

/// Runs [`expire_grants`] every `every` until `stop` flips.
pub async fn expiry_loop(
    state: Arc<ServerState>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = expire_grants(&state, unix(SystemTime::now())) {
            tracing::warn!(error = %e, "grant expiry failed; will retry");
        }
    }
}

type St = State<Arc<ServerState>>;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/v1/posture", get(list_posture).post(set_posture))
        .route("/v1/posture/clear", post(clear_posture))
        .route("/v1/grants", get(list_grants).post(request_grant))
        .route("/v1/grants/{id}/approve", post(approve_grant))
        .route("/v1/decisions", get(list_decisions))
}

/// Filters of `GET /v1/decisions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionQuery {
    subject: Option<String>,
    resource: Option<String>,
    outcome: Option<String>,
    policy: Option<String>,
    point: Option<String>,
    /// Unix milliseconds, inclusive.
    since_ms: Option<i64>,
    /// Unix milliseconds, exclusive.
    until_ms: Option<i64>,
    /// Log index to start from (paging).
    from_index: Option<u64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<u64>,
}

async fn list_decisions(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    q: Result<axum::extract::Query<DecisionQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let axum::extract::Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let filter = keycard_store::EntryFilter {
        subject: q.subject,
        resource: q.resource,
        outcome: q.outcome,
        policy: q.policy,
        point: q.point,
        since_ms: q.since_ms,
        until_ms: q.until_ms,
        from_index: q.from_index,
        limit: Some(q.limit.unwrap_or(100).clamp(1, 1000)),
    };
    let records = s
        .decisions
        .query(&filter)
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({ "decisions": records })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostureRequest {
    subject: String,
    attributes: BTreeMap<String, Value>,
    ttl_secs: u64,
}

async fn set_posture(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<PostureRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.subject.is_empty() || r.subject.len() > 2048 {
        return Err(ApiError::bad("subject: 1 to 2048 bytes"));
    }
    if !(1..=MAX_TTL).contains(&r.ttl_secs) {
        return Err(ApiError::bad(format!("ttl_secs: 1 to {MAX_TTL}")));
    }
    if r.attributes.is_empty() || r.attributes.len() > MAX_ATTRIBUTES {
        return Err(ApiError::bad(format!(
            "attributes: 1 to {MAX_ATTRIBUTES} entries"
        )));
    }
    for (k, v) in &r.attributes {
        let ok_key = !k.is_empty()
            && k.len() <= 64
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok_key {
            return Err(ApiError::bad(format!(
                "attributes: name {k:?} must be 1-64 of [A-Za-z0-9_]"
            )));
        }
        if !(v.is_string() || v.is_number() || v.is_boolean()) {
            return Err(ApiError::bad(format!(
                "attributes.{k}: a string, number or boolean"
            )));
        }
    }
    let posture = Posture {
        subject: r.subject.clone(),
        attributes: r.attributes,
        set_by: who.principal.clone(),
        expires_at: unix(SystemTime::now()) + r.ttl_secs,
    };
    record(&s, &who, "posture.set", &posture.subject, json!(posture))?;
    let bytes = encode(&posture)?;
    s.store()
        .put_value(&format!("{POSTURE_PREFIX}{}", posture.subject), &bytes)?;
    s.changed();
    Ok((StatusCode::CREATED, Json(json!(posture))))
}

async fn list_posture(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let list = postures(s.store().as_ref(), unix(SystemTime::now()))?;
    Ok(Json(json!({ "posture": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearRequest {
    subject: String,
}

async fn clear_posture(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<ClearRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    record(&s, &who, "posture.clear", &r.subject, json!({}))?;
    let existed = s
        .store()
        .delete_value(&format!("{POSTURE_PREFIX}{}", r.subject))?;
    s.changed();
    Ok(Json(json!({ "cleared": existed })))
}

// No deny_unknown_fields: serde cannot combine it with a flattened enum.
#[derive(Debug, Deserialize)]
struct GrantRequest {
    #[serde(flatten)]
    kind: GrantKind,
    subject: String,
    reason: String,
    duration_secs: u64,
}

async fn request_grant(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<GrantRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&s, &h, &p, Role::Auditor)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.subject.is_empty() || r.subject.len() > 2048 {
        return Err(ApiError::bad("subject: 1 to 2048 bytes"));
    }
    if r.reason.trim().is_empty() {
        return Err(ApiError::bad("reason: say why the grant is needed"));
    }
    if !(60..=MAX_TTL).contains(&r.duration_secs) {
        return Err(ApiError::bad(format!("duration_secs: 60 to {MAX_TTL}")));
    }
    let g = Grant {
        id: hex::encode(rand::random::<[u8; 8]>()),
        kind: r.kind,
        subject: r.subject,
        requester: who.principal.clone(),
        reason: r.reason,
        duration_secs: r.duration_secs,
        status: GrantStatus::Pending,
        approver: None,
        requested_at: unix(SystemTime::now()),
        expires_at: None,
    };
    record(&s, &who, "grant.request", &g.subject, json!(g))?;
    let bytes = encode(&g)?;
    s.store()
        .put_value(&format!("{GRANT_PREFIX}{}", g.id), &bytes)?;
    Ok((StatusCode::CREATED, Json(json!(g))))
}

async fn approve_grant(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let key = format!("{GRANT_PREFIX}{id}");
    let bytes = s
        .store()
        .value(&key)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no grant {id}")))?;
    let mut g: Grant = decode(&key, &bytes)?;
    if g.status != GrantStatus::Pending {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("grant {id} is not pending"),
        ));
    }
    if g.requester == who.principal {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "a grant needs an approver other than its requester".into(),
        ));
    }
    if let GrantKind::Role { role } = g.kind {
        if !who.role.allows(role) {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("{} cannot grant role {role}", who.principal),
            ));
        }
    }
    let now = unix(SystemTime::now());
    g.status = GrantStatus::Active;
    g.approver = Some(who.principal.clone());
    g.expires_at = Some(now + g.duration_secs);
    record(&s, &who, "grant.approve", &g.subject, json!(g))?;
    s.store().put_value(&key, &encode(&g)?)?;
    s.changed();
    Ok(Json(json!(g)))
}

async fn list_grants(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let list = grants(s.store().as_ref(), unix(SystemTime::now()))?;
    Ok(Json(json!({ "grants": list })))
}
