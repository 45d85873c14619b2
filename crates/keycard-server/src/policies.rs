//! Policies and exceptions as API resources, and the documents of them
//! that agents sync.
//!
//! A policy is a named text of one kind:
//!
//! - `authz`: keycard authorization policies (the proxy's and ext_authz's
//!   ALLOW/DENY/AUDIT model, YAML or JSON, several documents allowed);
//! - `rego`: one Rego module for admission and `keycard check`;
//! - `gatekeeper`: Gatekeeper ConstraintTemplates and constraints.
//!
//! An exception is a named exceptions file (`exceptions: [...]`, each with
//! an owner and an expiry). Both live in the store's versioned documents
//! (collections `policy` and `exception`): every write gets the next
//! revision of one feed and a delete leaves a tombstone, so an agent that
//! holds revision `r` receives exactly the documents changed after `r`.
//!
//! Every write is validated before anything is recorded: an authorization
//! policy is compiled with the proxy's compiler (together with the stored
//! ones, so two documents cannot claim one policy name), Rego is compiled
//! by the admission engine, Gatekeeper objects together with the stored
//! templates, exceptions parsed. The error names the file (`<name>.yaml`,
//! `<name>.rego`), line and field; nothing invalid is stored. Writes need
//! `operator`, reads `auditor`, and each change is written to the decision
//! log before it is applied.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use keycard_store::{DocumentStore, PutMode, StoreError, StoredDocument};

use crate::api::{caller, record, ApiError, ApiResult, PeerIdentity};
use crate::auth::Role;
use crate::state::{unix, ServerState};

/// The store collection of policies.
pub const POLICY: &str = "policy";
/// The store collection of exceptions.
pub const EXCEPTION: &str = "exception";
/// Largest policy or exceptions text.
pub const MAX_TEXT: usize = 512 * 1024;
/// Most documents in one sync answer (`more` says when there are others).
pub const MAX_SYNC_DOCUMENTS: usize = 1000;

/// What a policy document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// keycard authorization policies (proxy, ext_authz).
    Authz,
    /// A Rego module (admission, `keycard check`).
    Rego,
    /// Gatekeeper ConstraintTemplates and constraints (admission).
    Gatekeeper,
    /// An exceptions file (admission, `keycard check`).
    Exceptions,
}

impl PolicyKind {
    /// The file name the document's errors (and enforcers' files) use.
    pub fn file_name(self, name: &str, text: &str) -> String {
        match self {
            PolicyKind::Rego => format!("{name}.rego"),
            _ if text.trim_start().starts_with('{') => format!("{name}.json"),
            _ => format!("{name}.yaml"),
        }
    }

    fn collection(self) -> &'static str {
        match self {
            PolicyKind::Exceptions => EXCEPTION,
            _ => POLICY,
        }
    }
}

/// A policy or exceptions document as stored and synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDoc {
    pub name: String,
    pub kind: PolicyKind,
    pub text: String,
    /// SHA-256 of `text`, hex.
    pub digest: String,
    pub updated_by: String,
    /// Unix seconds.
    pub updated_at: u64,
    /// The store revision of this version (set when read).
    #[serde(default)]
    pub revision: u64,
}

/// One change of the document feed, as an agent receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDocument {
    pub collection: String,
    pub name: String,
    pub revision: u64,
    /// The document; `None` when it was deleted.
    pub doc: Option<PolicyDoc>,
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn decode(d: &StoredDocument) -> Result<Option<PolicyDoc>, StoreError> {
    d.body
        .as_ref()
        .map(|b| {
            serde_json::from_slice::<PolicyDoc>(b)
                .map(|mut p| {
                    p.revision = d.revision;
                    p
                })
                .map_err(|e| StoreError::Malformed(format!("{} {}: {e}", d.collection, d.name)))
        })
        .transpose()
}

/// The document changes after `since`, at most [`MAX_SYNC_DOCUMENTS`]:
/// (changes, the revision they bring a reader to, whether more follow).
pub fn changes_since(
    store: &dyn DocumentStore,
    since: u64,
) -> Result<(Vec<SyncDocument>, u64, bool), StoreError> {
    let all = store.documents_since(since)?;
    let more = all.len() > MAX_SYNC_DOCUMENTS;
    let mut revision = since;
    let mut out = Vec::with_capacity(all.len().min(MAX_SYNC_DOCUMENTS));
    for d in all.into_iter().take(MAX_SYNC_DOCUMENTS) {
        revision = revision.max(d.revision);
        out.push(SyncDocument {
            doc: decode(&d)?,
            collection: d.collection,
            name: d.name,
            revision: d.revision,
        });
    }
    Ok((out, revision, more))
}

/// Every live document of `collection`, by name.
pub fn list(store: &dyn DocumentStore, collection: &str) -> Result<Vec<PolicyDoc>, StoreError> {
    store
        .documents(collection)?
        .iter()
        .filter_map(|d| decode(d).transpose())
        .collect()
}

/// A name usable as a file name on every node: 1 to 63 of `[a-z0-9-_.]`,
/// starting and ending with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name {name:?}: 1 to 63 of a-z, 0-9, '-', '_', '.', starting and ending with a letter or digit"
        ))
    }
}

/// Checks `text` as a document of `kind` named `name`, with `others` (the
/// stored documents of the same collection, the one being replaced left
/// out). The error lists every problem with its file, line and field.
pub fn validate(
    kind: PolicyKind,
    name: &str,
    text: &str,
    others: &[PolicyDoc],
) -> Result<(), String> {
    validate_name(name)?;
    if text.trim().is_empty() {
        return Err("text: empty".into());
    }
    if text.len() > MAX_TEXT {
        return Err(format!("text: larger than {MAX_TEXT} bytes"));
    }
    let file = kind.file_name(name, text);
    match kind {
        PolicyKind::Authz => {
            let mut names = std::collections::HashMap::new();
            for o in others.iter().filter(|o| o.kind == PolicyKind::Authz) {
                let f = o.kind.file_name(&o.name, &o.text);
                // Stored documents compiled when they were written; one that
                // no longer does (a newer keycard) must not block others.
                if let Ok(set) =
                    keycard_proxy::compile_str(&f, &o.text, keycard_proxy::Mode::Enforce)
                {
                    for p in set.policies() {
                        names.insert(p.name.to_string(), f.clone());
                    }
                }
            }
            let set = keycard_proxy::compile_str(&file, text, keycard_proxy::Mode::Enforce)
                .map_err(|e| e.to_string())?;
            let mut errors = Vec::new();
            for p in set.policies() {
                if let Some(f) = names.get(p.name.as_ref()) {
                    errors.push(format!(
                        "{}:{}: metadata.name: policy {} is already defined by {f}",
                        p.file, p.line, p.name
                    ));
                }
            }
            if set.is_empty() {
                errors.push(format!("{file}: no AuthorizationPolicy in the text"));
            }
            if !errors.is_empty() {
                return Err(errors.join("\n"));
            }
        }
        PolicyKind::Rego => {
            keycard_policy::PolicySetBuilder::new()
                .source(&file, text)
                .build()
                .map_err(|e| e.to_string())?;
        }
        PolicyKind::Gatekeeper => {
            let opts = keycard_k8s::LoadOptions::default();
            let mut objects = Vec::new();
            for o in others.iter().filter(|o| o.kind == PolicyKind::Gatekeeper) {
                let f = o.kind.file_name(&o.name, &o.text);
                objects.extend(keycard_k8s::parse_str(&f, &o.text, &opts).0);
            }
            let (mine, errors) = keycard_k8s::parse_str(&file, text, &opts);
            if !errors.is_empty() {
                return Err(errors
                    .iter()
                    .map(|e| format!("{}:{}: {}", e.file, e.line.unwrap_or(1), e.message))
                    .collect::<Vec<_>>()
                    .join("\n"));
            }
            if mine.is_empty() {
                return Err(format!("{file}: no Kubernetes object in the text"));
            }
            objects.extend(mine);
            let (_, rest) = keycard_policy::gatekeeper::GatekeeperLibrary::from_objects(&objects)
                .map_err(|e| e.to_string())?;
            if let Some(o) = rest.first() {
                return Err(format!(
                    "{}: {} is not a Gatekeeper ConstraintTemplate or constraint",
                    o.source,
                    o.kind()
                ));
            }
        }
        PolicyKind::Exceptions => {
            keycard_policy::exceptions::Exceptions::parse(&file, text)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

type St = State<Arc<ServerState>>;

/// The routes of this module.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/v1/policies", get(list_policies).post(create_policy))
        .route(
            "/v1/policies/{name}",
            get(show_policy).put(replace_policy).delete(delete_policy),
        )
        .route(
            "/v1/exceptions",
            get(list_exceptions).post(create_exception),
        )
        .route(
            "/v1/exceptions/{name}",
            get(show_exception)
                .put(replace_exception)
                .delete(delete_exception),
        )
}

/// `POST /v1/policies`, `PUT /v1/policies/{name}` (name from the path).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRequest {
    #[serde(default)]
    name: Option<String>,
    kind: PolicyKind,
    text: String,
}

/// `POST /v1/exceptions`, `PUT /v1/exceptions/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionRequest {
    #[serde(default)]
    name: Option<String>,
    text: String,
}

fn summary(d: &PolicyDoc) -> Value {
    json!({
        "name": d.name, "kind": d.kind, "digest": d.digest, "revision": d.revision,
        "updated_by": d.updated_by, "updated_at": d.updated_at, "bytes": d.text.len(),
    })
}

/// Validates and stores one document, recording it first.
fn put(
    s: &ServerState,
    who: &crate::auth::Caller,
    kind: PolicyKind,
    name: &str,
    text: String,
    mode: PutMode,
) -> ApiResult<PolicyDoc> {
    let collection = kind.collection();
    let existing = s.store().document(collection, name)?;
    if mode == PutMode::Create && existing.is_some() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{collection} {name} exists: replace it with PUT"),
        ));
    }
    if let Some(old) = existing.as_ref().map(decode).transpose()?.flatten() {
        if collection == POLICY && old.kind != kind {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "policy {name} is of kind {:?}: delete it before pushing another kind",
                    old.kind
                ),
            ));
        }
    }
    let others: Vec<PolicyDoc> = list(s.store().as_ref(), collection)?
        .into_iter()
        .filter(|d| d.name != name)
        .collect();
    validate(kind, name, &text, &others).map_err(ApiError::bad)?;
    let mut doc = PolicyDoc {
        name: name.to_string(),
        kind,
        digest: digest(&text),
        text,
        updated_by: who.principal.clone(),
        updated_at: unix(SystemTime::now()),
        revision: 0,
    };
    let action = match (collection, existing.is_some()) {
        (POLICY, false) => "policy.create",
        (POLICY, true) => "policy.replace",
        (_, false) => "exception.create",
        (_, true) => "exception.replace",
    };
    record(
        s,
        who,
        action,
        &format!("{collection}/{name}"),
        json!({ "name": name, "kind": kind, "digest": doc.digest, "text": doc.text }),
    )?;
    let body = serde_json::to_vec(&doc).map_err(|e| ApiError::bad(e.to_string()))?;
    doc.revision = s.store().put_document(collection, name, &body, mode)?;
    tracing::info!(collection, name, kind = ?kind, revision = doc.revision, by = %who.principal, "{action}");
    s.changed();
    Ok(doc)
}

fn show(s: &ServerState, collection: &str, name: &str) -> ApiResult<PolicyDoc> {
    let d = s.store().document(collection, name)?;
    d.as_ref()
        .map(decode)
        .transpose()?
        .flatten()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no {collection} {name}")))
}

fn delete(
    s: &ServerState,
    who: &crate::auth::Caller,
    collection: &str,
    name: &str,
) -> ApiResult<Json<Value>> {
    let found = show(s, collection, name)?;
    record(
        s,
        who,
        &format!("{collection}.delete"),
        &format!("{collection}/{name}"),
        json!({ "name": name, "kind": found.kind, "digest": found.digest }),
    )?;
    let revision = s
        .store()
        .delete_document(collection, name)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no {collection} {name}")))?;
    tracing::info!(collection, name, revision, by = %who.principal, "deleted");
    s.changed();
    Ok(Json(
        json!({ "deleted": name, "kind": found.kind, "revision": revision }),
    ))
}

async fn list_policies(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let all = list(s.store().as_ref(), POLICY)?;
    let revision = s.store().document_revision()?;
    Ok(Json(
        json!({ "policies": all.iter().map(summary).collect::<Vec<_>>(), "revision": revision }),
    ))
}

async fn list_exceptions(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
) -> ApiResult<Json<Value>> {
    caller(&s, &h, &p, Role::Auditor)?;
    let all = list(s.store().as_ref(), EXCEPTION)?;
    let revision = s.store().document_revision()?;
    Ok(Json(
        json!({ "exceptions": all.iter().map(summary).collect::<Vec<_>>(), "revision": revision }),
    ))
}

async fn show_policy(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(name): Path<String>,
) -> ApiResult<Json<PolicyDoc>> {
    caller(&s, &h, &p, Role::Auditor)?;
    Ok(Json(show(&s, POLICY, &name)?))
}

async fn show_exception(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(name): Path<String>,
) -> ApiResult<Json<PolicyDoc>> {
    caller(&s, &h, &p, Role::Auditor)?;
    Ok(Json(show(&s, EXCEPTION, &name)?))
}

fn name_of(path: Option<String>, body: Option<String>) -> ApiResult<String> {
    match (path, body) {
        (Some(p), Some(b)) if p != b => Err(ApiError::bad(format!(
            "name: {b:?} in the body but {p:?} in the path"
        ))),
        (Some(n), _) | (None, Some(n)) => Ok(n),
        (None, None) => Err(ApiError::bad("name: required")),
    }
}

async fn create_policy(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<PolicyRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PolicyDoc>)> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.kind == PolicyKind::Exceptions {
        return Err(ApiError::bad("kind: exceptions go to /v1/exceptions"));
    }
    let name = name_of(None, r.name)?;
    let doc = put(&s, &who, r.kind, &name, r.text, PutMode::Create)?;
    Ok((StatusCode::CREATED, Json(doc)))
}

async fn replace_policy(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(name): Path<String>,
    body: Result<Json<PolicyRequest>, JsonRejection>,
) -> ApiResult<Json<PolicyDoc>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    if r.kind == PolicyKind::Exceptions {
        return Err(ApiError::bad("kind: exceptions go to /v1/exceptions"));
    }
    let name = name_of(Some(name), r.name)?;
    Ok(Json(put(&s, &who, r.kind, &name, r.text, PutMode::Upsert)?))
}

async fn delete_policy(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    delete(&s, &who, POLICY, &name)
}

async fn create_exception(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    body: Result<Json<ExceptionRequest>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<PolicyDoc>)> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let name = name_of(None, r.name)?;
    let doc = put(
        &s,
        &who,
        PolicyKind::Exceptions,
        &name,
        r.text,
        PutMode::Create,
    )?;
    Ok((StatusCode::CREATED, Json(doc)))
}

async fn replace_exception(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(name): Path<String>,
    body: Result<Json<ExceptionRequest>, JsonRejection>,
) -> ApiResult<Json<PolicyDoc>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    let Json(r) = body.map_err(|e| ApiError::bad(e.body_text()))?;
    let name = name_of(Some(name), r.name)?;
    Ok(Json(put(
        &s,
        &who,
        PolicyKind::Exceptions,
        &name,
        r.text,
        PutMode::Upsert,
    )?))
}

async fn delete_exception(
    State(s): St,
    h: HeaderMap,
    Extension(p): Extension<PeerIdentity>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = caller(&s, &h, &p, Role::Operator)?;
    delete(&s, &who, EXCEPTION, &name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const ALLOW: &str = "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: web}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [\"spiffe://td/a\"]}}]\n";

    #[test]
    fn names_are_file_safe() {
        assert!(validate_name("web-1.prod").is_ok());
        for bad in ["", ".hidden", "a/b", "UP", "x-", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_invalid_policy_names_its_file_line_and_field() {
        let e = validate(
            PolicyKind::Authz,
            "web",
            &ALLOW.replace("ALLOW", "PERMIT"),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("web.yaml:") && e.contains("spec.action"), "{e}");
        assert!(validate(
            PolicyKind::Rego,
            "r",
            "package x\ndeny contains msg if {",
            &[]
        )
        .is_err());
        let e = validate(
            PolicyKind::Exceptions,
            "ex",
            "exceptions:\n- rule: x\n",
            &[],
        )
        .unwrap_err();
        assert!(e.contains("ex.yaml"), "{e}");
    }

    #[test]
    fn two_documents_cannot_define_one_policy() {
        validate(PolicyKind::Authz, "web", ALLOW, &[]).unwrap();
        let other = PolicyDoc {
            name: "first".into(),
            kind: PolicyKind::Authz,
            text: ALLOW.into(),
            digest: digest(ALLOW),
            updated_by: "t".into(),
            updated_at: 0,
            revision: 1,
        };
        let e = validate(PolicyKind::Authz, "second", ALLOW, &[other]).unwrap_err();
        assert!(e.contains("already defined by first.yaml"), "{e}");
    }
}
