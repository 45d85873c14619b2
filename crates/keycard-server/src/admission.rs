//! The Kubernetes validating admission webhook: the same packs, Rego,
//! Gatekeeper constraints and exceptions as `keycard check`, applied to
//! what enters the cluster.
//!
//! ```no_run
//! # async fn example(tls: rustls::ServerConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use keycard_server::admission::{
//!     AdmissionPolicy, PolicyOptions, Recorder, ServerOptions, Webhook, WebhookConfig, serve,
//! };
//!
//! // Compile the policies once (default packs here), as `keycard check` does.
//! let policy = AdmissionPolicy::load(&PolicyOptions::default())?;
//! // Every decision goes to the decision log (any `DecisionSink`).
//! let sink = Arc::new(keycard_server::admission::MemorySink::new());
//! let recorder = Recorder::spawn(sink, 4096, 512);
//! let webhook = Arc::new(Webhook::new(policy, WebhookConfig::default(), Some(recorder)));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! serve(listener, Arc::new(tls), webhook, ServerOptions::default(), std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! How a request is decided:
//!
//! 1. The body (at most 3 MiB, JSON nested at most 100 deep, content type
//!    `application/json`) is parsed as an `admission.k8s.io/v1`
//!    AdmissionReview; a missing field is named in the error. Without a
//!    readable `request.uid` the answer is HTTP 400; with one, a denial
//!    that carries the reason, so the user sees it.
//! 2. DELETE, CONNECT, subresources other than `ephemeralcontainers`, and
//!    updates of objects being deleted are allowed without evaluation (and
//!    recorded).
//! 3. The object is evaluated on an evaluation thread (one evaluator per
//!    thread, policies compiled once and shared) under a time limit, and
//!    the exceptions are applied.
//! 4. Findings at or above the blocking severity (high by default), not
//!    excepted, from `deny` rules, deny the request, listed in the status
//!    message; the others become admission warnings (each under 120
//!    characters, about 4 KiB in all). The cross-object rules listed in
//!    [`DEFAULT_ADVISORY_RULES`] only warn: the webhook sees one object.
//!    In audit-only (dry-run) mode nothing is denied and what would have
//!    been is recorded with outcome `audit` and warned.
//! 5. The decision is recorded (one record per request, id = the request's
//!    uid, findings in `attributes`) through a [`Recorder`] that batches
//!    concurrent decisions into one durable append. When an allow cannot be
//!    recorded the webhook fails closed by default (see
//!    [`WebhookConfig::log_failure`]). An evaluation that fails denies
//!    (status 500): an object the policies could not judge stays out.
//!
//! Gatekeeper constraints see the request itself as `input.review` (uid,
//! kind, resource, subResource, name, namespace, operation, userInfo,
//! object, oldObject, dryRun, options), as under Gatekeeper's webhook;
//! `keycard check` gives them a review built from the object. A constraint
//! with a `namespaceSelector` needs the namespace's labels, which the
//! webhook does not have yet: such a constraint fails evaluation (and so
//! denies).
//!
//! The policies change without a restart ([`Webhook::set_policy`]):
//! `keycard up` follows the policies and exceptions pushed through the API
//! and the approved exception grants ([`PushedPolicies`]); `keycard
//! admission serve` follows its files ([`WatchedFiles`]), such as the
//! `enforce/` directory an agent writes. A grant of kind `exception` is an
//! exception of its `policy` and `rule` (`*`: any) for objects whose
//! `Kind/namespace/name` (`Kind/name` when cluster-scoped) is its
//! `resource`, or starts with it when it ends in `*`, until it expires.

pub mod manifest;
mod recorder;
mod reload;
mod review;
mod server;
mod webhook;

pub use recorder::{DecisionSink, MemorySink, RecordError, Recorder};
pub use reload::{grant_exceptions, FileWatch, PushedPolicies, WatchedFiles};
pub use review::{
    check_depth, parse_review, AdmissionRequest, AdmissionResponse, GroupVersionKind,
    GroupVersionResource, Operation, ParseFailure, ReviewError, Status, UserInfo, API_VERSION,
    KIND,
};
pub use server::{
    handle, run_until_signal, serve, tls_config_from_pem, with_alpn, ServerError, ServerOptions,
    HEALTH_PATH, VALIDATE_PATH,
};
pub use webhook::{
    decide, error_body, record_of, AdmissionPolicy, Decision, Evaluated, LoadError, PolicyOptions,
    Reply, Webhook, WebhookConfig, DEFAULT_ADVISORY_RULES, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_DEPTH, MAX_WARNINGS_BYTES, MAX_WARNING_CHARS,
};
