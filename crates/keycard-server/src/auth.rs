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

use keycard_store::{IdentityStore, StoreError};

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

fn load(store: &dyn IdentityStore) -> Result<BTreeMap<String, ApiToken>, StoreError> {
    match store.value(TOKENS_KEY)? {
        None => Ok(BTreeMap::new()),
        Some(b) => serde_json::from_slice(&b)
            .map_err(|e| StoreError::Malformed(format!("stored API tokens: {e}"))),
    }
}

fn save(
    store: &mut dyn IdentityStore,
    tokens: &BTreeMap<String, ApiToken>,
) -> Result<(), StoreError> {
    let b = serde_json::to_vec(tokens).map_err(|e| StoreError::Malformed(e.to_string()))?;
    store.put_value(TOKENS_KEY, &b)
}

/// Issues a new token with `role`; returns its value (shown once).
pub fn issue_token(
    store: &mut dyn IdentityStore,
    name: &str,
    role: Role,
    now: u64,
) -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let value = format!(
        "{TOKEN_PREFIX}{}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
    );
    let mut tokens = load(store)?;
    tokens.insert(
        hash(&value),
        ApiToken {
            name: name.to_string(),
            role,
            created_at: now,
        },
    );
    save(store, &tokens)?;
    Ok(value)
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
    let mut tokens = load(store)?;
    let before = tokens.len();
    tokens.retain(|_, t| t.name != name);
    let n = before - tokens.len();
    if n > 0 {
        save(store, &tokens)?;
    }
    Ok(n)
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
    fn roles_are_ordered() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Auditor));
        assert!(!Role::Auditor.allows(Role::Operator));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root".parse::<Role>().is_err());
    }
}
