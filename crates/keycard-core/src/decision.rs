use serde::{Deserialize, Serialize};

/// The outcome of a policy decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
    /// Would have been denied, but the deciding policy is in audit mode.
    Audit,
}

/// One explained decision: every enforcement point produces these, and the
/// decision log stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: Outcome,
    /// The policy (pack, file or object) that decided.
    pub policy: String,
    /// The rule inside that policy.
    pub rule: String,
    /// Why, in words a person can act on.
    pub reason: String,
}
