//! Decision records: one JSON object per line.
//!
//! The top-level fields are those of the decision log's record
//! (`keycard audit append` reads these lines as they are); the request
//! details sit under `attributes`:
//!
//! ```json
//! {"v":1,"time":"2026-01-31T12:00:00.123Z","point":"ext_authz","id":"<request id>",
//!  "outcome":"deny","subject":"spiffe://td/ns/prod/sa/web","resource":"spiffe://td/ns/prod/sa/api",
//!  "action":"GET /v1/items","policy":"prod/api","rule":"rules[0]","reason":"no_allow_match",
//!  "attributes":{"mode":"enforce","request_id":"...","method":"GET","path":"/v1/items","host":"api",
//!    "source":{"principal":"...","address":"10.0.0.1:40000"},
//!    "destination":{"principal":"...","address":"10.0.0.2:8080"},
//!    "request_principal":null,"audit_policies":[],"detail":null,"latency_us":12}}
//! ```
//!
//! `subject` is the source SPIFFE ID, else the JWT principal, else
//! `ip:<address>`, else `anonymous`; `resource` is the destination SPIFFE ID,
//! else the host; `outcome` is allow, deny or audit (would deny, let through).

use std::io::Write;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::json;

use crate::engine::AuthzDecision;
use crate::metrics::Metrics;
use crate::request::{Claims, Peer, Request};
use crate::time::format_rfc3339_ms;

/// Records queued for the writer before new ones are dropped (and counted).
pub const QUEUE: usize = 65_536;

fn addr(p: &Peer) -> Option<String> {
    match (p.ip, p.port) {
        (Some(std::net::IpAddr::V6(ip)), Some(port)) => Some(format!("[{ip}]:{port}")),
        (Some(ip), Some(port)) => Some(format!("{ip}:{port}")),
        (Some(ip), None) => Some(ip.to_string()),
        _ => None,
    }
}

/// Build the record of one decision.
pub fn record(
    point: &str,
    time: SystemTime,
    req: &Request,
    claims: Option<&Claims>,
    d: &AuthzDecision,
    latency_us: u64,
) -> serde_json::Value {
    let subject = req
        .source
        .principal
        .clone()
        .or_else(|| claims.map(|c| c.principal.clone()))
        .or_else(|| req.source.ip.map(|ip| format!("ip:{ip}")))
        .unwrap_or_else(|| "anonymous".into());
    let resource = req
        .destination
        .principal
        .clone()
        .unwrap_or_else(|| req.host.clone());
    let path = req.path.split(['?', '#']).next().unwrap_or("");
    let outcome = match d.outcome {
        keycard_core::Outcome::Allow => "allow",
        keycard_core::Outcome::Deny => "deny",
        keycard_core::Outcome::Audit => "audit",
    };
    json!({
        "v": 1,
        "time": format_rfc3339_ms(time),
        "point": point,
        "id": req.id,
        "outcome": outcome,
        "subject": subject,
        "resource": resource,
        "action": format!("{} {}", req.method, path),
        "policy": d.policy.as_deref().unwrap_or(""),
        "rule": d.rule.as_deref().unwrap_or(""),
        "reason": d.reason.as_str(),
        "attributes": {
            "mode": d.mode.as_str(),
            "request_id": req.id,
            "method": req.method,
            "path": path,
            "host": req.host,
            "source": {"principal": req.source.principal, "address": addr(&req.source)},
            "destination": {"principal": req.destination.principal, "address": addr(&req.destination)},
            "request_principal": claims.map(|c| c.principal.clone()),
            "audit_policies": d.audit_policies.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "detail": d.detail,
            "latency_us": latency_us,
        }
    })
}

/// Writes records on a thread of its own; the hot path only queues.
#[derive(Clone)]
pub struct RecordSink {
    tx: SyncSender<String>,
    metrics: Arc<Metrics>,
}

impl RecordSink {
    /// Start a writer thread over `out` (a file opened for append, or stdout).
    pub fn start(out: Box<dyn Write + Send>, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("keycard-decisions".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(out);
                while let Ok(line) = rx.recv() {
                    let mut ok = writeln!(out, "{line}").is_ok();
                    // Write what is queued, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        ok &= writeln!(out, "{line}").is_ok();
                    }
                    ok &= out.flush().is_ok();
                    if !ok {
                        tracing::error!("writing decision records failed");
                    }
                }
            })?;
        Ok(RecordSink { tx, metrics })
    }

    pub fn write(&self, rec: &serde_json::Value) {
        match self.tx.try_send(rec.to_string()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.record_dropped();
            }
        }
    }
}
