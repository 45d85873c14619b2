//! The decision log of a data directory: `audit.db` (records, checkpoints),
//! `audit.key` (the Ed25519 checkpoint signing key, 0600) and `audit.pub`
//! (its verifier key, to publish). `keycard audit verify --data-dir DIR`
//! reads the same files, so every decision the server records (admission,
//! administrative changes, grants) is verifiable with the CLI.

use std::sync::Mutex;

use keycard_audit::{DecisionLog, EnforcementPoint, Outcome, Record};
use keycard_store::SqliteStore;

// The directory handling lives in keycard-audit so every enforcement point
// (the proxy and ext_authz too) opens a log the same way.
pub use keycard_audit::dir::{
    db_path, ensure_signing_key, hash_key_path, key_path, log_redaction, open, open_with, pub_path,
    read_signer, write_new, DecisionLogError, DEFAULT_ORIGIN,
};

/// The server's decision log, shared by its parts.
pub struct Decisions(Mutex<DecisionLog<SqliteStore>>);

impl std::fmt::Debug for Decisions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decisions")
    }
}

impl Decisions {
    pub fn new(log: DecisionLog<SqliteStore>) -> Self {
        Decisions(Mutex::new(log))
    }

    /// Appends `records` durably; returns their decision ids.
    pub fn append(&self, records: Vec<Record>) -> Result<Vec<String>, DecisionLogError> {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let out = log
            .append(records)
            .map_err(|e| DecisionLogError::Log(e.to_string()))?;
        Ok(out.into_iter().map(|a| a.id).collect())
    }

    /// Records an administrative change by `actor`: `action` on `resource`,
    /// with the `change` itself.
    pub fn admin(
        &self,
        actor: &str,
        action: &str,
        resource: &str,
        change: serde_json::Value,
    ) -> Result<String, DecisionLogError> {
        let rec = admin_record(actor, action, resource, change);
        self.append(vec![rec])?
            .pop()
            .ok_or_else(|| DecisionLogError::Log("nothing appended".into()))
    }

    /// Records matching `filter`, as JSON, in log order.
    pub fn query(
        &self,
        filter: &keycard_store::EntryFilter,
    ) -> Result<Vec<serde_json::Value>, DecisionLogError> {
        use keycard_store::AuditStore;
        let log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let rows = log
            .store()
            .query(filter)
            .map_err(|e| DecisionLogError::Log(e.to_string()))?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.data).ok())
            .collect())
    }

    /// Signs a checkpoint now (on shutdown, and from a timer).
    pub fn checkpoint(&self) -> Result<(), DecisionLogError> {
        let mut log = self.0.lock().unwrap_or_else(|p| p.into_inner());
        log.checkpoint()
            .map(drop)
            .map_err(|e| DecisionLogError::Log(e.to_string()))
    }
}

/// The record of an administrative change.
pub fn admin_record(
    actor: &str,
    action: &str,
    resource: &str,
    change: serde_json::Value,
) -> Record {
    Record {
        action: action.to_string(),
        actor: Some(actor.to_string()),
        attributes: None,
        bundle_revision: String::new(),
        change: Some(change),
        id: String::new(),
        index: 0,
        input_digest: String::new(),
        outcome: Outcome::Allow,
        point: EnforcementPoint::ControlPlane,
        policy: "keycard/api".to_string(),
        reason: format!("{action} by {actor}"),
        resource: resource.to_string(),
        rule: action.to_string(),
        subject: actor.to_string(),
        time: String::new(),
        v: 0,
    }
}
