//! `keycard server`: the control plane alone, for agents on other nodes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use keycard_server::{Overrides, UpConfig};

#[derive(Args, Debug)]
#[command(after_help = "\
Runs the server alone: the CA (its own intermediate under the trust domain's
root), registration, the HTTPS API with the public bundle endpoint, and the
node API that `keycard agent` attests to and syncs from. No local agent and no
Workload API socket: run `keycard agent` on every node.

State lives in the data directory (SQLite, keys 0600), or in PostgreSQL with
--postgres, so that several servers (each with its own --instance name, hence
its own intermediate CA) serve one trust domain together.

Examples:
  keycard server --data-dir /var/lib/keycard --trust-domain example.org \\
      --api-listen 0.0.0.0:8443
  keycard token generate --data-dir /var/lib/keycard
  keycard agent --server https://server:8443 \\
      --trust-bundle /var/lib/keycard/bundle.pem --join-token <token>

Kubernetes nodes: with a [[k8s_psat]] table per cluster (cluster, audience,
allowed_service_accounts, and one of jwks_file, jwks_url or token_review_url),
agents attest with `keycard agent --psat-token-file`; a wrong audience, an
expired or forged token or a service account not allowed is refused (401/403,
logged) and gets no SVID.

Federation: each [[federation]] table (trust_domain, bundle_endpoint_url,
profile https_web with an optional ca_file, or https_spiffe with
endpoint_spiffe_id and bundle_file) has its bundle fetched at start and
refreshed per its spiffe_refresh_hint (within min_refresh..max_refresh, backoff
on errors, the last good bundle kept; a bundle of another trust domain or an
older sequence is refused). Federated bundles go to every agent and the
Workload API serves them. This server's own bundle is at /bundle on the API
(https_spiffe, as spiffe://<td>/keycard/server/<instance>) and, with
[bundle_endpoint] listen, on a listener of its own (cert_file/key_file for
https_web).

Configuration: --config FILE (TOML, the same keys as `keycard up`; see
`keycard up --print-config`). Command-line flags win over the file.")]
pub struct ServerArgs {
    /// Configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory: database, keys, admin token [default: .keycard].
    #[arg(long, value_name = "DIR", env = "KEYCARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The SPIFFE trust domain [default: keycard.local].
    #[arg(long, value_name = "NAME")]
    pub trust_domain: Option<String>,
    /// Where the HTTPS API (and the node API) listens [default: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// This server's name: its intermediate CA and its SVID carry it
    /// (distinct per server when several share PostgreSQL) [default: up].
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
    /// PostgreSQL connection string, instead of SQLite in the data directory.
    #[arg(
        long,
        value_name = "CONNINFO",
        env = "KEYCARD_POSTGRES",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
}

fn valid_instance(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn run(args: ServerArgs) -> anyhow::Result<u8> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        trust_domain: args.trust_domain,
        api_listen: args.api_listen,
        agent_socket: None,
        admission_listen: None,
        no_admission: true,
        postgres: args.postgres,
    };
    let mut config = UpConfig::load(args.config.as_deref(), &overrides)?;
    if let Some(i) = args.instance {
        if !valid_instance(&i) {
            anyhow::bail!("--instance: {i:?} must be 1-64 of [A-Za-z0-9_-]");
        }
        config.instance = i;
    }
    config.agent_enabled = false;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let up = keycard_server::start(config.clone())
            .await
            .context("keycard server")?;
        let e = &up.endpoints;
        let bundle = config.data_dir.join(keycard_server::up::BUNDLE_FILE);
        let mut out = format!(
            "keycard server is up: trust domain {}, instance {}\n  API + node API      {}  (OpenAPI: {}/openapi.json)\n  bundle endpoint     {}\n  trust bundle        {}\n  store               {}\n",
            e.trust_domain,
            config.instance,
            e.api,
            e.api,
            e.bundle,
            bundle.display(),
            if config.postgres.is_some() { "PostgreSQL".to_string() } else { config.data_dir.join(keycard_server::up::DATABASE_FILE).display().to_string() },
        );
        if let Some(t) = &up.new_admin_token {
            out.push_str(&format!(
                "\nBootstrap admin token (shown once; also in {}):\n  {t}\n",
                config.data_dir.join(keycard_server::up::ADMIN_TOKEN_FILE).display()
            ));
        }
        out.push_str(&format!(
            "\nNext: keycard token generate --data-dir {}, then on each node:\n  keycard agent --server {} --trust-bundle {} --join-token <token>\nStop with Ctrl-C.\n",
            config.data_dir.display(),
            e.api,
            bundle.display(),
        ));
        super::emit(&out)?;
        wait_for_signal().await;
        eprintln!("stopping");
        up.shutdown(Duration::from_secs(5)).await;
        Ok(0)
    })
}

/// Waits for Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
