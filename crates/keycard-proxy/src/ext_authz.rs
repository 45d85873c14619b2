//! Envoy ext_authz v3 over the [`Authorizer`]: the gRPC service
//! (`envoy.service.auth.v3.Authorization/Check`) and the HTTP variant
//! (Envoy's `http_service` mode).
//!
//! gRPC: the source principal is `attributes.source.principal` (the SPIFFE
//! ID Envoy took from the client certificate), the destination principal
//! `attributes.destination.principal`, labels `attributes.destination.labels`
//! (and `context_extensions`), then method, path, host and headers of
//! `attributes.request.http`, SNI of `attributes.tls_session`.
//!
//! HTTP: Envoy forwards the original method, path and the allowed headers;
//! configure it to set `x-keycard-source-principal:
//! %DOWNSTREAM_PEER_URI_SAN%` (and optionally `x-keycard-source-ip`,
//! `x-keycard-destination-principal`, `x-keycard-destination-port`) in
//! `authorization_request.headers_to_add`, which replaces any copy the
//! client sent.
//!
//! Allowed: OK, with `x-keycard-principal` (and `x-keycard-request-principal`
//! for a validated JWT) set upstream, replacing client copies. Denied:
//! PERMISSION_DENIED and an HTTP 403 (401 for an invalid JWT) with
//! `x-keycard-reason: <policy>/<rule>: <reason>`.
//!
//! With a decision log ([`AuditSink`]) that fails closed, a request whose
//! decision cannot be logged is refused: PERMISSION_DENIED, HTTP 503 and
//! `x-keycard-reason: decision-log-unavailable`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::ext_authz::v3::pb::{
    Address, Authorization, CheckRequest, CheckResponse, HeaderAppendAction, HeaderValue,
    HeaderValueOption, HttpStatus, HttpStatusCode, OkHttpResponse,
};
use envoy_types::ext_authz::v3::pb::{DeniedHttpResponse, HttpResponse};
use envoy_types::pb::google::rpc;

use crate::authorizer::Authorizer;
use crate::engine::{AuthzDecision, Reason};
use crate::metrics::Metrics;
use crate::record::{record, AuditSink, RecordSink, LOG_UNAVAILABLE};
use crate::request::{Claims, Peer, Request};
use crate::time::unix_now;

/// Most headers read from one check request.
pub const MAX_HEADERS: usize = 256;
/// Longest header value kept (longer values are cut; tokens longer than
/// the JWT limit are refused by the validator anyway).
pub const MAX_HEADER_VALUE: usize = 32 * 1024;

/// What the ext_authz front ends share.
pub struct AuthzState {
    pub authorizer: Arc<Authorizer>,
    pub metrics: Arc<Metrics>,
    pub records: Option<RecordSink>,
    /// The tamper-evident decision log, when configured.
    pub audit: Option<Arc<AuditSink>>,
    /// Deny a request whose path is not in normal form (default). Envoy
    /// forwards the path it received, not the one keycard decided on, so
    /// the two must be the same; configure Envoy's `normalize_path`,
    /// `merge_slashes` and `path_with_escaped_slashes_action:
    /// REJECT_REQUEST` and this never fires.
    pub require_normal_paths: bool,
    ids: AtomicU64,
}

/// One request decided: the request (with its id), the decision, the
/// validated JWT claims, and whether it is refused because the decision
/// log cannot take records.
pub struct Decided {
    pub req: Request,
    pub decision: AuthzDecision,
    pub claims: Option<Claims>,
    pub log_unavailable: bool,
}

impl AuthzState {
    pub fn new(
        authorizer: Arc<Authorizer>,
        metrics: Arc<Metrics>,
        records: Option<RecordSink>,
    ) -> Self {
        AuthzState {
            authorizer,
            metrics,
            records,
            audit: None,
            require_normal_paths: true,
            ids: AtomicU64::new(1),
        }
    }

    /// Also write every decision to the tamper-evident decision log.
    pub fn with_audit(mut self, audit: Arc<AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Decide, count and record one request.
    pub fn decide(&self, transport: &'static str, mut req: Request) -> Decided {
        let start = Instant::now();
        if req.id.is_empty() {
            req.id = format!("keycard-{}", self.ids.fetch_add(1, Ordering::Relaxed));
        }
        let mut checked = self.authorizer.check_full(&req, unix_now());
        if self.require_normal_paths && checked.decision.outcome != keycard_core::Outcome::Deny {
            if let Some(detail) = unnormalised(&req.path, self.authorizer.paths()) {
                let mut d = AuthzDecision::new(keycard_core::Outcome::Deny, Reason::BadRequest);
                d.detail = Some(detail);
                checked.decision = d;
            }
        }
        let elapsed = start.elapsed();
        let d = checked.decision;
        self.metrics.observe(transport, &d, elapsed.as_secs_f64());
        let now = SystemTime::now();
        let latency_us = elapsed.as_micros() as u64;
        if let Some(sink) = &self.records {
            let rec = record(
                transport_point(transport),
                now,
                &req,
                checked.claims.as_ref(),
                &d,
                latency_us,
            );
            sink.write(&rec);
        }
        let log_unavailable = match &self.audit {
            Some(a) => !a.admit(
                now,
                &req,
                checked.claims.as_ref(),
                &d,
                latency_us,
                &[("transport", transport)],
            ),
            None => false,
        };
        if d.outcome == keycard_core::Outcome::Deny {
            tracing::debug!(request_id = %req.id, reason = d.reason.as_str(), policy = d.policy.as_deref().unwrap_or(""), "denied");
        }
        Decided {
            req,
            decision: d,
            claims: checked.claims,
            log_unavailable,
        }
    }
}

/// Why `raw` (a request's path and query as Envoy will forward it) is not
/// the normal form that was decided on; `None` when it is.
fn unnormalised(raw: &str, opts: crate::PathOptions) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    let raw = raw.split('#').next().unwrap_or("");
    match crate::normalize_target(raw, opts) {
        Ok(t) if t.path_and_query() == raw => None,
        Ok(t) => Some(format!(
            "path {raw:?} is not in normal form ({:?}); normalise paths in Envoy",
            t.path_and_query()
        )),
        Err(e) => Some(format!("path: {e}")),
    }
}

fn transport_point(_t: &str) -> &'static str {
    "ext_authz"
}

fn socket(
    addr: &Option<envoy_types::pb::envoy::config::core::v3::Address>,
) -> (Option<IpAddr>, Option<u16>) {
    let Some(Address::SocketAddress(sa)) = addr.as_ref().and_then(|a| a.address.as_ref()) else {
        return (None, None);
    };
    let ip = sa.address.parse().ok();
    let port = match &sa.port_specifier {
        Some(
            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p),
        ) => u16::try_from(*p).ok(),
        _ => None,
    };
    (ip, port)
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn clip(v: &str) -> String {
    if v.len() <= MAX_HEADER_VALUE {
        return v.to_string();
    }
    let mut end = MAX_HEADER_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// The request attributes of a CheckRequest.
pub fn request_from_check(c: &CheckRequest) -> Request {
    let mut r = Request::default();
    let Some(a) = &c.attributes else { return r };
    if let Some(src) = &a.source {
        let (ip, port) = socket(&src.address);
        r.source = Peer {
            principal: nonempty(&src.principal),
            ip,
            port,
        };
        if !src.certificate.is_empty() {
            r.source_cert_serial = serial_of_pem(&src.certificate);
        }
    }
    if let Some(dst) = &a.destination {
        let (ip, port) = socket(&dst.address);
        r.destination = Peer {
            principal: nonempty(&dst.principal),
            ip,
            port,
        };
        r.destination_labels = dst
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
    }
    for (k, v) in &a.context_extensions {
        if let Some(label) = k.strip_prefix("label.") {
            r.destination_labels.insert(label.to_string(), v.clone());
        }
    }
    if let Some(tls) = &a.tls_session {
        r.sni = nonempty(&tls.sni);
    }
    if let Some(http) = a.request.as_ref().and_then(|q| q.http.as_ref()) {
        r.id = http.id.clone();
        r.method = http.method.clone();
        r.path = http.path.clone();
        r.host = http.host.clone();
        r.headers = headers_from(http.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some(x) = r.header("x-request-id") {
            r.id = x.to_string();
        }
        r.remote_ip = forwarded_for(&r);
    }
    r
}

fn headers_from<'a>(it: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<(String, String)> {
    it.filter(|(k, _)| !k.starts_with(':'))
        .take(MAX_HEADERS)
        .map(|(k, v)| (k.to_ascii_lowercase(), clip(v)))
        .collect()
}

/// The first address of x-forwarded-for (the original client).
fn forwarded_for(r: &Request) -> Option<IpAddr> {
    r.header("x-forwarded-for")?
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The serial of a URL-encoded PEM certificate (as Envoy sends it).
fn serial_of_pem(urlencoded: &str) -> Option<String> {
    let pem = percent_decode(urlencoded)?;
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.tbs_certificate.raw_serial_as_string().replace(':', ""))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn header(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    #[allow(deprecated)]
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            raw_value: Vec::new(),
        }),
        append: None,
        append_action: action.into(),
        keep_empty_value: false,
    }
}

/// The HTTP status a denial carries.
pub fn deny_status(d: &AuthzDecision) -> u16 {
    if d.reason == Reason::JwtInvalid {
        401
    } else {
        403
    }
}

/// The CheckResponse for a decision.
pub fn check_response(req: &Request, d: &AuthzDecision, claims: Option<&Claims>) -> CheckResponse {
    if d.is_allowed() {
        let mut headers = Vec::new();
        let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd;
        if let Some(p) = &req.source.principal {
            headers.push(header("x-keycard-principal", p, overwrite));
        }
        if let Some(c) = claims {
            headers.push(header(
                "x-keycard-request-principal",
                &c.principal,
                overwrite,
            ));
        }
        let mut headers_to_remove = Vec::new();
        if req.source.principal.is_none() {
            headers_to_remove.push("x-keycard-principal".to_string());
        }
        if claims.is_none() {
            headers_to_remove.push("x-keycard-request-principal".to_string());
        }
        CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers,
                headers_to_remove,
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        }
    } else {
        let status = deny_status(d);
        let mut headers = vec![header(
            "x-keycard-reason",
            &d.reason_header(),
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        )];
        if status == 401 {
            headers.push(header(
                "www-authenticate",
                "Bearer error=\"invalid_token\"",
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            ));
        }
        let code = if status == 401 {
            HttpStatusCode::Unauthorized
        } else {
            HttpStatusCode::Forbidden
        };
        CheckResponse {
            status: Some(rpc::Status {
                code: tonic::Code::PermissionDenied as i32,
                message: d.reason_header(),
                details: Vec::new(),
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: code.into() }),
                headers,
                body: format!("denied: {}\n", d.reason_header()),
            })),
            ..CheckResponse::default()
        }
    }
}

/// The CheckResponse refusing a request because the decision log cannot
/// take records (fail closed): HTTP 503, `x-keycard-reason:
/// decision-log-unavailable`.
pub fn unavailable_response() -> CheckResponse {
    CheckResponse {
        status: Some(rpc::Status {
            code: tonic::Code::PermissionDenied as i32,
            message: LOG_UNAVAILABLE.to_string(),
            details: Vec::new(),
        }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: HttpStatusCode::ServiceUnavailable.into(),
            }),
            headers: vec![header(
                "x-keycard-reason",
                LOG_UNAVAILABLE,
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )],
            body: format!("denied: {LOG_UNAVAILABLE}\n"),
        })),
        ..CheckResponse::default()
    }
}

/// The HTTP-variant response refusing a request because the decision log
/// cannot take records.
pub fn unavailable_http_response() -> http::Response<String> {
    let body = format!("denied: {LOG_UNAVAILABLE}\n");
    http::Response::builder()
        .status(503)
        .header("x-keycard-reason", LOG_UNAVAILABLE)
        .body(body.clone())
        .unwrap_or_else(|_| {
            let mut r = http::Response::new(body);
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r
        })
}

/// The gRPC Authorization service.
#[derive(Clone)]
pub struct AuthzGrpc {
    pub state: Arc<AuthzState>,
}

#[tonic::async_trait]
impl Authorization for AuthzGrpc {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let req = request_from_check(request.get_ref());
        let x = self.state.decide("grpc", req);
        if x.log_unavailable {
            return Ok(tonic::Response::new(unavailable_response()));
        }
        Ok(tonic::Response::new(check_response(
            &x.req,
            &x.decision,
            x.claims.as_ref(),
        )))
    }
}

/// The attributes of an HTTP-variant check (Envoy `http_service`).
pub fn request_from_http(
    method: &str,
    path_and_query: &str,
    headers: &http::HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Request {
    let hs = headers_from(
        headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let mut r = Request {
        method: method.to_string(),
        path: path_and_query.to_string(),
        headers: hs,
        ..Request::default()
    };
    let get = |r: &Request, k: &str| r.header(k).map(str::to_string);
    r.host = get(&r, "host").unwrap_or_default();
    r.id = get(&r, "x-request-id").unwrap_or_default();
    r.source.principal = get(&r, "x-keycard-source-principal").filter(|s| !s.is_empty());
    r.source.ip = get(&r, "x-keycard-source-ip").and_then(|s| s.parse().ok());
    r.destination.principal = get(&r, "x-keycard-destination-principal").filter(|s| !s.is_empty());
    r.destination.port = get(&r, "x-keycard-destination-port").and_then(|s| s.parse().ok());
    r.remote_ip = forwarded_for(&r).or(peer.map(|p| p.ip()));
    // The identity headers are Envoy's to set; never let them reach policy as request headers.
    r.headers.retain(|(k, _)| !k.starts_with("x-keycard-"));
    r
}

/// The HTTP response of an HTTP-variant check.
pub fn http_response(
    req: &Request,
    d: &AuthzDecision,
    claims: Option<&Claims>,
) -> http::Response<String> {
    let mut b = http::Response::builder();
    let body = if d.is_allowed() {
        b = b.status(200);
        if let Some(p) = &req.source.principal {
            b = b.header("x-keycard-principal", p);
        }
        if let Some(c) = claims {
            b = b.header("x-keycard-request-principal", &c.principal);
        }
        String::new()
    } else {
        b = b
            .status(deny_status(d))
            .header("x-keycard-reason", d.reason_header());
        if deny_status(d) == 401 {
            b = b.header("www-authenticate", "Bearer error=\"invalid_token\"");
        }
        format!("denied: {}\n", d.reason_header())
    };
    b.body(body.clone()).unwrap_or_else(|_| {
        let mut r = http::Response::new(body);
        *r.status_mut() = http::StatusCode::FORBIDDEN;
        r
    })
}
