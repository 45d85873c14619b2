//! The identity model shared by the CA, the agent, the store and the CLI:
//! selectors, registration entries, agents, join tokens and revocations.
//! Plain data with validation; the logic lives in `keycard-identity`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::SpiffeId;

/// Why a selector string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("a selector is `type:value` such as `unix:uid:1000` or `k8s:ns:prod`, got {0:?}")]
    Shape(String),
    #[error("unknown selector `{0}`; known: {known}", known = Selector::KNOWN.join(", "))]
    Unknown(String),
    #[error("selector `{0}` needs a value")]
    EmptyValue(String),
    #[error("selector value of `{kind}` must be {want}, got {got:?}")]
    Value {
        kind: String,
        want: &'static str,
        got: String,
    },
}

/// One fact about a workload or node, written `type:name:value` as SPIRE
/// writes it: the type is the attestor (`unix`, `k8s`, `join_token`,
/// `k8s_psat`), the value is everything after the first colon
/// (`uid:1000`, `pod-label:app:web`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Selector {
    /// The attestor: `unix`, `k8s`, ...
    pub kind: String,
    /// What the attestor observed, such as `uid:1000`.
    pub value: String,
}

impl Selector {
    /// Selector names (attestor and key) that keycard's attestors produce.
    pub const KNOWN: &'static [&'static str] = &[
        "unix:uid",
        "unix:gid",
        "unix:user",
        "unix:group",
        "unix:path",
        "unix:sha256",
        "k8s:ns",
        "k8s:sa",
        "k8s:pod-label",
        "k8s:pod-name",
        "k8s:pod-uid",
        "k8s:container-name",
        "k8s:container-image",
        "k8s:node-name",
        "join_token:id",
        "k8s_psat:cluster",
        "k8s_psat:agent_ns",
        "k8s_psat:agent_sa",
        "k8s_psat:agent_node_name",
    ];

    /// A selector from its parts, validated like [`FromStr`].
    pub fn new(kind: &str, value: &str) -> Result<Self, SelectorError> {
        format!("{kind}:{value}").parse()
    }

    /// The selector's key, such as `unix:uid` for `unix:uid:1000`.
    pub fn key(&self) -> String {
        match self.value.split_once(':') {
            Some((k, _)) => format!("{}:{k}", self.kind),
            None => self.kind.clone(),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| SelectorError::Shape(s.to_string()))?;
        let (name, v) = value
            .split_once(':')
            .ok_or_else(|| SelectorError::Shape(s.to_string()))?;
        let key = format!("{kind}:{name}");
        if !Self::KNOWN.contains(&key.as_str()) {
            return Err(SelectorError::Unknown(key));
        }
        if v.is_empty() {
            return Err(SelectorError::EmptyValue(key));
        }
        let bad = |want| SelectorError::Value {
            kind: key.clone(),
            want,
            got: v.to_string(),
        };
        match key.as_str() {
            "unix:uid" | "unix:gid" if v.parse::<u32>().is_err() => {
                return Err(bad("a number"));
            }
            "unix:sha256" if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(bad("64 hex digits"));
            }
            "unix:path" if !v.starts_with('/') => return Err(bad("an absolute path")),
            "k8s:pod-label" if !v.contains(':') => return Err(bad("`key:value`")),
            _ => {}
        }
        Ok(Selector {
            kind: kind.to_string(),
            value: value.to_string(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl TryFrom<String> for Selector {
    type Error = SelectorError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Selector> for String {
    fn from(s: Selector) -> String {
        s.to_string()
    }
}

/// Maps workloads whose selectors include all of `selectors` (and whose
/// agent is `parent_id`) to `spiffe_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationEntry {
    /// Stable id, assigned at creation.
    pub id: String,
    /// The identity granted.
    pub spiffe_id: SpiffeId,
    /// The agent (node) the workload must be attested by; `None` for node
    /// entries, which the server matches against node attestation.
    pub parent_id: Option<SpiffeId>,
    /// All must match (AND). Never empty.
    pub selectors: Vec<Selector>,
    /// X509-SVID lifetime in seconds.
    pub x509_ttl_secs: u64,
    /// JWT-SVID lifetime in seconds.
    pub jwt_ttl_secs: u64,
    /// DNS SANs added to the X509-SVID after the URI SAN.
    #[serde(default)]
    pub dns_names: Vec<String>,
    /// The workload may call the admin API with its SVID.
    #[serde(default)]
    pub admin: bool,
    /// Unix seconds.
    pub created_at: u64,
}

impl RegistrationEntry {
    /// Default X509-SVID lifetime: one hour.
    pub const DEFAULT_X509_TTL: u64 = 3600;
    /// Default JWT-SVID lifetime: five minutes.
    pub const DEFAULT_JWT_TTL: u64 = 300;

    /// Does a workload with `observed` selectors match this entry? Every
    /// selector of the entry must be among the observed ones.
    pub fn matches(&self, observed: &[Selector]) -> bool {
        !self.selectors.is_empty() && self.selectors.iter().all(|s| observed.contains(s))
    }
}

/// A node agent known to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent's SPIFFE ID, such as `spiffe://td/spire/agent/join_token/<id>`.
    pub spiffe_id: SpiffeId,
    /// How it attested: `join_token`, `k8s_psat`.
    pub attestation: String,
    /// Selectors from node attestation.
    #[serde(default)]
    pub selectors: Vec<Selector>,
    /// Serial number (hex) of its current node SVID.
    pub serial: String,
    /// Unix seconds when its node SVID expires.
    pub expires_at: u64,
    /// A banned agent gets no SVID renewals and must re-attest.
    pub banned: bool,
    /// Unix seconds of its last call.
    pub last_seen: u64,
}

/// A single-use node join token, stored by hash only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    /// Hex SHA-256 of the secret token.
    pub hash: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// The agent SPIFFE ID to issue, if fixed at generation time.
    pub agent_id: Option<SpiffeId>,
}

/// What consuming a join token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenUse {
    /// Valid; it is now spent.
    Consumed,
    /// No such token.
    Unknown,
    /// It expired before use.
    Expired,
    /// It was already used (a replay).
    Replayed,
}

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// A SPIFFE ID: every SVID for it.
    Identity,
    /// A node agent (banned), by SPIFFE ID.
    Agent,
    /// A registration entry, by entry id.
    Entry,
    /// A certificate, by hex serial number.
    Serial,
    /// A JWT, by `jti` or digest.
    Token,
}

/// One revocation, as published to enforcers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Position in the revocation feed (assigned by the store, from 1).
    pub version: u64,
    pub kind: RevocationKind,
    /// The revoked thing: SPIFFE ID, entry id, serial or token id.
    pub subject: String,
    pub reason: String,
    /// Unix seconds.
    pub at: u64,
    /// Unix seconds after which enforcers may forget it (the revoked
    /// credentials have expired by then); `None` keeps it.
    pub until: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_validate_and_print() {
        let s: Selector = "unix:uid:1000".parse().unwrap();
        assert_eq!((s.kind.as_str(), s.value.as_str()), ("unix", "uid:1000"));
        assert_eq!(s.key(), "unix:uid");
        assert_eq!(s.to_string(), "unix:uid:1000");
        let l: Selector = "k8s:pod-label:app:web".parse().unwrap();
        assert_eq!(l.value, "pod-label:app:web");
        assert!(matches!(
            "unix:uid:root".parse::<Selector>(),
            Err(SelectorError::Value { .. })
        ));
        assert!(matches!(
            "unix:color:red".parse::<Selector>(),
            Err(SelectorError::Unknown(_))
        ));
        assert!(matches!(
            "uid".parse::<Selector>(),
            Err(SelectorError::Shape(_))
        ));
        assert!(matches!(
            "k8s:ns:".parse::<Selector>(),
            Err(SelectorError::EmptyValue(_))
        ));
        assert!("unix:path:bin/sh".parse::<Selector>().is_err());
        assert!("unix:sha256:abc".parse::<Selector>().is_err());
    }

    #[test]
    fn an_entry_matches_only_when_all_its_selectors_were_observed() {
        let sel = |s: &str| s.parse::<Selector>().unwrap();
        let e = RegistrationEntry {
            id: "e1".into(),
            spiffe_id: "spiffe://td/app".parse().unwrap(),
            parent_id: None,
            selectors: vec![sel("unix:uid:1000"), sel("unix:gid:1000")],
            x509_ttl_secs: 3600,
            jwt_ttl_secs: 300,
            dns_names: vec![],
            admin: false,
            created_at: 0,
        };
        assert!(e.matches(&[
            sel("unix:uid:1000"),
            sel("unix:gid:1000"),
            sel("unix:path:/bin/app")
        ]));
        assert!(!e.matches(&[sel("unix:uid:1000")]));
        assert!(!e.matches(&[sel("unix:uid:1001"), sel("unix:gid:1000")]));
        let empty = RegistrationEntry {
            selectors: vec![],
            ..e
        };
        assert!(!empty.matches(&[sel("unix:uid:1000")]));
    }
}
