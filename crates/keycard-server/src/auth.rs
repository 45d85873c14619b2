//! Who may call the API, and as what.
//!
//! Every API call is authenticated: with a bearer token (the bootstrap
//! admin token that `keycard up` creates once, or tokens an admin issues
//! with a role) or with an X509-SVID over mTLS whose registration entry has
//! the admin flag. Tokens are stored as SHA-256 hashes only; comparison is
//! by hash lookup, so a token's value never sits in the store or the logs.

use std::collections::BTreeMap;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use keycard_store::{CasOutcome, IdentityStore, StoreError};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only: decisions, entries, agents, revocations.
    Auditor,
    /// Day-to-day changes: entries, join tokens, revocations, posture, grants.
    Operator,
    /// Everything, including API tokens and agent bans.
    Admin,
}

impl Role {
    /// Does this role include `needed`? (admin > operator > auditor)
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            _ => Err(format!(
                "unknown role {s:?}: use admin, operator or auditor"
            )),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
        })
    }
}

/// A stored API token: its hash, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// A name for people (shown in logs and audit records).
    pub name: String,
    pub role: Role,
    /// Unix seconds.
    pub created_at: u64,
}

const TOKENS_KEY: &str = "api/tokens";
/// Tokens are `kc_` and 43 base64url characters (32 random bytes).
const TOKEN_PREFIX: &str = "kc_";
/// Longest bearer value looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 256;

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How many times a token change is re-read and retried when another
/// server changed the tokens in between (each retry means someone else's
/// write succeeded, so this is only reached under a storm of writes).
const MAX_ATTEMPTS: usize = 64;

fn parse(b: &[u8]) -> Result<BTreeMap<String, ApiToken>, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Malformed(format!("stored API tokens: {e}")))
}

fn load(store: &dyn IdentityStore) -> Result<BTreeMap<String, ApiToken>, StoreError> {
    match store.value(TOKENS_KEY)? {
        None => Ok(BTreeMap::new()),
        Some(b) => parse(&b),
    }
}

/// Read-modify-write of the token table that loses no other server's
/// change: read it with its version, let `change` edit it (it returns
/// `None` to leave the table as it is), write it only if nobody wrote in
/// between, else start again from a fresh read. Servers sharing one
/// database may issue and revoke tokens at the same instant.
fn update<R>(
    store: &mut dyn IdentityStore,
    mut change: impl FnMut(&mut BTreeMap<String, ApiToken>) -> Option<R>,
) -> Result<Option<R>, StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let (version, mut tokens) = match store.versioned_value(TOKENS_KEY)? {
            None => (0, BTreeMap::new()),
            Some(v) => (v.version, parse(&v.value)?),
        };
        let Some(r) = change(&mut tokens) else {
            return Ok(None);
        };
        let b = serde_json::to_vec(&tokens).map_err(|e| StoreError::Malformed(e.to_string()))?;
        match store.compare_and_put_value(TOKENS_KEY, version, &b)? {
            CasOutcome::Written { .. } => return Ok(Some(r)),
            CasOutcome::Conflict { actual } => {
                tracing::debug!(
                    read = version,
                    actual,
                    "API tokens changed meanwhile; retrying"
                );
            }
        }
    }
    Err(StoreError::Backend(
        format!("API tokens: {MAX_ATTEMPTS} conflicting writes in a row; nothing was written")
            .into(),
    ))
}

/// A new random token value (`kc_` and 43 base64url characters).
fn new_value() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
    )
}

/// Issues a new token with `role`; returns its value (shown once).
pub fn issue_token(
    store: &mut dyn IdentityStore,
    name: &str,
    role: Role,
    now: u64,
) -> Result<String, StoreError> {
    let value = new_value();
    let token = ApiToken {
        name: name.to_string(),
        role,
        created_at: now,
    };
    let h = hash(&value);
    update(store, |tokens| {
        tokens.insert(h.clone(), token.clone());
        Some(())
    })?
    .ok_or_else(|| StoreError::Malformed("an API token write that wrote nothing".into()))?;
    Ok(value)
}

/// Issues the bootstrap admin token `name` if no admin token exists yet,
/// in the same atomic step as the check: of several servers starting at
/// once on one empty database, exactly one gets `Some(value)`.
pub fn issue_bootstrap_token(
    store: &mut dyn IdentityStore,
    name: &str,
    now: u64,
) -> Result<Option<String>, StoreError> {
    let value = new_value();
    let token = ApiToken {
        name: name.to_string(),
        role: Role::Admin,
        created_at: now,
    };
    let h = hash(&value);
    let issued = update(store, |tokens| {
        if tokens.values().any(|t| t.role == Role::Admin) {
            return None;
        }
        tokens.insert(h.clone(), token.clone());
        Some(())
    })?;
    Ok(issued.map(|()| value))
}

/// Whether any admin token exists (the bootstrap ran).
pub fn has_admin_token(store: &dyn IdentityStore) -> Result<bool, StoreError> {
    Ok(load(store)?.values().any(|t| t.role == Role::Admin))
}

/// The token a bearer value names, if any.
pub fn lookup_token(
    store: &dyn IdentityStore,
    value: &str,
) -> Result<Option<ApiToken>, StoreError> {
    if value.len() > MAX_TOKEN_LEN || !value.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(load(store)?.remove(&hash(value)))
}

/// Revokes every token named `name`; returns how many.
pub fn revoke_tokens(store: &mut dyn IdentityStore, name: &str) -> Result<usize, StoreError> {
    let removed = update(store, |tokens| {
        let before = tokens.len();
        tokens.retain(|_, t| t.name != name);
        let n = before - tokens.len();
        (n > 0).then_some(n)
    })?;
    Ok(removed.unwrap_or(0))
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `token:<name>` or the SPIFFE ID of an mTLS client.
    pub principal: String,
    pub role: Role,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use keycard_store::MemoryStore;

    #[test]
    fn tokens_are_stored_hashed_and_found_by_value() {
        let mut s = MemoryStore::new();
        assert!(!has_admin_token(&s).unwrap());
        let v = issue_token(&mut s, "bootstrap", Role::Admin, 1).unwrap();
        assert!(v.starts_with("kc_") && v.len() == 46, "{v}");
        assert!(has_admin_token(&s).unwrap());
        let stored = String::from_utf8(s.value(TOKENS_KEY).unwrap().unwrap()).unwrap();
        assert!(
            !stored.contains(&v[3..]),
            "the value itself is never stored"
        );
        assert_eq!(lookup_token(&s, &v).unwrap().unwrap().role, Role::Admin);
        assert!(lookup_token(&s, "kc_wrong").unwrap().is_none());
        assert!(lookup_token(&s, &"kc_x".repeat(100)).unwrap().is_none());
        let ro = issue_token(&mut s, "ci", Role::Auditor, 2).unwrap();
        assert_eq!(revoke_tokens(&mut s, "ci").unwrap(), 1);
        assert!(lookup_token(&s, &ro).unwrap().is_none());
        assert!(lookup_token(&s, &v).unwrap().is_some());
    }

    #[test]
    fn the_bootstrap_token_is_issued_once_and_revoking_nothing_writes_nothing() {
        let mut s = MemoryStore::new();
        let first = issue_bootstrap_token(&mut s, "bootstrap-admin", 1).unwrap();
        let first = first.expect("the first start issues the bootstrap token");
        assert_eq!(lookup_token(&s, &first).unwrap().unwrap().role, Role::Admin);
        assert!(issue_bootstrap_token(&mut s, "bootstrap-admin", 2)
            .unwrap()
            .is_none());
        let version = s.versioned_value(TOKENS_KEY).unwrap().unwrap().version;
        assert_eq!(revoke_tokens(&mut s, "nobody").unwrap(), 0);
        assert_eq!(
            s.versioned_value(TOKENS_KEY).unwrap().unwrap().version,
            version,
            "nothing to revoke, nothing written"
        );
    }

    /// Two servers on one PostgreSQL database: both try the bootstrap on a
    /// simultaneous first start, then issue and revoke tokens at the same
    /// time. Exactly one bootstrap token exists, every issued token that
    /// was not revoked works at both, every revoked one at neither.
    #[test]
    fn two_servers_issuing_tokens_at_once_lose_none() {
        use keycard_store::testing::TestDatabase;
        use keycard_store::PostgresStore;
        use std::sync::{Arc, Barrier};

        let Some(db) = TestDatabase::create("auth_tokens").unwrap() else {
            eprintln!("skipped: KEYCARD_TEST_POSTGRES is not set");
            return;
        };
        drop(PostgresStore::connect(db.conninfo(), None).unwrap());
        let gate = Arc::new(Barrier::new(2));
        let servers: Vec<_> = (0..2)
            .map(|n| {
                let (url, gate) = (db.conninfo().to_string(), Arc::clone(&gate));
                std::thread::spawn(move || {
                    let mut s = PostgresStore::connect(&url, None).unwrap();
                    gate.wait();
                    let bootstrap = issue_bootstrap_token(&mut s, "bootstrap-admin", 1).unwrap();
                    let (mut kept, mut revoked) = (Vec::new(), Vec::new());
                    for i in 0..40 {
                        let name = format!("s{n}-{i}");
                        let v = issue_token(&mut s, &name, Role::Operator, 1).unwrap();
                        // Every fourth is revoked again while the other
                        // server keeps issuing.
                        if i % 4 == 3 {
                            assert_eq!(revoke_tokens(&mut s, &name).unwrap(), 1, "{name}");
                            revoked.push(v);
                        } else {
                            kept.push(v);
                        }
                    }
                    (bootstrap, kept, revoked, s)
                })
            })
            .collect();
        let results: Vec<_> = servers.into_iter().map(|h| h.join().unwrap()).collect();
        let bootstraps: Vec<&String> = results.iter().filter_map(|r| r.0.as_ref()).collect();
        assert_eq!(
            bootstraps.len(),
            1,
            "exactly one server made the bootstrap token"
        );
        for (_, _, _, s) in &results {
            assert!(lookup_token(s, bootstraps[0]).unwrap().is_some());
            for (_, kept, revoked, _) in &results {
                for v in kept {
                    assert!(
                        lookup_token(s, v).unwrap().is_some(),
                        "an issued token was lost"
                    );
                }
                for v in revoked {
                    assert!(
                        lookup_token(s, v).unwrap().is_none(),
                        "a revoked token came back"
                    );
                }
            }
        }
        assert_eq!(load(&results[0].3).unwrap().len(), 1 + 2 * 30);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Auditor));
        assert!(!Role::Auditor.allows(Role::Operator));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}
