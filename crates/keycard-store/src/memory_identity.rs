//! The identity half of the in-memory fake.

use std::collections::BTreeMap;

use keycard_core::{AgentRecord, JoinToken, RegistrationEntry, Revocation, SpiffeId, TokenUse};

use crate::{CasOutcome, IdentityStore, MemoryStore, StoreError, VersionedValue};

/// Identity tables of a [`MemoryStore`].
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityTables {
    entries: BTreeMap<String, RegistrationEntry>,
    tokens: BTreeMap<String, (JoinToken, bool)>,
    agents: BTreeMap<String, AgentRecord>,
    revocations: Vec<Revocation>,
    /// Each value with its version.
    values: BTreeMap<String, (u64, Vec<u8>)>,
    /// The last version handed out (versions are never reused).
    last_version: u64,
}

impl IdentityTables {
    fn put(&mut self, key: &str, value: &[u8]) -> u64 {
        self.last_version += 1;
        self.values
            .insert(key.to_string(), (self.last_version, value.to_vec()));
        self.last_version
    }
}

impl IdentityStore for MemoryStore {
    fn create_entry(&mut self, entry: &RegistrationEntry) -> Result<(), StoreError> {
        let t = &mut self.identity;
        if t.entries.contains_key(&entry.id) {
            return Err(StoreError::Duplicate(format!("entry {}", entry.id)));
        }
        t.entries.insert(entry.id.clone(), entry.clone());
        Ok(())
    }

    fn entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        Ok(self.identity.entries.get(id).cloned())
    }

    fn list_entries(&self) -> Result<Vec<RegistrationEntry>, StoreError> {
        Ok(self.identity.entries.values().cloned().collect())
    }

    fn delete_entry(&mut self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        Ok(self.identity.entries.remove(id))
    }

    fn put_join_token(&mut self, token: &JoinToken) -> Result<(), StoreError> {
        let t = &mut self.identity;
        if t.tokens.contains_key(&token.hash) {
            return Err(StoreError::Duplicate("join token".into()));
        }
        t.tokens.insert(token.hash.clone(), (token.clone(), false));
        Ok(())
    }

    fn use_join_token(&mut self, hash: &str, now: u64) -> Result<TokenUse, StoreError> {
        Ok(match self.identity.tokens.get_mut(hash) {
            None => TokenUse::Unknown,
            Some((_, true)) => TokenUse::Replayed,
            Some((t, _)) if now >= t.expires_at => TokenUse::Expired,
            Some((_, used)) => {
                *used = true;
                TokenUse::Consumed
            }
        })
    }

    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.identity
            .agents
            .insert(agent.spiffe_id.to_string(), agent.clone());
        Ok(())
    }

    fn agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        Ok(self.identity.agents.get(&id.to_string()).cloned())
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        Ok(self.identity.agents.values().cloned().collect())
    }

    fn add_revocation(&mut self, revocation: &Revocation) -> Result<u64, StoreError> {
        let t = &mut self.identity;
        let version = t.revocations.len() as u64 + 1;
        t.revocations.push(Revocation {
            version,
            ..revocation.clone()
        });
        Ok(version)
    }

    fn revocations_since(&self, version: u64) -> Result<Vec<Revocation>, StoreError> {
        Ok(self
            .identity
            .revocations
            .iter()
            .filter(|r| r.version > version)
            .cloned()
            .collect())
    }

    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.identity.put(key, value);
        Ok(())
    }

    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.identity.values.get(key).map(|(_, v)| v.clone()))
    }

    fn values_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .identity
            .values
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect())
    }

    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError> {
        Ok(self.identity.values.remove(key).is_some())
    }

    fn versioned_value(&self, key: &str) -> Result<Option<VersionedValue>, StoreError> {
        Ok(self
            .identity
            .values
            .get(key)
            .map(|(version, value)| VersionedValue {
                version: *version,
                value: value.clone(),
            }))
    }

    fn compare_and_put_value(
        &mut self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<CasOutcome, StoreError> {
        let actual = self.identity.values.get(key).map_or(0, |(v, _)| *v);
        if actual != expected {
            return Ok(CasOutcome::Conflict { actual });
        }
        Ok(CasOutcome::Written {
            version: self.identity.put(key, value),
        })
    }
}
