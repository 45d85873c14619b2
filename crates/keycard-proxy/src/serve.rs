//! `keycard authz serve`: the ext_authz gRPC and HTTP listeners, the
//! metrics listener and the reload loop, over one [`Authorizer`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::authorizer::Authorizer;
use crate::ext_authz::{
    http_response, request_from_http, unavailable_http_response, AuthzGrpc, AuthzState,
};
use crate::files::{ExtraFiles, PostureDb, Revocations, Watched};
use crate::grants::Grants;
use crate::jwt::{JwtValidator, ProviderConfig};
use crate::loader::{PolicyStore, Reload};
use crate::metrics::Metrics;
use crate::policy::Mode;
use crate::record::{AuditLogConfig, AuditSink, RecordSink};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("policies: {0}")]
    Policies(#[from] crate::loader::LoadError),
    #[error("{0}")]
    File(#[from] crate::files::FileError),
    #[error("jwks: {0}")]
    Jwks(#[from] crate::jwt::JwksError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] crate::record::AuditLogError),
}

/// Where decision records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionLog {
    Stdout,
    File(PathBuf),
}

/// Everything `keycard authz serve` is told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub policy_dir: PathBuf,
    pub default_mode: Mode,
    pub grpc_listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub jwks: Vec<ProviderConfig>,
    pub revocations: Option<PathBuf>,
    pub posture: Option<PathBuf>,
    pub decision_log: Option<DecisionLog>,
    /// How often watched files are checked for changes.
    pub poll_interval: Duration,
    /// Decide requests whose path is not in normal form (on the normal
    /// form) instead of denying them. Off by default: Envoy forwards its
    /// own path, so a request it did not normalise could reach the app
    /// spelled differently from what was authorised.
    pub accept_unnormalised_paths: bool,
}

/// A running server: its bound addresses, and a handle to stop it.
pub struct Running {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub state: Arc<AuthzState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting, let in-flight checks finish (bounded), return.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // Commit what the decision log has queued and sign a checkpoint.
        if let Some(a) = self.state.audit.clone() {
            let _ = tokio::task::spawn_blocking(move || a.shutdown(Duration::from_secs(10))).await;
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Io {
            what: format!("{what} listener {addr}"),
            source,
        })
}

fn local(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}

/// Load everything, bind the listeners and start serving.
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    start_with(cfg, None).await
}

/// [`start`], also writing every decision to the tamper-evident decision
/// log of `audit` (opened before any listener is bound).
pub async fn start_with(
    cfg: ServeConfig,
    audit: Option<AuditLogConfig>,
) -> Result<Running, ServeError> {
    let writer = match &audit {
        Some(a) => Some(a.open()?),
        None => None,
    };
    start_writer(cfg, writer).await
}

/// [`start`] over a decision log writer already started (tests give one
/// over a store that fails on command).
pub async fn start_writer(
    cfg: ServeConfig,
    writer: Option<Arc<dyn keycard_audit::writer::DecisionWriter>>,
) -> Result<Running, ServeError> {
    start_writer_files(cfg, writer, ExtraFiles::default()).await
}

/// [`start_writer`], also watching `extra` (just-in-time grants).
pub async fn start_writer_files(
    cfg: ServeConfig,
    writer: Option<Arc<dyn keycard_audit::writer::DecisionWriter>>,
    extra: ExtraFiles,
) -> Result<Running, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(PolicyStore::open(&cfg.policy_dir, cfg.default_mode)?);
    metrics.set_policies(store.current().len());
    let mut authorizer = Authorizer::new(store.clone());
    let revocations = match &cfg.revocations {
        Some(p) => Some(Arc::new(Watched::open(p, Revocations::parse)?)),
        None => None,
    };
    let posture = match &cfg.posture {
        Some(p) => Some(Arc::new(Watched::open(p, PostureDb::parse)?)),
        None => None,
    };
    let grants = match &extra.grants {
        Some(p) => Some(Arc::new(Watched::open(p, Grants::parse)?)),
        None => None,
    };
    let jwt = if cfg.jwks.is_empty() {
        None
    } else {
        Some(Arc::new(JwtValidator::new(cfg.jwks.clone())?))
    };
    if let Some(r) = &revocations {
        authorizer = authorizer.revocations(r.clone());
    }
    if let Some(p) = &posture {
        authorizer = authorizer.posture(p.clone());
    }
    if let Some(g) = &grants {
        authorizer = authorizer.grants(g.clone());
    }
    if let Some(j) = &jwt {
        authorizer = authorizer.jwt(j.clone());
    }
    let records = match &cfg.decision_log {
        None => None,
        Some(DecisionLog::Stdout) => Some(
            RecordSink::start(Box::new(std::io::stdout()), metrics.clone()).map_err(|source| {
                ServeError::Io {
                    what: "decision log writer".into(),
                    source,
                }
            })?,
        ),
        Some(DecisionLog::File(p)) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| ServeError::Io {
                    what: format!("decision log {}", p.display()),
                    source,
                })?;
            Some(
                RecordSink::start(Box::new(f), metrics.clone()).map_err(|source| {
                    ServeError::Io {
                        what: "decision log writer".into(),
                        source,
                    }
                })?,
            )
        }
    };
    let mut state = AuthzState::new(Arc::new(authorizer), metrics.clone(), records);
    state.require_normal_paths = !cfg.accept_unnormalised_paths;
    if let Some(w) = writer {
        state = state.with_audit(Arc::new(AuditSink::new(
            w,
            keycard_audit::EnforcementPoint::ExtAuthz,
            Some(store.clone()),
            metrics.clone(),
        )));
    }
    let state = Arc::new(state);
    let (tx, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut running = Running {
        grpc: None,
        http: None,
        metrics: None,
        state: state.clone(),
        shutdown: tx,
        tasks: Vec::new(),
    };

    if let Some(addr) = cfg.grpc_listen {
        let l = bind(addr, "gRPC").await?;
        running.grpc = local(&l);
        let svc = AuthorizationServer::new(AuthzGrpc {
            state: state.clone(),
        });
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(l);
            let res = tonic::transport::Server::builder()
                .concurrency_limit_per_connection(1024)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));
    }
    if let Some(addr) = cfg.http_listen {
        let l = bind(addr, "HTTP").await?;
        running.http = local(&l);
        let st = state.clone();
        tasks.push(tokio::spawn(serve_http(l, rx.clone(), move |req, peer| {
            let st = st.clone();
            async move { http_check(&st, req, peer).await }
        })));
    }
    if let Some(addr) = cfg.metrics_listen {
        let l = bind(addr, "metrics").await?;
        running.metrics = local(&l);
        let st = state.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(serve_http(l, rx.clone(), move |req, _| {
            let st = st.clone();
            let store = store.clone();
            async move { Ok(admin(&st, &store, req.uri().path())) }
        })));
    }
    // The reload loop.
    {
        let mut rx = rx.clone();
        let interval = cfg.poll_interval.max(Duration::from_millis(50));
        let metrics = metrics.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = rx.wait_for(|s| *s) => return,
                }
                let (store, revocations, posture, jwt) = (store.clone(), revocations.clone(), posture.clone(), jwt.clone());
                let grants = grants.clone();
                let metrics2 = metrics.clone();
                // File reads and compiles happen off the async workers.
                let res = tokio::task::spawn_blocking(move || {
                    match store.reload_if_changed() {
                        Reload::Failed(_) => metrics2.reload_error("policies"),
                        Reload::Reloaded(n) => metrics2.set_policies(n),
                        Reload::Unchanged => {}
                    }
                    if let Some(r) = &revocations {
                        if r.reload_if_changed().is_err() {
                            metrics2.reload_error("revocations");
                        }
                    }
                    if let Some(p) = &posture {
                        if p.reload_if_changed().is_err() {
                            metrics2.reload_error("posture");
                        }
                    }
                    if let Some(g) = &grants {
                        if g.reload_if_changed().is_err() {
                            metrics2.reload_error("grants");
                        }
                    }
                    if let Some(j) = &jwt {
                        j.refresh_files();
                    }
                    jwt
                })
                .await;
                if let Ok(Some(j)) = res {
                    for (i, url) in j.url_providers() {
                        if j.refresh_due(i) {
                            match crate::fetch::get(&url, crate::jwt::MAX_JWKS_BYTES as usize).await {
                                Ok(body) => {
                                    if let Err(e) = j.install(i, &body) {
                                        tracing::warn!(url = %url, error = %e, "JWKS refresh: bad document; keeping the old keys");
                                        metrics.reload_error("jwks");
                                    }
                                }
                                Err(e) => {
                                    j.refresh_failed(i);
                                    tracing::warn!(url = %url, error = %e, "JWKS refresh failed; keeping the old keys");
                                    metrics.reload_error("jwks");
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    running.tasks = tasks;
    Ok(running)
}

type Resp = http::Response<Full<Bytes>>;

async fn serve_http<F, Fut>(l: TcpListener, mut rx: watch::Receiver<bool>, handler: F)
where
    F: Fn(http::Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, Infallible>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            r = l.accept() => r,
            _ = rx.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let h = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| h(req, peer));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            // Bound how long one connection may live idle or slow.
            let _ = tokio::time::timeout(Duration::from_secs(300), conn).await;
        });
    }
}

fn text(status: u16, body: String) -> Resp {
    let mut r = http::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r
}

fn admin(st: &AuthzState, store: &PolicyStore, path: &str) -> Resp {
    match path {
        "/metrics" => {
            let mut body = st.metrics.encode();
            if let Some(a) = &st.audit {
                let trimmed = body.trim_end().strip_suffix("# EOF").map(str::to_string);
                if let Some(t) = trimmed {
                    body = format!("{t}{}# EOF\n", a.encode_metrics());
                }
            }
            let mut r = text(200, body);
            if let Ok(v) = http::HeaderValue::from_str(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ) {
                r.headers_mut().insert(http::header::CONTENT_TYPE, v);
            }
            r
        }
        "/healthz" => text(200, "ok\n".into()),
        "/readyz"
            if st.audit.as_ref().is_some_and(|a| {
                a.writer().mode() == keycard_audit::FailureMode::FailClosed
                    && !a.writer().available()
            }) =>
        {
            text(
                503,
                "not ready: the decision log cannot take records (requests are refused)\n".into(),
            )
        }
        "/readyz" => match store.last_error() {
            // A failed reload leaves the last good set in force: still ready.
            Some(e) => text(200, format!("ready (last policy reload failed: {e})\n")),
            None => text(200, format!("ready ({} policies)\n", store.current().len())),
        },
        _ => text(404, "not found\n".into()),
    }
}

async fn http_check(
    st: &AuthzState,
    req: http::Request<Incoming>,
    peer: SocketAddr,
) -> Result<Resp, Infallible> {
    let (parts, body) = req.into_parts();
    // The body is not used; read (bounded) and drop it so the connection stays usable.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        Limited::new(body, 64 * 1024).collect(),
    )
    .await;
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let r = request_from_http(parts.method.as_str(), pq, &parts.headers, Some(peer));
    let x = st.decide("http", r);
    let resp = if x.log_unavailable {
        unavailable_http_response()
    } else {
        http_response(&x.req, &x.decision, x.claims.as_ref())
    };
    let (p, b) = resp.into_parts();
    Ok(http::Response::from_parts(p, Full::new(Bytes::from(b))))
}

/// Run until SIGINT or SIGTERM on a runtime of `workers` threads;
/// `on_ready` is called once every listener is bound.
pub fn run_blocking(
    cfg: ServeConfig,
    workers: usize,
    on_ready: impl FnOnce(&Running),
) -> Result<(), ServeError> {
    run_blocking_with(cfg, None, workers, on_ready)
}

/// [`run_blocking`] with the tamper-evident decision log.
pub fn run_blocking_with(
    cfg: ServeConfig,
    audit: Option<AuditLogConfig>,
    workers: usize,
    on_ready: impl FnOnce(&Running),
) -> Result<(), ServeError> {
    run_blocking_files(cfg, ExtraFiles::default(), audit, workers, on_ready)
}

/// [`run_blocking_with`], also watching `extra` (just-in-time grants).
pub fn run_blocking_files(
    cfg: ServeConfig,
    extra: ExtraFiles,
    audit: Option<AuditLogConfig>,
    workers: usize,
    on_ready: impl FnOnce(&Running),
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            what: "runtime".into(),
            source,
        })?;
    rt.block_on(async move {
        let writer = match &audit {
            Some(a) => Some(a.open()?),
            None => None,
        };
        let running = start_writer_files(cfg, writer, extra).await?;
        on_ready(&running);
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
