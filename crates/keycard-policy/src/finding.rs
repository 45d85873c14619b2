use std::collections::BTreeMap;

use keycard_core::{ResourceRef, Severity};
use serde::Serialize;

/// What a finding does to the run, from Gatekeeper's enforcementAction or
/// from the rule kind (`deny`/`violation` block, `warn` warns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Enforcement {
    Deny,
    Warn,
    Dryrun,
}

/// Whether an exception covers the finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionState {
    pub owner: String,
    pub reason: String,
    pub expires: String,
    /// Index of the exception in its file, and its line.
    pub line: usize,
}

/// One explained finding: which policy and rule fired on which object, why,
/// and what to do about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub policy: String,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub remediation: String,
    pub resource: ResourceRef,
    pub file: String,
    pub line: usize,
    /// Dotted path of the field the rule read, relative to the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The value the rule found there (masked by rules for secrets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Rationale of the rule: why it matters.
    #[serde(skip)]
    pub description: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub controls: BTreeMap<String, Vec<String>>,
    pub enforcement: Enforcement,
    pub exception: Option<ExceptionState>,
}

impl Finding {
    /// Whether this finding counts toward `--fail-on`.
    pub fn blocks(&self, fail_on: Option<Severity>) -> bool {
        match fail_on {
            None => false,
            Some(min) => {
                self.exception.is_none()
                    && self.enforcement == Enforcement::Deny
                    && self.severity >= min
            }
        }
    }
}
