//! Rendering the result of a check: human text, JSON, SARIF 2.1.0, JUnit XML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use keycard_core::Severity;
use serde_json::{json, Value};

use crate::exceptions::Exception;
use crate::finding::{Enforcement, Finding};

/// Everything a report shows.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    /// Input and evaluation errors, each naming the file and line.
    pub errors: Vec<String>,
    /// Things worth knowing that are not errors, e.g. objects of kinds no
    /// built-in rule knows (custom resources): only the team's policies see them.
    pub notes: Vec<String>,
    pub expired_exceptions: Vec<Exception>,
    pub unused_exceptions: Vec<Exception>,
    pub exceptions_file: Option<String>,
    pub objects: usize,
    pub files: usize,
    pub fail_on: Option<Severity>,
    pub version: String,
}

impl CheckReport {
    pub fn blocking(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.blocks(self.fail_on))
            .count()
    }

    pub fn excepted(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.exception.is_some())
            .count()
    }

    /// Exit code: 2 for unusable input, 1 for blocking findings, else 0.
    pub fn exit_code(&self) -> i32 {
        if !self.errors.is_empty() {
            2
        } else if self.blocking() > 0 {
            1
        } else {
            0
        }
    }

    fn by_severity(&self) -> BTreeMap<&'static str, usize> {
        let mut m: BTreeMap<&'static str, usize> =
            Severity::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        for f in self.findings.iter().filter(|f| f.exception.is_none()) {
            *m.entry(f.severity.as_str()).or_default() += 1;
        }
        m
    }

    fn summary(&self) -> Value {
        json!({
            "objects": self.objects,
            "files": self.files,
            "findings": self.findings.len(),
            "by_severity": self.by_severity(),
            "excepted": self.excepted(),
            "blocking": self.blocking(),
            "fail_on": self.fail_on.map(|s| s.as_str()).unwrap_or("never"),
            "passed": self.exit_code() == 0,
            "errors": self.errors,
            "notes": self.notes,
            "expired_exceptions": self.expired_exceptions.iter().map(exception_json).collect::<Vec<_>>(),
            "unused_exceptions": self.unused_exceptions.iter().map(exception_json).collect::<Vec<_>>(),
        })
    }

    /// `{"findings":[...],"summary":{...}}`
    pub fn to_json(&self) -> Value {
        let findings: Vec<Value> = self.findings.iter().map(finding_json).collect();
        json!({"findings": findings, "summary": self.summary()})
    }

    /// [`CheckReport::to_json`], pretty-printed to `w` one finding at a time
    /// (the same text as `serde_json::to_writer_pretty(w, &report.to_json())`
    /// without building the whole document in memory first).
    pub fn write_json(&self, w: impl std::io::Write) -> serde_json::Result<()> {
        serde_json::to_writer_pretty(w, &StreamedJson(self))
    }

    /// Human text, grouped by resource, with remediation (and, with
    /// `explain`, what the rule read and why it fired).
    pub fn to_human(&self, explain: bool, color: bool) -> String {
        let paint = |code: &str, s: &str| {
            if color {
                format!("\x1b[{code}m{s}\x1b[0m")
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let mut groups: BTreeMap<(&str, usize), Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            groups.entry((f.file.as_str(), f.line)).or_default().push(f);
        }
        for ((file, line), mut fs) in groups {
            fs.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.rule.cmp(&b.rule)));
            let _ = writeln!(
                out,
                "{}  {}",
                paint("1", &fs[0].resource.to_string()),
                paint("2", &format!("{file}:{line}"))
            );
            for f in fs {
                let sev = format!("{:<8}", f.severity.as_str().to_uppercase());
                let sev = match (f.exception.is_some(), f.severity) {
                    (true, _) => paint("2", &sev),
                    (_, Severity::Critical) => paint("1;31", &sev),
                    (_, Severity::High) => paint("31", &sev),
                    (_, Severity::Medium) => paint("33", &sev),
                    (_, Severity::Low) => paint("36", &sev),
                };
                let mark = match (&f.exception, f.enforcement, f.blocks(self.fail_on)) {
                    (Some(_), _, _) => "~",
                    (_, Enforcement::Dryrun, _) => "?",
                    (_, _, true) => "✗",
                    _ => "!",
                };
                let _ = writeln!(out, "  {mark} {sev} {}  {}", f.rule, f.message);
                if let Some(e) = &f.exception {
                    let _ = writeln!(
                        out,
                        "      excepted: owner {}, until {}{}",
                        e.owner,
                        e.expires,
                        if e.reason.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", e.reason)
                        }
                    );
                }
                if explain {
                    let title = if f.title.is_empty() {
                        f.rule.as_str()
                    } else {
                        &*f.title
                    };
                    let _ = writeln!(
                        out,
                        "      rule:   {title} (policy {}, {})",
                        f.policy,
                        match f.enforcement {
                            Enforcement::Deny => "deny",
                            Enforcement::Warn => "warn",
                            Enforcement::Dryrun => "dryrun",
                        }
                    );
                    if let Some(p) = &f.path {
                        let v = f
                            .value
                            .as_ref()
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "(absent)".into());
                        let _ = writeln!(out, "      read:   {p} = {v}");
                    }
                    if !f.description.is_empty() {
                        let _ = writeln!(out, "      why:    {}", f.description);
                    }
                    if !f.controls.is_empty() {
                        let c: Vec<String> = f
                            .controls
                            .iter()
                            .map(|(k, v)| format!("{k} {}", v.join(", ")))
                            .collect();
                        let _ = writeln!(out, "      maps:   {}", c.join("; "));
                    }
                }
                if !f.remediation.is_empty() && f.exception.is_none() {
                    let _ = writeln!(out, "      fix:    {}", f.remediation);
                }
            }
            out.push('\n');
        }
        for e in &self.errors {
            let _ = writeln!(out, "{} {e}", paint("1;31", "error:"));
        }
        for e in &self.expired_exceptions {
            let _ = writeln!(
                out,
                "{} exception for {} (owner {}) at {}:{} expired on {}: it no longer applies",
                paint("33", "warning:"),
                e.rule,
                e.owner,
                self.exceptions_file.as_deref().unwrap_or("-"),
                e.line,
                e.expires
            );
        }
        for e in &self.unused_exceptions {
            let _ = writeln!(
                out,
                "{} exception for {} (owner {}) at {}:{} matched nothing",
                paint("2", "note:"),
                e.rule,
                e.owner,
                self.exceptions_file.as_deref().unwrap_or("-"),
                e.line
            );
        }
        let by = self.by_severity();
        let sev: Vec<String> = Severity::ALL
            .iter()
            .filter_map(|s| {
                by.get(s.as_str())
                    .filter(|n| **n > 0)
                    .map(|n| format!("{n} {s}"))
            })
            .collect();
        let counts = if sev.is_empty() {
            String::new()
        } else {
            format!(" ({})", sev.join(", "))
        };
        let verdict = match self.exit_code() {
            0 => paint("1;32", "PASS"),
            1 => paint("1;31", "FAIL"),
            _ => paint("1;31", "ERROR"),
        };
        let fail_on = self
            .fail_on
            .map(|s| format!("at or above {s}"))
            .unwrap_or_else(|| "(fail-on never)".into());
        let _ = writeln!(
            out,
            "{} in {}: {}{counts}, {} excepted, {} blocking {fail_on}, {}: {verdict}",
            plural(self.objects, "object"),
            plural(self.files, "file"),
            plural(self.findings.len(), "finding"),
            self.excepted(),
            self.blocking(),
            plural(self.errors.len(), "input error"),
        );
        out
    }

    /// SARIF 2.1.0, with each result placed on the file and line of its object.
    pub fn to_sarif(&self) -> Value {
        let mut rule_ids: Vec<&str> = self.findings.iter().map(|f| f.rule.as_str()).collect();
        rule_ids.sort_unstable();
        rule_ids.dedup();
        let index: BTreeMap<&str, usize> =
            rule_ids.iter().enumerate().map(|(i, r)| (*r, i)).collect();
        let rules: Vec<Value> = rule_ids
            .iter()
            .filter_map(|id| self.findings.iter().find(|f| f.rule == *id))
            .map(|f| {
                let mut tags = vec!["security".to_string(), f.policy.clone()];
                for (k, ids) in f.controls.iter() {
                    tags.extend(ids.iter().map(|i| format!("{k}:{i}")));
                }
                json!({
                    "id": f.rule,
                    "name": f.title.replace(' ', ""),
                    "shortDescription": {"text": if f.title.is_empty() { &f.rule } else { &*f.title }},
                    "fullDescription": {"text": if f.description.is_empty() { &f.message } else { &*f.description }},
                    "help": {"text": f.remediation, "markdown": f.remediation},
                    "defaultConfiguration": {"level": sarif_level(f.severity)},
                    "properties": {
                        "security-severity": security_severity(f.severity),
                        "precision": "very-high",
                        "tags": tags,
                    },
                })
            })
            .collect();
        let results: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                let mut r = json!({
                    "ruleId": f.rule,
                    "ruleIndex": index.get(f.rule.as_str()).copied().unwrap_or(0),
                    "level": if f.enforcement == Enforcement::Deny { sarif_level(f.severity) } else { "note" },
                    "message": {"text": format!("{}: {}", f.resource, f.message)},
                    "locations": [{
                        "physicalLocation": {
                            "artifactLocation": {"uri": sarif_uri(&f.file)},
                            "region": {"startLine": f.line.max(1)},
                        },
                        "logicalLocations": [{"name": f.resource.to_string(), "kind": "resource"}],
                    }],
                    "partialFingerprints": {"keycard/v1": format!("{}|{}|{}", f.rule, f.resource, f.path.as_deref().unwrap_or(""))},
                });
                if let Some(e) = &f.exception {
                    r["suppressions"] = json!([{"kind": "external", "status": "accepted",
                        "justification": format!("{} (owner {}, until {})", e.reason, e.owner, e.expires)}]);
                }
                r
            })
            .collect();
        let notifications: Vec<Value> = self
            .errors
            .iter()
            .map(|e| json!({"level": "error", "message": {"text": e}}))
            .collect();
        json!({
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [{
                "tool": {"driver": {
                    "name": "keycard",
                    "informationUri": "https://github.com/keycard-dev/keycard",
                    "version": self.version,
                    "rules": rules,
                }},
                "invocations": [{
                    "executionSuccessful": self.errors.is_empty(),
                    "toolExecutionNotifications": notifications,
                }],
                "results": results,
            }],
        })
    }

    /// JUnit XML: one test case per finding (failures for blocking ones,
    /// skipped for excepted ones), grouped in a suite per file.
    pub fn to_junit(&self) -> String {
        let mut suites: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            suites.entry(f.file.as_str()).or_default().push(f);
        }
        let total_fail = self.blocking() + self.errors.len();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"keycard check\" tests=\"{}\" failures=\"{}\">",
            self.findings.len() + self.errors.len(),
            total_fail
        );
        for (file, fs) in suites {
            let failures = fs.iter().filter(|f| f.blocks(self.fail_on)).count();
            let skipped = fs.iter().filter(|f| f.exception.is_some()).count();
            let _ = writeln!(out, "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">", xml(file), fs.len());
            for f in fs {
                let _ = write!(
                    out,
                    "    <testcase classname=\"{}\" name=\"{}\" file=\"{}\" line=\"{}\"",
                    xml(&f.resource.to_string()),
                    xml(&f.rule),
                    xml(&f.file),
                    f.line
                );
                if let Some(e) = &f.exception {
                    let _ = writeln!(out, ">\n      <skipped message=\"excepted: owner {}, until {}\"/>\n    </testcase>", xml(&e.owner), xml(&e.expires));
                } else if f.blocks(self.fail_on) {
                    let _ = writeln!(out, ">\n      <failure message=\"{}\" type=\"{}\">{}:{}: {}\n{}\nfix: {}</failure>\n    </testcase>",
                        xml(&f.message), f.severity, xml(&f.file), f.line, xml(&f.resource.to_string()), xml(&f.message), xml(&f.remediation));
                } else {
                    let _ = writeln!(out, ">\n      <system-out>{} ({}, below the failure threshold)</system-out>\n    </testcase>", xml(&f.message), f.severity);
                }
            }
            out.push_str("  </testsuite>\n");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(
                out,
                "  <testsuite name=\"input\" tests=\"{0}\" failures=\"0\" errors=\"{0}\">",
                self.errors.len()
            );
            for e in &self.errors {
                let _ = writeln!(out, "    <testcase classname=\"input\" name=\"{}\">\n      <error message=\"{}\"/>\n    </testcase>", xml(e), xml(e));
            }
            out.push_str("  </testsuite>\n");
        }
        out.push_str("</testsuites>\n");
        out
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn exception_json(e: &Exception) -> Value {
    json!({"rule": e.rule, "owner": e.owner, "reason": e.reason, "expires": e.expires, "line": e.line})
}

/// SARIF `level` of a severity, shared by every SARIF keycard writes.
pub fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "note",
    }
}

fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
    }
}

/// A relative, forward-slash URI for SARIF (code-scanning UIs resolve it
/// against the repository root); characters with a meaning in URIs are
/// escaped.
pub fn sarif_uri(file: &str) -> String {
    let f = file.strip_prefix("./").unwrap_or(file);
    let mut s = String::new();
    for c in f.chars() {
        match c {
            '\\' => s.push('/'),
            ' ' => s.push_str("%20"),
            '%' => s.push_str("%25"),
            '#' => s.push_str("%23"),
            '?' => s.push_str("%3F"),
            _ => s.push(c),
        }
    }
    s
}

/// Escape text for XML attributes and content, dropping characters XML 1.0 forbids.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(c),
            c if (c as u32) < 0x20 => {}
            c => o.push(c),
        }
    }
    o
}

/// The JSON report as a serde value that converts findings one by one.
struct StreamedJson<'a>(&'a CheckReport);

struct StreamedFindings<'a>(&'a [Finding]);

impl serde::Serialize for StreamedFindings<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(finding_json))
    }
}

impl serde::Serialize for StreamedJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("findings", &StreamedFindings(&self.0.findings))?;
        m.serialize_entry("summary", &self.0.summary())?;
        m.end()
    }
}

fn finding_json(f: &Finding) -> Value {
    let mut v = json!({
        "rule": f.rule,
        "policy": f.policy,
        "severity": f.severity,
        "title": f.title,
        "message": f.message,
        "remediation": f.remediation,
        "resource": f.resource,
        "file": f.file,
        "line": f.line,
        "enforcement": f.enforcement,
        "exception": f.exception,
    });
    if let Some(p) = &f.path {
        v["path"] = json!(p);
    }
    if let Some(val) = &f.value {
        v["value"] = val.clone();
    }
    if !f.controls.is_empty() {
        v["controls"] = json!(f.controls);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use keycard_core::ResourceRef;

    fn finding(rule: &str, sev: Severity) -> Finding {
        Finding {
            rule: rule.into(),
            policy: "zero-trust".into(),
            severity: sev,
            title: "Title <x>".into(),
            message: "bad & worse".into(),
            remediation: "fix it".into(),
            resource: ResourceRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                namespace: Some("ns".into()),
                name: "p".into(),
            },
            file: "dir/a b.yaml".into(),
            line: 7,
            path: Some("spec.x".into()),
            value: Some(json!(true)),
            description: "because".into(),
            controls: Default::default(),
            enforcement: Enforcement::Deny,
            exception: None,
        }
    }

    #[test]
    fn streamed_json_is_the_json_document() {
        let mut controls = BTreeMap::new();
        controls.insert("cis".to_string(), vec!["5.2.1".to_string()]);
        let mut b = finding("b", Severity::Critical);
        b.controls = controls.into();
        b.path = None;
        let r = CheckReport {
            findings: vec![finding("a", Severity::Medium), b],
            errors: vec!["x.yaml:1: bad".into()],
            ..Default::default()
        };
        let mut out = Vec::new();
        r.write_json(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string_pretty(&r.to_json()).unwrap()
        );
    }

    #[test]
    fn exit_codes_follow_fail_on() {
        let mut r = CheckReport {
            findings: vec![finding("a", Severity::Medium)],
            fail_on: Some(Severity::High),
            ..Default::default()
        };
        assert_eq!(r.exit_code(), 0);
        r.fail_on = Some(Severity::Medium);
        assert_eq!(r.exit_code(), 1);
        r.fail_on = None;
        assert_eq!(r.exit_code(), 0);
        r.errors.push("x.yaml:1: bad".into());
        assert_eq!(r.exit_code(), 2);
    }

    #[test]
    fn sarif_places_results_on_lines() {
        let r = CheckReport {
            findings: vec![finding("a", Severity::High), finding("b", Severity::Low)],
            fail_on: Some(Severity::High),
            ..Default::default()
        };
        let s = r.to_sarif();
        assert_eq!(s["version"], "2.1.0");
        let res = &s["runs"][0]["results"];
        assert_eq!(
            res[0]["locations"][0]["physicalLocation"]["region"]["startLine"],
            7
        );
        assert_eq!(
            res[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "dir/a%20b.yaml"
        );
        assert_eq!(res[1]["ruleIndex"], 1);
        assert_eq!(res[1]["level"], "note");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let r = CheckReport {
            findings: vec![finding("a", Severity::High)],
            fail_on: Some(Severity::High),
            ..Default::default()
        };
        let x = r.to_junit();
        assert!(x.contains("failures=\"1\""));
        assert!(x.contains("bad &amp; worse"));
        assert!(!x.contains("bad & worse"));
    }
}
