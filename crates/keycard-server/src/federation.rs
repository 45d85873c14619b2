//! Federation, server side.
//!
//! * Fetching: one task per `[[federation]]` relationship fetches the other
//!   trust domain's bundle from its endpoint (`https_web`: a Web PKI
//!   certificate for the URL's host; `https_spiffe`: an X509-SVID with the
//!   configured SPIFFE ID, chained to the bundle held for that trust
//!   domain, seeded from `bundle_file`). It fetches at start, then after
//!   the bundle's `spiffe_refresh_hint` held within `min_refresh` and
//!   `max_refresh`, with exponential backoff after errors. The answer is
//!   limited in size ([`MAX_BUNDLE_RESPONSE`]) and time ([`FETCH_TIMEOUT`]);
//!   a bundle that does not belong to the trust domain or goes back in
//!   `spiffe_sequence` is refused with a logged error, and the last good
//!   bundle stays in use.
//! * Storing: accepted bundles go to the store (`federation/bundle/<td>`),
//!   so they survive a restart and every server replica on a shared store
//!   serves them; the change feed wakes the agents, which receive them with
//!   the local bundle and serve them on the Workload API
//!   (`federated_bundles` of FetchX509SVID, FetchX509Bundles,
//!   FetchJWTBundles), hence to the proxy.
//! * Serving: `/bundle` on the API listener (the server's X509-SVID, for
//!   `https_spiffe` peers) and, with `[bundle_endpoint] listen`, a listener
//!   of its own serving `/` and `/bundle` with an operator's Web PKI
//!   certificate (`https_web`) or the server's SVID.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use keycard_core::TrustDomain;
use keycard_identity::federation::parse_initial_bundle;
use keycard_identity::{accept_federated, Backoff, EndpointProfile, TrustBundle};

use crate::config::Federation;
use crate::outbound::{self, HttpsUrl};
use crate::state::ServerState;

/// The largest bundle endpoint answer read.
pub const MAX_BUNDLE_RESPONSE: usize = keycard_identity::bundle::MAX_BUNDLE_BYTES;
/// The time limit of one bundle fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait after a failed fetch (doubling up to `max_refresh`).
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const STORE_PREFIX: &str = "federation/bundle/";

fn store_key(td: &TrustDomain) -> String {
    format!("{STORE_PREFIX}{td}")
}

/// The stored bundle of federated trust domain `td`, if any.
pub fn stored_bundle(state: &ServerState, td: &TrustDomain) -> Option<TrustBundle> {
    let bytes = match state.store().value(&store_key(td)) {
        Ok(v) => v?,
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "could not read a federated bundle");
            return None;
        }
    };
    match TrustBundle::parse(td.clone(), &bytes) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(trust_domain = %td, error = %e, "ignoring an unreadable stored federated bundle");
            None
        }
    }
}

/// Every federated bundle to serve: those of the configured relationships
/// that have one stored.
pub fn federated_bundles(state: &ServerState) -> Vec<TrustBundle> {
    state
        .config
        .federation
        .iter()
        .filter_map(|f| stored_bundle(state, &f.trust_domain))
        .collect()
}

fn put_bundle(state: &ServerState, b: &TrustBundle) -> Result<(), String> {
    state
        .store()
        .put_value(&store_key(&b.trust_domain), b.to_json().as_bytes())
        .map_err(|e| e.to_string())?;
    state.changed();
    Ok(())
}

/// Starts one refresh task per relationship.
pub fn spawn(state: &Arc<ServerState>, stop: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    state
        .config
        .federation
        .iter()
        .map(|f| tokio::spawn(refresh_loop(Arc::clone(state), f.clone(), stop.clone())))
        .collect()
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if meta.len() > MAX_BUNDLE_RESPONSE as u64 {
        return Err(format!("{what} {}: too large", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

async fn refresh_loop(state: Arc<ServerState>, rel: Federation, mut stop: watch::Receiver<bool>) {
    let td = rel.trust_domain.clone();
    let mut held = stored_bundle(&state, &td);
    if held.is_none() {
        if let Some(path) = &rel.bundle_file {
            let seeded = read_file(path, "bundle_file")
                .and_then(|b| parse_initial_bundle(&td, &b).map_err(|e| e.to_string()));
            match seeded {
                Ok(b) => match put_bundle(&state, &b) {
                    Ok(()) => {
                        tracing::info!(trust_domain = %td, "federated bundle seeded from bundle_file");
                        held = Some(b);
                    }
                    Err(e) => {
                        tracing::error!(trust_domain = %td, error = %e, "could not store the initial bundle")
                    }
                },
                Err(e) => {
                    tracing::error!(trust_domain = %td, error = %e, "the initial bundle is unusable")
                }
            }
        }
    }
    let mut backoff = Backoff::new(BACKOFF_MIN, rel.refresh.max);
    loop {
        let wait = match fetch(&rel, held.as_ref()).await {
            Ok(doc) => match accept_federated(&td, held.as_ref(), &doc) {
                Ok(Some(b)) => match put_bundle(&state, &b) {
                    Ok(()) => {
                        tracing::info!(trust_domain = %td, sequence = ?b.sequence,
                            x509 = b.x509_authorities.len(), jwt = b.jwt_authorities.len(),
                            "federated bundle updated");
                        backoff.reset();
                        let next = rel.refresh.next(b.refresh_hint);
                        held = Some(b);
                        next
                    }
                    Err(e) => {
                        tracing::error!(trust_domain = %td, error = %e, "could not store the federated bundle");
                        backoff.fail()
                    }
                },
                Ok(None) => {
                    backoff.reset();
                    tracing::debug!(trust_domain = %td, "federated bundle unchanged");
                    rel.refresh.next(held.as_ref().and_then(|b| b.refresh_hint))
                }
                Err(e) => {
                    let retry = backoff.fail();
                    tracing::error!(trust_domain = %td, url = %rel.url, error = %e, retry_in = ?retry,
                        "federated bundle refused; keeping the last good one");
                    retry
                }
            },
            Err(e) => {
                let retry = backoff.fail();
                tracing::warn!(trust_domain = %td, url = %rel.url, error = %e, retry_in = ?retry,
                    "could not fetch the federated bundle; keeping the last good one");
                retry
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One fetch from `rel`'s endpoint, authenticated per its profile.
pub async fn fetch(rel: &Federation, held: Option<&TrustBundle>) -> Result<Vec<u8>, String> {
    let url = HttpsUrl::parse(&rel.url).map_err(|e| e.to_string())?;
    let tls = match &rel.profile {
        EndpointProfile::HttpsWeb => outbound::web_tls(
            outbound::load_roots(rel.ca_file.as_deref()).map_err(|e| e.to_string())?,
        ),
        EndpointProfile::HttpsSpiffe { endpoint_id } => {
            let roots = held
                .map(|b| b.x509_authorities.clone())
                .filter(|r| !r.is_empty())
                .ok_or_else(|| {
                    format!(
                        "no bundle of {} to authenticate {endpoint_id} with (give bundle_file)",
                        rel.trust_domain
                    )
                })?;
            outbound::spiffe_tls(&roots, endpoint_id.clone())
        }
    }
    .map_err(|e| e.to_string())?;
    let (status, body) = outbound::call(
        tls,
        outbound::Request {
            method: http::Method::GET,
            url: &url,
            headers: vec![],
            body: None,
            max_bytes: MAX_BUNDLE_RESPONSE,
            timeout: FETCH_TIMEOUT,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{url}: HTTP {status}"));
    }
    Ok(body.to_vec())
}

// ------------------------------------------------------------ serving --

async fn bundle(State(s): State<Arc<ServerState>>) -> Response {
    let body = s.ca().bundle().to_json();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The bundle endpoint's own router: the local bundle at `/` and
/// `/bundle`, nothing else.
pub fn endpoint_router(state: Arc<ServerState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(bundle))
        .route("/bundle", get(bundle))
        .with_state(state)
}

/// A Web PKI certificate and key from PEM files, re-read when the
/// certificate file changes (so a renewed certificate is served without a
/// restart).
#[derive(Debug)]
pub struct WebCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Option<SystemTime>, Arc<CertifiedKey>)>,
}

fn load_web_cert(cert_file: &Path, key_file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(read_file(cert_file, "cert_file")?)
        .map_err(|e| format!("cert_file {}: {e}", cert_file.display()))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(format!("cert_file {}: no CERTIFICATE", cert_file.display()));
    }
    let key_pem = pem::parse_many(read_file(key_file, "key_file")?)
        .map_err(|e| format!("key_file {}: {e}", key_file.display()))?
        .into_iter()
        .find(|p| p.tag().ends_with("PRIVATE KEY"))
        .ok_or_else(|| format!("key_file {}: no PRIVATE KEY", key_file.display()))?;
    let key = match key_pem.tag() {
        "PRIVATE KEY" => PrivateKeyDer::Pkcs8(key_pem.into_contents().into()),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(key_pem.into_contents().into()),
        "RSA PRIVATE KEY" => PrivateKeyDer::Pkcs1(key_pem.into_contents().into()),
        other => {
            return Err(format!(
                "key_file {}: unsupported {other}",
                key_file.display()
            ))
        }
    };
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("key_file {}: {e}", key_file.display()))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("cert_file and key_file do not match: {e}"))?;
    Ok(Arc::new(ck))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl WebCert {
    pub fn open(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, String> {
        let ck = load_web_cert(cert_file, key_file)?;
        Ok(Arc::new(WebCert {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new((mtime(cert_file), ck)),
        }))
    }
}

impl ResolvesServerCert for WebCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let now = mtime(&self.cert_file);
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if cur.0 == now {
                return Some(Arc::clone(&cur.1));
            }
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        match load_web_cert(&self.cert_file, &self.key_file) {
            Ok(ck) => {
                tracing::info!(cert = %self.cert_file.display(), "bundle endpoint certificate reloaded");
                *cur = (now, ck);
            }
            Err(e) => {
                // Keep serving the last good one; try again next time.
                tracing::warn!(error = %e, "could not reload the bundle endpoint certificate");
            }
        }
        Some(Arc::clone(&cur.1))
    }
}

/// The TLS configuration of the bundle endpoint listener: no client
/// certificates, TLS 1.2 and 1.3 (other implementations fetch it), the
/// certificate from `certs`.
pub fn endpoint_tls(
    certs: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(crate::https::ring())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
