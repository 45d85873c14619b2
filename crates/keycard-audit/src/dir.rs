//! The decision log of a directory, as every writer opens it: `audit.db`
//! (SQLite: records, checkpoints, the persisted redaction; 0600),
//! `audit.key` (the Ed25519 checkpoint signing key, 0600), `audit.pub` (its
//! verifier key, to publish) and `audit.hash-key` (the HMAC key of a keyed
//! redaction, 0600). `keycard up`, `keycard check --audit-log`, `keycard
//! authz serve --audit-log`, `keycard proxy --audit-log` and `keycard audit`
//! all open a directory through [`open_with`], so they apply the same
//! redaction and sign with the same key.
//!
//! This module does file I/O; it is behind the `dir` feature so the rest of
//! the crate stays free of it.

use std::io::Write;
use std::path::{Path, PathBuf};

use keycard_store::{SqliteOptions, SqliteStore};

use crate::decision::DecisionLog;
use crate::note::{Ed25519Signer, Signer};
use crate::record::{Redaction, RedactionConfig};

/// The origin (and key name) of a data directory's decision log.
pub const DEFAULT_ORIGIN: &str = "keycard/decisions";

/// Why the decision log could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum DecisionLogError {
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a signing key: {reason}")]
    Key { path: String, reason: String },
    #[error("decision log: {0}")]
    Log(String),
}

/// The signing key file of `dir`.
pub fn key_path(dir: &Path) -> PathBuf {
    dir.join("audit.key")
}

/// The verifier key file of `dir`.
pub fn pub_path(dir: &Path) -> PathBuf {
    dir.join("audit.pub")
}

/// The log database of `dir`.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join("audit.db")
}

/// Writes a new file with `mode`, refusing to overwrite one.
pub fn write_new(path: &Path, data: impl AsRef<[u8]>, mode: u32) -> Result<(), DecisionLogError> {
    let err = |source| DecisionLogError::File {
        path: path.display().to_string(),
        source,
    };
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(err)?;
    f.write_all(data.as_ref()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Creates `dir`'s signing key (0600) and verifier key if absent; returns
/// whether it did.
pub fn ensure_signing_key(dir: &Path, origin: &str) -> Result<bool, DecisionLogError> {
    if key_path(dir).exists() {
        return Ok(false);
    }
    let key = Ed25519Signer::generate(origin).map_err(|e| DecisionLogError::Key {
        path: key_path(dir).display().to_string(),
        reason: format!("origin {origin:?} cannot name a signing key: {e}"),
    })?;
    write_new(&key_path(dir), format!("{}\n", key.to_private_key()), 0o600)?;
    let p = pub_path(dir);
    if p.exists() {
        std::fs::remove_file(&p).map_err(|source| DecisionLogError::File {
            path: p.display().to_string(),
            source,
        })?;
    }
    write_new(&p, format!("{}\n", key.verifier()), 0o644)?;
    Ok(true)
}

/// Reads `dir`'s signing key. The error never quotes the key.
pub fn read_signer(dir: &Path) -> Result<Ed25519Signer, DecisionLogError> {
    let path = key_path(dir);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(&path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the signing key is readable by others: chmod 600 it");
            }
        }
    }
    let text = std::fs::read_to_string(&path).map_err(|source| DecisionLogError::File {
        path: path.display().to_string(),
        source,
    })?;
    Ed25519Signer::from_private_key(text.trim()).map_err(|e| DecisionLogError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The HMAC key of a keyed redaction, beside the signing key (0600).
pub fn hash_key_path(dir: &Path) -> PathBuf {
    dir.join("audit.hash-key")
}

/// Where the log's redaction is kept among its settings.
const REDACTION_SETTING: &str = "redaction";

/// Opens (creating if needed) the decision log of `dir`, applying the
/// redaction persisted with it.
pub fn open(dir: &Path) -> Result<DecisionLog<SqliteStore>, DecisionLogError> {
    open_with(dir, None, None)
}

/// Opens the decision log of `dir`: creates the directory (0700) and the
/// signing key if absent, opens the database (refusing to grow past
/// `max_size_bytes`), and settles the redaction every writer applies (see
/// [`log_redaction`]); `requested` is a writer's own redaction and the
/// file of its HMAC key.
pub fn open_with(
    dir: &Path,
    max_size_bytes: Option<u64>,
    requested: Option<(Redaction, Option<&Path>)>,
) -> Result<DecisionLog<SqliteStore>, DecisionLogError> {
    create_private_dir(dir)?;
    ensure_signing_key(dir, DEFAULT_ORIGIN)?;
    let signer = read_signer(dir)?;
    let origin = Signer::name(&signer).to_string();
    let opts = SqliteOptions {
        max_size_bytes,
        read_only: false,
    };
    let mut store = SqliteStore::open_with(db_path(dir), &opts).map_err(|e| {
        DecisionLogError::Log(format!(
            "opening the decision log {}: {e}",
            db_path(dir).display()
        ))
    })?;
    let redaction = log_redaction(dir, &mut store, requested)?;
    Ok(DecisionLog::open(origin, store, Box::new(signer))
        .map_err(|e| DecisionLogError::Log(e.to_string()))?
        .with_redaction(redaction))
}

fn create_private_dir(dir: &Path) -> Result<(), DecisionLogError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|source| DecisionLogError::File {
        path: dir.display().to_string(),
        source,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, DecisionLogError> {
    std::fs::read(path).map_err(|source| DecisionLogError::File {
        path: path.display().to_string(),
        source,
    })
}

/// The redaction every writer of the log applies. The first writer that
/// asks for one persists it in the log's database (the rules and the key's
/// digest, never the key; the key is copied to `audit.hash-key`, 0600);
/// from then on every writer applies it, and one that asks for other rules
/// is refused rather than storing values hashed or masked differently.
pub fn log_redaction(
    dir: &Path,
    store: &mut SqliteStore,
    requested: Option<(Redaction, Option<&Path>)>,
) -> Result<Redaction, DecisionLogError> {
    let log_err = |m: String| DecisionLogError::Log(m);
    let persisted: Option<RedactionConfig> = match store
        .audit_setting(REDACTION_SETTING)
        .map_err(|e| log_err(e.to_string()))?
    {
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            log_err(format!(
                "the redaction persisted with the decision log is unreadable: {e}"
            ))
        })?),
        None => None,
    };
    match (persisted, requested) {
        (None, None) => Ok(Redaction::new()),
        (None, Some((r, key_file))) => {
            if let Some(f) = key_file {
                if !hash_key_path(dir).exists() {
                    write_new(&hash_key_path(dir), read_file(f)?, 0o600)?;
                }
            }
            let config = serde_json::to_string(&r.config()).map_err(|e| log_err(e.to_string()))?;
            store
                .set_audit_setting(REDACTION_SETTING, &config)
                .map_err(|e| log_err(e.to_string()))?;
            tracing::info!("persisted the log's redaction: every writer of this log applies it");
            Ok(r)
        }
        (Some(p), None) => {
            let stored = hash_key_path(dir);
            let key = if stored.exists() {
                Some(read_file(&stored)?)
            } else {
                None
            };
            Redaction::from_config(&p, key.as_deref()).map_err(|e| {
                log_err(format!(
                    "applying the redaction persisted with the decision log: {e}"
                ))
            })
        }
        (Some(p), Some((r, _))) => {
            if r.config() != p {
                return Err(log_err(format!(
                    "this log's redaction is already set ({}), and every writer applies it: \
                     drop --hash/--mask/--hash-key-file, or give the same rules and key",
                    serde_json::to_string(&p).unwrap_or_default()
                )));
            }
            Ok(r)
        }
    }
}
