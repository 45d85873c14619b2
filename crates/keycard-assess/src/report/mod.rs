//! Reports: JSON (the contract `assess diff` reads back), Markdown (for a
//! pull request or a wiki), HTML (one self-contained page a person would
//! rather look at than read) and SARIF 2.1.0 (for code-scanning UIs).
//!
//! ```
//! use keycard_assess::report::{render, Format};
//! # fn demo(a: &keycard_assess::Assessment) {
//! let format: Format = "md".parse().unwrap_or(Format::Json);
//! let text = render(a, format);
//! # let _ = text; }
//! ```

mod html;
mod json;
mod markdown;
mod sarif;

use std::cmp::Reverse;
use std::fmt;
use std::str::FromStr;

use keycard_core::Severity;

use crate::model::{Assessment, Identity, IdentityCategory, Pillar};

pub use html::GRAPH_IDENTITIES;
pub(crate) use markdown::cell as md_cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Markdown,
    Html,
    Sarif,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Html, Format::Markdown, Format::Json, Format::Sarif];

    /// The name `--output` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Sarif => "sarif",
        }
    }

    /// The usual file extension, for a default output file name.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Sarif => "sarif",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown report format {0:?}: expected one of html, md, json, sarif")]
pub struct ParseFormatError(pub String);

impl FromStr for Format {
    type Err = ParseFormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "md" | "markdown" => Ok(Format::Markdown),
            "html" => Ok(Format::Html),
            "sarif" => Ok(Format::Sarif),
            _ => Err(ParseFormatError(s.to_string())),
        }
    }
}

/// Render an assessment. Rendering cannot fail: every format is built from
/// the model in memory.
pub fn render(a: &Assessment, format: Format) -> String {
    match format {
        Format::Json => json::render(a),
        Format::Markdown => markdown::render(a),
        Format::Html => html::render(a),
        Format::Sarif => sarif::render(a),
    }
}

/// The `security-severity` score code-scanning UIs bucket on (GitHub:
/// over 9.0 critical, 7.0 to 8.9 high, 4.0 to 6.9 medium, else low).
pub(crate) fn security_severity(s: Severity) -> f64 {
    match s {
        Severity::Critical => 9.5,
        Severity::High => 8.0,
        Severity::Medium => 5.5,
        Severity::Low => 3.0,
    }
}

/// The pillar's key as in the JSON form (`applications-and-workloads`).
pub(crate) fn pillar_key(p: Pillar) -> &'static str {
    match p {
        Pillar::Identity => "identity",
        Pillar::Devices => "devices",
        Pillar::Networks => "networks",
        Pillar::ApplicationsAndWorkloads => "applications-and-workloads",
        Pillar::Data => "data",
    }
}

/// How much harm an identity could do, for choosing which identities a
/// bounded view shows first: cluster-admin above everything, then ways to
/// escalate, then secrets, then the breadth of what it holds. Cluster
/// components count for half: they are powerful by design, and a report
/// that shows only kube-system controllers hides the identities a team
/// can actually change.
pub(crate) fn identity_risk(i: &Identity) -> u64 {
    let mut r: u64 = 0;
    // Above anything the rest can add up to: a group with many namespaced
    // grants must not push the cluster admins out of a bounded view.
    if i.cluster_admin {
        r += 1_000_000;
    }
    r += 1_000 * i.escalation_paths.len().min(5) as u64;
    for s in &i.secrets_readable {
        r += if s == "*/*" {
            2_000
        } else if s.ends_with("/*") {
            300
        } else {
            50
        };
    }
    for p in &i.permissions {
        let wide = p.verbs.iter().any(|v| v == "*") || p.resources.iter().any(|v| v == "*");
        r += if wide { 100 } else { 5 };
        if matches!(p.scope, crate::model::Scope::Cluster) {
            r += 10;
        }
    }
    if !i.workloads.is_empty() {
        r += 20;
    }
    if i.category == IdentityCategory::System {
        r /= 2;
    }
    r
}

/// Identities, riskiest first (ties by id, so the order is stable).
pub(crate) fn riskiest(a: &Assessment) -> Vec<&Identity> {
    let mut v: Vec<&Identity> = a.inventory.identities.iter().collect();
    v.sort_by_cached_key(|i| (Reverse(identity_risk(i)), i.id.clone()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: &str) -> Identity {
        Identity {
            id: id.to_string(),
            subject: crate::model::Subject::group(id),
            category: IdentityCategory::Group,
            category_reason: None,
            exists: true,
            permissions: Vec::new(),
            workloads: Vec::new(),
            secrets_readable: Vec::new(),
            cluster_admin: false,
            escalation_paths: Vec::new(),
        }
    }

    #[test]
    fn cluster_admins_outrank_any_pile_of_namespaced_grants() {
        let mut admin = identity("admins");
        admin.cluster_admin = true;
        let mut team = identity("team");
        team.escalation_paths = (0..10).map(|i| format!("path {i}")).collect();
        team.secrets_readable = (0..200).map(|i| format!("ns-{i}/*")).collect();
        assert!(identity_risk(&admin) > identity_risk(&team));
    }

    #[test]
    fn formats_parse_from_their_cli_names() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
        }
        assert_eq!("Markdown".parse::<Format>(), Ok(Format::Markdown));
        assert!("pdf".parse::<Format>().is_err());
    }
}
