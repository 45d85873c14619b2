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
//! A decision a just-in-time grant let through has reason
//! `allowed_by_grant` and the grant id in `attributes.grant`.
//!
//! With `--audit-log DIR` the same decision also goes to the tamper-evident
//! decision log ([`AuditSink`]): typed, with the digest of the request it
//! decided on and the revision of the policy files in force, through a
//! writer thread that commits in batches; the sink says whether a decision
//! may stand when the log cannot take it (fail closed by default).
//!
//! `subject` is the source SPIFFE ID, else the JWT principal, else
//! `ip:<address>`, else `anonymous`; `resource` is the destination SPIFFE ID,
//! else the host; `outcome` is allow, deny or audit (would deny, let through).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use keycard_audit::writer::{AuditWriter, DecisionWriter, WriterConfig};
use keycard_audit::{
    EnforcementPoint, FailureMode, Outcome as AuditOutcome, Record as AuditRecord,
};
use serde_json::json;

use crate::engine::AuthzDecision;
use crate::loader::PolicyStore;
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

/// What a decision's two records (the JSON line and the decision log's)
/// share.
struct Parts {
    subject: String,
    resource: String,
    path: String,
    outcome: &'static str,
}

fn parts(req: &Request, claims: Option<&Claims>, d: &AuthzDecision) -> Parts {
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
    let path = req.path.split(['?', '#']).next().unwrap_or("").to_string();
    let outcome = match d.outcome {
        keycard_core::Outcome::Allow => "allow",
        keycard_core::Outcome::Deny => "deny",
        keycard_core::Outcome::Audit => "audit",
    };
    Parts {
        subject,
        resource,
        path,
        outcome,
    }
}

fn attributes(
    req: &Request,
    claims: Option<&Claims>,
    d: &AuthzDecision,
    path: &str,
    latency_us: u64,
) -> serde_json::Value {
    let mut v = json!({
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
    });
    // Only when a just-in-time grant let the request through.
    if let (Some(g), Some(m)) = (&d.grant, v.as_object_mut()) {
        m.insert("grant".into(), json!(&**g));
    }
    v
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
    let p = parts(req, claims, d);
    json!({
        "v": 1,
        "time": format_rfc3339_ms(time),
        "point": point,
        "id": req.id,
        "outcome": p.outcome,
        "subject": p.subject,
        "resource": p.resource,
        "action": format!("{} {}", req.method, p.path),
        "policy": d.policy.as_deref().unwrap_or(""),
        "rule": d.rule.as_deref().unwrap_or(""),
        "reason": d.reason.as_str(),
        "attributes": attributes(req, claims, d, &p.path, latency_us),
    })
}

/// `sha256:<hex>` of what the authorizer decided on: method, path and
/// query, host, both peers, SNI, certificate serial, the headers in order
/// and the validated JWT principal, each length-prefixed. The log proves
/// which input was decided without keeping headers (tokens) in clear.
pub fn request_digest(req: &Request, claims: Option<&Claims>) -> String {
    let mut buf = Vec::with_capacity(256 + req.path.len());
    let mut put = |b: &[u8]| {
        buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
        buf.extend_from_slice(b);
    };
    put(req.method.as_bytes());
    put(req.path.as_bytes());
    put(req.host.as_bytes());
    for p in [&req.source, &req.destination] {
        put(p.principal.as_deref().unwrap_or("").as_bytes());
        put(addr(p).unwrap_or_default().as_bytes());
    }
    put(req.sni.as_deref().unwrap_or("").as_bytes());
    put(req.source_cert_serial.as_deref().unwrap_or("").as_bytes());
    put(&(req.headers.len() as u32).to_be_bytes());
    for (k, v) in &req.headers {
        put(k.as_bytes());
        put(v.as_bytes());
    }
    put(claims.map_or("", |c| c.principal.as_str()).as_bytes());
    keycard_audit::input_digest(&buf)
}

/// The decision log's record of one decision: the same fields as
/// [`record`], plus the input digest and the policy bundle revision.
#[allow(clippy::too_many_arguments)]
pub fn audit_record(
    point: EnforcementPoint,
    time: SystemTime,
    req: &Request,
    claims: Option<&Claims>,
    d: &AuthzDecision,
    latency_us: u64,
    bundle_revision: &str,
) -> AuditRecord {
    let p = parts(req, claims, d);
    AuditRecord {
        action: format!("{} {}", req.method, p.path),
        actor: None,
        attributes: Some(attributes(req, claims, d, &p.path, latency_us)),
        bundle_revision: bundle_revision.to_string(),
        change: None,
        id: req.id.clone(),
        index: 0,
        input_digest: request_digest(req, claims),
        outcome: match d.outcome {
            keycard_core::Outcome::Allow => AuditOutcome::Allow,
            keycard_core::Outcome::Deny => AuditOutcome::Deny,
            keycard_core::Outcome::Audit => AuditOutcome::Audit,
        },
        point,
        policy: d.policy.as_deref().unwrap_or("").to_string(),
        reason: d.reason.as_str().to_string(),
        resource: p.resource,
        rule: d.rule.as_deref().unwrap_or("").to_string(),
        subject: p.subject,
        time: format_rfc3339_ms(time),
        v: 0,
    }
}

/// The `x-keycard-reason` of a request refused because the decision log
/// cannot take records (fail closed).
pub const LOG_UNAVAILABLE: &str = "decision-log-unavailable";
/// The policy a refusal for an unavailable log names in its record.
pub const LOG_POLICY: &str = "keycard/decision-log";

/// The decision the proxy enforces when the log cannot take records:
/// deny, naming [`LOG_POLICY`]; see [`is_unavailable`].
pub fn unavailable_decision() -> AuthzDecision {
    let mut d = AuthzDecision::new(
        keycard_core::Outcome::Deny,
        crate::engine::Reason::BadRequest,
    );
    d.policy = Some(Arc::from(LOG_POLICY));
    d.rule = Some(Arc::from("unavailable"));
    d.detail = Some(LOG_UNAVAILABLE.to_string());
    d
}

/// Whether `d` is [`unavailable_decision`] (answered with 503).
pub fn is_unavailable(d: &AuthzDecision) -> bool {
    d.policy.as_deref() == Some(LOG_POLICY) && d.detail.as_deref() == Some(LOG_UNAVAILABLE)
}

/// Opens a decision log directory and starts its writer: the shared part
/// of `keycard authz serve --audit-log` and `keycard proxy --audit-log`.
#[derive(Debug, Clone)]
pub struct AuditLogConfig {
    /// The directory (`audit.db`, `audit.key`, ...), created 0700 if absent.
    pub dir: std::path::PathBuf,
    /// Fields stored as a keyed hash (`subject`, `attributes.path`, ...).
    pub hash: Vec<String>,
    /// Fields stored as `****`.
    pub mask: Vec<String>,
    /// The HMAC key file of `hash` (copied to the log directory, 0600).
    pub hash_key_file: Option<std::path::PathBuf>,
    /// Refuse to grow the database past this many bytes (a full disk).
    pub max_size_bytes: Option<u64>,
    /// Checkpoint schedule.
    pub checkpoint: keycard_audit::CheckpointPolicy,
    /// Queue, batch and failure mode.
    pub writer: WriterConfig,
}

impl AuditLogConfig {
    /// The defaults for `dir`: no redaction, checkpoints every 10 000
    /// records or 10 s, fail closed.
    pub fn new(dir: impl Into<std::path::PathBuf>) -> Self {
        AuditLogConfig {
            dir: dir.into(),
            hash: Vec::new(),
            mask: Vec::new(),
            hash_key_file: None,
            max_size_bytes: None,
            checkpoint: keycard_audit::CheckpointPolicy::default(),
            writer: WriterConfig::default(),
        }
    }

    /// Open the log and start its writer.
    pub fn open(&self) -> Result<Arc<dyn DecisionWriter>, AuditLogError> {
        let requested = if self.hash.is_empty() && self.mask.is_empty() {
            None
        } else {
            let mut r = keycard_audit::Redaction::new();
            if let Some(f) = &self.hash_key_file {
                let key = std::fs::read(f).map_err(|e| {
                    AuditLogError(format!("reading the hash key {}: {e}", f.display()))
                })?;
                r = r.with_key(&key);
            }
            for f in &self.hash {
                r = r
                    .rule(f, keycard_audit::RedactAction::Hash)
                    .map_err(|e| AuditLogError(e.to_string()))?;
            }
            for f in &self.mask {
                r = r
                    .rule(f, keycard_audit::RedactAction::Mask)
                    .map_err(|e| AuditLogError(e.to_string()))?;
            }
            Some((r, self.hash_key_file.as_deref()))
        };
        let log = keycard_audit::dir::open_with(&self.dir, self.max_size_bytes, requested)
            .map_err(|e| AuditLogError(e.to_string()))?
            .with_policy(self.checkpoint);
        let w = AuditWriter::start(log, self.writer)
            .map_err(|e| AuditLogError(format!("starting the decision log writer: {e}")))?;
        Ok(Arc::new(w))
    }
}

/// Why the decision log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("decision log: {0}")]
pub struct AuditLogError(pub String);

/// An enforcement point's link to the tamper-evident decision log: builds
/// each decision's record, queues it, and says whether the decision may
/// stand under the writer's failure mode.
pub struct AuditSink {
    writer: Arc<dyn DecisionWriter>,
    point: EnforcementPoint,
    policies: Option<Arc<PolicyStore>>,
    revision: Mutex<(u64, Arc<str>)>,
    metrics: Arc<Metrics>,
    refused: AtomicU64,
}

impl AuditSink {
    pub fn new(
        writer: Arc<dyn DecisionWriter>,
        point: EnforcementPoint,
        policies: Option<Arc<PolicyStore>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AuditSink {
            writer,
            point,
            policies,
            revision: Mutex::new((0, Arc::from(""))),
            metrics,
            refused: AtomicU64::new(0),
        }
    }

    /// The writer.
    pub fn writer(&self) -> &Arc<dyn DecisionWriter> {
        &self.writer
    }

    /// Requests refused because the log could not take records.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The revision of the policy set in force: `sha256:` of its files'
    /// names and contents, computed once per reload (when a decision first
    /// sees the new generation).
    fn bundle_revision(&self) -> Arc<str> {
        let Some(store) = &self.policies else {
            return Arc::from("");
        };
        let generation = store.generation();
        let mut g = self.revision.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 != generation || g.1.is_empty() {
            let set = store.current();
            let mut buf = Vec::new();
            for f in &set.files {
                buf.extend_from_slice(&(f.len() as u64).to_be_bytes());
                buf.extend_from_slice(f.as_bytes());
                let text = std::fs::read(f).unwrap_or_default();
                buf.extend_from_slice(&(text.len() as u64).to_be_bytes());
                buf.extend_from_slice(&text);
            }
            *g = (generation, Arc::from(keycard_audit::input_digest(&buf)));
        }
        g.1.clone()
    }

    /// Record decision `d` and say whether it may stand. `false` means the
    /// log cannot take records and the writer fails closed: the caller
    /// refuses the request with [`LOG_UNAVAILABLE`] (its record, naming
    /// the decision it replaced, is queued if there is room). A fail-open
    /// writer lets every decision stand and counts records it had to drop.
    pub fn admit(
        &self,
        time: SystemTime,
        req: &Request,
        claims: Option<&Claims>,
        d: &AuthzDecision,
        latency_us: u64,
        extra: &[(&str, &str)],
    ) -> bool {
        let revision = self.bundle_revision();
        let mut rec = audit_record(self.point, time, req, claims, d, latency_us, &revision);
        if !extra.is_empty() {
            if let Some(m) = rec.attributes.as_mut().and_then(|a| a.as_object_mut()) {
                for (k, v) in extra {
                    m.insert((*k).to_string(), json!(v));
                }
            }
        }
        let closed = self.writer.mode() == FailureMode::FailClosed;
        if closed && !self.writer.available() {
            self.refuse(rec);
            return false;
        }
        match self.writer.submit(rec) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.record_dropped();
                if closed {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(request_id = %req.id, error = %e, "refused: the decision log cannot take records");
                    false
                } else {
                    true
                }
            }
        }
    }

    fn refuse(&self, mut rec: AuditRecord) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = rec.attributes.as_mut().and_then(|a| a.as_object_mut()) {
            m.insert(
                "replaced".into(),
                json!({"outcome": rec.outcome.as_str(), "policy": rec.policy, "rule": rec.rule, "reason": rec.reason}),
            );
        }
        rec.outcome = AuditOutcome::Deny;
        rec.policy = LOG_POLICY.into();
        rec.rule = "unavailable".into();
        rec.reason = LOG_UNAVAILABLE.into();
        if self.writer.try_submit(rec).is_err() {
            self.metrics.record_dropped();
        }
    }

    /// The log's metrics in the Prometheus text format (no `# EOF`).
    pub fn encode_metrics(&self) -> String {
        let s = self.writer.stats();
        format!(
            "# HELP keycard_audit_records_committed Decision records durably stored.\n\
             # TYPE keycard_audit_records_committed counter\n\
             keycard_audit_records_committed_total {}\n\
             # HELP keycard_audit_records_dropped Decision records never stored (queue full or log failing).\n\
             # TYPE keycard_audit_records_dropped counter\n\
             keycard_audit_records_dropped_total {}\n\
             # HELP keycard_audit_write_errors Failed commits of the decision log.\n\
             # TYPE keycard_audit_write_errors counter\n\
             keycard_audit_write_errors_total {}\n\
             # HELP keycard_audit_refused Requests refused because the decision log could not take records.\n\
             # TYPE keycard_audit_refused counter\n\
             keycard_audit_refused_total {}\n\
             # HELP keycard_audit_queued Decision records waiting for a commit.\n\
             # TYPE keycard_audit_queued gauge\n\
             keycard_audit_queued {}\n\
             # HELP keycard_audit_available 1 when the decision log takes records.\n\
             # TYPE keycard_audit_available gauge\n\
             keycard_audit_available {}\n",
            s.committed,
            s.dropped,
            s.write_errors,
            self.refused(),
            s.queued,
            u8::from(s.available),
        )
    }

    /// Commit what is queued and sign a final checkpoint (bounded).
    pub fn shutdown(&self, timeout: std::time::Duration) -> bool {
        self.writer.shutdown(timeout)
    }
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
