//! `keycard admission`: the Kubernetes validating admission webhook on its
//! own (`serve`), and the ValidatingWebhookConfiguration that points the
//! cluster at it (`manifest`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use keycard_audit::FailureMode;
use keycard_core::Severity;
use keycard_server::admission::manifest::{self, Endpoint, FailurePolicy, ManifestOptions};
use keycard_server::admission::{
    run_until_signal, tls_config_from_pem, PolicyOptions, Recorder, ServerOptions, WatchedFiles,
    Webhook, WebhookConfig, DEFAULT_ADVISORY_RULES,
};

use crate::cli::FailOn;

/// The admission webhook's commands.
#[derive(Subcommand, Debug)]
pub enum AdmissionCommand {
    /// Serve the validating admission webhook over HTTPS (POST /validate, GET /healthz).
    Serve(ServeArgs),
    /// Print the ValidatingWebhookConfiguration that sends admission requests to keycard.
    Manifest(ManifestArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
The webhook applies the same packs, Rego policies, Gatekeeper constraints and
exceptions as `keycard check`. A request is denied when a finding at or above
--fail-on is not excepted; other findings come back as admission warnings
(kubectl prints them). The cross-object rules zt-default-deny-ingress and
zt-default-deny-egress only warn here: the webhook sees one object, and a
Namespace exists before its NetworkPolicies can. DELETE and CONNECT requests
and subresources other than pods/ephemeralcontainers are allowed unevaluated.
An evaluation that fails denies (the object could not be judged).

Policy, parameter and exceptions files are re-read when they change (checked
every --poll-ms), without a restart; a change that does not load is logged and
the last good policies stay in force. --enforce-dir follows what a keycard
agent writes for its node (`<data-dir>/enforce`): the Rego and Gatekeeper
policies pushed to the server (admission/), the exceptions (exceptions.yaml)
and approved exception grants (grants.json), on top of the packs and any
--policy and --exceptions.

With --audit-log every decision is recorded in the tamper-evident decision log
(`keycard audit query --data-dir DIR --point admission`); an allow that cannot
be recorded is refused unless --log-fail-open.

Examples:
  keycard admission serve --cert tls.crt --key tls.key
  keycard admission serve --cert tls.crt --key tls.key --policy policies/ \\
      --exceptions exceptions.yaml --audit-log /var/lib/keycard --dry-run
  keycard admission serve --cert tls.crt --key tls.key --enforce-dir /var/lib/keycard/enforce

Exit status: 0 after a clean shutdown (SIGINT, SIGTERM), 2 on a configuration error.")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate chain (PEM).
    #[arg(long, value_name = "PEM")]
    pub cert: PathBuf,
    /// Private key of the certificate (PEM; PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    /// Built-in pack to apply (repeatable; default: pss-restricted and zero-trust; `none` for no pack).
    #[arg(long = "pack", value_name = "PACK")]
    pub packs: Vec<String>,
    /// Directory or file of Rego policies, Gatekeeper templates and constraints (repeatable).
    #[arg(long = "policy", value_name = "DIR")]
    pub policies: Vec<PathBuf>,
    /// Pack parameters (YAML or JSON), merged over the packs' defaults.
    #[arg(long, value_name = "FILE")]
    pub params: Option<PathBuf>,
    /// Exceptions file (owner and expiry on each), as for `keycard check`.
    #[arg(long, value_name = "FILE")]
    pub exceptions: Option<PathBuf>,
    /// An agent's enforcer directory (`<data-dir>/enforce`): its admission/
    /// policies, exceptions.yaml and grants.json are applied and followed.
    #[arg(long, value_name = "DIR")]
    pub enforce_dir: Option<PathBuf>,
    /// How often the policy files are checked for changes, in milliseconds (0: never).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub poll_ms: u64,
    /// Lowest severity that denies a request.
    #[arg(long, value_enum, default_value_t = FailOn::High)]
    pub fail_on: FailOn,
    /// Audit-only: allow everything, record and warn what would have been denied.
    #[arg(long)]
    pub dry_run: bool,
    /// Data directory of the decision log (audit.db, audit.key), as for `keycard audit`.
    #[arg(long, value_name = "DIR")]
    pub audit_log: Option<PathBuf>,
    /// Let an allow stand when its decision cannot be recorded (default: refuse it).
    #[arg(long)]
    pub log_fail_open: bool,
    /// Pod Security Standards version: v1.N or latest.
    #[arg(long, default_value = "latest")]
    pub pss_version: String,
    /// Most time one evaluation may take, in milliseconds (keep it well under
    /// the webhook's timeoutSeconds).
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Evaluation threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Largest AdmissionReview accepted, in KiB (the API server's own limit is 3 MiB).
    #[arg(long, value_name = "KIB", default_value_t = 3072)]
    pub max_body_kib: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicyArg {
    /// Fail closed: while keycard is unreachable, matching requests are rejected.
    Fail,
    /// Fail open: while keycard is unreachable, matching requests are admitted unchecked.
    Ignore,
}

#[derive(Args, Debug)]
#[command(after_help = "\
failurePolicy is the trade-off to choose deliberately:
  Fail   (default) fail closed: while keycard is down or slow, every request the
         webhook matches is rejected, so a keycard outage blocks deploys (outside
         the excluded namespaces). Nothing unchecked gets in. Run two or more
         server replicas with a PodDisruptionBudget.
  Ignore fail open: while keycard is down, requests are admitted unchecked.
         Deploys keep working; policy is not enforced until keycard is back.
keycard's own namespace and kube-system are always excluded, so the control
plane can be repaired even with Fail.

Examples:
  keycard admission manifest --ca-file ca.pem | kubectl apply -f -
  keycard admission manifest --ca-file ca.pem --url https://10.0.0.5:8443/validate \\
      --failure-policy ignore --exclude-namespace monitoring")]
pub struct ManifestArgs {
    /// PEM of the CA that signed the webhook's serving certificate (the caBundle).
    #[arg(long, value_name = "PEM")]
    pub ca_file: PathBuf,
    /// Reach the webhook at this HTTPS URL instead of a Service.
    #[arg(long, value_name = "URL", conflicts_with_all = ["service_namespace", "service_name", "service_port"])]
    pub url: Option<String>,
    /// Namespace of keycard's Service (also excluded from the webhook).
    #[arg(long, value_name = "NS", default_value = "keycard")]
    pub service_namespace: String,
    /// Name of keycard's Service.
    #[arg(long, value_name = "NAME", default_value = "keycard-server")]
    pub service_name: String,
    /// Port of keycard's Service.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    pub service_port: u16,
    /// What the API server does when keycard cannot answer (see below).
    #[arg(long, value_enum, default_value_t = FailurePolicyArg::Fail)]
    pub failure_policy: FailurePolicyArg,
    /// Seconds the API server waits for an answer (1-30).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub timeout_seconds: u32,
    /// Namespace never sent to the webhook (repeatable), besides kube-system and keycard's own.
    #[arg(long = "exclude-namespace", value_name = "NS")]
    pub exclude_namespaces: Vec<String>,
    /// Do not exclude kube-system and keycard's own namespace by default.
    #[arg(long)]
    pub no_default_exclusions: bool,
    /// metadata.name of the configuration.
    #[arg(long, default_value = "keycard-admission")]
    pub name: String,
}

pub fn run(cmd: AdmissionCommand) -> anyhow::Result<u8> {
    match cmd {
        AdmissionCommand::Serve(a) => serve(a),
        AdmissionCommand::Manifest(a) => manifest(a),
    }
}

fn severity(f: FailOn) -> Option<Severity> {
    match f {
        FailOn::Critical => Some(Severity::Critical),
        FailOn::High => Some(Severity::High),
        FailOn::Medium => Some(Severity::Medium),
        FailOn::Low => Some(Severity::Low),
        FailOn::Never => None,
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<u8> {
    let cert =
        std::fs::read(&a.cert).with_context(|| format!("{}: cannot read", a.cert.display()))?;
    let key = std::fs::read(&a.key).with_context(|| format!("{}: cannot read", a.key.display()))?;
    let tls = tls_config_from_pem(&cert, &key)
        .with_context(|| format!("{} and {}", a.cert.display(), a.key.display()))?;
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let files = WatchedFiles::new(
        PolicyOptions {
            packs: a.packs.clone(),
            policies: a.policies.clone(),
            params: a.params.clone(),
            exceptions: a.exceptions.clone(),
            pss_version: Some(super::check::parse_pss_version(&a.pss_version)?),
            timeout: Some(timeout),
            ..PolicyOptions::default()
        },
        a.enforce_dir.clone(),
    );
    let policy = files.load()?;
    let recorder = match &a.audit_log {
        Some(dir) => {
            let log = super::audit::open_log(
                &super::audit::DirArgs {
                    data_dir: dir.clone(),
                },
                None,
            )?;
            Some(Recorder::spawn(Arc::new(Mutex::new(log)), 8192, 1024))
        }
        None => {
            tracing::warn!("no --audit-log: admission decisions are logged but not recorded");
            None
        }
    };
    let mut config = WebhookConfig {
        fail_on: severity(a.fail_on),
        dry_run: a.dry_run,
        advisory_rules: DEFAULT_ADVISORY_RULES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        max_body_bytes: a.max_body_kib.saturating_mul(1024),
        // The policy's own limit stops the evaluation; this bounds the wait
        // (queueing included).
        eval_timeout: timeout + Duration::from_secs(1),
        log_failure: if a.log_fail_open {
            FailureMode::FailOpen
        } else {
            FailureMode::FailClosed
        },
        ..WebhookConfig::default()
    };
    if let Some(n) = a.workers {
        config.eval_workers = n.max(1);
    }
    let mode = if a.dry_run { "audit-only" } else { "enforcing" };
    let revision = policy.revision.clone();
    let webhook = Arc::new(Webhook::new(policy.clone(), config, recorder));
    // Dropped (and stopped) when serving ends.
    let _watch = match a.poll_ms {
        0 => None,
        ms => Some(
            files
                .watch(policy, Arc::clone(&webhook), Duration::from_millis(ms))
                .context("starting the policy file watcher")?,
        ),
    };
    run_until_signal(a.listen, tls, webhook, ServerOptions::default(), |addr| {
        eprintln!("keycard admission webhook listening on https://{addr}/validate ({mode}, policy {revision})");
    })?;
    Ok(0)
}

fn manifest(a: ManifestArgs) -> anyhow::Result<u8> {
    let ca_pem = std::fs::read(&a.ca_file)
        .with_context(|| format!("{}: cannot read", a.ca_file.display()))?;
    let endpoint = match &a.url {
        Some(url) => Endpoint::Url(url.clone()),
        None => Endpoint::Service {
            namespace: a.service_namespace.clone(),
            name: a.service_name.clone(),
            port: a.service_port,
            path: keycard_server::admission::VALIDATE_PATH.to_string(),
        },
    };
    let mut exclude = Vec::new();
    if !a.no_default_exclusions {
        exclude.push("kube-system".to_string());
        exclude.push(a.service_namespace.clone());
    }
    for ns in a.exclude_namespaces {
        if !exclude.contains(&ns) {
            exclude.push(ns);
        }
    }
    let opts = ManifestOptions {
        name: a.name,
        endpoint,
        ca_pem,
        exclude_namespaces: exclude,
        failure_policy: match a.failure_policy {
            FailurePolicyArg::Fail => FailurePolicy::Fail,
            FailurePolicyArg::Ignore => FailurePolicy::Ignore,
        },
        timeout_seconds: a.timeout_seconds,
        ..ManifestOptions::default()
    };
    let yaml = manifest::to_yaml(&opts)?;
    super::emit(&yaml)?;
    Ok(0)
}
