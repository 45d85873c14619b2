//! Prometheus metrics of the proxy (prefix `keycard_proxy_`); decisions
//! are counted by the shared authz metrics (`keycard_authz_`, transport
//! `proxy`).

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// The proxy's own metrics.
pub struct ProxyMetrics {
    registry: Registry,
    connections: Family<Labels, Counter>,
    open: Family<Labels, Gauge>,
    refused: Family<Labels, Counter>,
    handshake_failures: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    upstream_errors: Family<Labels, Counter>,
    revoked_closed: Counter,
    svid_expiry: Gauge<i64, AtomicI64>,
    /// Handles of the series every request touches, made once: the hot
    /// path increments an atomic instead of building and hashing labels.
    hot: Hot,
}

const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];
const PROTOCOLS: [&str; 4] = ["http1", "http2", "grpc", "tcp"];
const OUTCOMES: [&str; 4] = ["allow", "deny", "audit", "error"];

struct Hot {
    requests: Vec<Counter>,
    duration: Vec<Histogram>,
}

fn index(names: &[&str], v: &str) -> Option<usize> {
    names.iter().position(|n| *n == v)
}

impl Hot {
    fn new(requests: &Family<Labels, Counter>, duration: &Family<Labels, Histogram>) -> Self {
        let mut r = Vec::new();
        for d in DIRECTIONS {
            for p in PROTOCOLS {
                for o in OUTCOMES {
                    r.push(
                        requests
                            .get_or_create(&l(&[("direction", d), ("protocol", p), ("outcome", o)]))
                            .clone(),
                    );
                }
            }
        }
        let duration = DIRECTIONS
            .iter()
            .map(|d| duration.get_or_create(&l(&[("direction", d)])).clone())
            .collect();
        Hot {
            requests: r,
            duration,
        }
    }

    fn request(&self, direction: &str, protocol: &str, outcome: &str) -> Option<&Counter> {
        let (d, p, o) = (
            index(&DIRECTIONS, direction)?,
            index(&PROTOCOLS, protocol)?,
            index(&OUTCOMES, outcome)?,
        );
        self.requests
            .get((d * PROTOCOLS.len() + p) * OUTCOMES.len() + o)
    }
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keycard_proxy");
        let connections = Family::<Labels, Counter>::default();
        let open = Family::<Labels, Gauge>::default();
        let refused = Family::<Labels, Counter>::default();
        let handshake_failures = Family::<Labels, Counter>::default();
        let bytes = Family::<Labels, Counter>::default();
        let requests = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                1.0, 5.0,
            ])
        });
        let upstream_errors = Family::<Labels, Counter>::default();
        let revoked_closed = Counter::default();
        let svid_expiry = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "connections",
            "Accepted connections by direction (inbound, outbound) and transport (mtls, plaintext)",
            connections.clone(),
        );
        registry.register(
            "open_connections",
            "Connections open now, by direction",
            open.clone(),
        );
        registry.register(
            "refused",
            "Connections or requests refused before authorization, by direction and reason (max_connections, handshake_timeout, malformed_http, plaintext_in_strict, no_svid, ...)",
            refused.clone(),
        );
        registry.register(
            "handshake_failures",
            "Failed TLS handshakes by direction",
            handshake_failures.clone(),
        );
        registry.register(
            "bytes",
            "Bytes carried by direction and way (rx from the peer, tx to it)",
            bytes.clone(),
        );
        registry.register(
            "requests",
            "Requests by direction, protocol and outcome (allow, deny, audit, error)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's headers to the app's or upstream's response headers, by direction",
            duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failures to reach the app or the upstream proxy, by direction",
            upstream_errors.clone(),
        );
        registry.register(
            "revoked_connections_closed",
            "Connections closed because their peer identity or certificate was revoked",
            revoked_closed.clone(),
        );
        registry.register(
            "svid_expiry_seconds",
            "Seconds until the workload's X509-SVID expires (negative: expired)",
            svid_expiry.clone(),
        );
        let hot = Hot::new(&requests, &duration);
        ProxyMetrics {
            hot,
            registry,
            connections,
            open,
            refused,
            handshake_failures,
            bytes,
            requests,
            duration,
            upstream_errors,
            revoked_closed,
            svid_expiry,
        }
    }

    pub fn connection(&self, direction: &str, transport: &str) {
        self.connections
            .get_or_create(&l(&[("direction", direction), ("transport", transport)]))
            .inc();
    }

    /// An open-connection gauge guard: decrements on drop.
    pub fn open(self: &Arc<Self>, direction: &'static str) -> OpenGuard {
        self.open
            .get_or_create(&l(&[("direction", direction)]))
            .inc();
        OpenGuard {
            metrics: self.clone(),
            direction,
        }
    }

    pub fn refused(&self, direction: &str, reason: &str) {
        self.refused
            .get_or_create(&l(&[("direction", direction), ("reason", reason)]))
            .inc();
    }

    pub fn handshake_failure(&self, direction: &str) {
        self.handshake_failures
            .get_or_create(&l(&[("direction", direction)]))
            .inc();
    }

    pub fn bytes(&self, direction: &str, rx: u64, tx: u64) {
        self.bytes
            .get_or_create(&l(&[("direction", direction), ("way", "rx")]))
            .inc_by(rx);
        self.bytes
            .get_or_create(&l(&[("direction", direction), ("way", "tx")]))
            .inc_by(tx);
    }

    pub fn request(&self, direction: &str, protocol: &str, outcome: &str, seconds: Option<f64>) {
        match self.hot.request(direction, protocol, outcome) {
            Some(c) => {
                c.inc();
            }
            None => {
                self.requests
                    .get_or_create(&l(&[
                        ("direction", direction),
                        ("protocol", protocol),
                        ("outcome", outcome),
                    ]))
                    .inc();
            }
        }
        if let Some(s) = seconds {
            match index(&DIRECTIONS, direction).and_then(|d| self.hot.duration.get(d)) {
                Some(h) => h.observe(s),
                None => self
                    .duration
                    .get_or_create(&l(&[("direction", direction)]))
                    .observe(s),
            }
        }
    }

    pub fn upstream_error(&self, direction: &str) {
        self.upstream_errors
            .get_or_create(&l(&[("direction", direction)]))
            .inc();
    }

    pub fn revoked_closed(&self, n: u64) {
        self.revoked_closed.inc_by(n);
    }

    pub fn set_svid_expiry(&self, seconds: i64) {
        self.svid_expiry.set(seconds);
    }

    /// Value of a counter, for tests and health output.
    pub fn refused_count(&self, direction: &str, reason: &str) -> u64 {
        self.refused
            .get_or_create(&l(&[("direction", direction), ("reason", reason)]))
            .get()
    }

    pub fn handshake_failures(&self, direction: &str) -> u64 {
        self.handshake_failures
            .get_or_create(&l(&[("direction", direction)]))
            .get()
    }

    pub fn connections(&self, direction: &str, transport: &str) -> u64 {
        self.connections
            .get_or_create(&l(&[("direction", direction), ("transport", transport)]))
            .get()
    }

    /// The Prometheus text exposition (without the trailing `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        strip_eof(out)
    }
}

/// Drop the OpenMetrics `# EOF` line so that several registries concatenate.
pub fn strip_eof(mut s: String) -> String {
    if let Some(i) = s.rfind("# EOF") {
        s.truncate(i);
    }
    s
}

/// Decrements the open-connection gauge when dropped.
pub struct OpenGuard {
    metrics: Arc<ProxyMetrics>,
    direction: &'static str,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.metrics
            .open
            .get_or_create(&l(&[("direction", self.direction)]))
            .dec();
    }
}

impl std::fmt::Debug for ProxyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyMetrics")
    }
}
