//! The HTTPS REST/JSON API: everything the CLI does, for people and tools.
//!
//! Every route but `/healthz`, `/openapi.json` and the public bundle
//! endpoint `/bundle` needs a credential (see [`crate::auth`]) and a role:
//! `auditor` reads, `operator` changes identities and revocations, `admin`
//! also manages API tokens and bans agents. Errors are JSON
//! `{"error": "..."}` with the status that says why (400 bad input, 401 no
//! or unknown credential, 403 role too weak, 404, 409 conflict, 413 body
//! too large, 503 store unavailable).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use keycard_core::{RevocationKind, Selector, SpiffeId};
use keycard_identity::{generate_join_token, validate_entry, EntryLimits, NewEntry};
use keycard_store::StoreError;

use crate::auth::{self, Caller, Role};
use crate::state::{unix, ServerState};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// An API failure, rendered as JSON with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Duplicate(_) => StatusCode::CONFLICT,
            StoreError::Full(_) | StoreError::ReadOnly(_) => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::warn!(error = %e, "store error in API call");
        ApiError(status, e.to_string())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Records an administrative change in the decision log before it is
/// applied: if the log cannot take it, the change is refused (fail closed).
pub(crate) fn record(
    s: &ServerState,
    who: &Caller,
    action: &str,
    resource: &str,
    change: Value,
) -> ApiResult<String> {
    s.decisions
        .admin(&who.principal, action, resource, change)
        .map_err(|e| {
            tracing::error!(error = %e, action, "decision log unavailable; change refused");
            ApiError(
                StatusCode::INSUFFICIENT_STORAGE,
                format!("the decision log cannot record this change, so it was not made: {e}"),
            )
        })
}
type St = State<Arc<ServerState>>;

/// The peer of a TLS connection, as the listener saw it: the SPIFFE ID of
/// a verified client certificate, if the client presented one.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<SpiffeId>);

/// Authenticates the request and checks its role.
pub(crate) fn caller(
    state: &ServerState,
    headers: &HeaderMap,
    peer: &PeerIdentity,
    needed: Role,
) -> ApiResult<Caller> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_string());
    let found = if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let token = v
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("use `Authorization: Bearer <token>`"))?;
        let t = auth::lookup_token(state.store().as_ref(), token.trim())?
            .ok_or_else(|| unauthorized("unknown or revoked API token"))?;
        Caller {
            principal: format!("token:{}", t.name),
            role: t.role,
        }
    } else if let Some(id) = &peer.0 {
        // An mTLS client: an admin only if some entry for its ID says so.
        let admin = state
            .store()
            .list_entries()?
            .iter()
            .any(|e| e.admin && &e.spiffe_id == id);
        if !admin {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("{id} has no admin entry"),
            ));
        }
        Caller {
            principal: id.to_string(),
            role: Role::Admin,
        }
    } else {
        return Err(unauthorized(
            "no credential: send a bearer token or an admin X509-SVID",
        ));
    };
    // A just-in-time grant may raise the role for its duration.
    let mut found = found;
    if !found.role.allows(needed) {
        if let Some(r) = crate::control::granted_role(
            state.store().as_ref(),
            &found.principal,
            unix(SystemTime::now()),
        )? {
            if r > found.role {
                tracing::info!(principal = %found.principal, role = %r, "role raised by an active grant");
                found.role = r;
            }
        }
    }
    if !found.role.allows(needed) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} has role {}, this call needs {needed}",
                found.principal, found.role
            ),
        ));
    }
    Ok(found)
}

/// The router, over `state`. The listener adds a [`PeerIdentity`]
/// extension to every request.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/openapi.json", get(openapi))
        .route("/bundle", get(bundle))
        .route("/v1/entries", get(list_entries).post(create_entry))
        .route("/v1/entries/{id}", get(show_entry).delete(delete_entry))
        .route("/v1/join-tokens", post(create_join_token))
        .route("/v1/agents", get(list_agents))
        .route("/v1/agents/ban", post(ban_agent))
        .route("/v1/revocations", get(list_revocations).post(revoke))
        .route("/v1/api-tokens", post(create_api_token))
        .merge(crate::node_api::routes())
        .merge(crate::control::routes())
        .merge(crate::policies::routes())
        .merge(crate::metrics::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn bundle(State(s): St) -> Response {
    let body = s.ca().bundle().to_json();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn list_entries(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let entries = s.store().list_entries()?;
    Ok(Json(json!({ "entries": entries })))
}

async fn show_entry(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let e = s
        .store()
        .entry(&id)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no entry {id}")))?;
    Ok(Json(json!(e)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryRequest {
    spiffe_id: String,
    #[serde(default)]
    parent_id: Option<String>,
    selectors: Vec<String>,
    #[serde(default)]
    x509_ttl_secs: Option<u64>,
    #[serde(default)]
    jwt_ttl_secs: Option<u64>,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    admin: bool,
}

async fn create_entry(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<EntryRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.admin && who.role != Role::Admin {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only an admin may create an admin entry".into(),
        ));
    }
    let spiffe_id: SpiffeId = r
        .spiffe_id
        .parse()
        .map_err(|e| ApiError::bad(format!("spiffe_id: {e}")))?;
    let parent_id = r
        .parent_id
        .map(|p| p.parse::<SpiffeId>())
        .transpose()
        .map_err(|e| ApiError::bad(format!("parent_id: {e}")))?;
    let selectors = r
        .selectors
        .iter()
        .map(|s| s.parse::<Selector>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad(format!("selectors: {e}")))?;
    let entry = validate_entry(
        NewEntry {
            spiffe_id,
            parent_id,
            selectors,
            x509_ttl_secs: r.x509_ttl_secs,
            jwt_ttl_secs: r.jwt_ttl_secs,
            dns_names: r.dns_names,
            admin: r.admin,
        },
        &s.config.trust_domain,
        &EntryLimits::default(),
        SystemTime::now(),
    )
    .map_err(|e| ApiError::bad(e.to_string()))?;
    record(
        &s,
        &who,
        "entry.create",
        &entry.spiffe_id.to_string(),
        json!(entry),
    )?;
    s.store().create_entry(&entry)?;
    tracing::info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, by = %who.principal, "entry created");
    s.changed();
    Ok((StatusCode::CREATED, Json(json!(entry))))
}

async fn delete_entry(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let found = s
        .store()
        .entry(&id)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no entry {id}")))?;
    record(
        &s,
        &who,
        "entry.delete",
        &found.spiffe_id.to_string(),
        json!(found),
    )?;
    let e = s
        .store()
        .delete_entry(&id)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no entry {id}")))?;
    // Renewals stop at once: agents drop the entry on the change, and
    // enforcers learn the revocation of what it issued.
    let until = unix(SystemTime::now()) + e.x509_ttl_secs.max(e.jwt_ttl_secs);
    s.revoke(
        RevocationKind::Entry,
        &e.id,
        &format!("entry deleted by {}", who.principal),
        Some(until),
    )?;
    tracing::info!(entry = %e.id, spiffe_id = %e.spiffe_id, by = %who.principal, "entry deleted");
    Ok(Json(json!(e)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinTokenRequest {
    #[serde(default)]
    ttl_secs: Option<u64>,
    #[serde(default)]
    agent_id: Option<String>,
}

async fn create_join_token(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<JoinTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let ttl = r.ttl_secs.unwrap_or(600);
    if !(10..=7 * 86400).contains(&ttl) {
        return Err(ApiError::bad("ttl_secs: between 10 and 604800"));
    }
    let agent_id = r
        .agent_id
        .map(|a| a.parse::<SpiffeId>())
        .transpose()
        .map_err(|e| ApiError::bad(format!("agent_id: {e}")))?;
    let td = s.config.trust_domain.clone();
    record(
        &s,
        &who,
        "join_token.create",
        agent_id.as_ref().map_or("agent", |_| "agent (fixed id)"),
        json!({ "ttl_secs": ttl, "agent_id": agent_id.as_ref().map(ToString::to_string) }),
    )?;
    let t = {
        let mut st = s.store();
        generate_join_token(
            st.as_mut(),
            &td,
            Duration::from_secs(ttl),
            agent_id,
            SystemTime::now(),
        )
        .map_err(|e| ApiError::bad(e.to_string()))?
    };
    tracing::info!(by = %who.principal, agent_id = %t.agent_id, "join token issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": t.token.as_str(),
            "expires_at": t.expires_at,
            "agent_id": t.agent_id.to_string(),
        })),
    ))
}

async fn list_agents(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    Ok(Json(json!({ "agents": s.store().list_agents()? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BanRequest {
    spiffe_id: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn ban_agent(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<BanRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let who = caller(&s, &h, &p, Role::Admin)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let id: SpiffeId = r
        .spiffe_id
        .parse()
        .map_err(|e| ApiError::bad(format!("spiffe_id: {e}")))?;
    let mut agent = s
        .store()
        .agent(&id)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no agent {id}")))?;
    agent.banned = true;
    record(
        &s,
        &who,
        "agent.ban",
        &id.to_string(),
        json!({ "reason": r.reason }),
    )?;
    s.store().put_agent(&agent)?;
    let reason = r
        .reason
        .unwrap_or_else(|| format!("banned by {}", who.principal));
    let version = s.revoke(RevocationKind::Agent, &id.to_string(), &reason, None)?;
    Ok(Json(
        json!({ "banned": id.to_string(), "version": version }),
    ))
}

#[derive(Debug, Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
}

async fn list_revocations(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    q: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    Ok(Json(
        json!({ "revocations": s.store().revocations_since(q.since)? }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    kind: RevocationKind,
    subject: String,
    reason: String,
    #[serde(default)]
    until: Option<u64>,
}

async fn revoke(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<RevokeRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.subject.is_empty() || r.subject.len() > 2048 {
        return Err(ApiError::bad("subject: 1 to 2048 bytes"));
    }
    if r.kind == RevocationKind::Identity {
        r.subject
            .parse::<SpiffeId>()
            .map_err(|e| ApiError::bad(format!("subject: {e}")))?;
    }
    let reason = format!("{} (by {})", r.reason, who.principal);
    record(
        &s,
        &who,
        "revoke",
        &r.subject,
        json!({ "kind": r.kind, "reason": r.reason, "until": r.until }),
    )?;
    let version = s.revoke(r.kind, &r.subject, &reason, r.until)?;
    Ok((StatusCode::CREATED, Json(json!({ "version": version }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    name: String,
    role: Role,
}

async fn create_api_token(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<TokenRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = caller(&s, &h, &p, Role::Admin)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.name.is_empty() || r.name.len() > 128 {
        return Err(ApiError::bad("name: 1 to 128 bytes"));
    }
    record(
        &s,
        &who,
        "api_token.create",
        &r.name,
        json!({ "name": r.name, "role": r.role }),
    )?;
    let token = {
        let mut st = s.store();
        auth::issue_token(st.as_mut(), &r.name, r.role, unix(SystemTime::now()))?
    };
    tracing::info!(name = %r.name, role = %r.role, by = %who.principal, "API token issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": r.name, "role": r.role, "token": token })),
    ))
}

async fn openapi() -> Json<Value> {
    Json(openapi_document())
}

/// The OpenAPI 3.1 description of this API, served at `/openapi.json`.
pub fn openapi_document() -> Value {
    let decision_params: Vec<Value> = ["subject", "resource", "outcome", "policy", "point"]
        .iter()
        .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}}))
        .chain(
            ["since_ms", "until_ms", "from_index", "limit"]
                .iter()
                .map(|n| json!({"name": n, "in": "query", "schema": {"type": "integer"}})),
        )
        .collect();
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let auth = json!([{"bearer": []}, {"mtls": []}]);
    let op = |summary: &str, role: &str, body: Option<&str>, ok: &str| {
        let mut o = json!({
            "summary": summary,
            "description": format!("Needs role `{role}`."),
            "security": auth.clone(),
            "responses": {
                ok: {"description": "success", "content": {"application/json": {}}},
                "400": err.clone(), "401": err.clone(), "403": err.clone()
            }
        });
        if let Some(b) = body {
            o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        o
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "keycard control plane", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/healthz": {"get": {"summary": "liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/metrics": {"get": op("Prometheus metrics (OpenMetrics text): certificate expiries, counts", "auditor", None, "200")},
            "/bundle": {"get": {"summary": "the trust bundle (SPIFFE bundle format), public", "security": [], "responses": {"200": {"description": "JWKS"}}}},
            "/v1/entries": {
                "get": op("list registration entries", "auditor", None, "200"),
                "post": op("create a registration entry", "operator", Some("EntryRequest"), "201")
            },
            "/v1/entries/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": op("show an entry", "auditor", None, "200"),
                "delete": op("delete an entry (and revoke what it issued)", "operator", None, "200")
            },
            "/v1/join-tokens": {"post": op("issue a single-use join token for an agent", "operator", Some("JoinTokenRequest"), "201")},
            "/v1/agents": {"get": op("list agents", "auditor", None, "200")},
            "/v1/agents/ban": {"post": op("ban an agent", "admin", Some("BanRequest"), "200")},
            "/v1/revocations": {
                "get": {
                    "summary": "the revocation feed after a version",
                    "security": auth.clone(),
                    "parameters": [{"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
                    "responses": {"200": {"description": "revocations"}, "401": err.clone(), "403": err.clone()}
                },
                "post": op("revoke an identity, agent, entry, serial or token", "operator", Some("RevokeRequest"), "201")
            },
            "/v1/api-tokens": {"post": op("issue an API token with a role", "admin", Some("TokenRequest"), "201")},
            "/v1/posture": {
                "get": op("posture signals in force", "auditor", None, "200"),
                "post": op("set the posture of an identity, with an expiry", "operator", Some("PostureRequest"), "201")
            },
            "/v1/posture/clear": {"post": op("clear the posture of an identity", "operator", Some("ClearRequest"), "200")},
            "/v1/grants": {
                "get": op("grants, with their status", "auditor", None, "200"),
                "post": op("request a time-boxed role or exception", "auditor", Some("GrantRequest"), "201")
            },
            "/v1/decisions": {
                "get": {
                    "summary": "decision records, filtered (subject, resource, outcome, policy, point, since_ms, until_ms, from_index, limit)",
                    "security": auth.clone(),
                    "parameters": decision_params,
                    "responses": {"200": {"description": "records"}, "401": err.clone(), "403": err.clone()}
                }
            },
            "/v1/policies": {
                "get": op("policies (authz, rego, gatekeeper), without their text, and the document revision", "auditor", None, "200"),
                "post": op("create a policy, validated first (409 if the name exists)", "operator", Some("PolicyRequest"), "201")
            },
            "/v1/policies/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": op("show a policy with its text", "auditor", None, "200"),
                "put": op("create or replace a policy, validated first", "operator", Some("PolicyRequest"), "200"),
                "delete": op("delete a policy", "operator", None, "200")
            },
            "/v1/exceptions": {
                "get": op("exception documents, without their text", "auditor", None, "200"),
                "post": op("create an exceptions document, validated first", "operator", Some("ExceptionRequest"), "201")
            },
            "/v1/exceptions/{name}": {
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "get": op("show an exceptions document", "auditor", None, "200"),
                "put": op("create or replace an exceptions document", "operator", Some("ExceptionRequest"), "200"),
                "delete": op("delete an exceptions document", "operator", None, "200")
            },
            "/v1/grants/{id}/approve": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "post": op("approve a pending grant (not by its requester)", "operator", None, "200")
            }
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "mtls": {"type": "mutualTLS", "description": "an X509-SVID whose entry has admin: true"}
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "EntryRequest": {"type": "object", "required": ["spiffe_id", "selectors"], "additionalProperties": false, "properties": {
                    "spiffe_id": {"type": "string"}, "parent_id": {"type": "string"},
                    "selectors": {"type": "array", "items": {"type": "string", "examples": ["unix:uid:1000"]}},
                    "x509_ttl_secs": {"type": "integer"}, "jwt_ttl_secs": {"type": "integer"},
                    "dns_names": {"type": "array", "items": {"type": "string"}}, "admin": {"type": "boolean"}}},
                "JoinTokenRequest": {"type": "object", "additionalProperties": false, "properties": {"ttl_secs": {"type": "integer"}, "agent_id": {"type": "string"}}},
                "BanRequest": {"type": "object", "required": ["spiffe_id"], "additionalProperties": false, "properties": {"spiffe_id": {"type": "string"}, "reason": {"type": "string"}}},
                "RevokeRequest": {"type": "object", "required": ["kind", "subject", "reason"], "additionalProperties": false, "properties": {
                    "kind": {"enum": ["identity", "agent", "entry", "serial", "token"]}, "subject": {"type": "string"},
                    "reason": {"type": "string"}, "until": {"type": "integer"}}},
                "PostureRequest": {"type": "object", "required": ["subject", "attributes", "ttl_secs"], "additionalProperties": false, "properties": {
                    "subject": {"type": "string"}, "ttl_secs": {"type": "integer", "minimum": 1},
                    "attributes": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}}},
                "PolicyRequest": {"type": "object", "required": ["kind", "text"], "additionalProperties": false, "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$", "description": "required on POST; on PUT the path's"},
                    "kind": {"enum": ["authz", "rego", "gatekeeper"]},
                    "text": {"type": "string", "description": "the policy file: AuthorizationPolicy YAML/JSON, a Rego module, or Gatekeeper templates and constraints"}}},
                "ExceptionRequest": {"type": "object", "required": ["text"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "text": {"type": "string", "description": "an exceptions file (exceptions: [...])"}}},
                "ClearRequest": {"type": "object", "required": ["subject"], "additionalProperties": false, "properties": {"subject": {"type": "string"}}},
                "GrantRequest": {"type": "object", "required": ["kind", "subject", "reason", "duration_secs"], "properties": {
                    "kind": {"enum": ["role", "exception"]}, "subject": {"type": "string"}, "reason": {"type": "string"},
                    "duration_secs": {"type": "integer", "minimum": 60},
                    "role": {"enum": ["admin", "operator", "auditor"]}, "policy": {"type": "string"}, "rule": {"type": "string"}, "resource": {"type": "string"}}},
                "TokenRequest": {"type": "object", "required": ["name", "role"], "additionalProperties": false, "properties": {
                    "name": {"type": "string"}, "role": {"enum": ["admin", "operator", "auditor"]}}}
            }
        }
    })
}
