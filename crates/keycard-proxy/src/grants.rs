//! Just-in-time grants: time-boxed exceptions to an authorization policy,
//! read from a watched file (the `grants.json` an agent writes from the
//! server's `/v1/grants`).
//!
//! ```json
//! {"grants": [{"id": "g-1", "kind": "exception", "status": "active",
//!   "policy": "prod/deny-writes", "rule": "*",
//!   "resource": "spiffe://example.org/ns/prod/sa/oncall-*",
//!   "expires_at": 1767225600}]}
//! ```
//!
//! - `policy` is the policy's name as decisions name it (`namespace/name`,
//!   or `name` for a policy without a namespace).
//! - `rule` is `*` (every rule), a rule id as decisions name it (`rules[N]`
//!   or the rule's `name`), or a bare index `N` for `rules[N]`.
//! - `resource` is the source principal (the peer's SPIFFE ID): exact, or
//!   a prefix ending in `*`.
//!
//! An active grant (status `active`, decided before `expires_at`, Unix
//! seconds) for a request's source principal:
//!
//! - exempts it from that DENY policy's covered rules: the request is
//!   decided as if they did not match (another matching rule, or another
//!   DENY policy, still denies; a Rego failure still fails closed);
//! - admits it at that ALLOW policy when none of the policy's rules match,
//!   as if the granted rule matched (the rule's own conditions are not
//!   checked: the grant waives the policy for that principal).
//!
//! A decision a grant let through has reason `allowed_by_grant`, names the
//! policy and rule the grant applied to, and carries the grant id (in the
//! decision's `grant` and `detail`, so the decision log shows it). Expiry
//! is checked at every decision; no reload is needed. Grants of other
//! kinds (API roles) and grants that are `pending` or `expired` do
//! nothing. Grants do not apply to JWT subjects.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::files::FileError;

/// One exception grant in force until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: Arc<str>,
    /// The policy, as decisions name it.
    pub policy: String,
    /// The rule id, or `None` for every rule.
    pub rule: Option<String>,
    /// The source principal, or a prefix of it when `prefix`.
    pub resource: String,
    pub prefix: bool,
    /// Unix seconds; the grant applies strictly before.
    pub expires_at: i64,
}

impl Grant {
    /// Whether it covers `rule` of `policy`.
    pub fn covers(&self, policy: &str, rule: &str) -> bool {
        self.policy == policy && self.rule.as_deref().is_none_or(|r| r == rule)
    }

    /// Whether it is in force at `now` (Unix seconds).
    pub fn active_at(&self, now: i64) -> bool {
        now < self.expires_at
    }

    /// `grant <id>` and what it applies to, for decisions' detail.
    pub fn describe(&self) -> String {
        format!(
            "grant {}: exception to {}/{} for {}{}",
            self.id,
            self.policy,
            self.rule.as_deref().unwrap_or("*"),
            self.resource,
            if self.prefix { "*" } else { "" }
        )
    }
}

fn str_field<'a>(g: &'a Value, name: &str) -> Option<&'a str> {
    g.get(name).and_then(Value::as_str)
}

/// The active exception grants of a file, by source principal.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    exact: HashMap<String, Vec<Grant>>,
    prefixes: Vec<Grant>,
    /// Grants in the file that do nothing here (other kinds, not active).
    pub ignored: usize,
}

impl Grants {
    /// Parses a grants file (JSON, or YAML of the same shape). Every
    /// malformed grant is an error naming its index and field.
    pub fn parse(path: &str, text: &str) -> Result<Self, FileError> {
        let err = |message: String| FileError {
            path: path.to_string(),
            message,
        };
        let doc: Value = if text.trim().is_empty() {
            Value::Object(Default::default())
        } else if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| err(e.to_string()))?
        } else {
            yaml_serde::from_str(text).map_err(|e| err(e.to_string()))?
        };
        let Some(top) = doc.as_object() else {
            return Err(err("expected an object with `grants`".into()));
        };
        let list = match top.get("grants") {
            None | Some(Value::Null) => return Ok(Grants::default()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(err("grants: expected a list".into())),
        };
        let mut out = Grants::default();
        for (i, g) in list.iter().enumerate() {
            let field = |name: &str| {
                str_field(g, name)
                    .ok_or_else(|| err(format!("grants[{i}].{name}: expected a string")))
            };
            if !g.is_object() {
                return Err(err(format!("grants[{i}]: expected an object")));
            }
            let kind = field("kind")?;
            let status = field("status")?;
            if !matches!(status, "active" | "pending" | "expired") {
                return Err(err(format!(
                    "grants[{i}].status: {status:?} is not active, pending or expired"
                )));
            }
            if kind != "exception" {
                out.ignored += 1;
                continue;
            }
            let id = field("id")?;
            let policy = field("policy")?;
            let rule = field("rule")?;
            let resource = field("resource")?;
            let expires_at = match g.get("expires_at") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_i64().ok_or_else(|| {
                    err(format!("grants[{i}].expires_at: expected Unix seconds"))
                })?),
            };
            if policy.is_empty() || resource.is_empty() {
                return Err(err(format!(
                    "grants[{i}]: policy and resource must not be empty"
                )));
            }
            // Only an active grant with an expiry is ever in force.
            let (true, Some(expires_at)) = (status == "active", expires_at) else {
                out.ignored += 1;
                continue;
            };
            let rule = match rule {
                "" | "*" => None,
                n if n.bytes().all(|b| b.is_ascii_digit()) => Some(format!("rules[{n}]")),
                r => Some(r.to_string()),
            };
            let (resource, prefix) = match resource.strip_suffix('*') {
                Some(p) => (p.to_string(), true),
                None => (resource.to_string(), false),
            };
            let grant = Grant {
                id: Arc::from(id),
                policy: policy.to_string(),
                rule,
                resource,
                prefix,
                expires_at,
            };
            if grant.prefix {
                out.prefixes.push(grant);
            } else {
                out.exact
                    .entry(grant.resource.clone())
                    .or_default()
                    .push(grant);
            }
        }
        Ok(out)
    }

    /// How many grants could apply (active, of the exception kind).
    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>() + self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// The grants in force at `now` for source `principal`.
    pub fn for_principal(&self, principal: &str, now: i64) -> Vec<&Grant> {
        let mut out: Vec<&Grant> = self
            .exact
            .get(principal)
            .into_iter()
            .flatten()
            .chain(
                self.prefixes
                    .iter()
                    .filter(|g| principal.starts_with(g.resource.as_str())),
            )
            .filter(|g| g.active_at(now))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
