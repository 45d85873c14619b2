//! `keycard proxy`: the identity-aware mTLS sidecar.
//!
//! Two listeners around one application:
//!
//! ```text
//!  app A --plaintext--> [outbound] ==mTLS (SVIDs)==> [inbound] --plaintext--> app B
//!          (loopback)    verifies B's SPIFFE ID       authorizes each request
//! ```
//!
//! * **Inbound** ([`inbound`]) accepts mTLS (`strict`) or mTLS and
//!   plaintext (`permissive`, told apart by the first byte), verifies the
//!   peer's X509-SVID ([`svid`]), authorizes every HTTP request in process
//!   with the [`Authorizer`](crate::Authorizer) (HTTP/1.1, HTTP/2, gRPC) or
//!   the connection once (`tcp`), and forwards what is allowed to the app
//!   over pooled connections with the verified ID in
//!   `x-keycard-peer-spiffe-id` (any client-supplied copy removed). Denied
//!   requests get 403 and `x-keycard-reason: <policy>/<rule>: <reason>`.
//! * **Outbound** ([`outbound`]) accepts plaintext from the app on loopback
//!   and carries it over pooled mTLS connections to the upstream proxy,
//!   whose SPIFFE ID (or trust domain) must match.
//!
//! The SVID comes from the Workload API or PEM files ([`source`]) and is
//! swapped atomically on rotation: new handshakes use the new certificate,
//! open connections keep theirs. Revocation closes the connections of a
//! revoked identity ([`conns`]). Every decision is a decision record, every
//! connection a flow record (JSON lines, the shape `keycard flows ingest`
//! reads).

pub mod admin;
mod app_h1;
pub mod conns;
mod h1;
pub mod inbound;
mod io;
pub mod metrics;
pub mod outbound;
pub mod run;
mod server_h1;
pub mod source;
pub mod svid;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::authorizer::Authorizer;
use crate::metrics::Metrics;
use crate::record::RecordSink;

pub use conns::ConnTracker;
pub use metrics::ProxyMetrics;
pub use svid::{Bundles, Expected, IdentityState, Svid, SvidError};

/// The header carrying the verified peer SPIFFE ID to the app.
pub const PEER_ID_HEADER: &str = "x-keycard-peer-spiffe-id";
/// The header naming the policy and rule of a denial.
pub const REASON_HEADER: &str = "x-keycard-reason";

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    Svid(#[from] SvidError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Inbound: mTLS only, or mTLS and plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    Strict,
    Permissive,
}

/// What the listener carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (gRPC included), authorized per request.
    Http,
    /// Opaque bytes, authorized once per connection.
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// Resource limits; every one refuses with a status and a count, never a panic.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Concurrent connections per listener; more are closed at once.
    pub max_connections: usize,
    /// TLS handshake (and permissive first-byte) deadline.
    pub handshake_timeout: Duration,
    /// Deadline for a request's headers (slow clients).
    pub header_read_timeout: Duration,
    /// Idle connections (no request in flight) are closed after this.
    pub idle_timeout: Duration,
    /// HTTP/1 read buffer and HTTP/2 header list limit.
    pub max_header_bytes: usize,
    /// Pooled upstream connections idle longer than this are closed.
    pub pool_idle_timeout: Duration,
    /// Connecting to the app or the upstream proxy.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_header_bytes: 64 * 1024,
            pool_idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What every listener shares.
pub struct ProxyContext {
    pub identity: Arc<IdentityState>,
    pub authorizer: Arc<Authorizer>,
    pub decisions: Option<RecordSink>,
    /// The tamper-evident decision log (`--audit-log`).
    pub audit: Option<Arc<crate::record::AuditSink>>,
    pub flows: Option<RecordSink>,
    pub metrics: Arc<ProxyMetrics>,
    pub authz_metrics: Arc<Metrics>,
    pub conns: Arc<ConnTracker>,
    pub limits: Limits,
    /// The local workload, for flow records.
    pub local: LocalWorkload,
}

impl ProxyContext {
    /// A context with metrics and connection tracking, no record sinks.
    pub fn new(identity: Arc<IdentityState>, authorizer: Arc<Authorizer>) -> Self {
        ProxyContext {
            identity,
            authorizer,
            decisions: None,
            audit: None,
            flows: None,
            metrics: Arc::new(ProxyMetrics::new()),
            authz_metrics: Arc::new(Metrics::new()),
            conns: Arc::new(ConnTracker::new()),
            limits: Limits::default(),
            local: LocalWorkload::default(),
        }
    }

    /// The own SPIFFE ID, when an SVID is loaded.
    pub fn own_id(&self) -> Option<String> {
        self.identity.svid().map(|s| s.info.spiffe_id.to_string())
    }
}

/// A running listener: its bound address; stops when dropped or stopped.
pub struct ListenerHandle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ListenerHandle {
    pub(crate) fn new(addr: SocketAddr, task: tokio::task::JoinHandle<()>) -> Self {
        ListenerHandle { addr, task }
    }

    /// Stop accepting (connections already accepted run to their end).
    pub fn stop(self) {
        self.task.abort();
    }

    /// Wait for the accept loop to end (it ends only on error or stop).
    pub async fn join(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The workload this proxy runs for, named in its flow records so that
/// `keycard flows ingest` can put the local end on the graph without an
/// inventory. From the environment (the Kubernetes downward API):
/// `POD_NAME`, `POD_NAMESPACE`, and `KEYCARD_WORKLOAD=Kind/name` when the
/// owner is known (otherwise ingestion guesses it from the pod name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalWorkload {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    /// `(kind, name)`, e.g. `("Deployment", "api")`.
    pub workload: Option<(String, String)>,
}

impl LocalWorkload {
    /// Read `POD_NAME`, `POD_NAMESPACE` and `KEYCARD_WORKLOAD` (empty values ignored).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        LocalWorkload {
            namespace: var("POD_NAMESPACE"),
            pod: var("POD_NAME"),
            workload: var("KEYCARD_WORKLOAD").and_then(|w| {
                let (k, n) = w.split_once('/')?;
                (!k.is_empty() && !n.is_empty()).then(|| (k.to_string(), n.to_string()))
            }),
        }
    }
}

/// One connection as its flow record tells it.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pub start: SystemTime,
    pub src_id: Option<String>,
    pub src: SocketAddr,
    pub dst_id: Option<String>,
    pub dst: SocketAddr,
    /// The local workload is the destination (inbound) or the source (outbound).
    pub local_is_src: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub allowed: u64,
    pub denied: u64,
    /// The policy (`ns/name#rule`) of the last denial, else of the last allow.
    pub policy: Option<String>,
}

fn namespace_of(id: &Option<String>) -> Option<String> {
    id.as_deref()
        .and_then(crate::request::spiffe_namespace)
        .map(str::to_string)
}

/// `.../sa/NAME` of a SPIFFE ID.
fn service_account_of(id: &Option<String>) -> Option<String> {
    let path = id.as_deref()?.strip_prefix("spiffe://")?;
    let mut segs = path.split('/').skip(1);
    while let Some(s) = segs.next() {
        if s == "sa" {
            return segs.next().filter(|n| !n.is_empty()).map(str::to_string);
        }
    }
    None
}

impl Flow {
    /// The record `keycard flows ingest` reads (`keycard_flows::FlowRecord`):
    /// time, src and dst (SPIFFE ID, namespace, service account, the local
    /// pod and workload when known, address, port), protocol, bytes (both
    /// ways), verdict (deny when any request was denied or none was
    /// allowed), policy.
    pub fn to_json(&self, local: &LocalWorkload) -> serde_json::Value {
        let ep = |id: &Option<String>, a: &SocketAddr, is_local: bool| {
            let mut m = serde_json::Map::new();
            if let Some(i) = id {
                m.insert("identity".into(), json!(i));
            }
            let ns = match (is_local, &local.namespace) {
                (true, Some(ns)) => Some(ns.clone()),
                _ => namespace_of(id),
            };
            if let Some(ns) = ns {
                m.insert("namespace".into(), json!(ns));
                if is_local {
                    if let Some((kind, name)) = &local.workload {
                        m.insert("workload".into(), json!({"kind": kind, "name": name}));
                    }
                    if let Some(pod) = &local.pod {
                        m.insert("pod".into(), json!(pod));
                    }
                }
            }
            if let Some(sa) = service_account_of(id) {
                m.insert("service_account".into(), json!(sa));
            }
            m.insert("address".into(), json!(a.ip().to_string()));
            m.insert("port".into(), json!(a.port()));
            serde_json::Value::Object(m)
        };
        let verdict = if self.denied > 0 || self.allowed == 0 {
            "deny"
        } else {
            "allow"
        };
        let mut v = json!({
            "time": crate::time::format_rfc3339_ms(self.start),
            "src": ep(&self.src_id, &self.src, self.local_is_src),
            "dst": ep(&self.dst_id, &self.dst, !self.local_is_src),
            "protocol": "TCP",
            "bytes": self.bytes_in + self.bytes_out,
            "verdict": verdict,
        });
        if let (Some(p), serde_json::Value::Object(m)) = (&self.policy, &mut v) {
            m.insert("policy".into(), json!(p));
        }
        v
    }
}

/// `ns/name#rule` of a decision, for flow records.
pub(crate) fn policy_ref(d: &crate::AuthzDecision) -> Option<String> {
    d.policy.as_deref().map(|p| match d.rule.as_deref() {
        Some(r) => format!("{p}#{r}"),
        None => p.to_string(),
    })
}
