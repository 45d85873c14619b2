//! What the enforcers of a node read: the files an agent keeps current in
//! `<data-dir>/enforce/` from its sync with the server.
//!
//! | file | for | content |
//! |---|---|---|
//! | `revocations.json` | `--revocations` | revoked SPIFFE IDs (identities and banned agents) and serials in force |
//! | `posture.json` | `--posture` | posture signals in force, with their expiry |
//! | `policies/` | `--policy-dir` | the `authz` policies, one file per API policy |
//! | `admission/` | `keycard admission serve --enforce-dir` | the `rego` and `gatekeeper` policies |
//! | `exceptions.yaml` | `--exceptions` | every exception document, merged |
//! | `grants.json` | `--grants-file` | grants, with their status and expiry |
//! | `state.json` | people | the versions the files are at |
//! | `sync-state.json` | the agent | its sync position and what the files were built from (0600) |
//!
//! `keycard proxy` and `keycard authz serve` pointed at these (the
//! `--policy-dir`, `--revocations`, `--posture` and `--grants-file` flags) apply every change
//! at their next poll, without a restart. Each file is replaced atomically
//! (written beside, synced, renamed over); a directory is replaced whole,
//! by building the next version in a hidden directory and swapping the
//! symbolic link, so an enforcer never reads half a change. A file is only
//! rewritten when its bytes change, so enforcers' change checks stay cheap.
//! Revocations and policies are not secret (0644); posture and grants name
//! people and their devices (0600).
//!
//! How each collection is versioned in the sync: revocations are a feed
//! (only those after the agent's version come), policies and exceptions
//! are a feed of documents with tombstones (only documents changed after
//! the agent's revision come), and posture and grants, small and expiring,
//! come whole when their digest differs from the agent's.
//!
//! The agent's position (document revision, control digest, revocation
//! version) and what the files were built from (documents, posture,
//! grants, revocations in force) are saved in `sync-state.json` after each
//! change, files first, so the state never claims more than the files
//! hold. [`EnforcerFiles::open`] restores it: a restarted agent asks only
//! for what it missed, and while the server is away the files stay as
//! they were. A state file that cannot be read is logged and ignored (the
//! agent then starts from nothing, as on its first start).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use keycard_core::{Revocation, RevocationKind};
use keycard_store::{Store, StoreError};

use crate::control::{Grant, Posture};
use crate::policies::{PolicyDoc, PolicyKind, SyncDocument, EXCEPTION, POLICY};

/// The directory under an agent's data directory.
pub const ENFORCE_DIR: &str = "enforce";
pub const REVOCATIONS_FILE: &str = "revocations.json";
pub const POSTURE_FILE: &str = "posture.json";
pub const GRANTS_FILE: &str = "grants.json";
pub const EXCEPTIONS_FILE: &str = "exceptions.yaml";
pub const STATE_FILE: &str = "state.json";
/// The agent's saved sync position (see the module docs).
pub const SYNC_STATE_FILE: &str = "sync-state.json";
/// The format of [`SYNC_STATE_FILE`].
const SYNC_STATE_FORMAT: u32 = 1;
pub const POLICIES_DIR: &str = "policies";
pub const ADMISSION_DIR: &str = "admission";

/// The enforcer half of a sync answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnforcerSync {
    /// The document revision this answer brings the agent to.
    pub revision: u64,
    /// Policy and exception documents changed after the agent's revision.
    pub documents: Vec<SyncDocument>,
    /// More documents follow: sync again.
    #[serde(default)]
    pub more: bool,
    /// Digest of the posture and grants in force.
    pub control_digest: String,
    /// Every posture signal in force, when the digest differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posture: Option<Vec<Posture>>,
    /// Every grant, when the digest differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
}

/// The posture in force and the grants at `now`, with their digest.
pub fn control_state(
    store: &dyn Store,
    now: u64,
) -> Result<(Vec<Posture>, Vec<Grant>, String), StoreError> {
    let posture = crate::control::postures(store, now)?;
    let grants = crate::control::grants(store, now)?;
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&posture).unwrap_or_default());
    h.update(b"\n");
    h.update(serde_json::to_vec(&grants).unwrap_or_default());
    Ok((posture, grants, hex::encode(&h.finalize()[..16])))
}

/// What an agent at document revision `since` and control digest `digest`
/// needs now.
pub fn snapshot(
    store: &dyn Store,
    since: u64,
    digest: &str,
    now: u64,
) -> Result<EnforcerSync, StoreError> {
    let (documents, revision, more) = crate::policies::changes_since(store, since)?;
    let (posture, grants, control_digest) = control_state(store, now)?;
    let fresh = control_digest != digest;
    Ok(EnforcerSync {
        revision,
        documents,
        more,
        posture: fresh.then_some(posture),
        grants: fresh.then_some(grants),
        control_digest,
    })
}

/// Why the files could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct EnforceError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EnforceError + '_ {
    move |source| EnforceError {
        path: path.display().to_string(),
        source,
    }
}

#[derive(Default)]
struct Held {
    revision: u64,
    control_digest: String,
    revocation_version: u64,
    docs: BTreeMap<(String, String), PolicyDoc>,
    posture: Vec<Posture>,
    grants: Vec<Grant>,
    /// (serial?, subject) -> until: SPIFFE IDs (identities, banned
    /// agents) and certificate serials, the kinds enforcers check.
    revoked: BTreeMap<(bool, String), Option<u64>>,
    /// Every revocation in force, of every kind, by version: what the
    /// agent's own revocation set is rebuilt from after a restart.
    revocations: BTreeMap<u64, Revocation>,
    /// The bytes last written to each file or directory (by name).
    written: HashMap<&'static str, Vec<u8>>,
    generation: u64,
}

/// What [`SYNC_STATE_FILE`] holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    format: u32,
    document_revision: u64,
    control_digest: String,
    revocation_version: u64,
    documents: Vec<PolicyDoc>,
    /// The collection of each of `documents`, in the same order.
    collections: Vec<String>,
    posture: Vec<Posture>,
    grants: Vec<Grant>,
    revocations: Vec<Revocation>,
}

impl SavedState {
    fn of(h: &Held) -> Self {
        SavedState {
            format: SYNC_STATE_FORMAT,
            document_revision: h.revision,
            control_digest: h.control_digest.clone(),
            revocation_version: h.revocation_version,
            documents: h.docs.values().cloned().collect(),
            collections: h.docs.keys().map(|(c, _)| c.clone()).collect(),
            posture: h.posture.clone(),
            grants: h.grants.clone(),
            revocations: h.revocations.values().cloned().collect(),
        }
    }

    /// The held state it describes (nothing written yet).
    fn into_held(self, path: &Path) -> Result<Held, String> {
        if self.format != SYNC_STATE_FORMAT {
            return Err(format!(
                "{}: format {} is not {SYNC_STATE_FORMAT}",
                path.display(),
                self.format
            ));
        }
        if self.collections.len() != self.documents.len() {
            return Err(format!(
                "{}: {} collections for {} documents",
                path.display(),
                self.collections.len(),
                self.documents.len()
            ));
        }
        let mut h = Held {
            revision: self.document_revision,
            control_digest: self.control_digest,
            revocation_version: self.revocation_version,
            posture: self.posture,
            grants: self.grants,
            ..Held::default()
        };
        for (c, d) in self.collections.into_iter().zip(self.documents) {
            h.docs.insert((c, d.name.clone()), d);
        }
        for r in self.revocations {
            if r.version > h.revocation_version {
                return Err(format!(
                    "{}: revocation {} is after the saved version {}",
                    path.display(),
                    r.version,
                    h.revocation_version
                ));
            }
            if let Some(key) = revoked_key(&r) {
                merge_until(h.revoked.entry(key).or_insert(r.until), r.until);
            }
            h.revocations.insert(r.version, r);
        }
        Ok(h)
    }
}

/// The key of a revocation enforcers check, or `None` for the kinds they
/// do not see.
fn revoked_key(r: &Revocation) -> Option<(bool, String)> {
    match r.kind {
        RevocationKind::Identity | RevocationKind::Agent => Some((false, r.subject.clone())),
        RevocationKind::Serial => Some((true, r.subject.to_ascii_lowercase())),
        // Entries stop renewing and leave agents' caches; tokens are the
        // API's. Neither is a peer an enforcer sees.
        RevocationKind::Entry | RevocationKind::Token => None,
    }
}

/// The later of two expiries (`None`: never).
fn merge_until(until: &mut Option<u64>, other: Option<u64>) {
    *until = match (*until, other) {
        (None, _) | (_, None) => None,
        (Some(a), Some(b)) => Some(a.max(b)),
    };
}

/// The enforcer files of one node, kept current from syncs.
pub struct EnforcerFiles {
    dir: PathBuf,
    held: Mutex<Held>,
}

impl std::fmt::Debug for EnforcerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnforcerFiles")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn rfc3339(secs: u64) -> String {
    keycard_proxy::time::format_rfc3339_ms(UNIX_EPOCH + Duration::from_secs(secs))
}

fn json_bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

impl EnforcerFiles {
    /// Files under `dir` (created 0755; nothing is written until the first
    /// [`EnforcerFiles::apply`]), at the position saved in
    /// [`SYNC_STATE_FILE`] if there is a readable one.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, EnforceError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io_err(&dir))?;
        }
        let held = Self::restore(&dir.join(SYNC_STATE_FILE)).unwrap_or_default();
        Ok(EnforcerFiles {
            dir,
            held: Mutex::new(held),
        })
    }

    /// The saved state, if there is one and it is usable; a broken one is
    /// logged and ignored.
    fn restore(path: &Path) -> Option<Held> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the saved sync state; syncing from the start");
                return None;
            }
        };
        let restored = serde_json::from_slice::<SavedState>(&bytes)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|s| s.into_held(path));
        match restored {
            Ok(h) => {
                tracing::info!(
                    file = %path.display(),
                    document_revision = h.revision,
                    revocation_version = h.revocation_version,
                    "sync position restored"
                );
                Some(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the saved sync state; syncing from the start");
                None
            }
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (document revision, control digest) to send in the next sync.
    pub fn position(&self) -> (u64, String) {
        let h = self.held();
        (h.revision, h.control_digest.clone())
    }

    /// The revocation version the files include.
    pub fn revocation_version(&self) -> u64 {
        self.held().revocation_version
    }

    /// Every revocation in force that the files were built from, of every
    /// kind, in version order (to rebuild an agent's revocation set).
    pub fn revocations(&self) -> Vec<Revocation> {
        self.held().revocations.values().cloned().collect()
    }

    /// Takes in what a sync brought (revocations in version order, and the
    /// enforcer half if the server sent one) and rewrites the files whose
    /// content changed. Returns whether any file changed.
    pub fn apply(
        &self,
        revocations: &[Revocation],
        sync: Option<EnforcerSync>,
        now: u64,
    ) -> Result<bool, EnforceError> {
        let mut h = self.held();
        for r in revocations {
            if r.version <= h.revocation_version {
                continue;
            }
            h.revocation_version = r.version;
            h.revocations.insert(r.version, r.clone());
            if let Some(key) = revoked_key(r) {
                merge_until(h.revoked.entry(key).or_insert(r.until), r.until);
            }
        }
        h.revoked.retain(|_, until| until.is_none_or(|u| u > now));
        h.revocations.retain(|_, r| r.until.is_none_or(|u| u > now));
        if let Some(s) = sync {
            for d in s.documents {
                let key = (d.collection, d.name);
                match d.doc {
                    Some(doc) => {
                        h.docs.insert(key, doc);
                    }
                    None => {
                        h.docs.remove(&key);
                    }
                }
            }
            h.revision = h.revision.max(s.revision);
            if let Some(p) = s.posture {
                h.posture = p;
            }
            if let Some(g) = s.grants {
                h.grants = g;
            }
            h.control_digest = s.control_digest;
        }
        let changed = self.write_all(&mut h, now)?;
        // After the files: the saved position never runs ahead of them.
        let state = serde_json::to_vec(&SavedState::of(&h)).unwrap_or_default();
        self.put(&mut h, SYNC_STATE_FILE, state, 0o600)?;
        Ok(changed)
    }

    fn write_all(&self, h: &mut Held, now: u64) -> Result<bool, EnforceError> {
        let mut changed = false;
        // Revocations.
        let mut ids: Vec<&str> = Vec::new();
        let mut serials: Vec<&str> = Vec::new();
        for (serial, subject) in h.revoked.keys() {
            if *serial {
                serials.push(subject);
            } else {
                ids.push(subject);
            }
        }
        ids.sort_unstable();
        ids.dedup();
        let revs = json_bytes(&json!({ "spiffeIds": ids, "serials": serials }));
        changed |= self.put(h, REVOCATIONS_FILE, revs, 0o644)?;
        // Posture, with the expiry enforcers check at every decision.
        let mut identities = serde_json::Map::new();
        for p in h.posture.iter().filter(|p| now < p.expires_at) {
            identities.insert(
                p.subject.clone(),
                json!({ "expires": rfc3339(p.expires_at), "attributes": p.attributes }),
            );
        }
        let posture = json_bytes(&json!({ "identities": identities }));
        changed |= self.put(h, POSTURE_FILE, posture, 0o600)?;
        let grants = json_bytes(&json!({ "grants": h.grants }));
        changed |= self.put(h, GRANTS_FILE, grants, 0o600)?;
        // Exceptions, merged into one file.
        let mut items = Vec::new();
        for ((c, _), d) in &h.docs {
            if c == EXCEPTION {
                if let Ok(v) = yaml_serde::from_str::<Value>(&d.text) {
                    if let Some(list) = v.get("exceptions").and_then(Value::as_array) {
                        items.extend(list.iter().cloned());
                    }
                }
            }
        }
        let exceptions = json_bytes(&json!({ "exceptions": items }));
        changed |= self.put(h, EXCEPTIONS_FILE, exceptions, 0o644)?;
        // Policy directories.
        let mut authz = BTreeMap::new();
        let mut admission = BTreeMap::new();
        for ((c, _), d) in &h.docs {
            if c != POLICY {
                continue;
            }
            let file = d.kind.file_name(&d.name, &d.text);
            match d.kind {
                PolicyKind::Authz => {
                    authz.insert(file, d.text.clone());
                }
                PolicyKind::Rego | PolicyKind::Gatekeeper => {
                    admission.insert(file, d.text.clone());
                }
                PolicyKind::Exceptions => {}
            }
        }
        changed |= self.put_dir(h, POLICIES_DIR, &authz)?;
        changed |= self.put_dir(h, ADMISSION_DIR, &admission)?;
        if changed {
            let state = json_bytes(&json!({
                "document_revision": h.revision,
                "revocation_version": h.revocation_version,
                "control_digest": h.control_digest,
                "policies": authz.len(),
                "revoked": h.revoked.len(),
                "posture": identities.len(),
            }));
            self.put(h, STATE_FILE, state, 0o644)?;
        }
        Ok(changed)
    }

    /// Writes `name` when its bytes differ from the last written.
    fn put(
        &self,
        h: &mut Held,
        name: &'static str,
        bytes: Vec<u8>,
        mode: u32,
    ) -> Result<bool, EnforceError> {
        if h.written.get(name) == Some(&bytes) {
            return Ok(false);
        }
        let path = self.dir.join(name);
        crate::up::write_file(&path, &bytes, mode, "enforcer file").map_err(|e| EnforceError {
            path: path.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        h.written.insert(name, bytes);
        Ok(true)
    }

    /// Replaces directory `name` (a symbolic link to a hidden directory)
    /// with one holding `files`, when they differ from the last written.
    fn put_dir(
        &self,
        h: &mut Held,
        name: &'static str,
        files: &BTreeMap<String, String>,
    ) -> Result<bool, EnforceError> {
        let bytes = serde_json::to_vec(files).unwrap_or_default();
        let link = self.dir.join(name);
        if h.written.get(name) == Some(&bytes) && link.exists() {
            return Ok(false);
        }
        h.generation += 1;
        let target = format!(".{name}-{}-{}", std::process::id(), h.generation);
        let tdir = self.dir.join(&target);
        let _ = std::fs::remove_dir_all(&tdir);
        std::fs::create_dir(&tdir).map_err(io_err(&tdir))?;
        for (file, text) in files {
            crate::up::write_file(&tdir.join(file), text.as_bytes(), 0o644, "policy file")
                .map_err(|e| EnforceError {
                    path: tdir.join(file).display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
        }
        #[cfg(unix)]
        {
            let tmp = self.dir.join(format!(".{name}.link"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp).map_err(io_err(&tmp))?;
            // A real directory left by hand would refuse the rename.
            if link.is_dir() && !link.is_symlink() {
                std::fs::remove_dir_all(&link).map_err(io_err(&link))?;
            }
            std::fs::rename(&tmp, &link).map_err(io_err(&link))?;
        }
        #[cfg(not(unix))]
        {
            let _ = std::fs::remove_dir_all(&link);
            std::fs::rename(&tdir, &link).map_err(io_err(&link))?;
        }
        // Keep the previous generation for a reader still in it; drop older.
        let keep_prev = format!(".{name}-{}-{}", std::process::id(), h.generation - 1);
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(&format!(".{name}-")) && n != target && n != keep_prev {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        h.written.insert(name, bytes);
        Ok(true)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn rev(version: u64, kind: RevocationKind, subject: &str, until: Option<u64>) -> Revocation {
        Revocation {
            version,
            kind,
            subject: subject.into(),
            reason: "t".into(),
            at: 1,
            until,
        }
    }

    #[test]
    fn files_follow_the_sync_and_parse_as_enforcers_read_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = EnforcerFiles::open(dir.path().join(ENFORCE_DIR)).unwrap();
        let now = 1_000;
        let changed = f
            .apply(
                &[
                    rev(1, RevocationKind::Identity, "spiffe://td/a", None),
                    rev(2, RevocationKind::Serial, "0A1B", Some(2_000)),
                    rev(3, RevocationKind::Entry, "e1", None),
                    rev(4, RevocationKind::Identity, "spiffe://td/old", Some(10)),
                ],
                None,
                now,
            )
            .unwrap();
        assert!(changed);
        let text = std::fs::read_to_string(f.dir().join(REVOCATIONS_FILE)).unwrap();
        let r = keycard_proxy::files::Revocations::parse("r", &text).unwrap();
        assert!(r.is_revoked(Some("spiffe://td/a"), None));
        assert!(r.is_revoked(None, Some("0a:1b")));
        assert!(!r.is_revoked(Some("spiffe://td/old"), None), "expired");
        // Nothing new: nothing rewritten; an old version is not reapplied.
        assert!(!f
            .apply(
                &[rev(2, RevocationKind::Identity, "spiffe://td/z", None)],
                None,
                now
            )
            .unwrap());

        let doc = |name: &str, kind, text: &str| SyncDocument {
            collection: if kind == PolicyKind::Exceptions {
                EXCEPTION
            } else {
                POLICY
            }
            .into(),
            name: name.into(),
            revision: 1,
            doc: Some(PolicyDoc {
                name: name.into(),
                kind,
                text: text.into(),
                digest: String::new(),
                updated_by: "t".into(),
                updated_at: 0,
                revision: 1,
            }),
        };
        let allow = "apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {name: web}\nspec: {action: ALLOW, rules: [{from: [{source: {principals: [\"spiffe://td/b\"]}}]}]}\n";
        let posture = Posture {
            subject: "spiffe://td/b".into(),
            attributes: [("device_health".to_string(), json!("healthy"))].into(),
            set_by: "t".into(),
            expires_at: now + 60,
        };
        f.apply(
            &[],
            Some(EnforcerSync {
                revision: 2,
                documents: vec![
                    doc("web", PolicyKind::Authz, allow),
                    doc(
                        "ex",
                        PolicyKind::Exceptions,
                        "exceptions: [{rule: r, owner: o, reason: x, expires: 2030-01-01}]\n",
                    ),
                ],
                more: false,
                control_digest: "d1".into(),
                posture: Some(vec![posture]),
                grants: Some(vec![]),
            }),
            now,
        )
        .unwrap();
        assert_eq!(f.position(), (2, "d1".to_string()));
        let set =
            keycard_proxy::load_dir(&f.dir().join(POLICIES_DIR), keycard_proxy::Mode::Enforce)
                .unwrap();
        assert_eq!(set.len(), 1);
        let text = std::fs::read_to_string(f.dir().join(POSTURE_FILE)).unwrap();
        let db = keycard_proxy::files::PostureDb::parse("p", &text).unwrap();
        assert!(db.get("spiffe://td/b", now as i64).is_some());
        assert!(
            db.get("spiffe://td/b", now as i64 + 61).is_none(),
            "expires"
        );
        let text = std::fs::read_to_string(f.dir().join(EXCEPTIONS_FILE)).unwrap();
        keycard_policy::exceptions::Exceptions::parse("x", &text).unwrap();

        // A deletion empties the directory; one old generation is kept.
        f.apply(
            &[],
            Some(EnforcerSync {
                revision: 3,
                documents: vec![SyncDocument {
                    collection: POLICY.into(),
                    name: "web".into(),
                    revision: 3,
                    doc: None,
                }],
                control_digest: "d1".into(),
                ..EnforcerSync::default()
            }),
            now,
        )
        .unwrap();
        let set =
            keycard_proxy::load_dir(&f.dir().join(POLICIES_DIR), keycard_proxy::Mode::Enforce)
                .unwrap();
        assert!(set.is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |n: &str| {
                std::fs::metadata(f.dir().join(n))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(mode(POSTURE_FILE), 0o600);
            assert_eq!(mode(REVOCATIONS_FILE), 0o644);
        }
    }

    fn authz_doc(name: &str, revision: u64) -> SyncDocument {
        let text = format!("apiVersion: keycard.dev/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\nspec: {{action: DENY, rules: [{{from: [{{source: {{principals: [\"spiffe://td/x\"]}}}}]}}]}}\n");
        SyncDocument {
            collection: POLICY.into(),
            name: name.into(),
            revision,
            doc: Some(PolicyDoc {
                name: name.into(),
                kind: PolicyKind::Authz,
                text,
                digest: String::new(),
                updated_by: "t".into(),
                updated_at: 0,
                revision,
            }),
        }
    }

    #[test]
    fn a_reopened_directory_resumes_from_the_saved_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENFORCE_DIR);
        let now = 1_000;
        let grant = Grant {
            id: "g1".into(),
            kind: crate::control::GrantKind::Exception {
                policy: "deny-x".into(),
                rule: "*".into(),
                resource: "spiffe://td/x".into(),
            },
            subject: "spiffe://td/x".into(),
            requester: "r".into(),
            reason: "incident".into(),
            duration_secs: 60,
            status: crate::control::GrantStatus::Active,
            approver: Some("a".into()),
            requested_at: now,
            expires_at: Some(now + 60),
        };
        {
            let f = EnforcerFiles::open(&path).unwrap();
            assert_eq!(f.position(), (0, String::new()), "nothing saved yet");
            f.apply(
                &[
                    rev(1, RevocationKind::Identity, "spiffe://td/a", None),
                    rev(2, RevocationKind::Entry, "e1", None),
                    rev(3, RevocationKind::Serial, "0A", Some(now - 1)),
                ],
                Some(EnforcerSync {
                    revision: 7,
                    documents: vec![authz_doc("deny-x", 7)],
                    control_digest: "c7".into(),
                    grants: Some(vec![grant.clone()]),
                    posture: Some(vec![]),
                    ..EnforcerSync::default()
                }),
                now,
            )
            .unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(path.join(SYNC_STATE_FILE)).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "names identities");
        }
        let f = EnforcerFiles::open(&path).unwrap();
        assert_eq!(f.position(), (7, "c7".to_string()));
        assert_eq!(f.revocation_version(), 3);
        let kept: Vec<u64> = f.revocations().iter().map(|r| r.version).collect();
        assert_eq!(
            kept,
            vec![1, 2],
            "every kind in force; the expired one pruned"
        );
        // What the restored state held survives the next change: the old
        // revocation, the policy and the grant are still written.
        std::fs::remove_file(path.join(GRANTS_FILE)).unwrap();
        f.apply(
            &[rev(4, RevocationKind::Identity, "spiffe://td/b", None)],
            None,
            now,
        )
        .unwrap();
        let text = std::fs::read_to_string(path.join(REVOCATIONS_FILE)).unwrap();
        let r = keycard_proxy::files::Revocations::parse("r", &text).unwrap();
        assert!(r.is_revoked(Some("spiffe://td/a"), None), "restored");
        assert!(r.is_revoked(Some("spiffe://td/b"), None), "new");
        let set = keycard_proxy::load_dir(&path.join(POLICIES_DIR), keycard_proxy::Mode::Enforce)
            .unwrap();
        assert_eq!(set.len(), 1);
        let grants: Value =
            serde_json::from_str(&std::fs::read_to_string(path.join(GRANTS_FILE)).unwrap())
                .unwrap();
        assert_eq!(grants["grants"][0]["id"], "g1");
        // A revocation at or before the restored version is not taken again.
        assert!(!f
            .apply(
                &[rev(2, RevocationKind::Identity, "spiffe://td/z", None)],
                None,
                now
            )
            .unwrap());
        assert_eq!(EnforcerFiles::open(&path).unwrap().revocation_version(), 4);
    }

    #[test]
    fn a_broken_state_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENFORCE_DIR);
        std::fs::create_dir_all(&path).unwrap();
        for bad in [
            &b"{not json"[..],
            br#"{"format": 99, "document_revision": 5, "control_digest": "x", "revocation_version": 1, "documents": [], "collections": [], "posture": [], "grants": [], "revocations": []}"#,
            br#"{"format": 1, "document_revision": 5, "control_digest": "x", "revocation_version": 1, "documents": [], "collections": ["policies"], "posture": [], "grants": [], "revocations": []}"#,
        ] {
            std::fs::write(path.join(SYNC_STATE_FILE), bad).unwrap();
            let f = EnforcerFiles::open(&path).unwrap();
            assert_eq!(f.position(), (0, String::new()));
            assert_eq!(f.revocation_version(), 0);
        }
        // The next apply writes a good one.
        let f = EnforcerFiles::open(&path).unwrap();
        f.apply(
            &[rev(1, RevocationKind::Identity, "spiffe://td/a", None)],
            None,
            5,
        )
        .unwrap();
        assert_eq!(EnforcerFiles::open(&path).unwrap().revocation_version(), 1);
    }
}
