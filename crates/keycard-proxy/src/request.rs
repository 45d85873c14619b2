//! The attributes of one request, as every enforcement point hands them to
//! the engine.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::policy::Key;

/// One end of a connection.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Peer {
    /// The verified SPIFFE ID (from the peer certificate), if any.
    pub principal: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
}

/// A request to authorize. Header names are lower case.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The request id for the decision record (x-request-id, or generated).
    pub id: String,
    pub source: Peer,
    pub destination: Peer,
    /// The original client address when a proxy stands in between (x-forwarded-for).
    pub remote_ip: Option<IpAddr>,
    /// Labels of the destination workload, for policy selectors.
    pub destination_labels: BTreeMap<String, String>,
    /// Serial number of the source certificate, lower-case hex without separators.
    pub source_cert_serial: Option<String>,
    pub host: String,
    pub method: String,
    /// The request path, query string included (matching ignores the query).
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub sni: Option<String>,
}

impl Request {
    /// First value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer token of the Authorization header, if any.
    pub fn bearer_token(&self) -> Option<&str> {
        let h = self.header("authorization")?;
        let (scheme, token) = h.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

/// The validated claims of a request's JWT.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    /// `iss/sub`, Istio's request principal.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`, when present.
    pub presenter: Option<String>,
    /// The provider that validated the token.
    pub provider: String,
    /// Every claim, for `request.auth.claims[...]` conditions.
    pub raw: serde_json::Map<String, Value>,
}

/// Posture attributes of one identity, as strings (lists: one string per item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Posture {
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// Everything the matchers read, derived once per request.
pub struct Attrs<'a> {
    pub req: &'a Request,
    pub source_namespace: Option<&'a str>,
    pub destination_namespace: Option<&'a str>,
    /// The path without its query string.
    pub path: &'a str,
    pub host_without_port: &'a str,
    pub auth: Option<&'a Claims>,
    pub posture: Option<&'a Posture>,
    /// The Rego input, built on first use.
    pub(crate) rego_input: std::cell::OnceCell<Arc<regorus::Value>>,
}

fn strip_port(h: &str) -> &str {
    if h.starts_with('[') {
        return match h.find(']') {
            Some(end) => &h[..=end],
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((a, p))
            if !a.contains(':') && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) =>
        {
            a
        }
        _ => h,
    }
}

/// The namespace segment of a SPIFFE ID of the form `.../ns/<ns>/...`.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let path = id.strip_prefix("spiffe://")?;
    let mut segs = path.split('/').skip(1);
    while let Some(s) = segs.next() {
        if s == "ns" {
            return segs.next().filter(|n| !n.is_empty());
        }
    }
    None
}

impl<'a> Attrs<'a> {
    pub fn new(req: &'a Request, auth: Option<&'a Claims>, posture: Option<&'a Posture>) -> Self {
        let path = req.path.split(['?', '#']).next().unwrap_or("");
        let host_without_port = strip_port(&req.host);
        Attrs {
            req,
            source_namespace: req.source.principal.as_deref().and_then(spiffe_namespace),
            destination_namespace: req
                .destination
                .principal
                .as_deref()
                .and_then(spiffe_namespace),
            path,
            host_without_port,
            auth,
            posture,
            rego_input: std::cell::OnceCell::new(),
        }
    }

    /// Call `f` on each string value of a key; true when any call is true.
    pub(crate) fn with_values(&self, key: &Key, mut f: impl FnMut(&str) -> bool) -> bool {
        match key {
            Key::Header(name) => self.req.headers.iter().any(|(k, v)| k == name && f(v)),
            Key::SourceNamespace => self.source_namespace.is_some_and(f),
            Key::SourcePrincipal => self.req.source.principal.as_deref().is_some_and(f),
            Key::DestinationPrincipal => self.req.destination.principal.as_deref().is_some_and(f),
            Key::ConnectionSni => self.req.sni.as_deref().is_some_and(f),
            Key::AuthPrincipal => self.auth.is_some_and(|c| f(&c.principal)),
            Key::AuthAudiences => self.auth.is_some_and(|c| c.audiences.iter().any(|a| f(a))),
            Key::AuthPresenter => self
                .auth
                .and_then(|c| c.presenter.as_deref())
                .is_some_and(f),
            Key::AuthClaim(path) => {
                let Some(c) = self.auth else { return false };
                let mut at = c.raw.get(&path[0]);
                for p in &path[1..] {
                    at = at.and_then(|v| v.get(p));
                }
                match at {
                    Some(Value::String(s)) => f(s),
                    Some(Value::Array(items)) => items.iter().any(|i| match i {
                        Value::String(s) => f(s),
                        Value::Number(_) | Value::Bool(_) => f(&i.to_string()),
                        _ => false,
                    }),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => f(&v.to_string()),
                    _ => false,
                }
            }
            Key::Posture(name) => self
                .posture
                .and_then(|p| p.attributes.get(name))
                .is_some_and(|vals| vals.iter().any(|v| f(v))),
            Key::SourceIp => self.req.source.ip.is_some_and(|ip| f(&ip.to_string())),
            Key::RemoteIp => self
                .req
                .remote_ip
                .or(self.req.source.ip)
                .is_some_and(|ip| f(&ip.to_string())),
            Key::DestinationIp => self.req.destination.ip.is_some_and(|ip| f(&ip.to_string())),
            Key::DestinationPort => self.req.destination.port.is_some_and(|p| f(&p.to_string())),
        }
    }

    /// The `input` document a policy's Rego rule sees.
    pub fn rego_input_json(&self) -> Value {
        let r = self.req;
        let headers: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let peer = |p: &crate::request::Peer, ns: Option<&str>| {
            serde_json::json!({
                "principal": p.principal,
                "namespace": ns,
                "ip": p.ip.map(|i| i.to_string()),
                "port": p.port,
            })
        };
        serde_json::json!({
            "source": peer(&r.source, self.source_namespace),
            "destination": peer(&r.destination, self.destination_namespace),
            "request": {
                "id": r.id,
                "host": r.host,
                "method": r.method,
                "path": self.path,
                "full_path": r.path,
                "headers": headers,
                "auth": self.auth.map(|c| serde_json::json!({
                    "principal": c.principal,
                    "audiences": c.audiences,
                    "presenter": c.presenter,
                    "claims": c.raw,
                })),
            },
            "connection": {"sni": r.sni},
            "posture": self.posture.map(|p| p.attributes.clone()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_hosts() {
        assert_eq!(spiffe_namespace("spiffe://td/ns/prod/sa/api"), Some("prod"));
        assert_eq!(spiffe_namespace("spiffe://td/x/y"), None);
        assert_eq!(spiffe_namespace("spiffe://ns/x"), None);
        let mut r = Request {
            host: "api.example.com:8443".into(),
            path: "/a/b?x=1".into(),
            ..Request::default()
        };
        let a = Attrs::new(&r, None, None);
        assert_eq!(a.host_without_port, "api.example.com");
        assert_eq!(a.path, "/a/b");
        r.host = "[::1]:80".into();
        assert_eq!(Attrs::new(&r, None, None).host_without_port, "[::1]");
    }

    #[test]
    fn bearer() {
        let r = Request {
            headers: vec![("authorization".into(), "Bearer abc.def.ghi".into())],
            ..Request::default()
        };
        assert_eq!(r.bearer_token(), Some("abc.def.ghi"));
        let r = Request {
            headers: vec![("authorization".into(), "Basic abc".into())],
            ..Request::default()
        };
        assert_eq!(r.bearer_token(), None);
    }
}
