//! SARIF 2.1.0, for code-scanning UIs. A finding becomes a result of its
//! rule; it sits on a file and line when the object came from a manifest,
//! and on a logical location (the resource) when it came from a dump or
//! the live API, which have no lines to point at. Coverage gaps become
//! tool notifications, so a scan that could not see RBAC says so where the
//! results are read.

use std::collections::BTreeMap;

use keycard_core::Severity;
use serde_json::{json, Value};

use keycard_policy::report::{sarif_level as level, sarif_uri as uri};

use super::{pillar_key, security_severity};
use crate::model::{Assessment, Finding};

pub(super) fn render(a: &Assessment) -> String {
    match serde_json::to_string_pretty(&to_value(a)) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => {
            tracing::error!(error = %e, "the SARIF report could not be serialised");
            String::new()
        }
    }
}

/// `Title Case words` to `TitleCaseWords`: SARIF's `name` is an
/// identifier-like form of the rule.
fn rule_name(title: &str, rule: &str) -> String {
    let src = if title.trim().is_empty() { rule } else { title };
    src.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(c) => c.to_uppercase().chain(cs).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

fn rule(f: &Finding, worst: Severity) -> Value {
    let mut tags = vec![
        "security".to_string(),
        "zero-trust".to_string(),
        pillar_key(f.pillar).to_string(),
    ];
    if !f.category.is_empty() {
        tags.push(f.category.clone());
    }
    for (framework, ids) in &f.controls {
        tags.extend(ids.iter().map(|i| format!("{framework}:{i}")));
    }
    let title = if f.title.is_empty() {
        &f.rule
    } else {
        &f.title
    };
    json!({
        "id": f.rule,
        "name": rule_name(&f.title, &f.rule),
        "shortDescription": {"text": title},
        "fullDescription": {"text": format!("{title} ({} pillar)", f.pillar.title())},
        "help": {"text": f.remediation, "markdown": f.remediation},
        "defaultConfiguration": {"level": level(worst)},
        "properties": {
            "pillar": pillar_key(f.pillar),
            "category": f.category,
            "security-severity": format!("{:.1}", security_severity(worst)),
            "precision": "high",
            "tags": tags,
        },
    })
}

fn location(f: &Finding) -> Value {
    let logical = json!([{
        "name": f.resource,
        "fullyQualifiedName": f.resource,
        "kind": "resource",
    }]);
    match &f.file {
        Some(file) if !file.is_empty() => {
            let mut physical = json!({"artifactLocation": {"uri": uri(file)}});
            if let Some(line) = f.line {
                physical["region"] = json!({"startLine": line.max(1)});
            }
            json!({"physicalLocation": physical, "logicalLocations": logical})
        }
        _ => json!({"logicalLocations": logical}),
    }
}

/// The SARIF document as a JSON value (tests inspect it without parsing
/// the text again).
pub(crate) fn to_value(a: &Assessment) -> Value {
    // One rule per rule id; its default level is the worst severity any
    // of its findings has (a rule's severity may depend on what it found).
    let mut worst: BTreeMap<&str, (Severity, &Finding)> = BTreeMap::new();
    for f in &a.findings {
        worst
            .entry(f.rule.as_str())
            .and_modify(|(s, _)| *s = (*s).max(f.severity))
            .or_insert((f.severity, f));
    }
    let index: BTreeMap<&str, usize> = worst.keys().enumerate().map(|(i, r)| (*r, i)).collect();
    let rules: Vec<Value> = worst.values().map(|(s, f)| rule(f, *s)).collect();
    let results: Vec<Value> = a
        .findings
        .iter()
        .map(|f| {
            let mut text = format!("{}: {}", f.resource, f.title);
            if let Some(first) = f.evidence.first() {
                text.push_str(" (");
                text.push_str(first);
                text.push(')');
            }
            let mut props = json!({
                "pillar": pillar_key(f.pillar),
                "severity": f.severity.as_str(),
                "security-severity": format!("{:.1}", security_severity(f.severity)),
                "evidence": f.evidence,
                "remediation": f.remediation,
            });
            if let Some(ns) = &f.namespace {
                props["namespace"] = json!(ns);
            }
            if !f.controls.is_empty() {
                props["controls"] = json!(f.controls);
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": index.get(f.rule.as_str()).copied().unwrap_or(0),
                "level": level(f.severity),
                "message": {"text": text},
                "locations": [location(f)],
                "partialFingerprints": {"keycardFindingId/v1": f.id},
                "properties": props,
            })
        })
        .collect();
    let mut notifications: Vec<Value> = a
        .coverage
        .gaps
        .iter()
        .map(|g| {
            json!({
                "level": "warning",
                "descriptor": {"id": g.id},
                "message": {"text": format!("not seen: {} ({})", g.what, g.impact)},
            })
        })
        .collect();
    notifications.extend(a.coverage.input_errors.iter().map(|e| {
        let mut n = json!({
            "level": "error",
            "message": {"text": e.message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri(&e.file)}}}],
        });
        if let Some(line) = e.line {
            n["locations"][0]["physicalLocation"]["region"] = json!({"startLine": line.max(1)});
        }
        n
    }));
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "keycard-assess",
                "fullName": "keycard assessment",
                "informationUri": "https://github.com/keycard-dev/keycard",
                "version": a.keycard_version,
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": true,
                "endTimeUtc": a.generated_at,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
            "properties": {
                "overallStage": a.maturity.overall.map(|s| s.title()),
                "coverageComplete": a.coverage.complete(),
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_identifier_like() {
        assert_eq!(
            rule_name("Namespace has no default-deny", "x"),
            "NamespaceHasNoDefaultDeny"
        );
        assert_eq!(rule_name("", "zt-assess-foo"), "ZtAssessFoo");
    }

    #[test]
    fn uris_are_relative_and_escaped() {
        assert_eq!(uri("./a b/c#1.yaml"), "a%20b/c%231.yaml");
        assert_eq!(uri("dir\\x.yaml"), "dir/x.yaml");
    }
}
