//! The decision: parse an AdmissionReview, evaluate its object with the
//! same [`PolicySet`] and exceptions `keycard check` uses, answer, record.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use keycard_audit::{input_digest, EnforcementPoint, FailureMode, Outcome, Record};
use keycard_core::Severity;
use keycard_k8s::Object;
use keycard_policy::exceptions::{Exception, Exceptions};
use keycard_policy::gatekeeper::{with_review, ReviewSource};
use keycard_policy::packs::DEFAULT_PACKS;
use keycard_policy::{Enforcement, Evaluator, Finding, PolicySet, PolicySetBuilder};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::recorder::{RecordError, Recorder};
use super::review::{parse_review, AdmissionRequest, AdmissionResponse, Operation, Status};

/// The API server's own limit on a request body (3 MiB): nothing larger can
/// be a real AdmissionReview.
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Deepest JSON nesting accepted (serde_json stops at 128 anyway).
pub const DEFAULT_MAX_DEPTH: usize = 100;
/// Kubernetes asks webhooks to keep each warning under 120 characters.
pub const MAX_WARNING_CHARS: usize = 120;
/// Total size of the warnings of one response: the API server turns them
/// into `Warning` headers and drops what goes past about 4 KiB.
pub const MAX_WARNINGS_BYTES: usize = 4000;
/// Findings listed in a denial's message; the rest are counted.
const MAX_DENY_LISTED: usize = 10;
/// Longest finding message quoted in a denial.
const MAX_DENY_MESSAGE_CHARS: usize = 300;

/// The rules that look across objects (a namespace's NetworkPolicies). At
/// admission the webhook sees one object, not the cluster, and a Namespace
/// is always created before its NetworkPolicies: these rules warn there,
/// never deny; `keycard check` and assessments enforce them.
pub const DEFAULT_ADVISORY_RULES: &[&str] = &["zt-default-deny-ingress", "zt-default-deny-egress"];

/// How the webhook decides.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Findings at or above this severity deny (unless excepted); `None`:
    /// nothing denies. Default: high.
    pub fail_on: Option<Severity>,
    /// Audit-only: always allow, record (and warn) what would be denied.
    pub dry_run: bool,
    /// Rules whose findings only warn at admission (see [`DEFAULT_ADVISORY_RULES`]).
    pub advisory_rules: Vec<String>,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted (400 beyond).
    pub max_depth: usize,
    /// Most time one request may wait for its evaluation (the policy set's
    /// own per-evaluation limit should be at most this).
    pub eval_timeout: Duration,
    /// Threads that evaluate (each owns one evaluator).
    pub eval_workers: usize,
    /// Requests that may wait for an evaluator; more are refused.
    pub eval_queue: usize,
    /// Most time a request waits for its decision record to be stored.
    pub log_timeout: Duration,
    /// What to do when an allow cannot be recorded: fail closed (deny, the
    /// default: no decision without evidence) or fail open.
    pub log_failure: FailureMode,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            fail_on: Some(Severity::High),
            dry_run: false,
            advisory_rules: DEFAULT_ADVISORY_RULES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            eval_timeout: Duration::from_secs(3),
            eval_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            eval_queue: 1024,
            log_timeout: Duration::from_secs(2),
            log_failure: FailureMode::FailClosed,
        }
    }
}

/// Where the policies come from, as for `keycard check`.
#[derive(Debug, Clone, Default)]
pub struct PolicyOptions {
    /// Built-in packs; empty: the default packs. `none` drops them all.
    pub packs: Vec<String>,
    /// Directories or files of Rego and Gatekeeper templates/constraints.
    pub policies: Vec<PathBuf>,
    /// Pack parameters (YAML or JSON).
    pub params: Option<PathBuf>,
    /// Exceptions file.
    pub exceptions: Option<PathBuf>,
    /// Rego modules given as text: (file name, text). The file name less
    /// `.rego` names the policy in findings.
    pub rego_sources: Vec<(String, String)>,
    /// Exceptions files given as text: (file name, text), after `exceptions`.
    pub exception_sources: Vec<(String, String)>,
    /// The N of PSS v1.N; latest when `None`.
    pub pss_version: Option<u32>,
    /// Most time one evaluation may take.
    pub timeout: Option<Duration>,
}

/// Why the policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error(transparent)]
    Policy(#[from] keycard_policy::PolicyError),
    #[error(transparent)]
    Exceptions(#[from] keycard_policy::exceptions::ExceptionError),
    #[error("reading the pushed policies: {0}")]
    Store(String),
}

/// Compiled policies and exceptions, swapped as a whole.
#[derive(Clone)]
pub struct AdmissionPolicy {
    pub set: PolicySet,
    pub exceptions: Option<Exceptions>,
    /// Recorded with every decision (`bundle_revision`).
    pub revision: String,
}

impl std::fmt::Debug for AdmissionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionPolicy")
            .field("rules", &self.set.rule_count())
            .field(
                "exceptions",
                &self.exceptions.as_ref().map(|e| e.items.len()),
            )
            .field("revision", &self.revision)
            .finish()
    }
}

impl AdmissionPolicy {
    /// Loads packs, Rego, Gatekeeper templates and constraints, parameters
    /// and exceptions exactly as `keycard check` does (no inventory: the
    /// webhook sees one object at a time).
    pub fn load(opts: &PolicyOptions) -> Result<Self, LoadError> {
        let mut builder = PolicySetBuilder::new();
        if let Some(v) = opts.pss_version {
            builder = builder.pss_version(v);
        }
        if let Some(t) = opts.timeout {
            builder = builder.timeout(t);
        }
        let packs: Vec<String> = if opts.packs.is_empty() {
            DEFAULT_PACKS.iter().map(|s| s.to_string()).collect()
        } else {
            opts.packs
                .iter()
                .filter(|p| *p != "none")
                .cloned()
                .collect()
        };
        for p in &packs {
            builder = builder.pack(p);
        }
        for d in &opts.policies {
            builder = builder.dir(d);
        }
        let mut digest_input = format!("packs={packs:?};policies={:?};", opts.policies);
        if let Some(p) = &opts.params {
            let file = p.display().to_string();
            let text = read(p)?;
            digest_input.push_str(&text);
            let v: Value = yaml_serde::from_str(&text).map_err(|e| LoadError::Parse {
                file: file.clone(),
                message: e.to_string(),
            })?;
            builder = builder.params(&file, v);
        }
        for (file, text) in &opts.rego_sources {
            digest_input.push_str(file);
            digest_input.push_str(text);
            builder = builder.source(file, text);
        }
        let set = builder.build()?;
        let exceptions = Self::load_exceptions(opts)?;
        if let Some(p) = &opts.exceptions {
            digest_input.push_str(&read(p)?);
        }
        for (file, text) in &opts.exception_sources {
            digest_input.push_str(file);
            digest_input.push_str(text);
        }
        let digest = input_digest(digest_input.as_bytes());
        let revision = format!("local-{}", digest.get(7..19).unwrap_or("0"));
        Ok(Self {
            set,
            exceptions,
            revision,
        })
    }

    /// The exceptions of `opts` alone (the file, then the texts), merged;
    /// `None` when there are none.
    pub fn load_exceptions(opts: &PolicyOptions) -> Result<Option<Exceptions>, LoadError> {
        let mut out: Option<Exceptions> = None;
        if let Some(p) = &opts.exceptions {
            let text = read(p)?;
            out = Some(Exceptions::parse(&p.display().to_string(), &text)?);
        }
        for (file, text) in &opts.exception_sources {
            let ex = Exceptions::parse(file, text)?;
            out = Some(match out {
                Some(o) => o.merged(ex),
                None => ex,
            });
        }
        Ok(out)
    }

    /// The same compiled policies with `exceptions` in force instead (and
    /// `extra` after them: time-boxed ones such as grants), recorded as
    /// `revision`.
    pub fn with_exceptions(
        &self,
        exceptions: Option<Exceptions>,
        extra: Vec<Exception>,
        revision: String,
    ) -> AdmissionPolicy {
        let exceptions = match (exceptions, extra.is_empty()) {
            (e, true) => e,
            (Some(e), false) => Some(e.merged(Exceptions {
                file: String::new(),
                items: extra,
            })),
            (None, false) => Some(Exceptions {
                file: "grants".into(),
                items: extra,
            }),
        };
        AdmissionPolicy {
            set: self.set.clone(),
            exceptions,
            revision,
        }
    }
}

fn read(p: &std::path::Path) -> Result<String, LoadError> {
    std::fs::read_to_string(p).map_err(|source| LoadError::Read {
        file: p.display().to_string(),
        source,
    })
}

/// The policy in force, with a generation number so evaluators built for
/// an older one are replaced.
struct Current {
    policy: AdmissionPolicy,
    generation: u64,
}

type EvalResult = Result<Vec<Finding>, String>;

struct Job {
    current: Arc<Current>,
    object: Object,
    /// `input.review` for Gatekeeper templates: the request itself.
    review: ReviewSource,
    reply: oneshot::Sender<EvalResult>,
}

/// Evaluation threads, each with its own evaluator (regorus VMs are
/// per-thread state), fed from one bounded queue.
struct EvalPool {
    tx: std_mpsc::SyncSender<Job>,
}

impl EvalPool {
    fn start(workers: usize, queue: usize) -> Self {
        let (tx, rx) = std_mpsc::sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("keycard-admission-eval-{i}"))
                .spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start an admission evaluation thread");
            }
        }
        EvalPool { tx }
    }
}

fn worker(rx: &Mutex<std_mpsc::Receiver<Job>>) {
    let mut evaluator: Option<(u64, Evaluator)> = None;
    loop {
        let job = {
            let Ok(guard) = rx.lock() else { return };
            match guard.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        if job.reply.is_closed() {
            // The request gave up waiting: do not spend time on it.
            continue;
        }
        let generation = job.current.generation;
        if evaluator.as_ref().is_none_or(|(g, _)| *g != generation) {
            evaluator = Some((generation, job.current.policy.set.evaluator()));
        }
        let Some((_, ev)) = evaluator.as_mut() else {
            continue;
        };
        let review = Arc::clone(&job.review);
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            with_review(review, || {
                evaluate_one(ev, &job.current.policy, &job.object)
            })
        }));
        let res = match res {
            Ok(r) => r,
            Err(_) => {
                // Never trust an evaluator that panicked; build a new one.
                evaluator = None;
                Err("the policy engine failed on this object (internal error)".to_string())
            }
        };
        let _ = job.reply.send(res);
    }
}

fn evaluate_one(ev: &mut Evaluator, policy: &AdmissionPolicy, obj: &Object) -> EvalResult {
    let mut findings = ev.evaluate(obj).map_err(|e| e.to_string())?;
    if let Some(ex) = &policy.exceptions {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = ex.apply_at(&mut findings, std::slice::from_ref(obj), now);
    }
    Ok(findings)
}

/// What evaluation produced for one request.
#[derive(Debug, Clone)]
pub enum Evaluated {
    /// Nothing to evaluate (DELETE, CONNECT, a status subresource, an
    /// object being deleted), and why.
    Skipped(String),
    /// The findings, exceptions applied.
    Findings(Vec<Finding>),
    /// Evaluation failed (time limit, engine error, overload).
    Failed(String),
}

/// One decision: the response and what is recorded.
#[derive(Debug, Clone)]
pub struct Decision {
    pub response: AdmissionResponse,
    pub outcome: Outcome,
    /// Every finding (excepted ones included).
    pub findings: Vec<Finding>,
    /// The findings that denied (or would have, in dry-run).
    pub blocking: Vec<Finding>,
    /// Why nothing was evaluated, or why evaluation failed.
    pub note: Option<String>,
}

/// The answer to one HTTP request on the webhook path.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status: 200 for every AdmissionReview answered; 400 when the
    /// body is not one (and carries no uid to answer).
    pub http_status: u16,
    pub body: Value,
    /// The decision, when one was made.
    pub decision: Option<Decision>,
}

/// The admission webhook: compiled policies shared by every request.
pub struct Webhook {
    current: RwLock<Arc<Current>>,
    generations: AtomicU64,
    config: WebhookConfig,
    pool: EvalPool,
    recorder: Option<Recorder>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("config", &self.config)
            .field("recording", &self.recorder.is_some())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    /// A webhook over `policy`, recording every decision through
    /// `recorder` when given.
    pub fn new(policy: AdmissionPolicy, config: WebhookConfig, recorder: Option<Recorder>) -> Self {
        let pool = EvalPool::start(config.eval_workers, config.eval_queue);
        Self {
            current: RwLock::new(Arc::new(Current {
                policy,
                generation: 0,
            })),
            generations: AtomicU64::new(0),
            config,
            pool,
            recorder,
        }
    }

    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// Replaces the policies (a new bundle from the control plane) without
    /// a restart; requests already evaluating finish on the old ones.
    pub fn set_policy(&self, policy: AdmissionPolicy) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let next = Arc::new(Current { policy, generation });
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    fn current(&self) -> Arc<Current> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Answers one AdmissionReview body (already bounded in size by the
    /// caller): parse, evaluate, decide, record.
    pub async fn review(&self, body: &[u8]) -> Reply {
        let req = match parse_review(body, self.config.max_depth) {
            Ok(r) => r,
            Err(f) => {
                let message = format!("keycard: not a valid AdmissionReview: {}", f.error);
                tracing::warn!(error = %f.error, "rejected an admission request");
                return match f.uid {
                    // The API server sent it: answer in kind, so the user
                    // sees the reason instead of a webhook failure.
                    Some(uid) => Reply {
                        http_status: 200,
                        body: AdmissionResponse {
                            uid,
                            allowed: false,
                            status: Some(Status {
                                code: 400,
                                reason: "BadRequest",
                                message,
                            }),
                            warnings: Vec::new(),
                        }
                        .to_review(),
                        decision: None,
                    },
                    None => Reply {
                        http_status: 400,
                        body: status_body(400, "BadRequest", &message),
                        decision: None,
                    },
                };
            }
        };
        let req = Arc::new(req);
        let current = self.current();
        let evaluated = self.evaluate(&current, &req).await;
        let mut decision = decide(&req, evaluated, &self.config);
        let revision = current.policy.revision.clone();
        if let Some(rec) = &self.recorder {
            let record = record_of(&req, &decision, &revision, body, &self.config);
            if let Err(e) = rec.record(record, self.config.log_timeout).await {
                apply_log_failure(&mut decision, &e, &self.config);
            }
        }
        tracing::info!(
            uid = %req.uid,
            resource = %req.resource_label(),
            operation = req.operation.as_str(),
            user = %req.user_info.username,
            outcome = decision.outcome.as_str(),
            findings = decision.findings.len(),
            "admission decision"
        );
        Reply {
            http_status: 200,
            body: decision.response.to_review(),
            decision: Some(decision),
        }
    }

    async fn evaluate(&self, current: &Arc<Current>, req: &Arc<AdmissionRequest>) -> Evaluated {
        if let Some(why) = skip_reason(req) {
            return Evaluated::Skipped(why);
        }
        let Some(value) = req.object.clone() else {
            return Evaluated::Skipped("the request carries no object".into());
        };
        let object = Object::new(value, Arc::from(format!("admission:{}", req.uid)), 1);
        let (reply, wait) = oneshot::channel();
        let request = Arc::clone(req);
        let job = Job {
            current: Arc::clone(current),
            object,
            review: Arc::new(move || request.review_input()),
            reply,
        };
        if self.pool.tx.try_send(job).is_err() {
            return Evaluated::Failed(
                "keycard is overloaded: too many admission requests waiting for evaluation".into(),
            );
        }
        match tokio::time::timeout(self.config.eval_timeout, wait).await {
            Err(_) => Evaluated::Failed(format!(
                "evaluation did not finish within {:?}",
                self.config.eval_timeout
            )),
            Ok(Err(_)) => Evaluated::Failed("the evaluation thread stopped".into()),
            Ok(Ok(Err(e))) => Evaluated::Failed(e),
            Ok(Ok(Ok(f))) => Evaluated::Findings(f),
        }
    }
}

/// Why a request is answered without evaluation, if it is.
fn skip_reason(req: &AdmissionRequest) -> Option<String> {
    match req.operation {
        Operation::Delete => {
            return Some(
                "DELETE is not evaluated: keycard's policies judge what enters the cluster".into(),
            )
        }
        Operation::Connect => return Some("CONNECT is not evaluated".into()),
        Operation::Create | Operation::Update => {}
    }
    if let Some(sub) = &req.sub_resource {
        // Ephemeral containers change what runs in a pod: evaluate the pod.
        if sub != "ephemeralcontainers" {
            return Some(format!("the {sub} subresource is not evaluated"));
        }
    }
    if req.operation == Operation::Update
        && req
            .object
            .as_ref()
            .and_then(|o| o.get("metadata"))
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some_and(|t| !t.is_null())
    {
        // Removing finalizers from an object being deleted must never be
        // blocked by rules about its spec.
        return Some("the object is being deleted".into());
    }
    None
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    })
}

/// A plain `metav1.Status` error body (for HTTP errors outside a review).
pub fn error_body(code: u16, reason: &str, message: &str) -> Value {
    status_body(code, reason, message)
}

/// Whether a finding denies under `config` (before dry-run).
fn is_blocking(f: &Finding, config: &WebhookConfig) -> bool {
    f.blocks(config.fail_on) && !config.advisory_rules.iter().any(|r| r == &f.rule)
}

/// Whether a finding becomes an admission warning.
fn is_warned(f: &Finding) -> bool {
    f.exception.is_none() && f.enforcement != Enforcement::Dryrun
}

/// Text safe for a `Warning` header and a status message: no control
/// characters, at most `max` characters.
fn clip(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let mut out: String = clean.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

fn finding_line(f: &Finding) -> String {
    format!("[{}] {}", f.rule, f.message)
}

/// Warnings within Kubernetes' limits: each at most 120 characters, all of
/// them at most about 4 KiB, the overflow counted in a last warning.
fn bounded_warnings(lines: Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut used = 0usize;
    let total = lines.len();
    for (i, l) in lines.into_iter().enumerate() {
        let w = clip(&l, MAX_WARNING_CHARS);
        // Keep room for the overflow line.
        if used + w.len() + 64 > MAX_WARNINGS_BYTES {
            out.push(format!(
                "... and {} more findings (keycard audit why <uid>)",
                total - i
            ));
            break;
        }
        used += w.len();
        out.push(w);
    }
    out
}

/// Builds the decision for a request from what evaluation produced.
pub fn decide(req: &AdmissionRequest, evaluated: Evaluated, config: &WebhookConfig) -> Decision {
    let subject = format!("{} {}", req.kind.kind, qualified(req));
    let (findings, note) = match evaluated {
        Evaluated::Skipped(why) => {
            return Decision {
                response: AdmissionResponse {
                    uid: req.uid.clone(),
                    allowed: true,
                    status: None,
                    warnings: Vec::new(),
                },
                outcome: Outcome::Allow,
                findings: Vec::new(),
                blocking: Vec::new(),
                note: Some(why),
            }
        }
        Evaluated::Failed(e) => {
            let message = format!("keycard could not evaluate {subject}: {e}");
            let response = if config.dry_run {
                AdmissionResponse {
                    uid: req.uid.clone(),
                    allowed: true,
                    status: None,
                    warnings: vec![clip(
                        &format!("keycard audit-only: evaluation failed: {e}"),
                        MAX_WARNING_CHARS,
                    )],
                }
            } else {
                // Fail closed: an object the policies could not judge does
                // not enter the cluster.
                AdmissionResponse {
                    uid: req.uid.clone(),
                    allowed: false,
                    status: Some(Status {
                        code: 500,
                        reason: "InternalError",
                        message: clip(&message, 2000),
                    }),
                    warnings: Vec::new(),
                }
            };
            return Decision {
                response,
                outcome: Outcome::Error,
                findings: Vec::new(),
                blocking: Vec::new(),
                note: Some(e),
            };
        }
        Evaluated::Findings(f) => (f, None),
    };
    let mut blocking: Vec<Finding> = findings
        .iter()
        .filter(|f| is_blocking(f, config))
        .cloned()
        .collect();
    // The most severe first: the message and the record lead with it.
    blocking.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut warn_lines: Vec<String> = Vec::new();
    if config.dry_run && !blocking.is_empty() {
        for f in &blocking {
            warn_lines.push(format!(
                "keycard audit-only, would deny: {}",
                finding_line(f)
            ));
        }
    }
    for f in findings
        .iter()
        .filter(|f| is_warned(f) && !is_blocking(f, config))
    {
        warn_lines.push(finding_line(f));
    }
    let warnings = bounded_warnings(warn_lines);
    let (allowed, status, outcome) = if blocking.is_empty() {
        (true, None, Outcome::Allow)
    } else if config.dry_run {
        (true, None, Outcome::Audit)
    } else {
        (
            false,
            Some(Status {
                code: 403,
                reason: "Forbidden",
                message: deny_message(&subject, &blocking, &req.uid),
            }),
            Outcome::Deny,
        )
    };
    Decision {
        response: AdmissionResponse {
            uid: req.uid.clone(),
            allowed,
            status,
            warnings,
        },
        outcome,
        findings,
        blocking,
        note,
    }
}

fn qualified(req: &AdmissionRequest) -> String {
    match req.namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", req.display_name()),
        None => req.display_name().to_string(),
    }
}

fn deny_message(subject: &str, blocking: &[Finding], uid: &str) -> String {
    let n = blocking.len();
    let mut m = format!(
        "keycard denied {subject}: {n} blocking finding{}: ",
        if n == 1 { "" } else { "s" }
    );
    let listed: Vec<String> = blocking
        .iter()
        .take(MAX_DENY_LISTED)
        .map(|f| {
            clip(
                &format!("[{}] ({}) {}", f.rule, f.severity, f.message),
                MAX_DENY_MESSAGE_CHARS,
            )
        })
        .collect();
    m.push_str(&listed.join("; "));
    if n > MAX_DENY_LISTED {
        m.push_str(&format!("; and {} more", n - MAX_DENY_LISTED));
    }
    m.push_str(&format!(" (decision {uid}: keycard audit why {uid})"));
    m
}

fn finding_summary(f: &Finding, config: &WebhookConfig) -> Value {
    let mut v = json!({
        "rule": f.rule,
        "policy": f.policy,
        "severity": f.severity.as_str(),
        "message": f.message,
        "blocking": is_blocking(f, config),
    });
    if let (Some(p), Value::Object(m)) = (&f.path, &mut v) {
        m.insert("path".into(), json!(p));
    }
    if let (Some(e), Value::Object(m)) = (&f.exception, &mut v) {
        m.insert(
            "exception".into(),
            json!({"owner": e.owner, "reason": e.reason, "expires": e.expires}),
        );
    }
    v
}

/// The decision record for the log.
pub fn record_of(
    req: &AdmissionRequest,
    d: &Decision,
    revision: &str,
    body: &[u8],
    config: &WebhookConfig,
) -> Record {
    let first = d.blocking.first();
    let reason = match (d.outcome, first, &d.note) {
        (Outcome::Deny | Outcome::Audit, Some(f), _) => {
            let more = d.blocking.len() - 1;
            if more > 0 {
                format!("{} (and {more} more blocking findings)", f.message)
            } else {
                f.message.clone()
            }
        }
        (_, _, Some(note)) => note.clone(),
        _ if d.findings.is_empty() => "no findings".into(),
        _ => format!("{} non-blocking findings", d.findings.len()),
    };
    let mut attributes = json!({
        "uid": req.uid,
        "kind": req.kind.kind,
        "apiVersion": req.kind.api_version(),
        "operation": req.operation.as_str(),
        "dryRunRequest": req.dry_run,
        "auditOnly": config.dry_run,
        "findings": d.findings.iter().map(|f| finding_summary(f, config)).collect::<Vec<_>>(),
    });
    if let Value::Object(m) = &mut attributes {
        if let Some(ns) = &req.namespace {
            m.insert("namespace".into(), json!(ns));
        }
        if let Some(sub) = &req.sub_resource {
            m.insert("subResource".into(), json!(sub));
        }
        if !req.user_info.groups.is_empty() {
            m.insert("groups".into(), json!(req.user_info.groups));
        }
        m.insert(
            "failOn".into(),
            json!(config.fail_on.map(|s| s.as_str()).unwrap_or("never")),
        );
    }
    Record {
        action: req.operation.as_str().to_ascii_lowercase(),
        actor: None,
        attributes: Some(attributes),
        bundle_revision: revision.to_string(),
        change: None,
        id: req.uid.clone(),
        index: 0,
        input_digest: input_digest(body),
        outcome: d.outcome,
        point: EnforcementPoint::Admission,
        policy: first.map(|f| f.policy.clone()).unwrap_or_default(),
        reason,
        resource: req.resource_label(),
        rule: first.map(|f| f.rule.clone()).unwrap_or_default(),
        subject: req.user_info.username.clone(),
        time: String::new(),
        v: 0,
    }
}

/// The decision could not be recorded: an allow stands only when the
/// failure mode is fail-open (or the webhook is audit-only, which never
/// blocks); a deny always stands.
fn apply_log_failure(d: &mut Decision, e: &RecordError, config: &WebhookConfig) {
    tracing::error!(error = %e, uid = %d.response.uid, "admission decision not recorded");
    if !d.response.allowed || config.dry_run || config.log_failure.allow_stands(false) {
        return;
    }
    d.response.allowed = false;
    d.response.status = Some(Status {
        code: 503,
        reason: "ServiceUnavailable",
        message: format!(
            "keycard could not record the admission decision, and decisions without evidence are refused (fail closed): {e}"
        ),
    });
    d.outcome = Outcome::Error;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn clip_keeps_limits_and_strips_control_characters() {
        assert_eq!(clip("a\nb", 10), "a b");
        let long = "é".repeat(200);
        let c = clip(&long, MAX_WARNING_CHARS);
        assert_eq!(c.chars().count(), MAX_WARNING_CHARS);
        assert!(c.ends_with("..."));
    }

    #[test]
    fn warnings_stay_within_the_total_budget() {
        let lines: Vec<String> = (0..200)
            .map(|i| format!("[r{i}] {}", "x".repeat(150)))
            .collect();
        let w = bounded_warnings(lines);
        let total: usize = w.iter().map(String::len).sum();
        assert!(total <= MAX_WARNINGS_BYTES, "{total}");
        assert!(w.iter().all(|l| l.chars().count() <= MAX_WARNING_CHARS));
        assert!(w.last().unwrap().starts_with("... and "), "{:?}", w.last());
    }
}
