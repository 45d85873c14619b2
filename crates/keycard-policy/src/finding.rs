use std::collections::BTreeMap;
use std::sync::Arc;

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

/// A rule's compliance controls (framework to control ids).
pub type Controls = BTreeMap<String, Vec<String>>;

/// One explained finding: which policy and rule fired on which object, why,
/// and what to do about it. The rule's own texts (title, remediation,
/// description, controls) are shared by every finding of the rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub policy: String,
    pub severity: Severity,
    pub title: Arc<str>,
    pub message: String,
    pub remediation: Arc<str>,
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
    pub description: Arc<str>,
    #[serde(skip_serializing_if = "no_controls")]
    pub controls: Arc<Controls>,
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

fn no_controls(c: &Arc<Controls>) -> bool {
    c.is_empty()
}
