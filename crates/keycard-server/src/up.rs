//! `keycard up`: a whole trust domain in one process.
//!
//! Starts, in order: the data directory (0700), the store (SQLite in the
//! data directory, or PostgreSQL), the CA (root generated or the operator's,
//! an intermediate for this instance), the bootstrap admin token (created
//! once, kept hashed in the store and in `admin.token`, 0600), the HTTPS
//! API (with the public bundle endpoint), and the local agent with its
//! Workload API and SDS socket. It writes `up.json` (where everything
//! listens) and `bundle.pem` (the roots) so that other commands given the
//! same `--data-dir` reach it with no further setup.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use keycard_core::{AgentRecord, SpiffeId};
use keycard_identity::{Ca, CaConfig, FileKeyStore, KeyStore, RootSource, SvidOptions};
use keycard_store::{SqliteStore, Store};
use keycard_workload_api::{CompositeAttestor, UnixAttestor};

use crate::agent::LocalAgent;
use crate::auth;
use crate::config::UpConfig;
use crate::state::{unix, ServerState};

/// Why `keycard up` could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] keycard_store::StoreError),
    #[error("key store: {0}")]
    Keys(#[from] keycard_identity::KeyStoreError),
    #[error("CA: {0}")]
    Ca(#[from] keycard_identity::CaError),
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Workload API socket: {0}")]
    Socket(#[from] keycard_workload_api::ServeError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::https::HttpsError),
    #[error("{0}")]
    Other(String),
}

/// Where a running `keycard up` listens; written to `<data_dir>/up.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub trust_domain: String,
    /// `https://127.0.0.1:8443`
    pub api: String,
    /// The public SPIFFE bundle endpoint.
    pub bundle: String,
    /// Absolute path of the Workload API + SDS socket.
    pub socket: String,
    /// The admission webhook, if enabled.
    pub admission: Option<String>,
    /// The host name the API certificate carries.
    pub api_host: String,
}

/// A running instance. Dropping it does not stop it: call [`Up::shutdown`].
pub struct Up {
    pub endpoints: Endpoints,
    /// The bootstrap admin token, on the first start only (print it once).
    pub new_admin_token: Option<String>,
    pub state: Arc<ServerState>,
    pub agent: Arc<LocalAgent>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Up {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Up")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// The file names in a data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const ENDPOINTS_FILE: &str = "up.json";
pub const BUNDLE_FILE: &str = "bundle.pem";
pub const DATABASE_FILE: &str = "keycard.db";

fn private_dir(path: &Path) -> Result<(), UpError> {
    let err = |source| UpError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

/// Writes `data` to `path` atomically with `mode` (created with that mode,
/// so a secret is never readable by others, even briefly).
pub fn write_file(path: &Path, data: &[u8], mode: u32, what: &'static str) -> Result<(), UpError> {
    use std::io::Write;
    let err = |source| UpError::File {
        what,
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    let mut f = o.open(&tmp).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The server certificate, swapped in place when renewed.
#[derive(Debug)]
struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn server_svid(
    state: &ServerState,
    id: &SpiffeId,
) -> Result<(Arc<CertifiedKey>, u64, u64), UpError> {
    let opts = SvidOptions {
        dns_names: vec!["localhost".to_string()],
        ttl: None,
    };
    let (svid, key) = state
        .ca()
        .mint_x509_svid_with_key(id, &opts, SystemTime::now())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.pkcs8_der().to_vec()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| UpError::Other(format!("server key: {e}")))?;
    Ok((
        Arc::new(CertifiedKey::new(svid.chain.clone(), signing)),
        unix(svid.not_before),
        unix(svid.not_after),
    ))
}

fn api_tls(
    slot: Arc<CertSlot>,
    bundle: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ServerConfig>, UpError> {
    let provider = crate::https::ring();
    let roots = crate::https::roots(bundle)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| UpError::Other(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UpError::Other(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(slot);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // No resumption: a resumed session skips client certificate
    // verification, so an agent would keep an identity its certificate no
    // longer proves.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

fn open_store(config: &UpConfig) -> Result<Box<dyn Store + Send>, UpError> {
    Ok(match &config.postgres {
        Some(url) => Box::new(keycard_store::PostgresStore::connect(url, None)?),
        None => Box::new(SqliteStore::open(config.data_dir.join(DATABASE_FILE))?),
    })
}

fn root_source(config: &UpConfig) -> Result<RootSource, UpError> {
    match (&config.root_cert, &config.root_key) {
        (Some(c), Some(k)) => {
            let read = |p: &PathBuf, what| {
                std::fs::read_to_string(p).map_err(|source| UpError::File {
                    what,
                    path: p.display().to_string(),
                    source,
                })
            };
            Ok(RootSource::Pem {
                cert_pem: read(c, "root certificate")?,
                key_pem: read(k, "root key")?,
            })
        }
        _ => Ok(RootSource::Generate),
    }
}

fn bundle_pem(ca: &Ca) -> String {
    ca.bundle()
        .x509_authorities
        .iter()
        .map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec())))
        .collect()
}

/// Starts everything. Returns once every listener is bound.
pub async fn start(config: UpConfig) -> Result<Up, UpError> {
    let config = Arc::new(config);
    let dir = &config.data_dir;
    private_dir(dir)?;
    let mut store = open_store(&config)?;
    let keys: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(dir.join("keys"))?);
    let mut ca_config = CaConfig::new(config.trust_domain.clone(), &config.instance);
    ca_config.x509_svid_ttl = config.x509_svid_ttl;
    ca_config.jwt_svid_ttl = config.jwt_svid_ttl;
    ca_config.intermediate_ttl = config.intermediate_ttl;
    ca_config.refresh_hint = config.bundle_endpoint.refresh_hint;
    let ca = Ca::open(
        ca_config,
        root_source(&config)?,
        store.as_mut(),
        keys.as_ref(),
        SystemTime::now(),
    )?;

    let log = crate::decisions::open(dir).map_err(|e| UpError::Other(e.to_string()))?;
    let decisions = Arc::new(crate::decisions::Decisions::new(log));

    // The bootstrap admin token: once, ever, and on the record.
    let new_admin_token = if auth::has_admin_token(store.as_ref())? {
        None
    } else {
        decisions
            .admin(
                "keycard up",
                "api_token.create",
                "bootstrap-admin",
                serde_json::json!({ "name": "bootstrap-admin", "role": "admin" }),
            )
            .map_err(|e| UpError::Other(e.to_string()))?;
        // Issued only if still no admin token: of servers starting at once
        // on one empty database, one makes it (the others serve without).
        let t = auth::issue_bootstrap_token(
            store.as_mut(),
            "bootstrap-admin",
            unix(SystemTime::now()),
        )?;
        if let Some(t) = &t {
            write_file(
                &dir.join(ADMIN_TOKEN_FILE),
                t.as_bytes(),
                0o600,
                "admin token",
            )?;
        }
        t
    };
    let state = ServerState::new(
        Arc::clone(&config),
        Arc::new(std::sync::Mutex::new(store)),
        ca,
        keys,
        Arc::clone(&decisions),
    );
    let td = config.trust_domain.clone();
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // The API, with the bundle endpoint.
    let server_id = SpiffeId::new(td.clone(), &format!("/keycard/server/{}", config.instance))
        .map_err(|e| UpError::Other(e.to_string()))?;
    let (cert, nb, na) = server_svid(&state, &server_id)?;
    let slot = Arc::new(CertSlot(RwLock::new(cert)));
    let roots = state.ca().bundle().x509_authorities.clone();
    let tls = api_tls(Arc::clone(&slot), &roots)?;
    let listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(|source| UpError::Listen {
            addr: config.api_listen.to_string(),
            source,
        })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| UpError::Other(e.to_string()))?;
    let router = crate::api::router(Arc::clone(&state));
    let mut rx = stop_rx.clone();
    tasks.push(tokio::spawn(crate::https::serve(
        listener,
        tls,
        router,
        async move {
            let _ = rx.changed().await;
        },
    )));
    // Renew the API certificate at about half-life.
    {
        let (state, slot, mut rx) = (Arc::clone(&state), Arc::clone(&slot), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut due = crate::agent::renew_time(nb, na, &mut rand::rng());
            loop {
                let wait = due.saturating_sub(unix(SystemTime::now())).max(1);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                    _ = rx.changed() => return,
                }
                match server_svid(&state, &server_id) {
                    Ok((cert, nb, na)) => {
                        *slot.0.write().unwrap_or_else(|p| p.into_inner()) = cert;
                        due = crate::agent::renew_time(nb, na, &mut rand::rng());
                        tracing::info!("renewed the API certificate");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew the API certificate; retrying");
                        due = unix(SystemTime::now()) + 10;
                    }
                }
            }
        }));
    }

    // The local agent and its socket.
    let agent_id = SpiffeId::new(
        td.clone(),
        &format!("/keycard/agent/local/{}", config.instance),
    )
    .map_err(|e| UpError::Other(e.to_string()))?;
    // `keycard server` runs no local agent: remote agents sync instead.
    let agent = LocalAgent::new(Arc::clone(&state), agent_id.clone());
    if config.agent_enabled {
        let _ = state.local_agent.set(Arc::clone(&agent));
        state.store().put_agent(&AgentRecord {
            spiffe_id: agent_id.clone(),
            attestation: "local".into(),
            selectors: vec![],
            serial: String::new(),
            expires_at: 0,
            banned: false,
            last_seen: unix(SystemTime::now()),
        })?;
        if let Err(e) = agent.sync(SystemTime::now()) {
            tracing::warn!(error = %e, "initial SVID sync incomplete");
        }
        tasks.push(tokio::spawn(Arc::clone(&agent).run(stop_rx.clone())));
        let socket =
            keycard_workload_api::bind_socket(&config.agent_socket, config.agent_socket_mode)?;
        let mut attestor = CompositeAttestor::new().with(Arc::new(UnixAttestor::new()));
        if let Some(k8s) = &config.agent_k8s {
            let lookup = keycard_workload_api::kubelet_pod_lookup(k8s)
                .map_err(|e| UpError::Other(format!("agent.k8s: {e}")))?;
            attestor = attestor.with(Arc::new(keycard_workload_api::K8sAttestor::new(Arc::new(
                lookup,
            ))));
        }
        let attestor = Arc::new(attestor);
        {
            let (agent, mut rx) = (Arc::clone(&agent), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.changed().await;
                };
                if let Err(e) = keycard_workload_api::serve(socket, agent, attestor, shutdown).await
                {
                    tracing::error!(error = %e, "the Workload API stopped");
                }
            }));
        }
    }

    // The admission webhook: the default packs and the Rego, Gatekeeper
    // and exceptions pushed through the API, followed as they change, with
    // approved exception grants; every decision logged.
    let admission = if config.admission_enabled {
        let mut pushed = crate::admission::PushedPolicies::new(
            Arc::clone(&state),
            crate::admission::PolicyOptions::default(),
            dir.join(".admission-pushed"),
        );
        let (pushed, policy) = tokio::task::spawn_blocking(move || {
            let p = pushed.initial();
            (pushed, p)
        })
        .await
        .map_err(|e| UpError::Other(format!("loading admission policies: {e}")))?;
        let policy = policy.map_err(|e| UpError::Other(format!("admission policies: {e}")))?;
        let recorder = crate::admission::Recorder::spawn(
            Arc::clone(&state.decisions) as Arc<dyn crate::admission::DecisionSink>,
            4096,
            512,
        );
        let webhook = Arc::new(crate::admission::Webhook::new(
            policy,
            crate::admission::WebhookConfig {
                dry_run: config.admission_dry_run,
                ..crate::admission::WebhookConfig::default()
            },
            Some(recorder),
        ));
        tasks.push(tokio::spawn(pushed.follow(
            Arc::clone(&webhook),
            ADMISSION_RELOAD_EVERY,
            stop_rx.clone(),
        )));
        let listener = tokio::net::TcpListener::bind(config.admission_listen)
            .await
            .map_err(|source| UpError::Listen {
                addr: config.admission_listen.to_string(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| UpError::Other(e.to_string()))?;
        let tls = api_tls(Arc::clone(&slot), &roots)?;
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.changed().await;
            };
            if let Err(e) = crate::admission::serve(
                listener,
                tls,
                webhook,
                crate::admission::ServerOptions::default(),
                shutdown,
            )
            .await
            {
                tracing::error!(error = %e, "the admission webhook stopped");
            }
        }));
        Some(format!("https://{addr}{}", crate::admission::VALIDATE_PATH))
    } else {
        None
    };

    // Federation: other trust domains' bundles, fetched and refreshed; and
    // the bundle endpoint's own listener, if configured.
    tasks.extend(crate::federation::spawn(&state, &stop_rx));
    let mut bundle_url = format!("https://{api_addr}/bundle");
    if let Some(addr) = config.bundle_endpoint.listen {
        let certs: Arc<dyn ResolvesServerCert> = match (
            &config.bundle_endpoint.cert_file,
            &config.bundle_endpoint.key_file,
        ) {
            (Some(c), Some(k)) => crate::federation::WebCert::open(c, k).map_err(UpError::Other)?
                as Arc<dyn ResolvesServerCert>,
            _ => Arc::clone(&slot) as Arc<dyn ResolvesServerCert>,
        };
        let tls = crate::federation::endpoint_tls(certs).map_err(UpError::Other)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| UpError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|e| UpError::Other(e.to_string()))?;
        bundle_url = format!("https://{bound}/");
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(crate::https::serve(
            listener,
            tls,
            crate::federation::endpoint_router(Arc::clone(&state)),
            async move {
                let _ = rx.changed().await;
            },
        )));
    }

    // Discovery files for other commands given the same data directory.
    let socket_abs = if config.agent_enabled {
        std::path::absolute(&config.agent_socket).unwrap_or_else(|_| config.agent_socket.clone())
    } else {
        PathBuf::new()
    };
    let endpoints = Endpoints {
        trust_domain: td.to_string(),
        api: format!("https://{api_addr}"),
        bundle: bundle_url,
        socket: socket_abs.display().to_string(),
        admission,
        api_host: "localhost".into(),
    };
    let json = serde_json::to_vec_pretty(&endpoints).map_err(|e| UpError::Other(e.to_string()))?;
    write_file(&dir.join(ENDPOINTS_FILE), &json, 0o644, "endpoints file")?;
    write_file(
        &dir.join(BUNDLE_FILE),
        bundle_pem(&state.ca()).as_bytes(),
        0o644,
        "bundle file",
    )?;

    // Grants end by themselves: sweep expiries every few seconds.
    tasks.push(tokio::spawn(crate::control::expiry_loop(
        Arc::clone(&state),
        Duration::from_secs(5),
        stop_rx.clone(),
    )));

    // CA rotation: check every minute; rotation prepares the next
    // intermediate early and publishes it before switching. Between
    // rotations, re-read the shared trust state every few seconds: other
    // servers on the same database publish their JWT keys and rotations
    // there, and this server's bundle must carry them.
    {
        let (state, mut rx) = (Arc::clone(&state), stop_rx.clone());
        let dir = dir.clone();
        tasks.push(tokio::spawn(async move {
            let mut last_rotation = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(TRUST_RELOAD_EVERY) => {}
                    _ = rx.changed() => return,
                }
                let changed = if last_rotation.elapsed() >= ROTATE_EVERY {
                    last_rotation = tokio::time::Instant::now();
                    rotate_ca(&state)
                } else {
                    reload_trust(&state)
                };
                if changed {
                    let pem = bundle_pem(&state.ca());
                    if let Err(e) =
                        write_file(&dir.join(BUNDLE_FILE), pem.as_bytes(), 0o644, "bundle file")
                    {
                        tracing::warn!(error = %e, "could not update bundle.pem");
                    }
                    state.changed();
                }
            }
        }));
    }

    Ok(Up {
        endpoints,
        new_admin_token,
        state,
        agent,
        stop,
        tasks,
    })
}

/// How often the webhook re-checks the pushed policies and grants besides
/// the change feed (other servers on one database; grants that end).
const ADMISSION_RELOAD_EVERY: Duration = Duration::from_millis(500);
/// How often the shared trust state is re-read.
const TRUST_RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How often the CA rotation step runs.
const ROTATE_EVERY: Duration = Duration::from_secs(60);

/// One rotation step; returns whether the bundle changed.
fn rotate_ca(state: &ServerState) -> bool {
    let before = state.ca().bundle().sequence;
    let events = {
        let mut st = state.store();
        let keys = Arc::clone(&state.keys);
        state
            .ca_mut()
            .rotate(st.as_mut(), keys.as_ref(), SystemTime::now())
    };
    match events {
        Ok(ev) => {
            if !ev.is_empty() {
                tracing::info!(?ev, "CA rotation");
            }
            // Rotation also takes in what other servers published.
            state.ca().bundle().sequence != before
        }
        Err(e) => {
            tracing::warn!(error = %e, "CA rotation failed; will retry");
            false
        }
    }
}

/// Picks up what other servers published (JWT keys, roots); returns
/// whether the bundle changed.
fn reload_trust(state: &ServerState) -> bool {
    let reloaded = {
        let st = state.store();
        state.ca_mut().reload(st.as_ref())
    };
    match reloaded {
        Ok(changed) => {
            if changed {
                tracing::info!(
                    sequence = ?state.ca().bundle().sequence,
                    "the trust bundle changed on another server; reloaded"
                );
            }
            changed
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not re-read the shared trust state; will retry");
            false
        }
    }
}

impl Up {
    /// Stops every listener and task, waiting up to `grace` for them.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = futures_join(self.tasks);
        let _ = tokio::time::timeout(grace, all).await;
        if let Err(e) = self.state.decisions.checkpoint() {
            tracing::warn!(error = %e, "could not sign a final checkpoint");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// What a CLI command needs to reach a running `keycard up` in `dir`.
#[derive(Debug)]
pub struct DataDirClient {
    pub endpoints: Endpoints,
    pub client: crate::https::ApiClient,
}

/// Reads `up.json`, `bundle.pem` and `admin.token` from `dir` and builds
/// an API client.
pub fn connect_data_dir(dir: &Path) -> Result<DataDirClient, UpError> {
    let read = |name: &str, what: &'static str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|source| UpError::File {
            what,
            path: p.display().to_string(),
            source,
        })
    };
    let endpoints: Endpoints = serde_json::from_slice(&read(
        ENDPOINTS_FILE,
        "endpoints file (is `keycard up` running with this --data-dir?)",
    )?)
    .map_err(|e| UpError::Other(format!("{}: {e}", dir.join(ENDPOINTS_FILE).display())))?;
    let bundle: Vec<CertificateDer<'static>> = pem::parse_many(read(BUNDLE_FILE, "bundle file")?)
        .map_err(|e| UpError::Other(format!("{}: {e}", dir.join(BUNDLE_FILE).display())))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    let token = String::from_utf8(read(ADMIN_TOKEN_FILE, "admin token")?)
        .map_err(|_| UpError::Other("admin token is not text".into()))?
        .trim()
        .to_string();
    let addr = endpoints
        .api
        .strip_prefix("https://")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| UpError::Other(format!("bad api address {:?} in up.json", endpoints.api)))?;
    let client = crate::https::ApiClient::new(addr, &endpoints.api_host, &bundle, Some(token))?;
    Ok(DataDirClient { endpoints, client })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn every_api_connection_is_verified_afresh_never_resumed() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let signer = rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        ))
        .unwrap();
        let slot = CertSlot(RwLock::new(Arc::new(CertifiedKey::new(
            vec![der.clone()],
            signer,
        ))));
        let acceptor = tokio_rustls::TlsAcceptor::from(
            api_tls(Arc::new(slot), std::slice::from_ref(&der)).unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (s, _) = listener.accept().await.unwrap();
                if let Ok(mut t) = acceptor.accept(s).await {
                    let _ = t.write_all(b"hello").await;
                    let _ = t.shutdown().await;
                }
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        // A client that would resume if the server let it.
        let client = Arc::new(
            rustls::ClientConfig::builder_with_provider(crate::https::ring())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for i in 0..2 {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut t = tokio_rustls::TlsConnector::from(client.clone())
                .connect(name, tcp)
                .await
                .unwrap();
            assert_eq!(
                t.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Full),
                "connection {i}"
            );
            // Reading on takes in any session ticket the server sends.
            let mut got = Vec::new();
            t.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello");
        }
    }
}
