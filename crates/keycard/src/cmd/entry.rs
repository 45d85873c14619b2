//! `keycard entry`: registration entries (which workloads get which
//! SPIFFE ID), through the API of a running `keycard up` or server.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use keycard_server::up::DataDirClient;

/// Where the server is: the data directory of `keycard up`.
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Data directory of a running `keycard up` (its up.json, bundle.pem and
    /// admin.token are used to reach and authenticate to its API).
    #[arg(
        long,
        value_name = "DIR",
        env = "KEYCARD_DATA_DIR",
        default_value = ".keycard"
    )]
    pub data_dir: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum EntryCommand {
    /// Register a workload: the selectors it must match and the SPIFFE ID it gets.
    #[command(after_help = "\
Selectors (all must match): unix:uid:N, unix:gid:N, unix:user:NAME,
unix:group:NAME, unix:path:/abs/path, unix:sha256:HEX, k8s:ns:NS, k8s:sa:SA,
k8s:pod-label:KEY:VALUE, k8s:pod-name:NAME, k8s:container-name:NAME,
k8s:node-name:NAME.

Examples:
  keycard entry create --spiffe-id spiffe://keycard.local/app --selector unix:uid:1000
  keycard entry create --spiffe-id spiffe://keycard.local/ns/prod/sa/api \\
      --selector k8s:ns:prod --selector k8s:sa:api --dns-name api.prod.svc")]
    Create(CreateArgs),
    /// List entries.
    List(ServerArgs),
    /// Show one entry.
    Show {
        /// Entry id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Delete an entry: its SVIDs stop renewing at once and are revoked.
    Delete {
        /// Entry id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The SPIFFE ID to issue.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: String,
    /// A selector the workload must match (repeatable; all must match).
    #[arg(
        long = "selector",
        short,
        value_name = "TYPE:KEY:VALUE",
        required = true
    )]
    pub selectors: Vec<String>,
    /// The agent that may serve it [default: any agent of a one-machine `keycard up`].
    #[arg(long, value_name = "ID")]
    pub parent_id: Option<String>,
    /// X509-SVID lifetime in seconds [default: 3600].
    #[arg(long, value_name = "SECS")]
    pub x509_ttl: Option<u64>,
    /// JWT-SVID lifetime in seconds [default: 300].
    #[arg(long, value_name = "SECS")]
    pub jwt_ttl: Option<u64>,
    /// A DNS name for the X509-SVID (repeatable).
    #[arg(long = "dns-name", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// The workload may call the admin API with its SVID.
    #[arg(long)]
    pub admin: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Calls the API; a non-2xx answer becomes an error with the server's message.
pub fn call(
    server: &ServerArgs,
    method: http::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let DataDirClient { client, .. } = keycard_server::connect_data_dir(&server.data_dir)
        .with_context(|| format!("reaching keycard in {}", server.data_dir.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resp = rt.block_on(client.call(method, path, body.as_ref()))?;
    if !(200..300).contains(&resp.status) {
        let msg = resp
            .body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| resp.body.to_string(), str::to_string);
        bail!("the server refused ({}): {msg}", resp.status);
    }
    Ok(resp.body)
}

fn entry_line(e: &Value) -> String {
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    let selectors: Vec<&str> = e
        .get("selectors")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!("{}  {}  {}\n", s("id"), s("spiffe_id"), selectors.join(","))
}

fn print(
    server: &ServerArgs,
    v: &Value,
    text: impl FnOnce(&Value) -> String,
) -> anyhow::Result<u8> {
    if server.json {
        super::emit(&format!("{}\n", serde_json::to_string_pretty(v)?))?;
    } else {
        super::emit(&text(v))?;
    }
    Ok(0)
}

pub fn run(cmd: EntryCommand) -> anyhow::Result<u8> {
    match cmd {
        EntryCommand::Create(a) => {
            let body = json!({
                "spiffe_id": a.spiffe_id,
                "selectors": a.selectors,
                "parent_id": a.parent_id,
                "x509_ttl_secs": a.x509_ttl,
                "jwt_ttl_secs": a.jwt_ttl,
                "dns_names": a.dns_names,
                "admin": a.admin,
            });
            let v = call(&a.server, http::Method::POST, "/v1/entries", Some(body))?;
            print(&a.server, &v, |v| format!("created {}", entry_line(v)))
        }
        EntryCommand::List(server) => {
            let v = call(&server, http::Method::GET, "/v1/entries", None)?;
            print(&server, &v, |v| {
                let entries = v
                    .get("entries")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if entries.is_empty() {
                    return "no entries\n".to_string();
                }
                entries.iter().map(entry_line).collect()
            })
        }
        EntryCommand::Show { id, server } => {
            let v = call(
                &server,
                http::Method::GET,
                &format!("/v1/entries/{id}"),
                None,
            )?;
            print(&server, &v, |v| {
                serde_json::to_string_pretty(v)
                    .map(|s| s + "\n")
                    .unwrap_or_default()
            })
        }
        EntryCommand::Delete { id, server } => {
            let v = call(
                &server,
                http::Method::DELETE,
                &format!("/v1/entries/{id}"),
                None,
            )?;
            print(&server, &v, |v| format!("deleted {}", entry_line(v)))
        }
    }
}
