//! Keeping the webhook's policies current without a restart, from the
//! store (`keycard up`: policies and exceptions pushed through the API, and
//! approved exception grants) or from files (`keycard admission serve`,
//! e.g. over the `enforce/` directory an agent writes).
//!
//! Either way a change that does not load (Rego that no longer compiles
//! with the others, a broken file) is logged and the last good policies
//! stay in force. A change of exceptions or grants alone reuses the
//! compiled policies.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keycard_audit::input_digest;
use keycard_policy::exceptions::Exception;
use serde::Deserialize;
use tokio::sync::watch;

use super::webhook::{AdmissionPolicy, LoadError, PolicyOptions, Webhook};
use crate::control::{Grant, GrantKind};
use crate::enforce::{ADMISSION_DIR, EXCEPTIONS_FILE, GRANTS_FILE};
use crate::policies::{self, PolicyKind, EXCEPTION, POLICY};
use crate::state::{unix, ServerState};

/// The active exception grants at `now`, as time-boxed exceptions: the
/// grant's `policy` (`*`: any), `rule` (`*`: any) and `resource` pattern
/// (`Kind/namespace/name`, or `Kind/name` for a cluster-scoped object;
/// exact, or a prefix ending in `*`), until the grant expires.
pub fn grant_exceptions(grants: &[Grant], now: u64) -> Vec<Exception> {
    grants
        .iter()
        .filter(|g| g.active_at(now))
        .filter_map(|g| {
            let GrantKind::Exception {
                policy,
                rule,
                resource,
            } = &g.kind
            else {
                return None;
            };
            let expires_at = g.expires_at?;
            let reason = format!(
                "grant {} approved by {}: {}",
                g.id,
                g.approver.as_deref().unwrap_or("?"),
                g.reason
            );
            Some(Exception::timed(
                rule,
                Some(policy.as_str()).filter(|p| !p.is_empty()),
                Some(resource.as_str()).filter(|r| !r.is_empty()),
                &g.subject,
                &reason,
                expires_at,
            ))
        })
        .collect()
}

fn short_digest(text: &str) -> String {
    let d = input_digest(text.as_bytes());
    d.get(7..19).unwrap_or("0").to_string()
}

/// `policy` with `grants` added to its exceptions, recorded as a revision
/// that names both.
fn with_grants(policy: &AdmissionPolicy, grants: &[Grant], now: u64) -> AdmissionPolicy {
    let extra = grant_exceptions(grants, now);
    let revision = if extra.is_empty() {
        policy.revision.clone()
    } else {
        let ids: Vec<&str> = grants.iter().map(|g| g.id.as_str()).collect();
        format!(
            "{}+grants-{}",
            policy.revision,
            short_digest(&ids.join(","))
        )
    };
    policy.with_exceptions(policy.exceptions.clone(), extra, revision)
}

fn now() -> u64 {
    unix(SystemTime::now())
}

/// The admission policies pushed through the API, followed in the store.
pub struct PushedPolicies {
    state: Arc<ServerState>,
    base: PolicyOptions,
    scratch: PathBuf,
    /// The document revision last loaded, or that failed to.
    tried: Option<u64>,
    /// The last policies that loaded.
    good: Option<AdmissionPolicy>,
    /// The exception grants in force when last applied.
    grants: Vec<Grant>,
}

impl std::fmt::Debug for PushedPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushedPolicies")
            .field("tried", &self.tried)
            .field("grants", &self.grants.len())
            .finish_non_exhaustive()
    }
}

impl PushedPolicies {
    /// `base` (packs, parameters, files) plus what is pushed; Gatekeeper
    /// documents are compiled from files written under `scratch` (a
    /// private directory this owns).
    pub fn new(state: Arc<ServerState>, base: PolicyOptions, scratch: PathBuf) -> Self {
        PushedPolicies {
            state,
            base,
            scratch,
            tried: None,
            good: None,
            grants: Vec::new(),
        }
    }

    /// The policies to start with (blocking). If the pushed documents do
    /// not compile together, the error is logged and `base` alone is used.
    pub fn initial(&mut self) -> Result<AdmissionPolicy, LoadError> {
        if let Some(p) = self.refresh()? {
            return Ok(p);
        }
        match &self.good {
            Some(p) => Ok(with_grants(p, &self.grants, now())),
            None => AdmissionPolicy::load(&self.base),
        }
    }

    /// Re-reads the document revision and the grants (blocking); returns
    /// the policies to put in force when something changed.
    pub fn refresh(&mut self) -> Result<Option<AdmissionPolicy>, LoadError> {
        let now = now();
        let (revision, grants) = {
            let st = self.state.store();
            let revision = st.document_revision().map_err(store_err)?;
            let grants = crate::control::grants(st.as_ref(), now).map_err(store_err)?;
            (revision, grants)
        };
        let grants: Vec<Grant> = grants
            .into_iter()
            .filter(|g| matches!(g.kind, GrantKind::Exception { .. }) && g.active_at(now))
            .collect();
        let mut changed = false;
        if self.tried != Some(revision) {
            self.tried = Some(revision);
            match self.load_documents(revision) {
                Ok(p) => {
                    tracing::info!(revision, policy = %p.revision, "admission policies loaded from the store");
                    self.good = Some(p);
                    changed = true;
                }
                Err(e) => {
                    tracing::error!(revision, error = %e, "the pushed admission policies do not load; keeping the last good ones");
                    match self.good.take() {
                        // The exceptions may still have changed: apply
                        // them over the last good policies.
                        Some(good) => {
                            self.good = Some(match self.load_exceptions() {
                                Ok(ex) => {
                                    changed = true;
                                    let rev = format!(
                                        "{}+exceptions-{revision}",
                                        good.revision.split('+').next().unwrap_or("")
                                    );
                                    good.with_exceptions(ex, Vec::new(), rev)
                                }
                                Err(e) => {
                                    tracing::error!(revision, error = %e, "the pushed exceptions do not load either");
                                    good
                                }
                            });
                        }
                        None => {
                            self.good = Some(AdmissionPolicy::load(&self.base)?);
                            changed = true;
                        }
                    }
                }
            }
        }
        if grants != self.grants {
            self.grants = grants;
            changed = true;
        }
        match (&self.good, changed) {
            (Some(p), true) => Ok(Some(with_grants(p, &self.grants, now))),
            _ => Ok(None),
        }
    }

    /// `base`'s exceptions and every stored exceptions document.
    fn load_exceptions(&self) -> Result<Option<keycard_policy::exceptions::Exceptions>, LoadError> {
        let docs = policies::list(self.state.store().as_ref(), EXCEPTION).map_err(store_err)?;
        let mut opts = self.base.clone();
        for d in &docs {
            let file = d.kind.file_name(&d.name, &d.text);
            opts.exception_sources.push((file, d.text.clone()));
        }
        AdmissionPolicy::load_exceptions(&opts)
    }

    /// Compiles `base` with every stored Rego and Gatekeeper document and
    /// exceptions document.
    fn load_documents(&self, revision: u64) -> Result<AdmissionPolicy, LoadError> {
        let (docs, exceptions) = {
            let st = self.state.store();
            (
                policies::list(st.as_ref(), POLICY).map_err(store_err)?,
                policies::list(st.as_ref(), EXCEPTION).map_err(store_err)?,
            )
        };
        let mut opts = self.base.clone();
        let mut gatekeeper = Vec::new();
        for d in &docs {
            let file = d.kind.file_name(&d.name, &d.text);
            match d.kind {
                PolicyKind::Rego => opts.rego_sources.push((file, d.text.clone())),
                PolicyKind::Gatekeeper => gatekeeper.push((file, d.text.as_str())),
                PolicyKind::Authz | PolicyKind::Exceptions => {}
            }
        }
        for d in &exceptions {
            let file = d.kind.file_name(&d.name, &d.text);
            opts.exception_sources.push((file, d.text.clone()));
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        if !gatekeeper.is_empty() {
            let err = |source| LoadError::Read {
                file: self.scratch.display().to_string(),
                source,
            };
            std::fs::create_dir_all(&self.scratch).map_err(err)?;
            for (file, text) in gatekeeper {
                let path = self.scratch.join(&file);
                std::fs::write(&path, text).map_err(|source| LoadError::Read {
                    file: path.display().to_string(),
                    source,
                })?;
                opts.policies.push(path);
            }
        }
        let loaded = AdmissionPolicy::load(&opts);
        let _ = std::fs::remove_dir_all(&self.scratch);
        let mut p = loaded?;
        p.revision = format!("documents-{revision}");
        Ok(p)
    }

    /// Keeps `webhook` current until `stop` flips: wakes on the server's
    /// change feed (pushes, approvals) and at least every `every` (for
    /// changes made by other servers on a shared database and for grants
    /// that end).
    pub async fn follow(
        mut self,
        webhook: Arc<Webhook>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut changes = self.state.watch_changes();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                r = changes.changed() => {
                    if r.is_err() {
                        // No more change feed: poll only.
                        changes = self.state.watch_changes();
                    }
                }
                _ = stop.changed() => return,
            }
            let step = tokio::task::spawn_blocking(move || {
                let r = self.refresh();
                (self, r)
            })
            .await;
            let result;
            (self, result) = match step {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "admission policy reload failed; pushed changes no longer reach the webhook");
                    return;
                }
            };
            match result {
                Ok(Some(p)) => webhook.set_policy(p),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not check the pushed admission policies; will retry")
                }
            }
        }
    }
}

fn store_err(e: keycard_store::StoreError) -> LoadError {
    LoadError::Store(e.to_string())
}

/// `grants.json` as an agent writes it.
#[derive(Debug, Deserialize)]
struct GrantsFile {
    #[serde(default)]
    grants: Vec<Grant>,
}

/// Policy files followed on disk: the options' own files and, when given,
/// what an agent writes in an `enforce/` directory (`admission/`,
/// `exceptions.yaml`, `grants.json`).
#[derive(Debug, Clone)]
pub struct WatchedFiles {
    base: PolicyOptions,
    enforce_dir: Option<PathBuf>,
}

impl WatchedFiles {
    pub fn new(base: PolicyOptions, enforce_dir: Option<PathBuf>) -> Self {
        WatchedFiles { base, enforce_dir }
    }

    fn enforce(&self, name: &str) -> Option<PathBuf> {
        self.enforce_dir.as_ref().map(|d| d.join(name))
    }

    /// The files the compiled policies depend on.
    fn policy_paths(&self) -> Vec<PathBuf> {
        let mut out = self.base.policies.clone();
        out.extend(self.base.params.clone());
        out.extend(self.enforce(ADMISSION_DIR));
        out
    }

    /// The files the exceptions depend on.
    fn exception_paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.base.exceptions.iter().cloned().collect();
        out.extend(self.enforce(EXCEPTIONS_FILE));
        out.extend(self.enforce(GRANTS_FILE));
        out
    }

    /// The options with what the enforce directory holds now: its Rego
    /// files by name (the name less `.rego` is the policy), its Gatekeeper
    /// files, its exceptions. Absent files are not an error: the agent has
    /// not written them yet.
    pub fn options(&self) -> Result<PolicyOptions, LoadError> {
        let mut opts = self.base.clone();
        if let Some(dir) = self.enforce(ADMISSION_DIR) {
            if dir.exists() {
                let err = |source| LoadError::Read {
                    file: dir.display().to_string(),
                    source,
                };
                let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map_err(err)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                files.sort();
                for f in files {
                    let Some(name) = f.file_name().and_then(|n| n.to_str()) else {
                        continue;
                    };
                    if name.starts_with('.') || !f.is_file() {
                        continue;
                    }
                    if name.ends_with(".rego") && !name.ends_with("_test.rego") {
                        let text =
                            std::fs::read_to_string(&f).map_err(|source| LoadError::Read {
                                file: f.display().to_string(),
                                source,
                            })?;
                        opts.rego_sources.push((name.to_string(), text));
                    } else if [".yaml", ".yml", ".json"].iter().any(|x| name.ends_with(x)) {
                        opts.policies.push(f.clone());
                    }
                }
            }
        }
        if let Some(f) = self.enforce(EXCEPTIONS_FILE) {
            match std::fs::read_to_string(&f) {
                Ok(text) => opts.exception_sources.push((f.display().to_string(), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(LoadError::Read {
                        file: f.display().to_string(),
                        source,
                    })
                }
            }
        }
        Ok(opts)
    }

    /// The active exception grants of `grants.json`, if there is one.
    fn grants(&self, now: u64) -> Result<Vec<Grant>, LoadError> {
        let Some(f) = self.enforce(GRANTS_FILE) else {
            return Ok(Vec::new());
        };
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LoadError::Read {
                    file: f.display().to_string(),
                    source,
                })
            }
        };
        let g: GrantsFile = serde_json::from_str(&text).map_err(|e| LoadError::Parse {
            file: f.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(g.grants.into_iter().filter(|g| g.active_at(now)).collect())
    }

    /// Loads everything now (blocking).
    pub fn load(&self) -> Result<AdmissionPolicy, LoadError> {
        // Taken before reading, so a change made while loading is seen by
        // the watch as a change.
        let fingerprint = self.fingerprint();
        let compiled = AdmissionPolicy::load(&self.options()?)?;
        self.with_current_exceptions(&compiled, &fingerprint)
    }

    /// `compiled`'s policies with the exceptions and grants on disk now.
    fn with_current_exceptions(
        &self,
        compiled: &AdmissionPolicy,
        fingerprint: &str,
    ) -> Result<AdmissionPolicy, LoadError> {
        let exceptions = AdmissionPolicy::load_exceptions(&self.options()?)?;
        let now = now();
        let grants = self.grants(now)?;
        let revision = format!("files-{}", short_digest(fingerprint));
        Ok(compiled.with_exceptions(exceptions, grant_exceptions(&grants, now), revision))
    }

    fn fingerprint(&self) -> String {
        let mut s = fingerprint(&self.policy_paths());
        s.push_str(&fingerprint(&self.exception_paths()));
        s
    }

    /// Follows the files on a thread of its own, polling every `every`
    /// (one `stat` per file while nothing changes), and puts each change
    /// that loads in force in `webhook`. `initial` is what `webhook` was
    /// given (from [`WatchedFiles::load`]). Stops when the handle drops.
    pub fn watch(
        self,
        initial: AdmissionPolicy,
        webhook: Arc<Webhook>,
        every: Duration,
    ) -> Result<FileWatch, std::io::Error> {
        let (tx, rx) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("keycard-admission-reload".into())
            .spawn(move || self.run(initial, &webhook, every, &rx))?;
        Ok(FileWatch {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    fn run(
        self,
        initial: AdmissionPolicy,
        webhook: &Webhook,
        every: Duration,
        stop: &std_mpsc::Receiver<()>,
    ) {
        let mut policies = fingerprint(&self.policy_paths());
        let mut exceptions = fingerprint(&self.exception_paths());
        if initial.revision != format!("files-{}", short_digest(&format!("{policies}{exceptions}")))
        {
            // The files changed after `initial` was loaded (this thread
            // may start well after that): try all of them again.
            policies.clear();
            exceptions.clear();
        }
        let mut good = initial;
        loop {
            match stop.recv_timeout(every) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let p = fingerprint(&self.policy_paths());
            let e = fingerprint(&self.exception_paths());
            if p == policies && e == exceptions {
                continue;
            }
            let whole = format!("{p}{e}");
            let compiled = if p != policies {
                // Compiled without the exceptions, which load on their own.
                let compile = self.options().and_then(|mut o| {
                    o.exceptions = None;
                    o.exception_sources.clear();
                    AdmissionPolicy::load(&o)
                });
                match compile {
                    Ok(c) => Some(c),
                    Err(err) => {
                        // The exceptions may still have changed: apply
                        // them over the last good policies.
                        tracing::error!(error = %err, policy = %good.revision, "changed admission policy files do not load; keeping the last good ones");
                        None
                    }
                }
            } else {
                None
            };
            if compiled.is_none() && e == exceptions {
                // Nothing that loads changed.
                policies = p;
                continue;
            }
            let next = self.with_current_exceptions(compiled.as_ref().unwrap_or(&good), &whole);
            // Whatever happens, this version of the files has been tried.
            policies = p;
            exceptions = e;
            match next {
                Ok(next) => {
                    tracing::info!(policy = %next.revision, "admission policies reloaded from their files");
                    good = next.clone();
                    webhook.set_policy(next);
                }
                Err(e) => {
                    tracing::error!(error = %e, policy = %good.revision, "changed admission exception files do not load; keeping the last good ones");
                    if let Some(c) = compiled {
                        let revision = format!("files-{}", short_digest(&whole));
                        good = c.with_exceptions(good.exceptions.clone(), Vec::new(), revision);
                        webhook.set_policy(good.clone());
                    }
                }
            }
        }
    }
}

/// A running [`WatchedFiles::watch`]; dropping it stops the thread.
#[derive(Debug)]
pub struct FileWatch {
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What changes when any of `paths` (directories walked, symbolic links
/// followed) changes: names, sizes, modification times, inodes.
fn fingerprint(paths: &[PathBuf]) -> String {
    let mut out = String::new();
    for p in paths {
        stat_into(&mut out, p, 0);
    }
    out
}

fn stat_into(out: &mut String, path: &Path, depth: usize) {
    use std::fmt::Write;
    let _ = write!(out, "{}", path.display());
    if let Ok(target) = std::fs::read_link(path) {
        let _ = write!(out, " -> {}", target.display());
    }
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => {
            out.push_str(" absent\n");
            return;
        }
    };
    if m.is_dir() {
        out.push_str(" dir\n");
        if depth >= 8 {
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => return,
        };
        entries.sort();
        for e in entries {
            stat_into(out, &e, depth + 1);
        }
        return;
    }
    let modified = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0u64;
    let _ = writeln!(out, " {} {modified} {inode}", m.len());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::control::GrantStatus;

    fn grant(kind: GrantKind, status: GrantStatus, expires_at: Option<u64>) -> Grant {
        Grant {
            id: "g1".into(),
            kind,
            subject: "alice".into(),
            requester: "alice".into(),
            reason: "hotfix".into(),
            duration_secs: 60,
            status,
            approver: Some("bob".into()),
            requested_at: 0,
            expires_at,
        }
    }

    #[test]
    fn only_active_exception_grants_become_exceptions() {
        let ex = GrantKind::Exception {
            policy: "team".into(),
            rule: "no-latest".into(),
            resource: "Deployment/payments/*".into(),
        };
        let all = [
            grant(ex.clone(), GrantStatus::Active, Some(1_000)),
            grant(ex.clone(), GrantStatus::Pending, None),
            grant(ex, GrantStatus::Active, Some(10)),
            grant(
                GrantKind::Role {
                    role: crate::auth::Role::Admin,
                },
                GrantStatus::Active,
                Some(1_000),
            ),
        ];
        let out = grant_exceptions(&all, 100);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, "no-latest");
        assert_eq!(out[0].policy.as_deref(), Some("team"));
        assert_eq!(out[0].resource.as_deref(), Some("Deployment/payments/*"));
        assert_eq!(out[0].expires_at, Some(1_000));
        assert_eq!(out[0].owner, "alice");
        assert!(
            out[0].reason.contains("approved by bob"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn the_fingerprint_sees_changes_through_a_swapped_link() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("p.rego"), "package p\n").unwrap();
        let link = dir.path().join("admission");
        #[cfg(unix)]
        std::os::unix::fs::symlink("a", &link).unwrap();
        #[cfg(not(unix))]
        std::fs::rename(&a, &link).unwrap();
        let paths = vec![link.clone(), dir.path().join("missing.yaml")];
        let first = fingerprint(&paths);
        assert_eq!(first, fingerprint(&paths), "stable while nothing changes");
        assert!(first.contains("missing.yaml absent"), "{first}");
        std::fs::write(link.join("p.rego"), "package p\n\n").unwrap();
        assert_ne!(first, fingerprint(&paths));
    }
}
