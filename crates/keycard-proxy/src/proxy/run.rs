//! Everything `keycard proxy` starts, from one configuration: the SVID
//! source, the authorizer and its watched files, the record writers, the
//! inbound and outbound listeners and the admin endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::admin::{self, Watchers};
use super::inbound::{self, InboundConfig};
use super::outbound::{self, OutboundConfig};
use super::source::{PemFiles, WorkloadApiSource};
use super::{
    Expected, IdentityState, Limits, ListenerHandle, MtlsMode, Protocol, ProxyContext, ProxyError,
};
use crate::authorizer::Authorizer;
use crate::files::{PostureDb, Revocations, Watched};
use crate::loader::PolicyStore;
use crate::metrics::Metrics;
use crate::policy::Mode;
use crate::record::RecordSink;

/// Where the SVID comes from.
#[derive(Debug, Clone)]
pub enum SvidSourceConfig {
    /// A Workload API endpoint, `unix:///path`.
    WorkloadApi(String),
    /// PEM files, re-read when they change.
    Files(PemFiles),
}

/// Where JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

/// The whole proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `(listen, app)` pairs.
    pub inbound: Vec<(SocketAddr, SocketAddr)>,
    /// `(listen, upstream proxy)` pairs.
    pub outbound: Vec<(SocketAddr, SocketAddr)>,
    /// Who outbound upstreams must be (required with outbound listeners).
    pub upstream_id: Option<Expected>,
    pub mode: MtlsMode,
    pub protocol: Protocol,
    pub source: SvidSourceConfig,
    /// Authorization policies; none means every verified peer is allowed.
    pub policy_dir: Option<PathBuf>,
    pub default_mode: Mode,
    pub revocations: Option<PathBuf>,
    pub posture: Option<PathBuf>,
    pub decision_log: Option<LogTarget>,
    pub flow_log: Option<LogTarget>,
    /// The tamper-evident decision log (`--audit-log DIR`).
    pub audit_log: Option<crate::record::AuditLogConfig>,
    pub admin_listen: Option<SocketAddr>,
    /// Accepted SNI values on inbound (empty: any).
    pub server_names: Vec<String>,
    pub poll_interval: Duration,
    pub limits: Limits,
    /// How long to wait for the first SVID from the Workload API.
    pub workload_api_timeout: Duration,
}

/// A running proxy.
pub struct Running {
    pub inbound: Vec<SocketAddr>,
    pub outbound: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub ctx: Arc<ProxyContext>,
    handles: Vec<ListenerHandle>,
    tasks: Vec<JoinHandle<()>>,
    workload_api: Option<WorkloadApiSource>,
}

impl Running {
    /// Stop listening and following the SVID source.
    pub async fn stop(self) {
        for h in self.handles {
            h.stop();
        }
        for t in self.tasks {
            t.abort();
        }
        if let Some(w) = self.workload_api {
            w.stop().await;
        }
        if let Some(a) = self.ctx.audit.clone() {
            let _ = tokio::task::spawn_blocking(move || a.shutdown(Duration::from_secs(10))).await;
        }
    }
}

fn sink(target: &LogTarget, what: &str, metrics: &Arc<Metrics>) -> Result<RecordSink, ProxyError> {
    let out: Box<dyn std::io::Write + Send> = match target {
        LogTarget::Stdout => Box::new(std::io::stdout()),
        LogTarget::File(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| ProxyError::Io {
                    what: format!("{what} {}", p.display()),
                    source,
                })?,
        ),
    };
    RecordSink::start(out, metrics.clone()).map_err(|source| ProxyError::Io {
        what: format!("{what} writer"),
        source,
    })
}

/// Load, bind and serve.
pub async fn start(cfg: ProxyConfig) -> Result<Running, ProxyError> {
    start_files(cfg, crate::files::ExtraFiles::default()).await
}

/// [`start`], also watching `extra` (just-in-time grants).
pub async fn start_files(
    cfg: ProxyConfig,
    extra: crate::files::ExtraFiles,
) -> Result<Running, ProxyError> {
    if cfg.inbound.is_empty() && cfg.outbound.is_empty() {
        return Err(ProxyError::Config(
            "nothing to do: give --inbound and/or --outbound".into(),
        ));
    }
    if !cfg.outbound.is_empty() && cfg.upstream_id.is_none() {
        return Err(ProxyError::Config(
            "--outbound needs --upstream-id (the SPIFFE ID or trust domain the upstream must have)"
                .into(),
        ));
    }
    let identity = IdentityState::new();
    let mut tasks = Vec::new();
    let mut workload_api = None;
    match &cfg.source {
        SvidSourceConfig::WorkloadApi(endpoint) => {
            workload_api = Some(
                WorkloadApiSource::start(endpoint, identity.clone(), cfg.workload_api_timeout)
                    .await?,
            );
        }
        SvidSourceConfig::Files(files) => {
            tasks.push(files.clone().watch(identity.clone(), cfg.poll_interval)?);
        }
    }
    let authz_metrics = Arc::new(Metrics::new());
    let policies = match &cfg.policy_dir {
        Some(d) => Arc::new(
            PolicyStore::open(d, cfg.default_mode)
                .map_err(|e| ProxyError::Config(format!("policies: {e}")))?,
        ),
        None => {
            if !cfg.inbound.is_empty() {
                tracing::warn!("no --policy-dir: every peer with a valid SVID is allowed");
            }
            Arc::new(PolicyStore::fixed(
                crate::loader::compile_str("none", "", cfg.default_mode)
                    .map_err(|e| ProxyError::Config(e.to_string()))?,
            ))
        }
    };
    authz_metrics.set_policies(policies.current().len());
    let mut authorizer = Authorizer::new(policies.clone());
    let mut watchers = Watchers {
        policies: cfg.policy_dir.as_ref().map(|_| policies.clone()),
        ..Watchers::default()
    };
    if let Some(p) = &cfg.revocations {
        let w = Arc::new(
            Watched::open(p, Revocations::parse).map_err(|e| ProxyError::Config(e.to_string()))?,
        );
        authorizer = authorizer.revocations(w.clone());
        watchers.revocations = Some(w);
    }
    if let Some(p) = &cfg.posture {
        let w = Arc::new(
            Watched::open(p, PostureDb::parse).map_err(|e| ProxyError::Config(e.to_string()))?,
        );
        authorizer = authorizer.posture(w.clone());
        watchers.posture = Some(w);
    }
    if let Some(p) = &extra.grants {
        let w = Arc::new(
            Watched::open(p, crate::grants::Grants::parse)
                .map_err(|e| ProxyError::Config(e.to_string()))?,
        );
        authorizer = authorizer.grants(w.clone());
        watchers.grants = Some(w);
    }
    let mut ctx = ProxyContext::new(identity, Arc::new(authorizer));
    ctx.authz_metrics = authz_metrics.clone();
    ctx.limits = cfg.limits.clone();
    ctx.local = super::LocalWorkload::from_env();
    if let Some(t) = &cfg.decision_log {
        ctx.decisions = Some(sink(t, "decision log", &authz_metrics)?);
    }
    if let Some(a) = &cfg.audit_log {
        let w = a.open().map_err(|e| ProxyError::Config(e.to_string()))?;
        ctx.audit = Some(Arc::new(crate::record::AuditSink::new(
            w,
            keycard_audit::EnforcementPoint::Proxy,
            cfg.policy_dir.as_ref().map(|_| policies.clone()),
            authz_metrics.clone(),
        )));
    }
    if let Some(t) = &cfg.flow_log {
        ctx.flows = Some(sink(t, "flow log", &authz_metrics)?);
    }
    let ctx = Arc::new(ctx);
    tasks.push(admin::spawn_reload(
        ctx.clone(),
        watchers,
        cfg.poll_interval,
    ));
    let mut handles = Vec::new();
    let mut running_in = Vec::new();
    for (listen, app) in &cfg.inbound {
        let h = inbound::start(
            ctx.clone(),
            InboundConfig {
                listen: *listen,
                app: *app,
                mode: cfg.mode,
                protocol: cfg.protocol,
                server_names: cfg.server_names.clone(),
            },
        )
        .await?;
        running_in.push(h.addr);
        handles.push(h);
    }
    let mut running_out = Vec::new();
    if let Some(expected) = &cfg.upstream_id {
        for (listen, upstream) in &cfg.outbound {
            let h = outbound::start(
                ctx.clone(),
                OutboundConfig {
                    listen: *listen,
                    upstream: *upstream,
                    expected: expected.clone(),
                    protocol: cfg.protocol,
                    server_name: None,
                },
            )
            .await?;
            running_out.push(h.addr);
            handles.push(h);
        }
    }
    let mut admin_addr = None;
    if let Some(a) = cfg.admin_listen {
        let h = admin::start(ctx.clone(), a).await?;
        admin_addr = Some(h.addr);
        handles.push(h);
    }
    Ok(Running {
        inbound: running_in,
        outbound: running_out,
        admin: admin_addr,
        ctx,
        handles,
        tasks,
        workload_api,
    })
}
