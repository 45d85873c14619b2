//! `keycard up`: server and agent in one process, with the embedded store.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use keycard_server::{Overrides, UpConfig};

#[derive(Args, Debug)]
#[command(after_help = "\
Starts a whole trust domain on this machine: the CA, the HTTPS API (with the
public bundle endpoint), and a local agent serving the SPIFFE Workload API and
Envoy SDS on a Unix socket. State lives in the data directory (SQLite, keys
0600), so a restart keeps every identity, entry and token.

On the first start it prints an admin token once and keeps it in
<data-dir>/admin.token (0600); other commands given the same --data-dir use it.

Examples:
  keycard up
  keycard up --data-dir /var/lib/keycard --trust-domain example.org
  keycard entry create --data-dir /var/lib/keycard \\
      --spiffe-id spiffe://example.org/app --selector unix:uid:1000
  SPIFFE_ENDPOINT_SOCKET=unix:///var/lib/keycard/agent.sock my-spiffe-app

Federation: [[federation]] tables in the configuration fetch other trust
domains' bundles (https_web or https_spiffe, refreshed per their
spiffe_refresh_hint); the local agent serves them to workloads with the local
bundle. [[k8s_psat]] tables let `keycard agent --psat-token-file` attest
Kubernetes nodes to this server.

Configuration: --config FILE (TOML; every key is documented in
`keycard up --print-config`). Command-line flags win over the file.")]
pub struct UpArgs {
    /// Configuration file (TOML).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory: database, keys, socket, admin token [default: .keycard].
    #[arg(long, value_name = "DIR", env = "KEYCARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The SPIFFE trust domain [default: keycard.local].
    #[arg(long, value_name = "NAME")]
    pub trust_domain: Option<String>,
    /// Where the HTTPS API listens [default: 127.0.0.1:8443].
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<String>,
    /// Workload API + SDS socket [default: <data-dir>/agent.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// PostgreSQL connection string, instead of SQLite in the data directory.
    #[arg(
        long,
        value_name = "CONNINFO",
        env = "KEYCARD_POSTGRES",
        hide_env_values = true
    )]
    pub postgres: Option<String>,
    /// Where the admission webhook listens [default: 127.0.0.1:8444].
    #[arg(long, value_name = "ADDR")]
    pub admission_listen: Option<String>,
    /// Do not run the admission webhook.
    #[arg(long)]
    pub no_admission: bool,
    /// Print the documented default configuration and exit.
    #[arg(long)]
    pub print_config: bool,
}

pub fn run(args: UpArgs) -> anyhow::Result<u8> {
    if args.print_config {
        super::emit(keycard_server::config::EXAMPLE_CONFIG)?;
        return Ok(0);
    }
    let overrides = Overrides {
        data_dir: args.data_dir,
        trust_domain: args.trust_domain,
        api_listen: args.api_listen,
        agent_socket: args.socket,
        admission_listen: args.admission_listen,
        no_admission: args.no_admission,
        postgres: args.postgres,
    };
    let config = UpConfig::load(args.config.as_deref(), &overrides)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let up = keycard_server::start(config.clone())
            .await
            .context("keycard up")?;
        let e = &up.endpoints;
        let mut out = format!(
            "keycard is up: trust domain {}\n  Workload API + SDS  unix://{}\n  API                 {}  (OpenAPI: {}/openapi.json)\n  bundle endpoint     {}\n  data directory      {}\n",
            e.trust_domain,
            e.socket,
            e.api,
            e.api,
            e.bundle,
            config.data_dir.display(),
        );
        if let Some(a) = &e.admission {
            out.push_str(&format!("  admission webhook   {a}  (print its configuration: keycard admission manifest)\n"));
        }
        if let Some(t) = &up.new_admin_token {
            out.push_str(&format!(
                "\nBootstrap admin token (shown once; also in {}):\n  {t}\n",
                config.data_dir.join(keycard_server::up::ADMIN_TOKEN_FILE).display()
            ));
        }
        out.push_str(&format!(
            "\nNext: keycard entry create --data-dir {} --spiffe-id spiffe://{}/app --selector unix:uid:$(id -u)\nStop with Ctrl-C.\n",
            config.data_dir.display(),
            e.trust_domain
        ));
        super::emit(&out)?;
        wait_for_signal().await;
        eprintln!("stopping");
        up.shutdown(Duration::from_secs(5)).await;
        Ok(0)
    })
}

async fn wait_for_signal() {
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
