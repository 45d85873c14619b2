//! Prometheus metrics of the enforcement points.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::AuthzDecision;

type Labels = Vec<(&'static str, String)>;

/// Every metric the authz server exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    would_deny: Family<Labels, Counter>,
    latency: Family<Labels, Histogram>,
    reload_errors: Family<Labels, Counter>,
    policies: Gauge,
    records_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keycard_authz");
        let requests = Family::<Labels, Counter>::default();
        let decisions = Family::<Labels, Counter>::default();
        let would_deny = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001,
                0.002_5, 0.005, 0.01, 0.025, 0.1,
            ])
        });
        let reload_errors = Family::<Labels, Counter>::default();
        let policies = Gauge::default();
        let records_dropped = Counter::default();
        registry.register(
            "requests",
            "Check requests received, by transport (grpc, http)",
            requests.clone(),
        );
        registry.register(
            "decisions",
            "Decisions by outcome (allow, deny, audit), reason and deciding policy",
            decisions.clone(),
        );
        registry.register(
            "audit_would_deny",
            "Requests an audit-mode policy would have denied (let through), by policy",
            would_deny.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time to decide one check, by transport",
            latency.clone(),
        );
        registry.register(
            "reload_errors",
            "Failed reloads of watched files (policies, revocations, posture, jwks); the last good content stays",
            reload_errors.clone(),
        );
        registry.register("policies", "Policies in force", policies.clone());
        registry.register(
            "decision_records_dropped",
            "Decision records dropped because the writer fell behind",
            records_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            decisions,
            would_deny,
            latency,
            reload_errors,
            policies,
            records_dropped,
        }
    }

    pub fn observe(&self, transport: &'static str, d: &AuthzDecision, seconds: f64) {
        self.requests
            .get_or_create(&vec![("transport", transport.to_string())])
            .inc();
        let outcome = match d.outcome {
            keycard_core::Outcome::Allow => "allow",
            keycard_core::Outcome::Deny => "deny",
            keycard_core::Outcome::Audit => "audit",
        };
        let policy = d.policy.as_deref().unwrap_or("").to_string();
        self.decisions
            .get_or_create(&vec![
                ("outcome", outcome.to_string()),
                ("reason", d.reason.as_str().to_string()),
                ("policy", policy.clone()),
            ])
            .inc();
        if d.reason == crate::engine::Reason::AuditWouldDeny {
            self.would_deny
                .get_or_create(&vec![("policy", policy)])
                .inc();
        }
        self.latency
            .get_or_create(&vec![("transport", transport.to_string())])
            .observe(seconds);
    }

    /// Count a failed reload of a watched file (`policies`, `revocations`, `posture`, `jwks`).
    pub fn reload_error(&self, what: &'static str) {
        self.reload_errors
            .get_or_create(&vec![("file", what.to_string())])
            .inc();
    }

    pub fn set_policies(&self, n: usize) {
        self.policies.set(n as i64);
    }

    pub fn record_dropped(&self) {
        self.records_dropped.inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
