//! The identity half of the SQLite backend (migration 2). Records are kept
//! as JSON documents keyed by their identifiers: the server reads them
//! whole, and JSON lets a newer keycard add fields without a migration.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde::de::DeserializeOwned;

use keycard_core::{AgentRecord, JoinToken, RegistrationEntry, Revocation, SpiffeId, TokenUse};

use crate::sqlite::classify;
use crate::util::{from_json, to_i64, to_json, to_u64};
use crate::{CasOutcome, IdentityStore, SqliteStore, StoreError, VersionedValue};

fn unique(e: rusqlite::Error, what: String) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            StoreError::Duplicate(what)
        }
        _ => classify(e),
    }
}

/// The next version of a named value (a counter shared by every key, so a
/// version is never reused), inside the caller's write transaction.
fn next_version(tx: &rusqlite::Transaction<'_>) -> Result<i64, StoreError> {
    tx.query_row(
        "UPDATE kv_version SET last = last + 1 WHERE one = 1 RETURNING last",
        [],
        |r| r.get(0),
    )
    .map_err(classify)
}

/// Sets `key` to `value` at `version`, inside the caller's transaction.
fn upsert(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    value: &[u8],
    version: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO kv (key, value, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
        params![key, value, version],
    )
    .map_err(classify)?;
    Ok(())
}

impl SqliteStore {
    fn json_rows<T: DeserializeOwned>(&self, sql: &str, what: &str) -> Result<Vec<T>, StoreError> {
        let mut st = self.conn.prepare_cached(sql).map_err(classify)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(classify)?;
        rows.map(|r| from_json(&r.map_err(classify)?, what))
            .collect()
    }

    fn json_row<T: DeserializeOwned>(
        &self,
        sql: &str,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row(sql, [key], |r| r.get(0))
            .optional()
            .map_err(classify)?;
        body.map(|b| from_json(&b, what)).transpose()
    }
}

impl IdentityStore for SqliteStore {
    fn create_entry(&mut self, entry: &RegistrationEntry) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO id_entries (id, spiffe_id, body) VALUES (?1, ?2, ?3)",
                params![entry.id, entry.spiffe_id.to_string(), to_json(entry)?],
            )
            .map_err(|e| unique(e, format!("entry {}", entry.id)))?;
        Ok(())
    }

    fn entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        self.json_row("SELECT body FROM id_entries WHERE id = ?1", id, "entry")
    }

    fn list_entries(&self) -> Result<Vec<RegistrationEntry>, StoreError> {
        self.json_rows("SELECT body FROM id_entries ORDER BY id", "entry")
    }

    fn delete_entry(&mut self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let body: Option<String> = tx
            .query_row("SELECT body FROM id_entries WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(classify)?;
        tx.execute("DELETE FROM id_entries WHERE id = ?1", [id])
            .map_err(classify)?;
        tx.commit().map_err(classify)?;
        body.map(|b| from_json(&b, "entry")).transpose()
    }

    fn put_join_token(&mut self, token: &JoinToken) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO id_join_tokens (hash, expires_at, used_at, body) VALUES (?1, ?2, NULL, ?3)",
                params![token.hash, to_i64(token.expires_at), to_json(token)?],
            )
            .map_err(|e| unique(e, "join token".into()))?;
        Ok(())
    }

    fn use_join_token(&mut self, hash: &str, now: u64) -> Result<TokenUse, StoreError> {
        // One conditional UPDATE decides, so concurrent consumers (even on
        // separate connections) cannot both win.
        let changed = self
            .conn
            .execute(
                "UPDATE id_join_tokens SET used_at = ?2
                 WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![hash, to_i64(now)],
            )
            .map_err(classify)?;
        if changed == 1 {
            return Ok(TokenUse::Consumed);
        }
        let row: Option<(i64, Option<i64>)> = self
            .conn
            .query_row(
                "SELECT expires_at, used_at FROM id_join_tokens WHERE hash = ?1",
                [hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(classify)?;
        Ok(match row {
            None => TokenUse::Unknown,
            Some((_, Some(_))) => TokenUse::Replayed,
            Some(_) => TokenUse::Expired,
        })
    }

    fn put_agent(&mut self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO id_agents (spiffe_id, body) VALUES (?1, ?2)
                 ON CONFLICT (spiffe_id) DO UPDATE SET body = excluded.body",
                params![agent.spiffe_id.to_string(), to_json(agent)?],
            )
            .map_err(classify)?;
        Ok(())
    }

    fn agent(&self, id: &SpiffeId) -> Result<Option<AgentRecord>, StoreError> {
        self.json_row(
            "SELECT body FROM id_agents WHERE spiffe_id = ?1",
            &id.to_string(),
            "agent",
        )
    }

    fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.json_rows("SELECT body FROM id_agents ORDER BY spiffe_id", "agent")
    }

    fn add_revocation(&mut self, revocation: &Revocation) -> Result<u64, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        tx.execute("INSERT INTO id_revocations (body) VALUES ('')", [])
            .map_err(classify)?;
        let version = to_u64(tx.last_insert_rowid(), "revocation version")?;
        let body = to_json(&Revocation {
            version,
            ..revocation.clone()
        })?;
        tx.execute(
            "UPDATE id_revocations SET body = ?1 WHERE version = ?2",
            params![body, to_i64(version)],
        )
        .map_err(classify)?;
        tx.commit().map_err(classify)?;
        Ok(version)
    }

    fn revocations_since(&self, version: u64) -> Result<Vec<Revocation>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT body FROM id_revocations WHERE version > ?1 ORDER BY version")
            .map_err(classify)?;
        let rows = st
            .query_map([to_i64(version)], |r| r.get::<_, String>(0))
            .map_err(classify)?;
        rows.map(|r| from_json(&r.map_err(classify)?, "revocation"))
            .collect()
    }

    fn put_value(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let version = next_version(&tx)?;
        upsert(&tx, key, value, version)?;
        tx.commit().map_err(classify)
    }

    fn value(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(classify)
    }

    fn values_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // substr() compares bytes exactly: no LIKE wildcards to escape.
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT key, value FROM kv WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )
            .map_err(classify)?;
        let rows = st
            .query_map([prefix], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(classify)?;
        rows.map(|r| r.map_err(classify)).collect()
    }

    fn delete_value(&mut self, key: &str) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM kv WHERE key = ?1", [key])
            .map_err(classify)?;
        Ok(n > 0)
    }

    fn versioned_value(&self, key: &str) -> Result<Option<VersionedValue>, StoreError> {
        let row: Option<(i64, Vec<u8>)> = self
            .conn
            .query_row("SELECT version, value FROM kv WHERE key = ?1", [key], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(classify)?;
        row.map(|(version, value)| {
            Ok(VersionedValue {
                version: to_u64(version, "value version")?,
                value,
            })
        })
        .transpose()
    }

    fn compare_and_put_value(
        &mut self,
        key: &str,
        expected: u64,
        value: &[u8],
    ) -> Result<CasOutcome, StoreError> {
        // The write lock is taken first (IMMEDIATE), so the version read
        // and the write are one step for every connection to the file.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let actual: Option<i64> = tx
            .query_row("SELECT version FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(classify)?;
        let actual = actual.map_or(Ok(0), |v| to_u64(v, "value version"))?;
        if actual != expected {
            return Ok(CasOutcome::Conflict { actual });
        }
        let version = next_version(&tx)?;
        upsert(&tx, key, value, version)?;
        tx.commit().map_err(classify)?;
        Ok(CasOutcome::Written {
            version: to_u64(version, "value version")?,
        })
    }
}
