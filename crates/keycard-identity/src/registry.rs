//! Registration: validating new entries and the lookup an agent needs
//! (which SPIFFE IDs a workload with given selectors is entitled to).

use std::time::{SystemTime, UNIX_EPOCH};

use keycard_core::{RegistrationEntry, Selector, SpiffeId, TrustDomain};

/// Why an entry was refused; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("spiffe_id: {id} is not in this server's trust domain {td}")]
    ForeignId { id: String, td: String },
    #[error("spiffe_id: the trust domain's own ID {0} cannot be registered; add a path")]
    BareTrustDomain(String),
    #[error("spiffe_id: {0} is reserved for keycard's agents")]
    Reserved(String),
    #[error("parent_id: {id} is not in this server's trust domain {td}")]
    ForeignParent { id: String, td: String },
    #[error("selectors: at least one selector is required")]
    NoSelectors,
    #[error("selectors: at most {max} selectors, got {got}")]
    TooManySelectors { max: usize, got: usize },
    #[error("selectors: {0}")]
    InvalidSelector(String),
    #[error("selectors: duplicate selector {0}")]
    DuplicateSelector(String),
    #[error("{field}: {got} s is outside {min}..={max} s")]
    Ttl {
        field: &'static str,
        got: u64,
        min: u64,
        max: u64,
    },
    #[error("dns_names: {0:?} is not a valid DNS name")]
    DnsName(String),
    #[error("dns_names: at most {0} names")]
    TooManyDnsNames(usize),
}

/// Bounds applied to new entries.
#[derive(Debug, Clone)]
pub struct EntryLimits {
    pub min_x509_ttl: u64,
    pub max_x509_ttl: u64,
    pub min_jwt_ttl: u64,
    pub max_jwt_ttl: u64,
    pub max_selectors: usize,
    pub max_dns_names: usize,
}

impl Default for EntryLimits {
    fn default() -> Self {
        EntryLimits {
            min_x509_ttl: 60,
            max_x509_ttl: 30 * 86400,
            min_jwt_ttl: 30,
            max_jwt_ttl: 86400,
            max_selectors: 32,
            max_dns_names: crate::ca::MAX_DNS_NAMES,
        }
    }
}

/// A registration request, before validation.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub spiffe_id: SpiffeId,
    pub parent_id: Option<SpiffeId>,
    pub selectors: Vec<Selector>,
    /// Default [`RegistrationEntry::DEFAULT_X509_TTL`].
    pub x509_ttl_secs: Option<u64>,
    /// Default [`RegistrationEntry::DEFAULT_JWT_TTL`].
    pub jwt_ttl_secs: Option<u64>,
    pub dns_names: Vec<String>,
    pub admin: bool,
}

/// Is `name` a DNS name (RFC 1123 labels, optionally a leading `*.`
/// wildcard label), at most 253 bytes?
pub fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// A new entry id: 16 random bytes, hex.
pub fn new_entry_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Validates `new` for a server of `td` and builds the entry (with a fresh
/// id and `created_at`).
pub fn validate_entry(
    new: NewEntry,
    td: &TrustDomain,
    limits: &EntryLimits,
    now: SystemTime,
) -> Result<RegistrationEntry, RegistrationError> {
    if new.spiffe_id.trust_domain() != td {
        return Err(RegistrationError::ForeignId {
            id: new.spiffe_id.to_string(),
            td: td.to_string(),
        });
    }
    if new.spiffe_id.path().is_empty() {
        return Err(RegistrationError::BareTrustDomain(
            new.spiffe_id.to_string(),
        ));
    }
    if new.spiffe_id.path().starts_with("/keycard/agent/")
        || new.spiffe_id.path() == "/keycard/agent"
    {
        return Err(RegistrationError::Reserved(new.spiffe_id.to_string()));
    }
    if let Some(p) = &new.parent_id {
        if p.trust_domain() != td {
            return Err(RegistrationError::ForeignParent {
                id: p.to_string(),
                td: td.to_string(),
            });
        }
    }
    if new.selectors.is_empty() {
        return Err(RegistrationError::NoSelectors);
    }
    if new.selectors.len() > limits.max_selectors {
        return Err(RegistrationError::TooManySelectors {
            max: limits.max_selectors,
            got: new.selectors.len(),
        });
    }
    let mut selectors = new.selectors;
    // Re-validate (a Selector built by hand skips FromStr).
    for s in &selectors {
        if let Err(e) = s.to_string().parse::<Selector>() {
            return Err(RegistrationError::InvalidSelector(e.to_string()));
        }
    }
    selectors.sort();
    if let Some(w) = selectors.windows(2).find(|w| w[0] == w[1]) {
        return Err(RegistrationError::DuplicateSelector(w[0].to_string()));
    }
    let x509 = new
        .x509_ttl_secs
        .unwrap_or(RegistrationEntry::DEFAULT_X509_TTL);
    if !(limits.min_x509_ttl..=limits.max_x509_ttl).contains(&x509) {
        return Err(RegistrationError::Ttl {
            field: "x509_ttl_secs",
            got: x509,
            min: limits.min_x509_ttl,
            max: limits.max_x509_ttl,
        });
    }
    let jwt = new
        .jwt_ttl_secs
        .unwrap_or(RegistrationEntry::DEFAULT_JWT_TTL);
    if !(limits.min_jwt_ttl..=limits.max_jwt_ttl).contains(&jwt) {
        return Err(RegistrationError::Ttl {
            field: "jwt_ttl_secs",
            got: jwt,
            min: limits.min_jwt_ttl,
            max: limits.max_jwt_ttl,
        });
    }
    if new.dns_names.len() > limits.max_dns_names {
        return Err(RegistrationError::TooManyDnsNames(limits.max_dns_names));
    }
    if let Some(d) = new.dns_names.iter().find(|d| !valid_dns_name(d)) {
        return Err(RegistrationError::DnsName(d.clone()));
    }
    Ok(RegistrationEntry {
        id: new_entry_id(),
        spiffe_id: new.spiffe_id,
        parent_id: new.parent_id,
        selectors,
        x509_ttl_secs: x509,
        jwt_ttl_secs: jwt,
        dns_names: new.dns_names,
        admin: new.admin,
        created_at: now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

/// The entries an agent serves, indexed for lookups.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<RegistrationEntry>,
}

impl Registry {
    /// From every entry of the store.
    pub fn new(entries: Vec<RegistrationEntry>) -> Self {
        Registry { entries }
    }

    pub fn entries(&self) -> &[RegistrationEntry] {
        &self.entries
    }

    /// Node-alias entries (no parent) whose selectors the agent's node
    /// attestation selectors all match: further IDs the agent stands for.
    pub fn node_aliases(&self, node_selectors: &[Selector]) -> Vec<&SpiffeId> {
        self.entries
            .iter()
            .filter(|e| e.parent_id.is_none() && e.matches(node_selectors))
            .map(|e| &e.spiffe_id)
            .collect()
    }

    /// The entries a workload attested by agent `agent` (with node
    /// selectors `node_selectors`) and observed with `observed` selectors
    /// is entitled to: those whose parent is the agent (or one of its node
    /// aliases) and whose every selector was observed. Nothing else.
    pub fn entries_for<'a>(
        &'a self,
        agent: &SpiffeId,
        node_selectors: &[Selector],
        observed: &[Selector],
    ) -> Vec<&'a RegistrationEntry> {
        let aliases = self.node_aliases(node_selectors);
        self.entries
            .iter()
            .filter(|e| match &e.parent_id {
                Some(p) => p == agent || aliases.contains(&p),
                None => false,
            })
            .filter(|e| e.matches(observed))
            .collect()
    }

    /// The SPIFFE IDs of [`Self::entries_for`], deduplicated, sorted.
    pub fn ids_for(
        &self,
        agent: &SpiffeId,
        node_selectors: &[Selector],
        observed: &[Selector],
    ) -> Vec<SpiffeId> {
        let mut ids: Vec<SpiffeId> = self
            .entries_for(agent, node_selectors, observed)
            .into_iter()
            .map(|e| e.spiffe_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Every entry an agent must cache: those it may hand out to some
    /// workload (parent the agent or one of its aliases).
    pub fn entries_for_agent<'a>(
        &'a self,
        agent: &SpiffeId,
        node_selectors: &[Selector],
    ) -> Vec<&'a RegistrationEntry> {
        let aliases = self.node_aliases(node_selectors);
        self.entries
            .iter()
            .filter(|e| {
                e.parent_id
                    .as_ref()
                    .is_some_and(|p| p == agent || aliases.contains(&p))
            })
            .collect()
    }

    /// May a workload with `observed` selectors under `agent` have `id`?
    /// The check a CA-facing call makes before minting.
    pub fn authorises(
        &self,
        agent: &SpiffeId,
        node_selectors: &[Selector],
        observed: &[Selector],
        id: &SpiffeId,
    ) -> bool {
        self.entries_for(agent, node_selectors, observed)
            .iter()
            .any(|e| &e.spiffe_id == id)
    }
}
