//! `keycard proxy`: the identity-aware mTLS sidecar.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use keycard_proxy::files::ExtraFiles;
use keycard_proxy::proxy::run::{start_files, LogTarget, ProxyConfig, SvidSourceConfig};
use keycard_proxy::proxy::source::PemFiles;
use keycard_proxy::proxy::{Expected, Limits, MtlsMode, Protocol};
use keycard_proxy::Mode;

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// mTLS only; plaintext connections are refused and counted.
    Strict,
    /// mTLS and plaintext on the same port; each decision records which.
    Permissive,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolArg {
    /// HTTP/1.1 and HTTP/2 (gRPC too), authorized per request.
    Http,
    /// Opaque TCP, authorized once per connection.
    Tcp,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyModeArg {
    Enforce,
    Audit,
}

#[derive(Args, Debug)]
#[command(
    before_long_help = "The identity-aware mTLS sidecar. An inbound listener sits in front of the \
local app: it accepts TLS 1.3 mutual TLS from other keycard proxies, verifies the caller's \
X509-SVID against the trust bundle of its trust domain (federated ones included), authorizes \
every HTTP request (or each TCP connection) in process with keycard's authorization policies, \
and forwards what is allowed to the app with the caller's SPIFFE ID in the header \
x-keycard-peer-spiffe-id (a client-supplied copy is removed). A denied request gets 403 and \
x-keycard-reason: <policy>/<rule>: <reason>. An outbound listener sits between the local app \
and a remote service: plaintext in on loopback, mTLS out with the workload's SVID, the \
upstream's SPIFFE ID checked instead of a DNS name. Upstream connections are pooled.

The SVID comes from the SPIFFE Workload API (`keycard up` serves it on <data-dir>/agent.sock) \
or from PEM files; on rotation new handshakes use the new certificate and open connections \
keep theirs, so nothing is dropped. A revoked identity (--revocations) is denied at once and \
its open connections are closed.",
    after_help = "\
Examples:
  # in front of an app on 127.0.0.1:8080, SVIDs from keycard's agent
  keycard proxy --inbound 0.0.0.0:15006=127.0.0.1:8080 \\
      --workload-api unix:///var/lib/keycard/agent.sock --policy-dir policies/ \\
      --decision-log - --flow-log flows.jsonl --admin-listen 127.0.0.1:15020

  # the caller's side: the app talks plaintext to 127.0.0.1:15001, which
  # reaches the api's proxy over mTLS and insists on its SPIFFE ID
  keycard proxy --outbound 127.0.0.1:15001=10.0.0.7:15006 \\
      --upstream-id spiffe://example.org/ns/prod/sa/api

  # migrating: accept plaintext too, and see who still uses it
  keycard proxy --inbound 0.0.0.0:15006=127.0.0.1:8080 --mode permissive --decision-log -

  # a database: opaque TCP, PEM files instead of the Workload API
  keycard proxy --inbound 0.0.0.0:15432=127.0.0.1:5432 --protocol tcp \\
      --cert svid.pem --key svid.key --bundle bundle.pem \\
      --federated-bundle partner.example=partner-bundle.pem

Endpoints on --admin-listen: /metrics (Prometheus: requests and decisions by policy and
outcome, handshake failures, refusals by reason, seconds to SVID expiry), /healthz, and
/readyz (ready once an SVID and a bundle are loaded).
Flow records (--flow-log) are the JSON lines `keycard flows ingest` reads; decision records
(--decision-log) those `keycard audit append` reads.

Exit status: 0 after SIGINT or SIGTERM, 2 when the configuration or a file is invalid or no
SVID could be obtained."
)]
pub struct ProxyArgs {
    /// An inbound listener and the app behind it, LISTEN=APP_ADDR (repeatable).
    #[arg(long, value_name = "LISTEN=APP_ADDR")]
    pub inbound: Vec<String>,
    /// An outbound listener and the upstream keycard proxy, LISTEN=UPSTREAM_ADDR (repeatable).
    #[arg(long, value_name = "LISTEN=UPSTREAM_ADDR")]
    pub outbound: Vec<String>,
    /// The SPIFFE ID (spiffe://td/path) or trust domain (td) outbound upstreams must present.
    #[arg(long, value_name = "SPIFFE_ID|TRUST_DOMAIN")]
    pub upstream_id: Option<String>,
    /// Inbound mTLS mode.
    #[arg(long, value_enum, default_value = "strict")]
    pub mode: ModeArg,
    /// What the listeners carry.
    #[arg(long, value_enum, default_value = "http")]
    pub protocol: ProtocolArg,
    /// The Workload API endpoint (default: $SPIFFE_ENDPOINT_SOCKET).
    #[arg(long, value_name = "unix:///PATH", conflicts_with = "cert")]
    pub workload_api: Option<String>,
    /// The SVID certificate chain (PEM, leaf first), instead of the Workload API.
    #[arg(long, value_name = "FILE", requires_all = ["key", "bundle"])]
    pub cert: Option<PathBuf>,
    /// The SVID private key (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// The trust bundle (PEM roots) of the SVID's own trust domain.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub bundle: Option<PathBuf>,
    /// A federated trust domain's bundle, TRUST_DOMAIN=FILE (repeatable; with --cert).
    #[arg(long, value_name = "TD=FILE", requires = "cert")]
    pub federated_bundle: Vec<String>,
    /// Directory of AuthorizationPolicy files, reloaded on change (none: every verified peer is allowed).
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Mode of policies that do not set spec.mode.
    #[arg(long, value_enum, default_value = "enforce")]
    pub default_mode: PolicyModeArg,
    /// Revocation list (spiffeIds, serials), watched; revoked peers' connections are closed.
    #[arg(long, value_name = "FILE")]
    pub revocations: Option<PathBuf>,
    /// Posture attributes per identity, watched.
    #[arg(long, value_name = "FILE")]
    pub posture: Option<PathBuf>,
    /// Just-in-time grants (an agent's enforce/grants.json), watched: an active
    /// exception grant exempts its principal from the policy it names until it expires.
    #[arg(long, value_name = "FILE")]
    pub grants_file: Option<PathBuf>,
    /// Decision records (JSON lines): a file (appended) or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub decision_log: Option<String>,
    #[command(flatten)]
    pub audit: super::authz::AuditLogArgs,
    /// Flow records, one per connection (JSON lines): a file (appended) or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub flow_log: Option<String>,
    /// Address of /metrics, /healthz and /readyz (off unless given).
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Accepted SNI names on inbound (repeatable; default: any, or none).
    #[arg(long, value_name = "NAME")]
    pub server_name: Vec<String>,
    /// Concurrent connections per listener.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// How often watched files (SVID files, policies, revocations, posture)
    /// are checked, in milliseconds; an unchanged file costs one stat. Keep
    /// it well under a second so the agent's revocations apply within one.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// Worker threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
}

fn pair(s: &str, flag: &str) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let Some((a, b)) = s.split_once('=') else {
        bail!("{flag} {s:?}: expected LISTEN=ADDR, e.g. 127.0.0.1:15006=127.0.0.1:8080");
    };
    let a: SocketAddr = a
        .parse()
        .with_context(|| format!("{flag} {s:?}: listen address {a:?}"))?;
    let b: SocketAddr = b
        .parse()
        .with_context(|| format!("{flag} {s:?}: address {b:?}"))?;
    Ok((a, b))
}

fn log_target(s: Option<String>) -> Option<LogTarget> {
    s.map(|d| {
        if d == "-" {
            LogTarget::Stdout
        } else {
            LogTarget::File(PathBuf::from(d))
        }
    })
}

/// Build the configuration from the arguments (and SPIFFE_ENDPOINT_SOCKET).
pub fn config(args: ProxyArgs) -> anyhow::Result<(ProxyConfig, usize)> {
    let inbound = args
        .inbound
        .iter()
        .map(|s| pair(s, "--inbound"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outbound = args
        .outbound
        .iter()
        .map(|s| pair(s, "--outbound"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let upstream_id = match &args.upstream_id {
        Some(s) => Some(Expected::parse(s).map_err(|e| anyhow::anyhow!("--upstream-id: {e}"))?),
        None => None,
    };
    let source = match (&args.cert, &args.key, &args.bundle) {
        (Some(cert), Some(key), Some(bundle)) => {
            let mut federated = Vec::new();
            for f in &args.federated_bundle {
                let Some((td, file)) = f.split_once('=') else {
                    bail!("--federated-bundle {f:?}: expected TRUST_DOMAIN=FILE");
                };
                federated.push((td.to_string(), PathBuf::from(file)));
            }
            SvidSourceConfig::Files(PemFiles {
                cert: cert.clone(),
                key: key.clone(),
                bundle: bundle.clone(),
                federated,
            })
        }
        _ => {
            let endpoint = match args.workload_api.clone() {
                Some(e) => e,
                None => match std::env::var("SPIFFE_ENDPOINT_SOCKET") {
                    Ok(e) if !e.is_empty() => e,
                    _ => bail!(
                        "no SVID source: give --workload-api unix:///path (or set \
                         SPIFFE_ENDPOINT_SOCKET), or --cert, --key and --bundle"
                    ),
                },
            };
            SvidSourceConfig::WorkloadApi(endpoint)
        }
    };
    let limits = Limits {
        max_connections: args.max_connections.max(1),
        ..Limits::default()
    };
    Ok((
        ProxyConfig {
            inbound,
            outbound,
            upstream_id,
            mode: match args.mode {
                ModeArg::Strict => MtlsMode::Strict,
                ModeArg::Permissive => MtlsMode::Permissive,
            },
            protocol: match args.protocol {
                ProtocolArg::Http => Protocol::Http,
                ProtocolArg::Tcp => Protocol::Tcp,
            },
            source,
            policy_dir: args.policy_dir,
            default_mode: match args.default_mode {
                PolicyModeArg::Enforce => Mode::Enforce,
                PolicyModeArg::Audit => Mode::Audit,
            },
            revocations: args.revocations,
            posture: args.posture,
            decision_log: log_target(args.decision_log),
            flow_log: log_target(args.flow_log),
            audit_log: args.audit.config(),
            admin_listen: args.admin_listen,
            server_names: args.server_name,
            poll_interval: Duration::from_millis(args.poll_ms.max(20)),
            limits,
            workload_api_timeout: Duration::from_secs(30),
        },
        args.workers.max(1),
    ))
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

/// The global allocator (mimalloc, linked through regorus) commits its
/// first arena eagerly on Linux, and freed pages of an eagerly committed
/// arena are only reset, not decommitted: they stay resident. Its options
/// are read from the environment at the first allocation, before `main`,
/// so the proxy turns eager commit off by re-executing itself once with
/// `MIMALLOC_ARENA_EAGER_COMMIT=0` (measured: 25 MB resident idle without
/// it, 14 MB with it). If that fails it carries on as it is.
#[cfg(target_os = "linux")]
fn reexec_with_lazy_commit() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MIMALLOC_ARENA_EAGER_COMMIT";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut cmd = std::process::Command::new(exe);
    if let Some(argv0) = args.next() {
        cmd.arg0(argv0);
    }
    let err = cmd.args(args).env(VAR, "0").exec();
    tracing::debug!(error = %err, "re-executing with lazy heap commit failed; carrying on");
}

/// Run `keycard proxy` until SIGINT or SIGTERM.
pub fn run(args: ProxyArgs) -> anyhow::Result<u8> {
    #[cfg(target_os = "linux")]
    reexec_with_lazy_commit();
    let extra = ExtraFiles {
        grants: args.grants_file.clone(),
    };
    let (cfg, workers) = config(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async move {
        let running = start_files(cfg, extra).await?;
        let show = |v: &[SocketAddr]| {
            v.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        // One line on stderr, for people and for scripts that bound port 0.
        eprintln!(
            "keycard proxy: id={} inbound={} outbound={} admin={}",
            running.ctx.own_id().unwrap_or_else(|| "-".into()),
            show(&running.inbound),
            show(&running.outbound),
            running
                .admin
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into())
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        anyhow::Ok(0u8)
    })
}
