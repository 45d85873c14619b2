//! Rule metadata from OPA-style `# METADATA` annotations, read straight from
//! the Rego source so that packs stay plain Rego that OPA also accepts.
//!
//! ```rego
//! # METADATA
//! # title: Images pinned by digest
//! # description: Why it matters.
//! # custom:
//! #   id: zt-image-digest
//! #   severity: high
//! #   scope: pod
//! #   kinds: [Pod, Deployment]   # optional: the only kinds it can fire on
//! #   remediation: Pin images by @sha256 digest.
//! #   controls: {cis: ["5.5.1"], soc2: ["CC7.1"]}
//! package keycard.zt.image_digest
//! ```

use std::collections::BTreeMap;

use keycard_core::Severity;
use serde::Deserialize;

use crate::error::PolicyError;

/// What a rule's `path` is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The pod (or pod template) of a workload: paths get the template prefix.
    Pod,
    /// The whole object.
    #[default]
    Object,
}

/// Metadata of a rule or package.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleMeta {
    pub id: Option<String>,
    pub title: String,
    pub description: String,
    pub severity: Option<Severity>,
    pub remediation: String,
    pub controls: BTreeMap<String, Vec<String>>,
    pub scope: Scope,
    /// The only object kinds the rule can fire on (`custom.kinds`), when it
    /// says so: the engine does not run it on other kinds. A built-in rule
    /// of scope pod fires only on objects with a pod (`input.pod`), and the
    /// engine does not run it on others either. Both are checked by running
    /// every rule on every object of the test corpora.
    pub kinds: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMeta {
    title: Option<String>,
    description: Option<String>,
    custom: RawCustom,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCustom {
    id: Option<String>,
    severity: Option<String>,
    remediation: Option<String>,
    scope: Option<String>,
    kinds: Option<Vec<String>>,
    controls: BTreeMap<String, ControlIds>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ControlIds {
    One(String),
    Many(Vec<String>),
}

/// What keycard needs to know about one Rego module.
#[derive(Debug, Clone, Default)]
pub struct ModuleInfo {
    pub package: String,
    pub package_line: usize,
    pub package_meta: Option<RuleMeta>,
    /// Output rules (`deny`, `violation`, `warn`) defined here, with the line
    /// of their first definition and any rule-scoped metadata.
    pub outputs: BTreeMap<String, (usize, Option<RuleMeta>)>,
}

/// The rule names keycard reads findings from.
pub const OUTPUT_RULES: &[&str] = &["deny", "violation", "warn"];

fn head_name(line: &str) -> Option<&str> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    if end == 0 {
        return None;
    }
    Some(&line[..end])
}

/// Read the package, its annotations and its output rules from Rego source.
pub fn parse_annotations(file: &str, text: &str) -> Result<ModuleInfo, PolicyError> {
    let mut info = ModuleInfo::default();
    let mut pending: Option<(usize, String)> = None; // (line of "# METADATA", yaml)
    let mut collecting = false;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim_end();
        if let Some(c) = line.trim_start().strip_prefix('#') {
            if c.trim() == "METADATA" && line.starts_with('#') {
                pending = Some((lineno, String::new()));
                collecting = true;
                continue;
            }
            if collecting {
                if let Some((_, yaml)) = pending.as_mut() {
                    yaml.push_str(c.strip_prefix(' ').unwrap_or(c));
                    yaml.push('\n');
                }
            }
            continue;
        }
        collecting = false;
        if line.trim().is_empty() {
            continue;
        }
        let meta = match pending.take() {
            Some((at, yaml)) => Some(parse_meta(file, at, &yaml)?),
            None => None,
        };
        if let Some(rest) = line.strip_prefix("package ") {
            let pkg = rest.split('#').next().unwrap_or("").trim();
            info.package = pkg.to_string();
            info.package_line = lineno;
            info.package_meta = meta;
            continue;
        }
        if let Some(name) = head_name(line) {
            if OUTPUT_RULES.contains(&name) {
                let after = &line[name.len()..];
                let is_head = after.is_empty()
                    || after.starts_with([' ', '[', '{', '\t', ':', '='])
                    || after.starts_with(" contains");
                if is_head {
                    let entry = info
                        .outputs
                        .entry(name.to_string())
                        .or_insert((lineno, None));
                    if meta.is_some() {
                        entry.1 = meta;
                    }
                }
            }
        }
    }
    if info.package.is_empty() {
        return Err(PolicyError::Load {
            file: file.to_string(),
            message: "no package declaration".into(),
        });
    }
    Ok(info)
}

fn parse_meta(file: &str, line: usize, yaml: &str) -> Result<RuleMeta, PolicyError> {
    let err = |message: String| PolicyError::Metadata {
        file: file.to_string(),
        line,
        message,
    };
    let raw: RawMeta = yaml_serde::from_str(yaml).map_err(|e| err(e.to_string()))?;
    let severity = match raw.custom.severity {
        Some(s) => Some(s.parse::<Severity>().map_err(|e| err(e.to_string()))?),
        None => None,
    };
    let scope = match raw.custom.scope.as_deref() {
        None | Some("object") => Scope::Object,
        Some("pod") => Scope::Pod,
        Some(other) => {
            return Err(err(format!(
                "custom.scope {other:?}: expected pod or object"
            )))
        }
    };
    let controls = raw
        .custom
        .controls
        .into_iter()
        .map(|(k, v)| {
            let ids = match v {
                ControlIds::One(s) => vec![s],
                ControlIds::Many(v) => v,
            };
            (k, ids)
        })
        .collect();
    Ok(RuleMeta {
        id: raw.custom.id,
        title: raw.title.unwrap_or_default(),
        description: raw.description.unwrap_or_default().trim().to_string(),
        severity,
        remediation: raw
            .custom
            .remediation
            .unwrap_or_default()
            .trim()
            .to_string(),
        controls,
        scope,
        kinds: raw.custom.kinds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_package_and_rule_metadata() {
        let src = "# METADATA\n# title: T\n# description: D\n# custom:\n#   id: x-1\n#   severity: critical\n#   scope: pod\n#   remediation: R\n#   controls:\n#     cis: 5.2.1\n#     soc2: [CC6.1, CC6.8]\npackage a.b # trailing\n\nimport rego.v1\n\n# METADATA\n# custom:\n#   id: w-1\n#   severity: low\nwarn contains msg if {\n  msg := \"x\"\n}\ndeny contains \"y\" if false\ndenyother := 1\n";
        let info = parse_annotations("f.rego", src).unwrap();
        assert_eq!(info.package, "a.b");
        assert_eq!(info.package_line, 12);
        let pm = info.package_meta.unwrap();
        assert_eq!(pm.id.as_deref(), Some("x-1"));
        assert_eq!(pm.severity, Some(Severity::Critical));
        assert_eq!(pm.scope, Scope::Pod);
        assert_eq!(pm.controls["cis"], vec!["5.2.1"]);
        assert_eq!(pm.controls["soc2"].len(), 2);
        assert_eq!(info.outputs.len(), 2);
        assert_eq!(info.outputs["warn"].0, 20);
        assert_eq!(
            info.outputs["warn"].1.as_ref().unwrap().severity,
            Some(Severity::Low)
        );
        assert!(info.outputs["deny"].1.is_none());
    }

    #[test]
    fn bad_metadata_names_file_and_line() {
        let src =
            "package p\n\n# METADATA\n# custom:\n#   severity: urgent\ndeny contains 1 if true\n";
        let e = parse_annotations("p.rego", src).unwrap_err().to_string();
        assert!(e.starts_with("p.rego:3:"), "{e}");
        assert!(e.contains("urgent"), "{e}");
        let e = parse_annotations("q.rego", "deny contains 1 if true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no package"), "{e}");
    }
}
