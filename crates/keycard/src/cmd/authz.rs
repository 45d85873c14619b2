//! `keycard authz serve`: the Envoy ext_authz decision point.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use keycard_proxy::files::ExtraFiles;
use keycard_proxy::jwt::{parse_provider_config, JwksSource, ProviderConfig, ProviderKind};
use keycard_proxy::record::AuditLogConfig;
use keycard_proxy::serve::{run_blocking_files, DecisionLog, ServeConfig};
use keycard_proxy::Mode;

/// The authorization commands.
#[derive(Subcommand, Debug)]
pub enum AuthzCommand {
    /// Serve Envoy ext_authz v3 (gRPC and HTTP) over keycard's authorization policies.
    Serve(ServeArgs),
}

/// What an enforcement point does when its decision log cannot take records.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditFailure {
    /// Refuse requests until the log takes records again (ext_authz: deny
    /// with x-keycard-reason: decision-log-unavailable; proxy: 503).
    Closed,
    /// Let decisions stand and count the records dropped.
    Open,
}

/// The tamper-evident decision log of an enforcement point (`keycard authz
/// serve`, `keycard proxy`).
#[derive(Args, Debug, Clone)]
pub struct AuditLogArgs {
    /// Also append every decision to the tamper-evident decision log in DIR
    /// (audit.db, audit.key 0600, audit.pub; created if absent), read by
    /// `keycard audit verify/why/query --data-dir DIR`.
    #[arg(long, value_name = "DIR")]
    pub audit_log: Option<PathBuf>,
    /// When the log cannot take records (write error, full disk, queue full).
    #[arg(long, value_enum, default_value = "closed", requires = "audit_log")]
    pub audit_failure: AuditFailure,
    /// Store this field as a keyed hash (repeatable): subject, resource,
    /// action, reason, attributes.PATH. The first writer's rules are kept with
    /// the log and every writer applies them.
    #[arg(long = "audit-hash", value_name = "FIELD", requires = "audit_log")]
    pub audit_hash: Vec<String>,
    /// Store this field as **** (repeatable).
    #[arg(long = "audit-mask", value_name = "FIELD", requires = "audit_log")]
    pub audit_mask: Vec<String>,
    /// Secret key of --audit-hash (HMAC-SHA-256), copied to DIR/audit.hash-key (0600).
    #[arg(long, value_name = "FILE", requires = "audit_log")]
    pub audit_hash_key_file: Option<PathBuf>,
    /// Sign a checkpoint every N records.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub audit_checkpoint_every: u64,
    /// Sign a checkpoint at least this often (seconds) while records arrive.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub audit_checkpoint_secs: u64,
    /// Refuse to grow the log past this size (writes then stop, as on a full disk).
    #[arg(long, value_name = "MIB")]
    pub audit_max_size_mib: Option<u64>,
    /// Records queued for the writer at most.
    #[arg(long, value_name = "N", default_value_t = 65_536)]
    pub audit_queue: usize,
}

impl AuditLogArgs {
    /// The log's configuration, when --audit-log is given.
    pub fn config(&self) -> Option<AuditLogConfig> {
        let dir = self.audit_log.clone()?;
        let mut c = AuditLogConfig::new(dir);
        c.hash = self.audit_hash.clone();
        c.mask = self.audit_mask.clone();
        c.hash_key_file = self.audit_hash_key_file.clone();
        c.max_size_bytes = self
            .audit_max_size_mib
            .map(|m| m.saturating_mul(1024 * 1024));
        c.checkpoint = keycard_audit::CheckpointPolicy {
            every_records: self.audit_checkpoint_every.max(1),
            every_ms: i64::try_from(self.audit_checkpoint_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
        };
        c.writer.queue = self.audit_queue.max(1);
        c.writer.mode = match self.audit_failure {
            AuditFailure::Closed => keycard_audit::FailureMode::FailClosed,
            AuditFailure::Open => keycard_audit::FailureMode::FailOpen,
        };
        Some(c)
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultMode {
    Enforce,
    Audit,
}

#[derive(Args, Debug)]
#[command(
    long_about = "Serve Envoy's external authorization API (ext_authz v3) over keycard's \
authorization policies: the gRPC service envoy.service.auth.v3.Authorization/Check and its \
HTTP variant (Envoy's http_service mode), one engine behind both.

Policies are Istio-shaped AuthorizationPolicy objects (apiVersion keycard.dev/v1) read from \
--policy-dir and reloaded when the files change; an invalid file keeps the last good policy \
set in force and the error is logged and counted (keycard_authz_reload_errors_total). \
Evaluation order: revoked identity -> deny; invalid bearer JWT -> deny; DENY policies; then, \
when ALLOW policies apply to the workload, deny unless one matches. Policies in audit mode \
let the request through and count it as would-deny.

A denied request gets 403 (401 for an invalid JWT) with the header \
x-keycard-reason: <policy>/<rule>: <reason>. An allowed one goes upstream with \
x-keycard-principal set to the caller's SPIFFE ID.",
    after_help = "\
Examples:
  # gRPC for Envoy on 9191, metrics on 9090, every decision to stdout
  keycard authz serve --policy-dir policies/ --grpc-listen 127.0.0.1:9191 \\
      --metrics-listen 127.0.0.1:9090 --decision-log -

  # try new policies without blocking anyone (each policy may still say mode: enforce)
  keycard authz serve --policy-dir policies/ --default-mode audit

  # JWT-SVIDs from a SPIFFE bundle, OIDC tokens, revocations and device posture
  keycard authz serve --policy-dir policies/ --jwks providers.yaml \\
      --revocations revoked.yaml --posture posture.yaml --decision-log decisions.jsonl

  # one JWKS provider inline instead of a file
  keycard authz serve --policy-dir policies/ \\
      --jwks 'issuer=https://idp.example.com,jwks=https://idp.example.com/keys,aud=api'

A policy (policies/api.yaml):
  apiVersion: keycard.dev/v1
  kind: AuthorizationPolicy
  metadata: {name: api, namespace: prod}
  spec:
    selector: {spiffeIds: [\"spiffe://example.org/ns/prod/sa/api\"]}
    rules:
    - from: [{source: {principals: [\"spiffe://example.org/ns/prod/sa/web\"]}}]
      to: [{operation: {methods: [GET], paths: [\"/v1/*\"]}}]
      when: [{key: posture.device_health, values: [healthy]}]

Envoy (HTTP filter):
  - name: envoy.filters.http.ext_authz
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
      transport_api_version: V3
      failure_mode_allow: false
      grpc_service: {envoy_grpc: {cluster_name: keycard}, timeout: 0.25s}

  # every decision in the tamper-evident log too; refuse requests if it cannot take them
  keycard authz serve --policy-dir policies/ --audit-log /var/lib/keycard/decisions
  keycard audit verify --data-dir /var/lib/keycard/decisions
  keycard audit why <x-request-id> --data-dir /var/lib/keycard/decisions

Endpoints on --metrics-listen: /metrics (Prometheus), /healthz, /readyz.
Decision records (--decision-log) are JSON lines that `keycard audit append` reads as they are.
With --audit-log they also go to the tamper-evident decision log (id = the request id), in
batches by a writer thread; if the log cannot take them, requests are denied with
x-keycard-reason: decision-log-unavailable (HTTP 503) until it can, unless --audit-failure open.
More: examples/authz/ in the source tree.

Exit status: 0 after SIGINT or SIGTERM, 2 when the configuration or a file is invalid."
)]
pub struct ServeArgs {
    /// Directory of AuthorizationPolicy files (*.yaml, *.yml, *.json; read recursively).
    #[arg(long, value_name = "DIR")]
    pub policy_dir: PathBuf,
    /// Address of the ext_authz gRPC service.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9191")]
    pub grpc_listen: SocketAddr,
    /// Address of the ext_authz HTTP variant (off unless given).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Address of /metrics, /healthz and /readyz (off unless given).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// JWT providers: a YAML/JSON file (providers: [...]) or one provider inline as
    /// issuer=URL,jwks=FILE_OR_URL,aud=A[,aud=B][,leeway=SECS] or
    /// spiffe=TRUST_DOMAIN,jwks=BUNDLE,aud=A. Repeatable.
    #[arg(long, value_name = "FILE|SPEC")]
    pub jwks: Vec<String>,
    /// Revocation list (spiffeIds, serials), watched for changes.
    #[arg(long, value_name = "FILE")]
    pub revocations: Option<PathBuf>,
    /// Posture attributes per identity (identities: {ID: {attributes, expires}}), watched.
    #[arg(long, value_name = "FILE")]
    pub posture: Option<PathBuf>,
    /// Just-in-time grants (an agent's enforce/grants.json), watched: an active
    /// exception grant exempts its principal from the policy it names until it expires.
    #[arg(long, value_name = "FILE")]
    pub grants_file: Option<PathBuf>,
    /// Where decision records go (JSON lines): a file (appended) or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    pub decision_log: Option<String>,
    #[command(flatten)]
    pub audit: AuditLogArgs,
    /// Mode of policies that do not set spec.mode.
    #[arg(long, value_enum, default_value = "enforce")]
    pub default_mode: DefaultMode,
    /// How often watched files are checked for changes, in milliseconds
    /// (an unchanged file costs one stat). Keep it well under a second so
    /// revocations and policy changes from the agent apply within one.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// Decide a request whose path is not in normal form (dot segments,
    /// repeated slashes, escaped unreserved characters) on its normal form.
    /// By default it is denied (bad_request), because Envoy forwards the
    /// path as received: configure Envoy's normalize_path, merge_slashes and
    /// path_with_escaped_slashes_action REJECT_REQUEST instead.
    #[arg(long)]
    pub accept_unnormalised_paths: bool,
    /// Worker threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
}

/// Run an authz subcommand.
pub fn run(cmd: AuthzCommand) -> anyhow::Result<u8> {
    match cmd {
        AuthzCommand::Serve(args) => serve(args),
    }
}

fn inline_provider(spec: &str, index: usize) -> anyhow::Result<ProviderConfig> {
    let mut issuer = None;
    let mut td = None;
    let mut jwks = None;
    let mut aud = Vec::new();
    let mut leeway = 60;
    let mut name = format!("jwks-{index}");
    for part in spec.split(',') {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--jwks {spec:?}: expected key=value pairs, found {part:?}");
        };
        match k.trim() {
            "issuer" => issuer = Some(v.to_string()),
            "spiffe" => td = Some(v.to_string()),
            "jwks" => jwks = Some(v.to_string()),
            "aud" => aud.push(v.to_string()),
            "name" => name = v.to_string(),
            "leeway" => leeway = v.parse().with_context(|| format!("--jwks leeway {v:?}"))?,
            other => {
                bail!("--jwks: unknown key {other:?} (issuer, spiffe, jwks, aud, name, leeway)")
            }
        }
    }
    let Some(jwks) = jwks else {
        bail!("--jwks {spec:?}: jwks=FILE_OR_URL is required");
    };
    let source = if jwks.starts_with("http://") || jwks.starts_with("https://") {
        JwksSource::Url(jwks)
    } else {
        JwksSource::File(PathBuf::from(jwks))
    };
    let cfg = ProviderConfig {
        name,
        kind: match td {
            Some(trust_domain) => ProviderKind::Spiffe { trust_domain },
            None => ProviderKind::Oidc,
        },
        issuer,
        audiences: aud,
        jwks: source,
        leeway: Duration::from_secs(leeway),
        refresh_interval: Duration::from_secs(300),
        min_refresh_gap: Duration::from_secs(5),
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--jwks {spec:?}: {e}"))?;
    Ok(cfg)
}

fn providers(specs: &[String]) -> anyhow::Result<Vec<ProviderConfig>> {
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if spec.contains('=') && !Path::new(spec).exists() {
            out.push(inline_provider(spec, i)?);
            continue;
        }
        let path = Path::new(spec);
        let text = std::fs::read_to_string(path).with_context(|| format!("--jwks {spec}"))?;
        let base = path.parent().unwrap_or(Path::new("."));
        out.extend(parse_provider_config(spec, &text, base)?);
    }
    Ok(out)
}

fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let cfg = ServeConfig {
        policy_dir: args.policy_dir,
        default_mode: match args.default_mode {
            DefaultMode::Enforce => Mode::Enforce,
            DefaultMode::Audit => Mode::Audit,
        },
        grpc_listen: Some(args.grpc_listen),
        http_listen: args.http_listen,
        metrics_listen: args.metrics_listen,
        jwks: providers(&args.jwks)?,
        revocations: args.revocations,
        posture: args.posture,
        decision_log: args.decision_log.map(|d| {
            if d == "-" {
                DecisionLog::Stdout
            } else {
                DecisionLog::File(PathBuf::from(d))
            }
        }),
        poll_interval: Duration::from_millis(args.poll_ms),
        accept_unnormalised_paths: args.accept_unnormalised_paths,
    };
    let extra = ExtraFiles {
        grants: args.grants_file,
    };
    run_blocking_files(cfg, extra, args.audit.config(), args.workers, |r| {
        let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".into());
        let policies = r.state.authorizer.policies().current().len();
        // One line on stderr, for people and for scripts that started us on port 0.
        eprintln!(
            "keycard authz: serving grpc={} http={} metrics={} policies={policies}",
            show(r.grpc),
            show(r.http),
            show(r.metrics)
        );
    })?;
    Ok(0)
}
