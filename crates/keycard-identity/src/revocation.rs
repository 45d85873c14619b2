//! Revocation: recording it (deleting an entry, banning an agent, revoking
//! an identity) through the store's feed, and [`RevocationSet`], the view
//! enforcers and the renewal path query, updated incrementally by version.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use keycard_core::{RegistrationEntry, Revocation, RevocationKind, SpiffeId};
use keycard_store::{IdentityStore, StoreError};

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a renewal was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    #[error("registration entry {0} was deleted or revoked")]
    Entry(String),
    #[error("agent {0} is banned")]
    Agent(String),
    #[error("identity {0} is revoked")]
    Identity(String),
}

/// Deletes registration entry `id` and records its revocation, so that
/// renewals stop at once (the renewal path checks [`RevocationSet`]) and
/// enforcers learn of it. `until` is when its last SVID expires (now plus
/// its X509 TTL). Returns the deleted entry.
pub fn delete_entry(
    store: &mut dyn IdentityStore,
    id: &str,
    reason: &str,
    now: SystemTime,
) -> Result<Option<RegistrationEntry>, StoreError> {
    let Some(entry) = store.delete_entry(id)? else {
        return Ok(None);
    };
    let now = unix(now);
    let version = store.add_revocation(&Revocation {
        version: 0,
        kind: RevocationKind::Entry,
        subject: entry.id.clone(),
        reason: reason.to_string(),
        at: now,
        until: Some(now + entry.x509_ttl_secs.max(entry.jwt_ttl_secs)),
    })?;
    tracing::info!(entry = %entry.id, spiffe_id = %entry.spiffe_id, version, "entry deleted and revoked");
    Ok(Some(entry))
}

/// Bans an agent: marks its record banned and records the revocation of the
/// agent (by SPIFFE ID) and of its node SVID (by serial). Returns false if
/// the agent is unknown (nothing is recorded then).
pub fn ban_agent(
    store: &mut dyn IdentityStore,
    agent: &SpiffeId,
    reason: &str,
    now: SystemTime,
) -> Result<bool, StoreError> {
    let Some(mut rec) = store.agent(agent)? else {
        return Ok(false);
    };
    let now = unix(now);
    rec.banned = true;
    store.put_agent(&rec)?;
    store.add_revocation(&Revocation {
        version: 0,
        kind: RevocationKind::Agent,
        subject: agent.to_string(),
        reason: reason.to_string(),
        at: now,
        // A banned agent stays banned until an operator re-admits it.
        until: None,
    })?;
    if !rec.serial.is_empty() {
        store.add_revocation(&Revocation {
            version: 0,
            kind: RevocationKind::Serial,
            subject: rec.serial.to_ascii_lowercase(),
            reason: reason.to_string(),
            at: now,
            until: Some(rec.expires_at),
        })?;
    }
    tracing::warn!(agent = %agent, "agent banned");
    Ok(true)
}

/// Revokes every SVID of `id` until `until` (Unix seconds; `None` keeps it).
pub fn revoke_identity(
    store: &mut dyn IdentityStore,
    id: &SpiffeId,
    reason: &str,
    until: Option<u64>,
    now: SystemTime,
) -> Result<u64, StoreError> {
    store.add_revocation(&Revocation {
        version: 0,
        kind: RevocationKind::Identity,
        subject: id.to_string(),
        reason: reason.to_string(),
        at: unix(now),
        until,
    })
}

/// The revocations in force, as enforcers query them. Built from the
/// store's feed and kept current with [`RevocationSet::update`], which reads
/// only what is newer than the version it holds.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    version: u64,
    by_kind: HashMap<RevocationKind, HashMap<String, Option<u64>>>,
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The version of the last revocation applied.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Applies revocations from the feed in version order; ones at or below
    /// the held version are skipped (so replaying a batch is harmless).
    /// Returns how many were applied.
    pub fn apply(&mut self, revocations: &[Revocation]) -> usize {
        let mut n = 0;
        for r in revocations {
            if r.version <= self.version {
                continue;
            }
            let subject = match r.kind {
                RevocationKind::Serial => r.subject.to_ascii_lowercase(),
                _ => r.subject.clone(),
            };
            let until = self
                .by_kind
                .entry(r.kind)
                .or_default()
                .entry(subject)
                .or_insert(r.until);
            // The longest revocation wins.
            *until = match (*until, r.until) {
                (None, _) | (_, None) => None,
                (Some(a), Some(b)) => Some(a.max(b)),
            };
            self.version = r.version;
            n += 1;
        }
        n
    }

    /// Reads the feed past the held version and applies it.
    pub fn update(&mut self, store: &dyn IdentityStore) -> Result<usize, StoreError> {
        let new = store.revocations_since(self.version)?;
        Ok(self.apply(&new))
    }

    /// Forgets revocations whose `until` has passed (the credentials they
    /// cover have expired).
    pub fn prune(&mut self, now: SystemTime) {
        let now = unix(now);
        for m in self.by_kind.values_mut() {
            m.retain(|_, until| until.is_none_or(|u| u > now));
        }
    }

    fn has(&self, kind: RevocationKind, subject: &str) -> bool {
        self.by_kind
            .get(&kind)
            .is_some_and(|m| m.contains_key(subject))
    }

    /// Is `id` revoked (as an identity, or as a banned agent)?
    pub fn is_identity_revoked(&self, id: &SpiffeId) -> bool {
        let s = id.to_string();
        self.has(RevocationKind::Identity, &s) || self.has(RevocationKind::Agent, &s)
    }

    /// Is the certificate with serial `serial` (hex, any case) revoked?
    pub fn is_serial_revoked(&self, serial: &str) -> bool {
        self.has(RevocationKind::Serial, &serial.to_ascii_lowercase())
    }

    /// Is registration entry `id` revoked (deleted)?
    pub fn is_entry_revoked(&self, id: &str) -> bool {
        self.has(RevocationKind::Entry, id)
    }

    /// Is agent `id` banned?
    pub fn is_agent_banned(&self, id: &SpiffeId) -> bool {
        self.has(RevocationKind::Agent, &id.to_string())
    }

    /// Is the token with id (`jti` or digest) `id` revoked?
    pub fn is_token_revoked(&self, id: &str) -> bool {
        self.has(RevocationKind::Token, id)
    }

    /// The check of the renewal path: may agent `agent` renew the SVID of
    /// `entry`?
    pub fn check_renewal(
        &self,
        entry: &RegistrationEntry,
        agent: &SpiffeId,
    ) -> Result<(), Revoked> {
        if self.is_entry_revoked(&entry.id) {
            return Err(Revoked::Entry(entry.id.clone()));
        }
        if self.is_agent_banned(agent) {
            return Err(Revoked::Agent(agent.to_string()));
        }
        if self.is_identity_revoked(&entry.spiffe_id) {
            return Err(Revoked::Identity(entry.spiffe_id.to_string()));
        }
        Ok(())
    }

    /// How many revocations are held.
    pub fn len(&self) -> usize {
        self.by_kind.values().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
