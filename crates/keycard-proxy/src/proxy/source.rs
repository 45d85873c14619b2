//! Where the SVID and bundles come from: the SPIFFE Workload API (kept
//! current by a watch stream; rotations and bundle changes are pushed by
//! the agent) or PEM files (re-read when they change, for tests and
//! hand-made setups).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::X509Source;
use tokio::task::JoinHandle;

use super::svid::{Bundles, IdentityState, Svid, SvidError};

/// Copy the source's current SVID and bundles into `state`.
fn apply(source: &X509Source, state: &IdentityState) -> Result<(), SvidError> {
    let svid = source
        .svid()
        .map_err(|e| SvidError::Invalid(format!("workload API: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let new_svid = Svid::new(chain, key)?;
    let set = source
        .bundle_set()
        .map_err(|e| SvidError::Invalid(format!("workload API bundles: {e}")))?;
    let mut bundles = Bundles::new();
    for (td, b) in set.iter() {
        let roots: Vec<CertificateDer<'_>> = b
            .authorities()
            .iter()
            .map(|c| CertificateDer::from(c.as_bytes()))
            .collect();
        bundles.insert(td.as_str(), &roots)?;
    }
    state.set_bundles(bundles);
    state.set_svid(new_svid);
    Ok(())
}

/// A Workload API source feeding an [`IdentityState`].
pub struct WorkloadApiSource {
    source: Arc<X509Source>,
    task: JoinHandle<()>,
}

impl WorkloadApiSource {
    /// Connect (`unix:///path` or `unix:/path`), wait for the first SVID
    /// (bounded by `timeout`), then follow updates.
    pub async fn start(
        endpoint: &str,
        state: Arc<IdentityState>,
        timeout: Duration,
    ) -> Result<Self, SvidError> {
        let build = X509Source::builder().endpoint(endpoint).build();
        let source = match tokio::time::timeout(timeout, build).await {
            Ok(Ok(s)) => Arc::new(s),
            Ok(Err(e)) => {
                return Err(SvidError::Invalid(format!(
                    "workload API at {endpoint}: {e}"
                )))
            }
            Err(_) => {
                return Err(SvidError::Invalid(format!(
                    "workload API at {endpoint}: no SVID within {timeout:?}"
                )))
            }
        };
        apply(&source, &state)?;
        let mut updates = source.updated();
        let src = source.clone();
        let task = tokio::spawn(async move {
            while updates.changed().await.is_ok() {
                match apply(&src, &state) {
                    Ok(()) => tracing::info!("SVID or bundles updated from the workload API"),
                    // The last good SVID stays in force until it expires.
                    Err(e) => tracing::warn!(error = %e, "workload API update not usable"),
                }
            }
            tracing::warn!("workload API source closed");
        });
        Ok(WorkloadApiSource { source, task })
    }

    pub async fn stop(self) {
        self.task.abort();
        self.source.shutdown().await;
    }
}

/// PEM files, re-read on change.
#[derive(Debug, Clone)]
pub struct PemFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
    /// Federated trust domains and their bundle files.
    pub federated: Vec<(String, PathBuf)>,
}

impl PemFiles {
    fn fingerprint(&self) -> Vec<Option<std::time::SystemTime>> {
        let mut paths = vec![&self.cert, &self.key, &self.bundle];
        paths.extend(self.federated.iter().map(|(_, p)| p));
        paths
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }

    pub fn load(&self, state: &IdentityState) -> Result<(), SvidError> {
        state.load_files(&self.cert, &self.key, &self.bundle, &self.federated)
    }

    /// Load now, then re-read every `every` when a file's mtime changed
    /// (a half-written file fails to parse and the last good SVID stays).
    pub fn watch(
        self,
        state: Arc<IdentityState>,
        every: Duration,
    ) -> Result<JoinHandle<()>, SvidError> {
        self.load(&state)?;
        let mut last = self.fingerprint();
        Ok(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let now = self.fingerprint();
                if now == last {
                    continue;
                }
                match self.load(&state) {
                    Ok(()) => last = now,
                    Err(e) => {
                        tracing::warn!(error = %e, "SVID files not usable; keeping the last good SVID")
                    }
                }
            }
        }))
    }
}
