//! The authorizer: identity checks (revocation, JWT), posture lookup, then
//! the policy set. One per process, shared behind an `Arc`; every
//! enforcement point (ext_authz, the proxy) calls [`Authorizer::check`] in
//! process.

use std::sync::Arc;

use keycard_core::Outcome;

use crate::engine::{AuthzDecision, PolicySet, Reason};
use crate::files::{PostureDb, Revocations, Watched};
use crate::grants::Grants;
use crate::jwt::JwtValidator;
use crate::loader::PolicyStore;
use crate::request::{Attrs, Claims, PathOptions, Request};
use crate::time::unix_now;

/// Decides requests. Cheap to call from many threads at once.
pub struct Authorizer {
    policies: Arc<PolicyStore>,
    revocations: Option<Arc<Watched<Revocations>>>,
    posture: Option<Arc<Watched<PostureDb>>>,
    grants: Option<Arc<Watched<Grants>>>,
    jwt: Option<Arc<JwtValidator>>,
    paths: PathOptions,
}

/// A decision and the validated JWT claims it used.
pub struct Checked {
    pub decision: AuthzDecision,
    pub claims: Option<Claims>,
}

impl Authorizer {
    pub fn new(policies: Arc<PolicyStore>) -> Self {
        Authorizer {
            policies,
            revocations: None,
            posture: None,
            grants: None,
            jwt: None,
            paths: PathOptions::default(),
        }
    }

    /// An authorizer over a fixed policy set.
    pub fn with_policies(set: PolicySet) -> Self {
        Self::new(Arc::new(PolicyStore::fixed(set)))
    }

    pub fn revocations(mut self, r: Arc<Watched<Revocations>>) -> Self {
        self.revocations = Some(r);
        self
    }

    pub fn posture(mut self, p: Arc<Watched<PostureDb>>) -> Self {
        self.posture = Some(p);
        self
    }

    /// Just-in-time grants for source principals ([`crate::grants`]).
    pub fn grants(mut self, g: Arc<Watched<Grants>>) -> Self {
        self.grants = Some(g);
        self
    }

    pub fn jwt(mut self, v: Arc<JwtValidator>) -> Self {
        self.jwt = Some(v);
        self
    }

    /// How request paths are normalised before matching. The enforcement
    /// point must forward the same normal form (see
    /// [`crate::normalize_target`]) so that what was authorised is what the
    /// application receives.
    pub fn path_options(mut self, opts: PathOptions) -> Self {
        self.paths = opts;
        self
    }

    /// The path options in force.
    pub fn paths(&self) -> PathOptions {
        self.paths
    }

    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// Decide one request.
    pub fn check(&self, req: &Request) -> AuthzDecision {
        self.check_full(req, unix_now()).decision
    }

    /// Decide one request at a time (Unix seconds), keeping the JWT claims.
    pub fn check_full(&self, req: &Request, now: i64) -> Checked {
        let source = req.source.principal.as_deref();
        if let Some(rev) = &self.revocations {
            let r = rev.current();
            if r.is_revoked(source, req.source_cert_serial.as_deref()) {
                let mut d = AuthzDecision::new(Outcome::Deny, Reason::Revoked);
                d.detail = Some("the source identity or certificate is revoked".into());
                return Checked {
                    decision: d,
                    claims: None,
                };
            }
        }
        let claims = match (req.bearer_token(), &self.jwt) {
            (Some(token), Some(v)) => match v.validate(token, now) {
                Ok(c) => Some(c),
                Err(e) => {
                    let mut d = AuthzDecision::new(Outcome::Deny, Reason::JwtInvalid);
                    d.detail = Some(e.to_string());
                    return Checked {
                        decision: d,
                        claims: None,
                    };
                }
            },
            _ => None,
        };
        if let (Some(c), Some(rev)) = (&claims, &self.revocations) {
            if rev.current().is_revoked(Some(&c.subject), None) {
                let mut d = AuthzDecision::new(Outcome::Deny, Reason::Revoked);
                d.detail = Some("the token subject is revoked".into());
                return Checked {
                    decision: d,
                    claims,
                };
            }
        }
        let posture_db = self.posture.as_ref().map(|p| p.current());
        let posture = posture_db.as_deref().and_then(|db| {
            source
                .and_then(|s| db.get(s, now))
                .or_else(|| claims.as_ref().and_then(|c| db.get(&c.subject, now)))
        });
        let set = self.policies.current();
        let attrs = Attrs::with_options(req, claims.as_ref(), posture, self.paths);
        let mut decision = set.evaluate(&attrs);
        // Grants are looked at only when a policy refused: the common
        // path costs nothing.
        if let (Some(g), Some(source)) = (&self.grants, source) {
            let refused = matches!(
                decision.reason,
                Reason::DeniedByPolicy | Reason::NoAllowMatch | Reason::AuditWouldDeny
            );
            if refused {
                let grants = g.current();
                let active = grants.for_principal(source, now);
                if !active.is_empty() {
                    decision = set.evaluate_with_grants(&attrs, &active);
                }
            }
        }
        drop(attrs);
        Checked { decision, claims }
    }
}
