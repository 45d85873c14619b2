//! The attributes of one request, as every enforcement point hands them to
//! the engine.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::matcher::{hash_str, HStr};
use crate::policy::Key;

pub mod path;

use path::normalize_target_path;
pub use path::{normalize_path, normalize_target, EscapedSlashes, PathError, PathOptions, Target};

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
    /// The normalised path (see [`normalize_target`]) without query or
    /// fragment; the raw path when it cannot be normalised (then
    /// [`Attrs::path_error`] is set and every decision denies).
    pub path: Cow<'a, str>,
    /// Why the path was refused, if it was.
    pub path_error: Option<PathError>,
    /// The host (Host header or `:authority`) in lower case, without a
    /// trailing dot, with its port (if any) in canonical decimal.
    host: Cow<'a, str>,
    /// Length of the host name within `host` (before `:port`).
    host_name_len: usize,
    pub auth: Option<&'a Claims>,
    pub posture: Option<&'a Posture>,
    /// Request values the matchers look up in hash sets, hashed once.
    pub(crate) hashed: Hashed<'a>,
    path_hash: u64,
    host_hash: u64,
    host_name_hash: u64,
    /// The Rego input, built on first use.
    pub(crate) rego_input: std::cell::OnceCell<Arc<regorus::Value>>,
}

/// The request values that policies look up by hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hashed<'a> {
    pub source_principal: Option<HStr<'a>>,
    pub source_namespace: Option<HStr<'a>>,
    pub destination_principal: Option<HStr<'a>>,
    pub method: HStr<'a>,
    pub auth_principal: Option<HStr<'a>>,
}

/// A host (`name`, `name:port`, `[v6]:port`) in the form host policies
/// compare: lower case, without the trailing dot of a fully qualified name,
/// port without leading zeros. Returns the host and the length of its name.
pub fn normalize_host(h: &str) -> (Cow<'_, str>, usize) {
    let (name, port) = split_port(h);
    let name_trimmed = match name.strip_suffix('.') {
        Some(n) if !n.is_empty() && !n.ends_with('.') => n,
        _ => name,
    };
    let port_num = port.and_then(|p| p.parse::<u16>().ok());
    let canonical_port = match (port, port_num) {
        (None, _) => true,
        (Some(p), Some(n)) => !p.starts_with('0') || (n == 0 && p == "0"),
        (Some(_), None) => false,
    };
    let lower = !name_trimmed.bytes().any(|b| b.is_ascii_uppercase());
    let port_as_written = port.is_some() || name.len() == h.len();
    if lower && canonical_port && port_as_written && name_trimmed.len() == name.len() {
        return (Cow::Borrowed(h), name.len());
    }
    let mut out = name_trimmed.to_ascii_lowercase();
    let len = out.len();
    match (port, port_num) {
        (Some(_), Some(n)) => {
            out.push(':');
            out.push_str(&n.to_string());
        }
        // Not a port number: keep it as written (it matches nothing that
        // names a port).
        (Some(p), None) => {
            out.push(':');
            out.push_str(p);
        }
        (None, _) => {}
    }
    (Cow::Owned(out), len)
}

/// Split `name:port`; a bracketed IPv6 address keeps its brackets; a port
/// is all digits (an empty port counts as none).
fn split_port(h: &str) -> (&str, Option<&str>) {
    if h.starts_with('[') {
        return match h.find(']') {
            Some(end) => {
                let rest = &h[end + 1..];
                match rest.strip_prefix(':') {
                    Some("") => (&h[..=end], None),
                    Some(p) => (&h[..=end], Some(p)),
                    None => (h, None),
                }
            }
            None => (h, None),
        };
    }
    match h.rsplit_once(':') {
        Some((a, "")) if !a.contains(':') => (a, None),
        Some((a, p)) if !a.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => (a, Some(p)),
        _ => (h, None),
    }
}

/// The namespace segment of a SPIFFE ID of the form `.../ns/<ns>/...`.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    // The path after the trust domain; the first `ns` segment names it.
    let path = rest.get(rest.find('/')?..)?;
    let at = path.as_bytes().windows(4).position(|w| w == b"/ns/")?;
    let ns = path.get(at + 4..)?;
    let ns = &ns[..ns.find('/').unwrap_or(ns.len())];
    (!ns.is_empty()).then_some(ns)
}

impl<'a> Attrs<'a> {
    /// Attributes with the default [`PathOptions`].
    pub fn new(req: &'a Request, auth: Option<&'a Claims>, posture: Option<&'a Posture>) -> Self {
        Self::with_options(req, auth, posture, PathOptions::default())
    }

    /// Attributes, the path normalised per `opts`.
    pub fn with_options(
        req: &'a Request,
        auth: Option<&'a Claims>,
        posture: Option<&'a Posture>,
        opts: PathOptions,
    ) -> Self {
        let (path, path_error) = match normalize_target_path(&req.path, opts) {
            Ok(p) => (p, None),
            Err(e) => (Cow::Borrowed(req.path.as_str()), Some(e)),
        };
        let (host, host_name_len) = normalize_host(&req.host);
        let source_namespace = req.source.principal.as_deref().and_then(spiffe_namespace);
        Attrs {
            req,
            source_namespace,
            destination_namespace: req
                .destination
                .principal
                .as_deref()
                .and_then(spiffe_namespace),
            path_hash: hash_str(&path),
            host_hash: hash_str(&host),
            host_name_hash: hash_str(host.get(..host_name_len).unwrap_or(&host)),
            path,
            path_error,
            host,
            host_name_len,
            auth,
            posture,
            hashed: Hashed {
                source_principal: req.source.principal.as_deref().map(HStr::new),
                source_namespace: source_namespace.map(HStr::new),
                destination_principal: req.destination.principal.as_deref().map(HStr::new),
                method: HStr::new(&req.method),
                auth_principal: auth.map(|c| HStr::new(&c.principal)),
            },
            rego_input: std::cell::OnceCell::new(),
        }
    }

    #[inline]
    pub(crate) fn path_hashed(&self) -> HStr<'_> {
        HStr {
            s: &self.path,
            h: self.path_hash,
        }
    }

    #[inline]
    pub(crate) fn host_hashed(&self) -> HStr<'_> {
        HStr {
            s: &self.host,
            h: self.host_hash,
        }
    }

    #[inline]
    pub(crate) fn host_name_hashed(&self) -> HStr<'_> {
        HStr {
            s: self.host_without_port(),
            h: self.host_name_hash,
        }
    }

    /// The normalised host with its port, if it has one.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The normalised host without its port.
    pub fn host_without_port(&self) -> &str {
        self.host.get(..self.host_name_len).unwrap_or(&self.host)
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
        // The normalised path with the query as sent: what the app receives.
        let query = r
            .path
            .split('#')
            .next()
            .and_then(|p| p.split_once('?'))
            .map(|(_, q)| q);
        let full_path = match query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.to_string(),
        };
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
                "path": self.path.as_ref(),
                "full_path": full_path,
                "raw_path": r.path,
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
        assert_eq!(spiffe_namespace("spiffe://td/ns"), None);
        assert_eq!(spiffe_namespace("spiffe://td/ns/"), None);
        assert_eq!(spiffe_namespace("spiffe://td/x/ns//y"), None);
        assert_eq!(spiffe_namespace("spiffe://td/ns/ns/x"), Some("ns"));
        assert_eq!(spiffe_namespace("spiffe://td/a/ns/b"), Some("b"));
        assert_eq!(spiffe_namespace("spiffe://td/nsx/a/ns/b"), Some("b"));
        assert_eq!(spiffe_namespace("spiffe://td"), None);
        let mut r = Request {
            host: "api.example.com:8443".into(),
            path: "/a/b?x=1".into(),
            ..Request::default()
        };
        let a = Attrs::new(&r, None, None);
        assert_eq!(a.host_without_port(), "api.example.com");
        assert_eq!(a.path, "/a/b");
        r.host = "[::1]:80".into();
        assert_eq!(Attrs::new(&r, None, None).host_without_port(), "[::1]");
        for (raw, host, name) in [
            (
                "API.Example.COM:08443",
                "api.example.com:8443",
                "api.example.com",
            ),
            ("api.example.com.", "api.example.com", "api.example.com"),
            (
                "api.example.com.:80",
                "api.example.com:80",
                "api.example.com",
            ),
            ("api:", "api", "api"),
            ("[::1]:0080", "[::1]:80", "[::1]"),
            ("[::1]", "[::1]", "[::1]"),
            ("api:99999", "api:99999", "api"),
            ("api:x", "api:x", "api:x"),
            ("", "", ""),
        ] {
            r.host = raw.into();
            let a = Attrs::new(&r, None, None);
            assert_eq!((a.host(), a.host_without_port()), (host, name), "{raw}");
        }
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
