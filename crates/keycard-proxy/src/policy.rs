//! The authorization model, shaped like Istio's AuthorizationPolicy, and its
//! compiler: Kubernetes-shaped YAML/JSON objects in, in-process matchers out.
//!
//! ```yaml
//! apiVersion: keycard.dev/v1
//! kind: AuthorizationPolicy
//! metadata: {name: api-readers, namespace: prod}
//! spec:
//!   action: ALLOW            # ALLOW (default), DENY or AUDIT
//!   mode: enforce            # enforce or audit (default: --default-mode)
//!   selector:                # which workloads (destinations); absent = all
//!     matchLabels: {app: api}
//!     spiffeIds: ["spiffe://example.org/ns/prod/sa/api"]
//!   rules:
//!   - name: readers          # optional; the rule id is rules[N] otherwise
//!     from:
//!     - source:
//!         principals: ["spiffe://example.org/ns/prod/sa/web"]
//!         notNamespaces: ["dev"]
//!         ipBlocks: ["10.0.0.0/8"]
//!         requestPrincipals: ["https://idp.example.com/*"]
//!     to:
//!     - operation: {methods: [GET], paths: ["/v1/*"], ports: ["8080"], hosts: ["api.*"]}
//!     when:
//!     - key: request.auth.claims[groups]
//!       values: [readers]
//!     - key: posture.device_health
//!       values: [healthy]
//!   rego: |                  # optional: data.<package>.match must be true too
//!     package team.api
//!     match if input.request.headers["x-tenant"] == "a"
//! ```
//!
//! Matching follows Istio: a policy matches when any rule matches; a rule
//! matches when its `from`, `to` and `when` all match; `from` (and `to`)
//! match when any listed source (operation) matches; a source matches when
//! every field it sets matches; a field matches when any value matches, a
//! `not` field when no value matches. Values are exact, `prefix*`,
//! `*suffix` or `*` (any non-empty value). An absent attribute matches no
//! positive field and every `not` field.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::matcher::{parse_port, CidrSet, FastSet, PatternError, StringSet};
use crate::rego::RegoMatcher;
use crate::request::Attrs;

/// API version and kind of a policy object.
pub const API_VERSION: &str = "keycard.dev/v1";
pub const KIND: &str = "AuthorizationPolicy";

/// What a matching policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Allow,
    Deny,
    /// Matching only marks the decision for audit logging.
    Audit,
}

/// Whether a policy's verdict is enforced or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Log and count "would deny", let the request through.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            _ => Err(format!("{s:?} is not a mode (enforce or audit)")),
        }
    }
}

/// A policy that cannot be compiled: the file, line and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    /// The field path, e.g. `spec.rules[0].from[1].source.ipBlocks[2]`.
    pub field: String,
    pub message: String,
}

/// A positive and a negative list of one attribute.
#[derive(Debug, Clone)]
struct Field<T> {
    pos: Option<T>,
    neg: Option<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            pos: None,
            neg: None,
        }
    }
}

impl<T> Field<T> {
    #[inline]
    fn check(&self, f: impl Fn(&T) -> bool) -> bool {
        self.pos.as_ref().is_none_or(&f) && self.neg.as_ref().is_none_or(|n| !f(n))
    }
    fn is_set(&self) -> bool {
        self.pos.is_some() || self.neg.is_some()
    }
}

#[derive(Debug, Clone, Default)]
struct Source {
    principals: Field<StringSet>,
    namespaces: Field<StringSet>,
    ip_blocks: Field<CidrSet>,
    remote_ip_blocks: Field<CidrSet>,
    request_principals: Field<StringSet>,
}

impl Source {
    fn matches(&self, a: &Attrs<'_>) -> bool {
        let h = &a.hashed;
        self.principals
            .check(|s| s.matches_hashed_opt(h.source_principal))
            && self
                .namespaces
                .check(|s| s.matches_hashed_opt(h.source_namespace))
            && self.ip_blocks.check(|c| c.contains_opt(a.req.source.ip))
            && self
                .remote_ip_blocks
                .check(|c| c.contains_opt(a.req.remote_ip.or(a.req.source.ip)))
            && self
                .request_principals
                .check(|s| s.matches_hashed_opt(h.auth_principal))
    }
}

#[derive(Debug, Clone, Default)]
struct Operation {
    hosts: Field<StringSet>,
    ports: Field<FastSet<u16>>,
    methods: Field<StringSet>,
    paths: Field<StringSet>,
}

impl Operation {
    fn matches(&self, a: &Attrs<'_>) -> bool {
        self.methods.check(|s| s.matches_hashed(a.hashed.method))
            && self.paths.check(|s| s.matches_hashed(a.path_hashed()))
            && self
                .ports
                .check(|p| a.req.destination.port.is_some_and(|x| p.contains(&x)))
            // Hosts: the normalised host matches with its port or without,
            // so `api.example.com` covers every port and
            // `api.example.com:8443` only that one.
            && self.hosts.check(|s| {
                s.matches_hashed(a.host_hashed()) || s.matches_hashed(a.host_name_hashed())
            })
    }
}

/// The attribute a `when` condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Header(String),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    DestinationPrincipal,
    ConnectionSni,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaim(Vec<String>),
    Posture(String),
}

impl Key {
    fn parse(s: &str) -> Result<Key, String> {
        let bracket = |prefix: &str| -> Option<Result<Vec<String>, String>> {
            let rest = s.strip_prefix(prefix)?;
            let mut parts = Vec::new();
            let mut rest = rest;
            while !rest.is_empty() {
                let Some(r) = rest.strip_prefix('[') else {
                    return Some(Err(format!("{s:?}: expected [name]")));
                };
                let Some(end) = r.find(']') else {
                    return Some(Err(format!("{s:?}: unclosed [")));
                };
                let name = &r[..end];
                if name.is_empty() {
                    return Some(Err(format!("{s:?}: empty []")));
                }
                parts.push(name.to_string());
                rest = &r[end + 1..];
            }
            if parts.is_empty() {
                return Some(Err(format!("{s:?}: expected [name]")));
            }
            Some(Ok(parts))
        };
        if let Some(p) = bracket("request.headers") {
            let p = p?;
            if p.len() != 1 {
                return Err(format!("{s:?}: one header name expected"));
            }
            return Ok(Key::Header(p[0].to_ascii_lowercase()));
        }
        if let Some(p) = bracket("request.auth.claims") {
            return Ok(Key::AuthClaim(p?));
        }
        if let Some(attr) = s.strip_prefix("posture.") {
            if attr.is_empty()
                || !attr
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!("{s:?}: posture attribute names are [A-Za-z0-9_-]+"));
            }
            return Ok(Key::Posture(attr.to_string()));
        }
        Ok(match s {
            "source.ip" => Key::SourceIp,
            "remote.ip" => Key::RemoteIp,
            "source.namespace" => Key::SourceNamespace,
            "source.principal" => Key::SourcePrincipal,
            "destination.ip" => Key::DestinationIp,
            "destination.port" => Key::DestinationPort,
            "destination.principal" => Key::DestinationPrincipal,
            "connection.sni" => Key::ConnectionSni,
            "request.auth.principal" => Key::AuthPrincipal,
            "request.auth.audiences" => Key::AuthAudiences,
            "request.auth.presenter" => Key::AuthPresenter,
            _ => {
                return Err(format!(
                    "unknown key {s:?} (request.headers[NAME], request.auth.claims[NAME], request.auth.principal, request.auth.audiences, request.auth.presenter, source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port, destination.principal, connection.sni, posture.NAME)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone)]
enum Values {
    Strings(StringSet),
    Cidrs(CidrSet),
    Ports(FastSet<u16>),
}

impl Values {
    fn compile(key: &Key, vals: &[String]) -> Result<Values, PatternError> {
        Ok(match key {
            Key::SourceIp | Key::RemoteIp | Key::DestinationIp => {
                Values::Cidrs(CidrSet::compile(vals)?)
            }
            Key::DestinationPort => Values::Ports(
                vals.iter()
                    .map(|v| parse_port(v))
                    .collect::<Result<_, _>>()?,
            ),
            _ => Values::Strings(StringSet::compile(vals, false)?),
        })
    }

    fn matches(&self, key: &Key, a: &Attrs<'_>) -> bool {
        match (self, key) {
            (Values::Cidrs(c), Key::SourceIp) => c.contains_opt(a.req.source.ip),
            (Values::Cidrs(c), Key::RemoteIp) => {
                c.contains_opt(a.req.remote_ip.or(a.req.source.ip))
            }
            (Values::Cidrs(c), Key::DestinationIp) => c.contains_opt(a.req.destination.ip),
            (Values::Ports(p), Key::DestinationPort) => {
                a.req.destination.port.is_some_and(|x| p.contains(&x))
            }
            (Values::Strings(s), k) => a.with_values(k, |v| s.matches(v)),
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Condition {
    key: Key,
    values: Field<Values>,
}

impl Condition {
    fn matches(&self, a: &Attrs<'_>) -> bool {
        self.values.check(|v| v.matches(&self.key, a))
    }
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: Arc<str>,
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
    /// This rule's bits in the policy set's indexes: the principal bit
    /// when every source it lists names principals (the rule can match
    /// only when the request's principal matches one of them), the path
    /// bit when every operation names paths (see [`crate::PolicySet`]).
    pub(crate) guards: [Option<u32>; 2],
}

impl Rule {
    /// The positive principal sets of every source, when each source has
    /// one: a match needs the request principal in one of them.
    pub(crate) fn principal_sets(&self) -> Option<Vec<&StringSet>> {
        if self.from.is_empty() {
            return None;
        }
        self.from
            .iter()
            .map(|s| s.principals.pos.as_ref())
            .collect()
    }

    /// The positive path sets of every operation, when each operation
    /// has one: a match needs the request path in one of them.
    pub(crate) fn path_sets(&self) -> Option<Vec<&StringSet>> {
        if self.to.is_empty() {
            return None;
        }
        self.to.iter().map(|o| o.paths.pos.as_ref()).collect()
    }

    /// Whether the indexes let this rule match at all.
    #[inline]
    fn admitted(&self, candidates: Option<&[u64]>) -> bool {
        let Some(bits) = candidates else {
            return true;
        };
        self.guards.iter().flatten().all(|g| {
            let g = *g as usize;
            bits.get(g / 64).is_some_and(|w| w >> (g % 64) & 1 == 1)
        })
    }

    fn matches(&self, a: &Attrs<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a)))
            && self.when.iter().all(|c| c.matches(a))
    }
}

#[derive(Debug, Clone, Default)]
struct Selector {
    labels: Vec<(String, String)>,
    spiffe_ids: Option<StringSet>,
}

/// One compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `namespace/name`, or `name` for a policy without a namespace.
    pub name: Arc<str>,
    pub file: Arc<str>,
    pub line: usize,
    pub action: Action,
    pub mode: Mode,
    namespace: Option<String>,
    selector: Option<Selector>,
    rules: Vec<Rule>,
    rego: Option<RegoMatcher>,
    /// The rule id reported when a policy without rules matches by Rego.
    rego_rule_id: Arc<str>,
}

/// The result of matching one policy against a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyMatch {
    /// The policy does not apply to the destination workload.
    NotApplicable,
    /// It applies but no rule matched.
    NoMatch,
    /// This rule matched.
    Matched(Arc<str>),
    /// The Rego rule failed (error or time limit); callers fail closed.
    RegoError(Arc<str>, String),
}

impl Policy {
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub(crate) fn rules_mut(&mut self) -> &mut [Rule] {
        &mut self.rules
    }

    /// Whether the policy applies to the request's destination workload.
    pub fn applies(&self, a: &Attrs<'_>) -> bool {
        if let Some(ns) = &self.namespace {
            if a.destination_namespace != Some(ns.as_str()) {
                return false;
            }
        }
        let Some(sel) = &self.selector else {
            return true;
        };
        sel.labels
            .iter()
            .all(|(k, v)| a.req.destination_labels.get(k) == Some(v))
            && sel
                .spiffe_ids
                .as_ref()
                .is_none_or(|s| s.matches_hashed_opt(a.hashed.destination_principal))
    }

    /// Match the policy against a request.
    pub fn evaluate(&self, a: &Attrs<'_>) -> PolicyMatch {
        match self.evaluate_ref(a, None) {
            Matching::NotApplicable => PolicyMatch::NotApplicable,
            Matching::NoMatch => PolicyMatch::NoMatch,
            Matching::Matched(r) => PolicyMatch::Matched(r.clone()),
            Matching::RegoError(r, e) => PolicyMatch::RegoError(r.clone(), e),
        }
    }

    /// [`Policy::evaluate`] without reference counting, for the engine;
    /// `candidates` (the principal index's bits) skips rules that cannot
    /// match.
    /// The first matching rule that `skip` does not name (`candidates` as
    /// in [`Policy::evaluate_ref`]; Rego not evaluated).
    pub(crate) fn match_besides(
        &self,
        a: &Attrs<'_>,
        candidates: Option<&[u64]>,
        skip: impl Fn(&str) -> bool,
    ) -> Option<&Arc<str>> {
        self.rules
            .iter()
            .find(|r| !skip(&r.id) && r.admitted(candidates) && r.matches(a))
            .map(|r| &r.id)
    }

    pub(crate) fn evaluate_ref(&self, a: &Attrs<'_>, candidates: Option<&[u64]>) -> Matching<'_> {
        if !self.applies(a) {
            return Matching::NotApplicable;
        }
        let rule = if self.rules.is_empty() {
            // Istio: a policy without rules matches nothing; keycard: unless
            // it has a Rego rule, which then decides alone.
            if self.rego.is_none() {
                return Matching::NoMatch;
            }
            &self.rego_rule_id
        } else {
            match self
                .rules
                .iter()
                .find(|r| r.admitted(candidates) && r.matches(a))
            {
                Some(r) => &r.id,
                None => return Matching::NoMatch,
            }
        };
        match &self.rego {
            None => Matching::Matched(rule),
            Some(rego) => match rego.evaluate(a) {
                Ok(true) => Matching::Matched(rule),
                Ok(false) => Matching::NoMatch,
                Err(e) => Matching::RegoError(rule, e),
            },
        }
    }
}

/// [`PolicyMatch`] borrowing the rule id.
pub(crate) enum Matching<'p> {
    NotApplicable,
    NoMatch,
    Matched(&'p Arc<str>),
    RegoError(&'p Arc<str>, String),
}

/// Compiles policy objects; collects every error instead of stopping at the first.
pub(crate) struct Compiler<'a> {
    pub file: &'a str,
    pub line: usize,
    pub default_mode: Mode,
    pub errors: Vec<PolicyError>,
}

impl Compiler<'_> {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(PolicyError {
            file: self.file.to_string(),
            line: self.line,
            field: field.into(),
            message: message.into(),
        });
    }

    fn obj<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            Value::Null => None,
            _ => {
                self.err(path, "expected a mapping");
                None
            }
        }
    }

    fn known(&mut self, m: &Map<String, Value>, path: &str, allowed: &[&str]) {
        for k in m.keys() {
            if !allowed.contains(&k.as_str()) {
                self.err(
                    format!("{path}.{k}"),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                );
            }
        }
    }

    fn strings(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<Vec<String>> {
        let v = m.get(key)?;
        let path = format!("{path}.{key}");
        let Value::Array(items) = v else {
            if !v.is_null() {
                self.err(path, "expected a list of strings");
            }
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) => out.push(s.clone()),
                Value::Number(n) => out.push(n.to_string()),
                _ => self.err(format!("{path}[{i}]"), "expected a string"),
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(out)
        }
    }

    fn string_field(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
        ci: bool,
    ) -> Field<StringSet> {
        let not_key = format!("not{}{}", key[..1].to_ascii_uppercase(), &key[1..]);
        let mut f = Field::default();
        for (k, slot) in [(key, &mut f.pos), (not_key.as_str(), &mut f.neg)] {
            if let Some(vals) = self.strings(m, k, path) {
                match StringSet::compile(&vals, ci) {
                    Ok(s) => *slot = Some(s),
                    Err(e) => self.err(format!("{path}.{k}"), e.to_string()),
                }
            }
        }
        f
    }

    fn cidr_field(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Field<CidrSet> {
        let not_key = format!("not{}{}", key[..1].to_ascii_uppercase(), &key[1..]);
        let mut f = Field::default();
        for (k, slot) in [(key, &mut f.pos), (not_key.as_str(), &mut f.neg)] {
            if let Some(vals) = self.strings(m, k, path) {
                match CidrSet::compile(&vals) {
                    Ok(s) => *slot = Some(s),
                    Err(e) => self.err(format!("{path}.{k}"), e.to_string()),
                }
            }
        }
        f
    }

    fn source(&mut self, v: &Value, path: &str) -> Source {
        let mut s = Source::default();
        let Some(m) = self.obj(v, path) else {
            return s;
        };
        self.known(
            m,
            path,
            &[
                "principals",
                "notPrincipals",
                "namespaces",
                "notNamespaces",
                "ipBlocks",
                "notIpBlocks",
                "remoteIpBlocks",
                "notRemoteIpBlocks",
                "requestPrincipals",
                "notRequestPrincipals",
            ],
        );
        s.principals = self.string_field(m, path, "principals", false);
        s.namespaces = self.string_field(m, path, "namespaces", false);
        s.ip_blocks = self.cidr_field(m, path, "ipBlocks");
        s.remote_ip_blocks = self.cidr_field(m, path, "remoteIpBlocks");
        s.request_principals = self.string_field(m, path, "requestPrincipals", false);
        if !(s.principals.is_set()
            || s.namespaces.is_set()
            || s.ip_blocks.is_set()
            || s.remote_ip_blocks.is_set()
            || s.request_principals.is_set())
        {
            self.err(path, "a source must set at least one field");
        }
        s
    }

    fn operation(&mut self, v: &Value, path: &str) -> Operation {
        let mut o = Operation::default();
        let Some(m) = self.obj(v, path) else {
            return o;
        };
        self.known(
            m,
            path,
            &[
                "hosts",
                "notHosts",
                "ports",
                "notPorts",
                "methods",
                "notMethods",
                "paths",
                "notPaths",
            ],
        );
        o.hosts = self.string_field(m, path, "hosts", true);
        o.methods = self.string_field(m, path, "methods", false);
        o.paths = self.string_field(m, path, "paths", false);
        for (k, slot) in [("ports", &mut o.ports.pos), ("notPorts", &mut o.ports.neg)] {
            if let Some(vals) = self.strings(m, k, path) {
                let mut set = FastSet::default();
                for (i, v) in vals.iter().enumerate() {
                    match parse_port(v) {
                        Ok(p) => {
                            set.insert(p);
                        }
                        Err(e) => self.err(format!("{path}.{k}[{i}]"), e.to_string()),
                    }
                }
                *slot = Some(set);
            }
        }
        if !(o.hosts.is_set() || o.methods.is_set() || o.paths.is_set() || o.ports.is_set()) {
            self.err(path, "an operation must set at least one field");
        }
        o
    }

    fn condition(&mut self, v: &Value, path: &str) -> Option<Condition> {
        let m = self.obj(v, path)?;
        self.known(m, path, &["key", "values", "notValues"]);
        let key = match m.get("key") {
            Some(Value::String(k)) => match Key::parse(k) {
                Ok(k) => k,
                Err(e) => {
                    self.err(format!("{path}.key"), e);
                    return None;
                }
            },
            _ => {
                self.err(format!("{path}.key"), "required string");
                return None;
            }
        };
        let mut values = Field::default();
        for (k, slot) in [("values", &mut values.pos), ("notValues", &mut values.neg)] {
            if let Some(vals) = self.strings(m, k, path) {
                match Values::compile(&key, &vals) {
                    Ok(v) => *slot = Some(v),
                    Err(e) => self.err(format!("{path}.{k}"), e.to_string()),
                }
            }
        }
        if !values.is_set() {
            self.err(path, "a condition needs values or notValues");
        }
        Some(Condition { key, values })
    }

    fn list<'v>(&mut self, m: &'v Map<String, Value>, key: &str, path: &str) -> &'v [Value] {
        match m.get(key) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &[],
            Some(_) => {
                self.err(format!("{path}.{key}"), "expected a list");
                &[]
            }
        }
    }

    fn rule(&mut self, v: &Value, path: &str, index: usize) -> Rule {
        let mut rule = Rule {
            id: Arc::from(format!("rules[{index}]")),
            from: Vec::new(),
            to: Vec::new(),
            when: Vec::new(),
            guards: [None; 2],
        };
        let Some(m) = self.obj(v, path) else {
            return rule;
        };
        self.known(m, path, &["name", "from", "to", "when"]);
        match m.get("name") {
            Some(Value::String(n)) if !n.is_empty() => rule.id = Arc::from(n.as_str()),
            None => {}
            Some(_) => self.err(format!("{path}.name"), "expected a non-empty string"),
        }
        for (i, f) in self.list(m, "from", path).iter().enumerate() {
            let p = format!("{path}.from[{i}]");
            if let Some(fm) = self.obj(f, &p) {
                self.known(fm, &p, &["source"]);
                match fm.get("source") {
                    Some(s) => {
                        let src = self.source(s, &format!("{p}.source"));
                        rule.from.push(src);
                    }
                    None => self.err(format!("{p}.source"), "required"),
                }
            }
        }
        for (i, t) in self.list(m, "to", path).iter().enumerate() {
            let p = format!("{path}.to[{i}]");
            if let Some(tm) = self.obj(t, &p) {
                self.known(tm, &p, &["operation"]);
                match tm.get("operation") {
                    Some(o) => {
                        let op = self.operation(o, &format!("{p}.operation"));
                        rule.to.push(op);
                    }
                    None => self.err(format!("{p}.operation"), "required"),
                }
            }
        }
        for (i, c) in self.list(m, "when", path).iter().enumerate() {
            if let Some(c) = self.condition(c, &format!("{path}.when[{i}]")) {
                rule.when.push(c);
            }
        }
        rule
    }

    fn selector(&mut self, v: &Value) -> Option<Selector> {
        let path = "spec.selector";
        let m = self.obj(v, path)?;
        self.known(m, path, &["matchLabels", "spiffeIds"]);
        let mut sel = Selector::default();
        if let Some(l) = m.get("matchLabels") {
            if let Some(lm) = self.obj(l, "spec.selector.matchLabels") {
                for (k, v) in lm {
                    match v {
                        Value::String(s) => sel.labels.push((k.clone(), s.clone())),
                        _ => self.err(
                            format!("spec.selector.matchLabels.{k}"),
                            "expected a string",
                        ),
                    }
                }
            }
        }
        if let Some(ids) = self.strings(m, "spiffeIds", path) {
            for (i, id) in ids.iter().enumerate() {
                let bare = id.trim_end_matches('*');
                if !bare.starts_with("spiffe://") && id != "*" {
                    self.err(
                        format!("spec.selector.spiffeIds[{i}]"),
                        "expected a SPIFFE ID (spiffe://...)",
                    );
                }
            }
            match StringSet::compile(&ids, false) {
                Ok(s) => sel.spiffe_ids = Some(s),
                Err(e) => self.err("spec.selector.spiffeIds", e.to_string()),
            }
        }
        Some(sel)
    }

    /// Compile one policy object.
    pub fn policy(&mut self, obj: &Value) -> Option<Policy> {
        let before = self.errors.len();
        let m = self.obj(obj, "(object)")?;
        match m.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {}
            other => self.err(
                "apiVersion",
                format!("expected {API_VERSION}, found {other:?}"),
            ),
        }
        match m.get("kind").and_then(Value::as_str) {
            Some(KIND) => {}
            other => self.err("kind", format!("expected {KIND}, found {other:?}")),
        }
        let meta = m.get("metadata").and_then(Value::as_object);
        let name = meta.and_then(|md| md.get("name")).and_then(Value::as_str);
        let namespace = meta
            .and_then(|md| md.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            self.err("metadata.name", "required");
            return None;
        };
        let full = match &namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_string(),
        };
        let empty = Value::Object(Map::new());
        let spec_v = m.get("spec").unwrap_or(&empty);
        let spec = self.obj(spec_v, "spec").cloned().unwrap_or_default();
        self.known(
            &spec,
            "spec",
            &["action", "mode", "selector", "rules", "rego"],
        );
        let action = match spec.get("action") {
            None => Action::Allow,
            Some(Value::String(a)) => match a.as_str() {
                "ALLOW" => Action::Allow,
                "DENY" => Action::Deny,
                "AUDIT" => Action::Audit,
                other => {
                    self.err(
                        "spec.action",
                        format!("{other:?}: expected ALLOW, DENY or AUDIT"),
                    );
                    Action::Allow
                }
            },
            Some(_) => {
                self.err("spec.action", "expected a string");
                Action::Allow
            }
        };
        let mode = match spec.get("mode") {
            None => self.default_mode,
            Some(Value::String(s)) => match s.parse() {
                Ok(m) => m,
                Err(e) => {
                    self.err("spec.mode", e);
                    self.default_mode
                }
            },
            Some(_) => {
                self.err("spec.mode", "expected enforce or audit");
                self.default_mode
            }
        };
        let selector = spec.get("selector").and_then(|s| self.selector(s));
        let mut rules = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in self.list(&spec, "rules", "spec").iter().enumerate() {
            let rule = self.rule(r, &format!("spec.rules[{i}]"), i);
            if !seen.insert(rule.id.clone()) {
                self.err(
                    format!("spec.rules[{i}].name"),
                    format!("duplicate rule name {:?}", rule.id),
                );
            }
            rules.push(rule);
        }
        let rego = match spec.get("rego") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => {
                match RegoMatcher::compile(&format!("{}#{full}", self.file), text) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.err("spec.rego", e);
                        None
                    }
                }
            }
            Some(_) => {
                self.err("spec.rego", "expected a Rego module as a string");
                None
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(Policy {
            name: Arc::from(full),
            file: Arc::from(self.file),
            line: self.line,
            action,
            mode,
            namespace,
            selector,
            rules,
            rego,
            rego_rule_id: Arc::from("rego"),
        })
    }
}
