//! Local files the enforcement points watch: the revocation list and
//! posture attributes. Each reloads on change; an invalid file keeps the
//! last good content in force and the error is logged and counted.
//!
//! Revocations (YAML or JSON):
//!
//! ```yaml
//! spiffeIds: ["spiffe://example.org/ns/prod/sa/stolen"]
//! serials: ["0a:1b:2c", "7f00aa"]      # certificate serials, hex
//! ```
//!
//! Posture:
//!
//! ```yaml
//! identities:
//!   "spiffe://example.org/ns/prod/sa/web":
//!     expires: "2026-12-01T00:00:00Z"  # optional; expired = no posture
//!     attributes: {device_health: healthy, location: eu-west, risk_score: 20}
//! ```

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::loader::read_limited;
use crate::request::Posture;
use crate::time::parse_rfc3339;

/// Largest watched file read.
pub const MAX_WATCHED_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a watched file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FileError {
    pub path: String,
    pub message: String,
}

fn parse_doc(path: &str, text: &str) -> Result<Value, FileError> {
    let err = |message: String| FileError {
        path: path.to_string(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| err(e.to_string()));
    }
    yaml_serde::from_str::<Value>(text).map_err(|e| err(e.to_string()))
}

/// What `stat` says about a file: a replacement by rename (how keycard's
/// agent and most tools write) changes the inode, an edit in place the
/// size or modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    #[cfg(unix)]
    ino: u64,
    #[cfg(unix)]
    ctime_ns: i64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    Some(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
        #[cfg(unix)]
        ino: m.ino(),
        #[cfg(unix)]
        ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
    })
}

/// A file parsed into `T`, reloaded on change.
///
/// A check costs one `stat` while the file is unchanged; the file is read
/// only when its metadata moved, and parsed only when its bytes differ
/// from the content in force. So enforcers can check often (every 100 ms
/// or less) and pick up an agent's update well within a second.
pub struct Watched<T> {
    path: PathBuf,
    parse: fn(&str, &str) -> Result<T, FileError>,
    current: RwLock<Arc<T>>,
    fingerprint: Mutex<u64>,
    /// The metadata when the file was last read.
    stamp: Mutex<Option<Stamp>>,
    errors: AtomicU64,
    last_error: RwLock<Option<String>>,
}

impl<T> Watched<T> {
    fn read(
        path: &Path,
        parse: fn(&str, &str) -> Result<T, FileError>,
    ) -> Result<(T, u64), FileError> {
        match Self::read_unless(path, parse, None)? {
            (Some(v), fp) => Ok((v, fp)),
            // Unreachable: with no fingerprint to match, the file is parsed.
            (None, _) => Err(FileError {
                path: path.display().to_string(),
                message: "not parsed".into(),
            }),
        }
    }

    /// Reads the file; parses it unless its fingerprint is `unless`.
    fn read_unless(
        path: &Path,
        parse: fn(&str, &str) -> Result<T, FileError>,
        unless: Option<u64>,
    ) -> Result<(Option<T>, u64), FileError> {
        let name = path.display().to_string();
        let text = read_limited(path, MAX_WATCHED_FILE_BYTES).map_err(|e| FileError {
            path: name.clone(),
            message: e.to_string(),
        })?;
        let mut h = DefaultHasher::new();
        text.hash(&mut h);
        let fp = h.finish();
        if unless == Some(fp) {
            return Ok((None, fp));
        }
        Ok((Some(parse(&name, &text)?), fp))
    }

    /// Read the file now; fails when it is invalid.
    pub fn open(
        path: impl Into<PathBuf>,
        parse: fn(&str, &str) -> Result<T, FileError>,
    ) -> Result<Self, FileError> {
        let path = path.into();
        let before = stamp(&path);
        let (value, fp) = Self::read(&path, parse)?;
        Ok(Watched {
            path,
            parse,
            current: RwLock::new(Arc::new(value)),
            fingerprint: Mutex::new(fp),
            stamp: Mutex::new(before),
            errors: AtomicU64::new(0),
            last_error: RwLock::new(None),
        })
    }

    pub fn current(&self) -> Arc<T> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Failed reloads since start.
    pub fn reload_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|g| g.clone())
    }

    /// Re-read; `Ok(true)` when new content is in force, `Err` when the
    /// file changed but is invalid (the old content stays).
    pub fn reload_if_changed(&self) -> Result<bool, FileError> {
        // Taken before reading: a write racing the read shows up next time.
        let now = stamp(&self.path);
        if let Ok(mut last) = self.stamp.lock() {
            if now.is_some() && *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let known = self.fingerprint.lock().ok().map(|g| *g);
        let res = Self::read_unless(&self.path, self.parse, known);
        let (value, fp) = match res {
            Ok((None, _)) => return Ok(false),
            Ok((Some(v), fp)) => (v, fp),
            Err(e) => {
                // Report a broken file once per change of its bytes.
                let mut h = DefaultHasher::new();
                e.message.hash(&mut h);
                std::fs::read(&self.path).ok().hash(&mut h);
                let fp = h.finish();
                if let Ok(mut last) = self.fingerprint.lock() {
                    if *last == fp {
                        return Ok(false);
                    }
                    *last = fp;
                }
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %self.path.display(), error = %e, "reload failed; the last good content stays in force");
                if let Ok(mut g) = self.last_error.write() {
                    *g = Some(e.to_string());
                }
                return Err(e);
            }
        };
        if let Ok(mut last) = self.fingerprint.lock() {
            if *last == fp {
                return Ok(false);
            }
            *last = fp;
        }
        if let Ok(mut g) = self.current.write() {
            *g = Arc::new(value);
        }
        if let Ok(mut g) = self.last_error.write() {
            *g = None;
        }
        tracing::info!(file = %self.path.display(), "reloaded");
        Ok(true)
    }
}

/// Watched files given beside an enforcer's configuration (kept apart
/// so that configurations written out field by field keep compiling).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtraFiles {
    /// Just-in-time grants ([`crate::grants`]), e.g. an agent's `grants.json`.
    pub grants: Option<PathBuf>,
}

/// Revoked identities and certificate serials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    pub spiffe_ids: HashSet<String>,
    /// Lower-case hex without separators or leading zeros.
    pub serials: HashSet<String>,
}

/// Normalize a certificate serial: lower-case hex, no `:`, no leading zeros.
pub fn normalize_serial(s: &str) -> String {
    let hex: String = s
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let t = hex.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

fn string_list(doc: &Value, key: &str, path: &str) -> Result<Vec<String>, FileError> {
    match doc.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| FileError {
                    path: path.to_string(),
                    message: format!("{key}[{i}]: expected a string"),
                })
            })
            .collect(),
        Some(_) => Err(FileError {
            path: path.to_string(),
            message: format!("{key}: expected a list of strings"),
        }),
    }
}

impl Revocations {
    pub fn parse(path: &str, text: &str) -> Result<Self, FileError> {
        let doc = parse_doc(path, text)?;
        let err = |message: String| FileError {
            path: path.to_string(),
            message,
        };
        if let Value::Object(m) = &doc {
            for k in m.keys() {
                if k != "spiffeIds" && k != "serials" {
                    return Err(err(format!(
                        "unknown field {k:?} (expected spiffeIds, serials)"
                    )));
                }
            }
        } else {
            return Err(err("expected a mapping with spiffeIds and serials".into()));
        }
        let mut r = Revocations::default();
        for (i, id) in string_list(&doc, "spiffeIds", path)?
            .into_iter()
            .enumerate()
        {
            if id.parse::<keycard_core::SpiffeId>().is_err() {
                return Err(err(format!("spiffeIds[{i}]: {id:?} is not a SPIFFE ID")));
            }
            r.spiffe_ids.insert(id);
        }
        for (i, s) in string_list(&doc, "serials", path)?.into_iter().enumerate() {
            let n = normalize_serial(&s);
            if !n.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err(format!("serials[{i}]: {s:?} is not hex")));
            }
            r.serials.insert(n);
        }
        Ok(r)
    }

    pub fn is_revoked(&self, spiffe_id: Option<&str>, serial: Option<&str>) -> bool {
        spiffe_id.is_some_and(|id| self.spiffe_ids.contains(id))
            || serial.is_some_and(|s| self.serials.contains(&normalize_serial(s)))
    }
}

/// Posture attributes per identity, with optional expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostureDb {
    entries: HashMap<String, (Option<i64>, Posture)>,
}

impl PostureDb {
    pub fn parse(path: &str, text: &str) -> Result<Self, FileError> {
        let doc = parse_doc(path, text)?;
        let err = |message: String| FileError {
            path: path.to_string(),
            message,
        };
        let mut db = PostureDb::default();
        let ids = match doc.get("identities") {
            None | Some(Value::Null) => return Ok(db),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(err(
                    "identities: expected a mapping of identity to posture".into()
                ))
            }
        };
        for (id, entry) in ids {
            let at = format!("identities[{id:?}]");
            let Value::Object(e) = entry else {
                return Err(err(format!("{at}: expected a mapping")));
            };
            for k in e.keys() {
                if k != "expires" && k != "attributes" {
                    return Err(err(format!(
                        "{at}.{k}: unknown field (expected expires, attributes)"
                    )));
                }
            }
            let expires =
                match e.get("expires") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(parse_rfc3339(s).ok_or_else(|| {
                        err(format!("{at}.expires: {s:?} is not an RFC 3339 time"))
                    })?),
                    Some(_) => return Err(err(format!("{at}.expires: expected an RFC 3339 time"))),
                };
            let mut posture = Posture::default();
            if let Some(attrs) = e.get("attributes") {
                let Value::Object(a) = attrs else {
                    return Err(err(format!("{at}.attributes: expected a mapping")));
                };
                for (k, v) in a {
                    let vals = match v {
                        Value::String(s) => vec![s.clone()],
                        Value::Number(_) | Value::Bool(_) => vec![v.to_string()],
                        Value::Array(items) => items
                            .iter()
                            .map(|i| match i {
                                Value::String(s) => Ok(s.clone()),
                                Value::Number(_) | Value::Bool(_) => Ok(i.to_string()),
                                _ => Err(err(format!(
                                    "{at}.attributes.{k}: lists hold strings, numbers or booleans"
                                ))),
                            })
                            .collect::<Result<_, _>>()?,
                        _ => {
                            return Err(err(format!(
                                "{at}.attributes.{k}: expected a string, number, boolean or list"
                            )))
                        }
                    };
                    posture.attributes.insert(k.clone(), vals);
                }
            }
            db.entries.insert(id.clone(), (expires, posture));
        }
        Ok(db)
    }

    /// The posture of an identity at a time (Unix seconds); none when expired.
    pub fn get(&self, identity: &str, now: i64) -> Option<&Posture> {
        let (exp, p) = self.entries.get(identity)?;
        match exp {
            Some(e) if *e <= now => None,
            _ => Some(p),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn revocations() {
        let r = Revocations::parse(
            "r.yaml",
            "spiffeIds: [\"spiffe://td/ns/a/sa/b\"]\nserials: [\"00:0A:1b\"]\n",
        )
        .unwrap();
        assert!(r.is_revoked(Some("spiffe://td/ns/a/sa/b"), None));
        assert!(!r.is_revoked(Some("spiffe://td/ns/a/sa/c"), None));
        assert!(r.is_revoked(None, Some("a1b")));
        assert!(r.is_revoked(None, Some("0A:1B")));
        assert!(Revocations::parse("r.yaml", "spiffeIds: [nope]")
            .unwrap_err()
            .message
            .contains("spiffeIds[0]"));
        assert!(Revocations::parse("r.yaml", "serial: []").is_err());
        assert!(Revocations::parse("r.yaml", "serials: [xyz]").is_err());
        assert_eq!(
            Revocations::parse("r.yaml", "").unwrap(),
            Revocations::default()
        );
    }

    #[test]
    fn a_watched_file_is_reread_only_when_it_moved_and_reparsed_only_when_its_bytes_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let a = r#"{"spiffeIds": ["spiffe://td/a"]}"#;
        std::fs::write(&path, a).unwrap();
        let w = Watched::open(&path, Revocations::parse).unwrap();
        assert!(!w.reload_if_changed().unwrap(), "nothing moved");
        // Replaced by rename with the same bytes: read, not swapped.
        let tmp = dir.path().join("r.tmp");
        std::fs::write(&tmp, a).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(!w.reload_if_changed().unwrap());
        // Replaced by rename with new bytes: in force at the next check.
        std::fs::write(&tmp, r#"{"spiffeIds": ["spiffe://td/b"]}"#).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(w.reload_if_changed().unwrap());
        assert!(w.current().is_revoked(Some("spiffe://td/b"), None));
        // Edited in place (another size): seen too.
        std::fs::write(&path, r#"{"spiffeIds": ["spiffe://td/cc"]}"#).unwrap();
        assert!(w.reload_if_changed().unwrap());
        assert!(w.current().is_revoked(Some("spiffe://td/cc"), None));
        // Broken: the last good content stays, the error is reported once.
        std::fs::write(&path, "{").unwrap();
        assert!(w.reload_if_changed().is_err());
        assert!(!w.reload_if_changed().unwrap());
        assert!(w.current().is_revoked(Some("spiffe://td/cc"), None));
    }

    #[test]
    fn posture_with_expiry() {
        let db = PostureDb::parse(
            "p.yaml",
            "identities:\n  spiffe://td/a:\n    expires: \"2030-01-01T00:00:00Z\"\n    attributes: {device_health: healthy, risk_score: 20, groups: [a, b]}\n  spiffe://td/old:\n    expires: \"2000-01-01T00:00:00Z\"\n    attributes: {device_health: healthy}\n",
        )
        .unwrap();
        let now = parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let p = db.get("spiffe://td/a", now).unwrap();
        assert_eq!(p.attributes["risk_score"], vec!["20".to_string()]);
        assert_eq!(p.attributes["groups"].len(), 2);
        assert!(db.get("spiffe://td/old", now).is_none());
        assert!(db.get("spiffe://td/none", now).is_none());
        let e = PostureDb::parse("p.yaml", "identities:\n  x: {expires: soon}\n").unwrap_err();
        assert!(e.message.contains("expires"), "{e}");
        let e = PostureDb::parse("p.yaml", "identities:\n  x: {attributes: {a: {b: c}}}\n")
            .unwrap_err();
        assert!(e.message.contains("attributes.a"), "{e}");
    }
}
