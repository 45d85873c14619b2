//! The policy set and its evaluation order.
//!
//! For one request:
//!
//! 1. (In [`crate::Authorizer`]) a revoked source identity or certificate
//!    is denied (`revoked`); an invalid bearer JWT is denied (`jwt_invalid`).
//! 2. DENY policies that apply to the destination are matched first: the
//!    first enforcing one that matches denies (`denied_by_policy`).
//! 3. If any enforcing ALLOW policy applies to the destination, the request
//!    is denied unless one of them matches (`no_allow_match`); the first
//!    match allows (`allowed_by_policy`). With no ALLOW policy applying, the
//!    request is allowed (`no_policy`), as in Istio; a mesh-wide ALLOW
//!    policy without rules turns that into default deny.
//! 4. Policies in audit mode take part in a shadow evaluation of the same
//!    steps as if they were enforced. When the enforced verdict allows and
//!    the shadow verdict denies, the request goes through with outcome
//!    `audit` and reason `audit_would_deny`, naming the audit-mode policy.
//! 5. AUDIT-action policies never change the verdict; the ones that match
//!    are listed in the decision so it is marked for audit logging.
//!
//! Policies are visited in name order, so the deciding policy is stable.
//!
//! Just-in-time grants ([`crate::grants`]) change steps 2 and 3 for the
//! principals they name: see [`PolicySet::evaluate_with_grants`].

use std::sync::Arc;

use keycard_core::Outcome;
use serde::Serialize;

use crate::grants::Grant;
use crate::matcher::PatternIndex;
use crate::policy::{Action, Matching, Mode, Policy};
use crate::request::Attrs;

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// An enforcing DENY policy matched.
    DeniedByPolicy,
    /// ALLOW policies apply to the workload and none matched.
    NoAllowMatch,
    /// An ALLOW policy matched.
    AllowedByPolicy,
    /// No ALLOW policy applies and no DENY policy matched.
    NoPolicy,
    /// An audit-mode policy would have denied; let through.
    AuditWouldDeny,
    /// The source identity or certificate is revoked.
    Revoked,
    /// The bearer JWT is invalid (signature, expiry, issuer, audience ...).
    JwtInvalid,
    /// A just-in-time grant let it through (the decision names it).
    AllowedByGrant,
    /// A policy's Rego rule failed; the decision fails closed.
    RegoError,
    /// The request could not be read (ext_authz: missing attributes).
    BadRequest,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::DeniedByPolicy => "denied_by_policy",
            Reason::NoAllowMatch => "no_allow_match",
            Reason::AllowedByPolicy => "allowed_by_policy",
            Reason::NoPolicy => "no_policy",
            Reason::AuditWouldDeny => "audit_would_deny",
            Reason::Revoked => "revoked",
            Reason::JwtInvalid => "jwt_invalid",
            Reason::AllowedByGrant => "allowed_by_grant",
            Reason::RegoError => "rego_error",
            Reason::BadRequest => "bad_request",
        }
    }
}

/// One authorization decision, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDecision {
    /// allow, deny, or audit (would deny; let through).
    pub outcome: Outcome,
    pub reason: Reason,
    /// The deciding policy (`namespace/name`), when a policy decided.
    pub policy: Option<Arc<str>>,
    /// The deciding rule (`rules[N]` or its name), when one matched.
    pub rule: Option<Arc<str>>,
    /// The mode of the deciding policy (enforce when none decided).
    pub mode: Mode,
    /// AUDIT-action policies that matched: log this decision.
    pub audit_policies: Vec<Arc<str>>,
    /// More words for people (e.g. why a JWT was refused); never secrets.
    pub detail: Option<String>,
    /// The just-in-time grant that let the request through, if one did.
    pub grant: Option<Arc<str>>,
}

impl AuthzDecision {
    pub fn new(outcome: Outcome, reason: Reason) -> Self {
        AuthzDecision {
            outcome,
            reason,
            policy: None,
            rule: None,
            mode: Mode::Enforce,
            audit_policies: Vec::new(),
            detail: None,
            grant: None,
        }
    }

    /// Whether the request may go through (allow or audit).
    pub fn is_allowed(&self) -> bool {
        self.outcome != Outcome::Deny
    }

    /// `<policy>/<rule>: <reason>`, for the x-keycard-reason header.
    pub fn reason_header(&self) -> String {
        let policy = self.policy.as_deref().unwrap_or("-");
        let rule = self.rule.as_deref().unwrap_or("-");
        format!("{policy}/{rule}: {}", self.reason.as_str())
    }

    /// The shared decision type of keycard-core.
    pub fn to_core(&self) -> keycard_core::Decision {
        keycard_core::Decision {
            outcome: self.outcome,
            policy: self.policy.as_deref().unwrap_or("").to_string(),
            rule: self.rule.as_deref().unwrap_or("").to_string(),
            reason: match &self.detail {
                Some(d) => format!("{}: {d}", self.reason.as_str()),
                None => self.reason.as_str().to_string(),
            },
        }
    }
}

/// Compiled policies, grouped by action. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    deny: Vec<Policy>,
    allow: Vec<Policy>,
    audit: Vec<Policy>,
    /// Rules whose every source names principals, by those principals,
    /// and rules whose every operation names paths, by those paths: one
    /// lookup in each per request says which rules can match, and the
    /// rest are skipped without being tried.
    principals: PatternIndex,
    paths: PatternIndex,
    /// How many bits the two indexes hand out.
    guarded: usize,
    /// Files the set was loaded from.
    pub files: Vec<String>,
}

/// A grant that changed the verdict, and what it applied to.
struct Granted<'g> {
    policy: Arc<str>,
    rule: Option<Arc<str>>,
    mode: Mode,
    grant: &'g Grant,
}

/// A verdict under construction: the first policy/rule that decided.
/// Borrowed until the decision is built, so that visiting a policy costs
/// no reference counting.
#[derive(Clone, Copy)]
struct Hit<'p> {
    policy: &'p Policy,
    rule: Option<&'p Arc<str>>,
}

impl PolicySet {
    pub fn new(mut policies: Vec<Policy>) -> Self {
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut set = PolicySet::default();
        for mut p in policies {
            for r in p.rules_mut() {
                let mut guards = [None; 2];
                for (slot, (sets, index)) in guards.iter_mut().zip([
                    (r.principal_sets(), &mut set.principals),
                    (r.path_sets(), &mut set.paths),
                ]) {
                    let (Some(sets), Ok(id)) = (sets, u32::try_from(set.guarded)) else {
                        continue;
                    };
                    for s in sets {
                        index.add(s, id);
                    }
                    *slot = Some(id);
                    set.guarded += 1;
                }
                r.guards = guards;
            }
            match p.action {
                Action::Deny => set.deny.push(p),
                Action::Allow => set.allow.push(p),
                Action::Audit => set.audit.push(p),
            }
        }
        set.principals.finish();
        set.paths.finish();
        set
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.deny.iter().chain(&self.allow).chain(&self.audit)
    }

    pub fn len(&self) -> usize {
        self.deny.len() + self.allow.len() + self.audit.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rule_count(&self) -> usize {
        self.policies().map(Policy::rule_count).sum()
    }

    /// Decide one request (steps 2-5 of the module docs). A request
    /// whose path could not be normalised is denied (`bad_request`).
    pub fn evaluate(&self, a: &Attrs<'_>) -> AuthzDecision {
        self.evaluate_inner(a, &[], &mut None)
    }

    /// [`PolicySet::evaluate`] with the grants in force for the request's
    /// source principal: a DENY policy's matching rules that a grant
    /// covers do not deny, and an ALLOW policy that applies and has a
    /// grant admits the request when no rule of any ALLOW policy matched.
    /// When a grant let the request through, the decision names the
    /// policy and rule it applied to and the grant
    /// ([`Reason::AllowedByGrant`] when allowed).
    pub fn evaluate_with_grants(&self, a: &Attrs<'_>, grants: &[&Grant]) -> AuthzDecision {
        let mut granted = None;
        let mut d = self.evaluate_inner(a, grants, &mut granted);
        if let Some(g) = granted.filter(|_| d.outcome != Outcome::Deny) {
            if d.outcome == Outcome::Allow {
                d.reason = Reason::AllowedByGrant;
            }
            d.policy = Some(g.policy);
            d.rule = g.rule;
            d.mode = g.mode;
            d.grant = Some(g.grant.id.clone());
            let what = g.grant.describe();
            d.detail = Some(match d.detail.take() {
                Some(other) => format!("{what}; {other}"),
                None => what,
            });
        }
        d
    }

    fn evaluate_inner<'g>(
        &self,
        a: &Attrs<'_>,
        grants: &[&'g Grant],
        granted: &mut Option<Granted<'g>>,
    ) -> AuthzDecision {
        if let Some(e) = &a.path_error {
            let mut d = AuthzDecision::new(Outcome::Deny, Reason::BadRequest);
            d.detail = Some(format!("path: {e}"));
            return d;
        }
        // Which guarded rules can match this request.
        let mut inline = [0u64; 4];
        let mut heap = Vec::new();
        let words = self.guarded.div_ceil(64);
        let candidates: Option<&[u64]> = if self.guarded == 0 {
            None
        } else {
            let bits: &mut [u64] = if words <= inline.len() {
                &mut inline[..words]
            } else {
                heap.resize(words, 0);
                &mut heap
            };
            if let Some(p) = a.hashed.source_principal {
                self.principals.mark(p, bits);
            }
            self.paths.mark(a.path_hashed(), bits);
            Some(bits)
        };
        // DENY policies.
        let mut shadow_deny: Option<(Hit<'_>, Option<String>)> = None;
        for p in &self.deny {
            let (mut rule, rego_error) = match p.evaluate_ref(a, candidates) {
                Matching::Matched(rule) => (rule, None),
                // Fail closed: a DENY policy whose Rego failed counts as matching.
                Matching::RegoError(rule, e) => (rule, Some(e)),
                Matching::NoMatch | Matching::NotApplicable => continue,
            };
            if rego_error.is_none() && !grants.is_empty() {
                let covered = |id: &str| grants.iter().copied().find(|g| g.covers(&p.name, id));
                if let Some(g) = covered(rule) {
                    match p.match_besides(a, candidates, |id| covered(id).is_some()) {
                        // A rule the grants do not cover still matches.
                        Some(other) => rule = other,
                        None => {
                            granted.get_or_insert(Granted {
                                policy: p.name.clone(),
                                rule: Some(rule.clone()),
                                mode: p.mode,
                                grant: g,
                            });
                            continue;
                        }
                    }
                }
            }
            let hit = Hit {
                policy: p,
                rule: Some(rule),
            };
            if p.mode == Mode::Enforce {
                let reason = if rego_error.is_some() {
                    Reason::RegoError
                } else {
                    Reason::DeniedByPolicy
                };
                return self.finish(a, Outcome::Deny, reason, Some(hit), rego_error, candidates);
            }
            if shadow_deny.is_none() {
                shadow_deny = Some((hit, rego_error));
            }
        }
        // ALLOW policies.
        let mut enforce_applies: Option<Hit<'_>> = None;
        let mut enforce_match: Option<Hit<'_>> = None;
        let mut any_applies: Option<Hit<'_>> = None;
        let mut any_match = false;
        let mut rego_failure: Option<(Hit<'_>, String)> = None;
        // ALLOW policies that apply, matched nothing, and have a grant.
        let mut grant_enforce: Option<(Hit<'_>, &'g Grant)> = None;
        let mut grant_any: Option<(Hit<'_>, &'g Grant)> = None;
        for p in &self.allow {
            let m = p.evaluate_ref(a, candidates);
            if let Matching::NotApplicable = m {
                continue;
            }
            let hit = Hit {
                policy: p,
                rule: None,
            };
            if matches!(m, Matching::NoMatch) && !grants.is_empty() {
                if let Some(g) = grants.iter().copied().find(|g| g.policy == *p.name) {
                    if p.mode == Mode::Enforce && grant_enforce.is_none() {
                        grant_enforce = Some((hit, g));
                    }
                    grant_any.get_or_insert((hit, g));
                }
            }
            if p.mode == Mode::Enforce && enforce_applies.is_none() {
                enforce_applies = Some(hit);
            }
            if any_applies.is_none()
                || (p.mode == Mode::Audit
                    && any_applies.is_some_and(|h| h.policy.mode == Mode::Enforce))
            {
                any_applies = Some(hit);
            }
            match m {
                Matching::Matched(rule) => {
                    any_match = true;
                    if p.mode == Mode::Enforce && enforce_match.is_none() {
                        enforce_match = Some(Hit {
                            rule: Some(rule),
                            ..hit
                        });
                    }
                }
                Matching::RegoError(rule, e) if rego_failure.is_none() => {
                    rego_failure = Some((
                        Hit {
                            rule: Some(rule),
                            ..hit
                        },
                        e,
                    ));
                }
                _ => {}
            }
        }
        // A grant admits only where no rule of any ALLOW policy matched.
        let allow_grant = |(h, g): (Hit<'_>, &'g Grant)| Granted {
            policy: h.policy.name.clone(),
            rule: g.rule.as_deref().map(Arc::from),
            mode: h.policy.mode,
            grant: g,
        };
        if enforce_match.is_none() {
            if let Some((h, g)) = grant_enforce {
                enforce_match = Some(h);
                granted.get_or_insert(allow_grant((h, g)));
            }
        }
        if !any_match {
            if let Some(x) = grant_any {
                any_match = true;
                granted.get_or_insert(allow_grant(x));
            }
        }
        if let Some(applies) = enforce_applies {
            if enforce_match.is_none() {
                return match rego_failure.filter(|(h, _)| h.policy.mode == Mode::Enforce) {
                    Some((h, e)) => self.finish(
                        a,
                        Outcome::Deny,
                        Reason::RegoError,
                        Some(h),
                        Some(e),
                        candidates,
                    ),
                    None => self.finish(
                        a,
                        Outcome::Deny,
                        Reason::NoAllowMatch,
                        Some(applies),
                        None,
                        candidates,
                    ),
                };
            }
        }
        // The enforced verdict allows; does the shadow verdict?
        if let Some((hit, e)) = shadow_deny {
            return self.finish(
                a,
                Outcome::Audit,
                Reason::AuditWouldDeny,
                Some(hit),
                e,
                candidates,
            );
        }
        if let Some(applies) = any_applies {
            if !any_match {
                return self.finish(
                    a,
                    Outcome::Audit,
                    Reason::AuditWouldDeny,
                    Some(applies),
                    None,
                    candidates,
                );
            }
        }
        match enforce_match {
            Some(hit) => self.finish(
                a,
                Outcome::Allow,
                Reason::AllowedByPolicy,
                Some(hit),
                None,
                candidates,
            ),
            None => self.finish(a, Outcome::Allow, Reason::NoPolicy, None, None, candidates),
        }
    }

    fn finish(
        &self,
        a: &Attrs<'_>,
        outcome: Outcome,
        reason: Reason,
        hit: Option<Hit<'_>>,
        rego_error: Option<String>,
        candidates: Option<&[u64]>,
    ) -> AuthzDecision {
        let mut d = AuthzDecision::new(outcome, reason);
        if let Some(h) = hit {
            d.policy = Some(h.policy.name.clone());
            d.rule = h.rule.cloned();
            d.mode = h.policy.mode;
            d.detail = rego_error.map(|e| format!("rego: {e}"));
        }
        for p in &self.audit {
            if let Matching::Matched(_) | Matching::RegoError(..) = p.evaluate_ref(a, candidates) {
                d.audit_policies.push(p.name.clone());
            }
        }
        d
    }
}
