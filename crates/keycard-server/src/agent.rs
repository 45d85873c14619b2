//! The agent that `keycard up` runs in the server's process: it keeps an
//! X509-SVID for every registration entry it serves, renews each at about
//! half its lifetime (with jitter, never on traffic), drops the SVIDs of
//! deleted entries at once, and answers the Workload API and SDS from that
//! cache.
//!
//! It serves the entries whose parent is its own agent ID, plus entries
//! with no parent (on a one-machine trust domain the local agent is the
//! only one).
//!
//! Like a remote agent, it keeps the files of the node's enforcers in
//! `<data_dir>/enforce/` ([`crate::enforce`]), read straight from the store
//! on every change, so a proxy or ext_authz server beside `keycard up`
//! follows revocations, posture and policies without a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::watch;

use keycard_core::{RegistrationEntry, Selector, SpiffeId, TrustDomain};
use keycard_identity::{validate_jwt_svid, BundleSet, SvidOptions};
use keycard_workload_api::{
    BundleMaterial, IdentitySource, JwtSvidMaterial, SourceError, X509SvidMaterial,
};

use crate::state::{unix, ServerState};

/// Backoff after a failed renewal, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Cached {
    entry: RegistrationEntry,
    material: X509SvidMaterial,
    not_after: u64,
    renew_at: u64,
}

#[derive(Default)]
struct Cache {
    svids: HashMap<String, Cached>,
    /// Entry ids in a stable order (the first matching is the default SVID).
    order: Vec<String>,
}

/// The in-process agent.
pub struct LocalAgent {
    state: Arc<ServerState>,
    agent_id: SpiffeId,
    cache: RwLock<Cache>,
    updates: watch::Sender<u64>,
    /// The enforcer files, opened when [`LocalAgent::run`] starts.
    enforce: std::sync::OnceLock<Option<crate::enforce::EnforcerFiles>>,
}

impl std::fmt::Debug for LocalAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAgent")
            .field("agent_id", &self.agent_id)
            .finish_non_exhaustive()
    }
}

/// When to renew an SVID valid from `nb` to `na`: at half its lifetime,
/// moved by up to a tenth of the lifetime either way, so SVIDs minted
/// together do not all renew together.
pub fn renew_time(nb: u64, na: u64, rng: &mut impl Rng) -> u64 {
    let life = na.saturating_sub(nb);
    let jitter = life / 10;
    let base = nb + life / 2;
    if jitter == 0 {
        return base;
    }
    base - jitter + rng.random_range(0..=2 * jitter)
}

impl LocalAgent {
    /// An agent with `agent_id`, serving from `state`.
    pub fn new(state: Arc<ServerState>, agent_id: SpiffeId) -> Arc<Self> {
        let (updates, _) = watch::channel(0);
        Arc::new(LocalAgent {
            state,
            agent_id,
            cache: RwLock::new(Cache::default()),
            updates,
            enforce: std::sync::OnceLock::new(),
        })
    }

    /// Where the enforcer files are (`<data_dir>/enforce`).
    pub fn enforce_dir(&self) -> std::path::PathBuf {
        self.state.config.data_dir.join(crate::enforce::ENFORCE_DIR)
    }

    /// Brings the enforcer files up to date with the store; returns whether
    /// any changed.
    pub fn refresh_enforcers(&self, now: SystemTime) -> Result<bool, String> {
        let files = self.enforce.get_or_init(|| {
            crate::enforce::EnforcerFiles::open(self.enforce_dir())
                .map_err(|e| tracing::error!(error = %e, "cannot keep enforcer files"))
                .ok()
        });
        let Some(files) = files else {
            return Ok(false);
        };
        let (revision, digest) = files.position();
        let t = unix(now);
        let (revs, sync) = {
            let st = self.state.store();
            let revs = st
                .revocations_since(files.revocation_version())
                .map_err(|e| format!("reading revocations: {e}"))?;
            let sync = crate::enforce::snapshot(st.as_ref(), revision, &digest, t)
                .map_err(|e| format!("reading policies and posture: {e}"))?;
            (revs, sync)
        };
        files.apply(&revs, Some(sync), t).map_err(|e| e.to_string())
    }

    fn serves(&self, e: &RegistrationEntry) -> bool {
        e.parent_id.as_ref().is_none_or(|p| p == &self.agent_id)
    }

    /// Brings the cache in line with the store: mints SVIDs for new entries
    /// and those due for renewal, drops those of deleted entries. Returns
    /// the earliest next renewal time (Unix seconds), if any.
    pub fn sync(&self, now: SystemTime) -> Result<Option<u64>, String> {
        let entries = self
            .state
            .store()
            .list_entries()
            .map_err(|e| format!("reading entries: {e}"))?;
        let entries: Vec<_> = entries.into_iter().filter(|e| self.serves(e)).collect();
        let t = unix(now);
        let mut changed = false;
        let mut errors = Vec::new();
        let mut next: Vec<Cached> = Vec::with_capacity(entries.len());
        {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            let mut rng = rand::rng();
            for e in &entries {
                match cache.svids.get(&e.id) {
                    Some(c) if c.entry == *e && t < c.renew_at => next.push(c.clone()),
                    old => match self.mint(e, now, &mut rng) {
                        Ok(c) => {
                            changed = true;
                            next.push(c);
                        }
                        Err(err) => {
                            // Keep serving the old SVID while it is valid.
                            if let Some(o) = old.filter(|o| t < o.not_after) {
                                next.push(o.clone());
                            }
                            errors.push(format!("{}: {err}", e.spiffe_id));
                        }
                    },
                }
            }
            if cache.svids.len() != next.len() {
                changed = true;
            }
        }
        let earliest = next.iter().map(|c| c.renew_at).min();
        {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            cache.order = next.iter().map(|c| c.entry.id.clone()).collect();
            cache.svids = next.into_iter().map(|c| (c.entry.id.clone(), c)).collect();
        }
        if changed {
            self.updates.send_modify(|v| *v = v.wrapping_add(1));
        }
        if errors.is_empty() {
            Ok(earliest)
        } else {
            Err(errors.join("; "))
        }
    }

    fn mint(
        &self,
        e: &RegistrationEntry,
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Result<Cached, String> {
        let opts = SvidOptions {
            dns_names: e.dns_names.clone(),
            ttl: Some(Duration::from_secs(e.x509_ttl_secs)),
        };
        let (svid, key) = self
            .state
            .ca()
            .mint_x509_svid_with_key(&e.spiffe_id, &opts, now)
            .map_err(|err| err.to_string())?;
        let (nb, na) = (unix(svid.not_before), unix(svid.not_after));
        tracing::info!(spiffe_id = %e.spiffe_id, serial = %svid.serial, not_after = na, "minted X509-SVID");
        Ok(Cached {
            entry: e.clone(),
            material: X509SvidMaterial {
                spiffe_id: svid.spiffe_id.clone(),
                cert_chain: svid.chain.iter().map(|c| c.to_vec()).collect(),
                private_key_pkcs8: key.pkcs8_der().to_vec(),
                hint: String::new(),
            },
            not_after: na,
            renew_at: renew_time(nb, na, rng),
        })
    }

    /// Keeps the cache current until `shutdown` flips: re-syncs on every
    /// change in the server's feed and when the earliest SVID is due,
    /// backing off on errors.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.state.watch_changes();
        let mut retry = RETRY_MIN;
        loop {
            if let Err(e) = self.refresh_enforcers(SystemTime::now()) {
                tracing::warn!(error = %e, "enforcer files not updated; will retry on the next change");
            }
            let wait = match self.sync(SystemTime::now()) {
                Ok(next) => {
                    retry = RETRY_MIN;
                    let now = unix(SystemTime::now());
                    next.map_or(Duration::from_secs(3600), |n| {
                        Duration::from_secs(n.saturating_sub(now).max(1))
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?retry, "agent could not renew every SVID");
                    let w = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    w
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = changes.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }

    /// (SPIFFE ID, seconds to expiry) of every cached SVID, for metrics.
    pub fn expiries(&self, now: SystemTime) -> Vec<(String, i64)> {
        let t = unix(now) as i64;
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .order
            .iter()
            .filter_map(|id| cache.svids.get(id))
            .map(|c| (c.entry.spiffe_id.to_string(), c.not_after as i64 - t))
            .collect()
    }

    fn matching(&self, selectors: &[Selector]) -> Vec<Cached> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .order
            .iter()
            .filter_map(|id| cache.svids.get(id))
            .filter(|c| c.entry.matches(selectors))
            .cloned()
            .collect()
    }

    fn bundle_set(&self) -> BundleSet {
        let mut set = BundleSet::new();
        for b in crate::federation::federated_bundles(&self.state) {
            set.insert(b);
        }
        set.insert(self.state.ca().bundle().clone());
        set
    }
}

/// The Workload API's view of a bundle set: DER authorities and the JWKS
/// of each trust domain (shared by the local and the remote agent).
pub(crate) fn bundle_materials(set: &BundleSet) -> BTreeMap<TrustDomain, BundleMaterial> {
    set.iter()
        .map(|b| {
            (
                b.trust_domain.clone(),
                BundleMaterial {
                    x509_authorities: b.x509_authorities.iter().map(|c| c.to_vec()).collect(),
                    jwks: b.jwt_jwks_json().into_bytes(),
                },
            )
        })
        .collect()
}

/// Validates a JWT-SVID against `set`, as the Workload API's
/// `ValidateJWTSVID` answers it.
pub(crate) fn validate_jwt_with(
    set: &BundleSet,
    token: &str,
    audience: &str,
) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), SourceError> {
    let claims = validate_jwt_svid(token, set, audience, SystemTime::now())
        .map_err(|e| SourceError::Invalid(e.to_string()))?;
    Ok((claims.spiffe_id, claims.claims))
}

impl IdentitySource for LocalAgent {
    fn x509_svids(&self, selectors: &[Selector]) -> Result<Vec<X509SvidMaterial>, SourceError> {
        let now = unix(SystemTime::now());
        Ok(self
            .matching(selectors)
            .into_iter()
            .filter(|c| now < c.not_after)
            .map(|c| c.material)
            .collect())
    }

    fn jwt_svids(
        &self,
        selectors: &[Selector],
        spiffe_id: Option<&SpiffeId>,
        audience: &[String],
    ) -> Result<Vec<JwtSvidMaterial>, SourceError> {
        let mut entries: Vec<RegistrationEntry> = self
            .matching(selectors)
            .into_iter()
            .map(|c| c.entry)
            .collect();
        if let Some(id) = spiffe_id {
            entries.retain(|e| &e.spiffe_id == id);
            if entries.is_empty() {
                return Err(SourceError::NotEntitled(format!(
                    "the caller is not entitled to {id}"
                )));
            }
        }
        entries.dedup_by(|a, b| a.spiffe_id == b.spiffe_id);
        let now = SystemTime::now();
        let ca = self.state.ca();
        entries
            .iter()
            .map(|e| {
                let j = ca
                    .mint_jwt_svid(
                        &e.spiffe_id,
                        audience,
                        Some(Duration::from_secs(e.jwt_ttl_secs)),
                        now,
                    )
                    .map_err(|err| SourceError::Invalid(err.to_string()))?;
                Ok(JwtSvidMaterial {
                    spiffe_id: e.spiffe_id.clone(),
                    token: j.token,
                    hint: String::new(),
                })
            })
            .collect()
    }

    fn bundles(&self) -> BTreeMap<TrustDomain, BundleMaterial> {
        crate::agent::bundle_materials(&self.bundle_set())
    }

    fn validate_jwt(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<(SpiffeId, serde_json::Map<String, serde_json::Value>), SourceError> {
        crate::agent::validate_jwt_with(&self.bundle_set(), token, audience)
    }

    fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    fn trust_domain(&self) -> TrustDomain {
        self.state.config.trust_domain.clone()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_near_half_life_and_spread() {
        let mut rng = rand::rng();
        let times: Vec<u64> = (0..1000)
            .map(|_| renew_time(1000, 4600, &mut rng))
            .collect();
        // Half of 3600 s is 1800 s; a tenth is 360 s.
        assert!(times.iter().all(|&t| (2440..=3160).contains(&t)));
        let distinct: std::collections::HashSet<_> = times.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads renewals");
        assert_eq!(renew_time(10, 15, &mut rng), 12);
    }
}
