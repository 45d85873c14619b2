//! `keycard agent`: the node agent, apart from the server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use keycard_server::remote_agent::{read_pem_certs, start_agent, AgentConfig, NODE_FILE};

#[derive(Args, Debug)]
#[command(after_help = "\
Runs the agent of one node: it attests to the server once with a join token,
or on Kubernetes with its projected service-account token (--psat-token-file;
the file is re-read at every attestation, since the kubelet rotates it, and the
agent attests again with it when its node SVID has expired or is refused). The
node key (0600) and node SVID stay in --data-dir; later starts need no token.
The server checks the token against its [[k8s_psat]] configuration (cluster,
audience, allowed service accounts; the issuer's JWKS or a TokenReview) and
names the agent spiffe://<td>/keycard/agent/k8s_psat/<cluster>/<node uid>, with
node selectors k8s_psat:cluster, agent_ns, agent_sa and agent_node_name for
node entries. It syncs registration entries, the trust bundle and revocations over mTLS
as they change, keeps the SVIDs of this node's workloads (their keys never
leave the node), renews them at about half-life, and serves the SPIFFE Workload
API and Envoy SDS on --socket. While the server is away it keeps serving what it
holds and reconnects with backoff.

Examples:
  keycard agent --server https://server:8443 --trust-bundle bundle.pem \\
      --join-token <token> --data-dir /var/lib/keycard-agent
  keycard agent --server https://keycard-server.keycard:8443 \
      --trust-bundle /run/keycard/bundle.pem --psat-cluster prod \
      --psat-token-file /var/run/secrets/tokens/keycard-agent
  SPIFFE_ENDPOINT_SOCKET=unix:///var/lib/keycard-agent/agent.sock my-spiffe-app

On Kubernetes, mount the token as a projected volume with the audience the
server expects (serviceAccountToken: {audience: keycard, expirationSeconds:
3600, path: keycard-agent}).")]
pub struct AgentArgs {
    /// The server: https://host:port.
    #[arg(long, value_name = "URL", env = "KEYCARD_SERVER")]
    pub server: String,
    /// PEM roots to trust the server with (the server's bundle.pem).
    #[arg(long, value_name = "FILE")]
    pub trust_bundle: PathBuf,
    /// A join token (`keycard token generate`), for the first start.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "KEYCARD_JOIN_TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,
    /// A projected, audience-bound service-account token file (Kubernetes
    /// PSAT attestation), re-read at every attestation.
    #[arg(
        long,
        value_name = "PATH",
        env = "KEYCARD_PSAT_TOKEN_FILE",
        conflicts_with = "join_token"
    )]
    pub psat_token_file: Option<PathBuf>,
    /// The cluster's name in the server's [[k8s_psat]] configuration
    /// (needed when the server knows several clusters).
    #[arg(long, value_name = "NAME", requires = "psat_token_file")]
    pub psat_cluster: Option<String>,
    /// State directory: node key and SVID [default: .keycard-agent].
    #[arg(long, value_name = "DIR", env = "KEYCARD_AGENT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Workload API + SDS socket [default: <data-dir>/agent.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket, octal.
    #[arg(long, value_name = "MODE", default_value = "666")]
    pub socket_mode: String,
    /// Attest Kubernetes workloads: find the caller's pod and container
    /// from its cgroup, then ask this node's kubelet (GET /pods) for the
    /// pod's namespace, service account, labels and containers (k8s:*
    /// selectors). Unix selectors keep working.
    #[arg(long)]
    pub k8s: bool,
    /// The kubelet [default: https://<node-name>:10250].
    #[arg(long, value_name = "URL", requires = "k8s")]
    pub kubelet_url: Option<String>,
    /// CA of the kubelet's serving certificate [default: the service
    /// account's ca.crt].
    #[arg(long, value_name = "FILE", requires = "k8s")]
    pub kubelet_ca_file: Option<PathBuf>,
    /// Do not verify the kubelet's certificate (self-signed kubelet
    /// certificates); logged as a warning, since whoever can intercept the
    /// connection could then name the pods.
    #[arg(long, requires = "k8s")]
    pub kubelet_skip_verify: bool,
    /// Bearer token for the kubelet, re-read when it changes [default: the
    /// service account's token].
    #[arg(long, value_name = "FILE", requires = "k8s")]
    pub kubelet_token_file: Option<PathBuf>,
    /// This node's name (the downward API's spec.nodeName); pods the
    /// kubelet lists on another node are ignored.
    #[arg(long, value_name = "NAME", env = "NODE_NAME", requires = "k8s")]
    pub node_name: Option<String>,
}

pub fn run(args: AgentArgs) -> anyhow::Result<u8> {
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from(".keycard-agent"));
    let bundle = read_pem_certs(&args.trust_bundle).context("--trust-bundle")?;
    let mode = u32::from_str_radix(&args.socket_mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--socket-mode: {:?} is not an octal permission mode",
                args.socket_mode
            )
        })?;
    let mut config = AgentConfig::new(&args.server, bundle, &data_dir);
    config.join_token = args.join_token;
    config.psat_token_file = args.psat_token_file;
    config.psat_cluster = args.psat_cluster;
    config.socket_mode = mode;
    if let Some(s) = args.socket {
        config.socket = Some(s);
    }
    if args.k8s {
        let mut k = keycard_server::remote_agent::KubeletConfig {
            url: args.kubelet_url,
            ca_file: args.kubelet_ca_file,
            skip_verify: args.kubelet_skip_verify,
            node_name: args.node_name.filter(|n| !n.is_empty()),
            ..Default::default()
        };
        if let Some(t) = args.kubelet_token_file {
            k.token_file = t;
        }
        k.resolved_url().context("--kubelet-url")?;
        config.kubelet = Some(k);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let running = start_agent(config).await.context("keycard agent")?;
        let socket = running
            .socket
            .as_ref()
            .map(|s| std::path::absolute(s).unwrap_or_else(|_| s.clone()));
        super::emit(&format!(
            "keycard agent is up: {}\n  server              {}\n  Workload API + SDS  unix://{}\n  node SVID           {}\nStop with Ctrl-C.\n",
            running.agent.agent_id(),
            args.server,
            socket.map(|s| s.display().to_string()).unwrap_or_default(),
            data_dir.join(NODE_FILE).display(),
        ))?;
        super::server::wait_for_signal().await;
        eprintln!("stopping");
        running.shutdown(Duration::from_secs(5)).await;
        Ok(0)
    })
}
